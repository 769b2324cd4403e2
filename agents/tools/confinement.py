"""Confinement: every path an agent names resolves inside its workspace, or is refused."""

import os
from pathlib import Path, PurePosixPath

from django.conf import settings

from agents.tools.registry import ToolContext, ToolError

# --- Confinement ---------------------------------------------------------------------------


def _path_refusal(relative: str) -> str | None:
    """Why `relative` may not name a workspace file, judged on its text alone; None if it may."""
    if "\0" in relative:
        return "it contains a NUL character"
    candidate = PurePosixPath(relative)
    if candidate.is_absolute():
        return "it is absolute; give a path relative to the workspace"
    if ".." in candidate.parts:
        return "'..' would lead out of the workspace"
    if ".git" in candidate.parts:
        return "'.git' holds the repository's own data, which tools may not touch"
    return None


def _inside(root: Path, resolved: Path) -> bool:
    return resolved == root or root in resolved.parents


def confined_path(workspace: Path, relative: str) -> Path:
    """Resolve `relative` inside `workspace`, refusing absolute paths, `..`, anything in `.git`
    and symbolic links that lead out (or into `.git`)."""
    if not relative or relative.strip() == "":
        raise ToolError("path refused: it is empty")
    if reason := _path_refusal(relative):
        raise ToolError(f"path {relative!r} refused: {reason}")
    root = workspace.resolve()
    resolved = (root / relative).resolve()
    if not _inside(root, resolved):
        raise ToolError(
            f"path {relative!r} refused: it resolves outside the workspace "
            "(through a symbolic link)"
        )
    if ".git" in resolved.relative_to(root).parts:
        raise ToolError(f"path {relative!r} refused: it resolves into '.git' (symbolic link)")
    return resolved


def _workspace_files(root: Path, base: Path) -> list[Path]:
    """The files under `base` (resolved, inside `root`) sorted by path, leaving out `.git`.
    Symbolically linked folders are never entered, and linked files only count when they
    point inside the workspace: nothing reached here leads out of it."""
    found = []
    for folder, folders, names in os.walk(base):  # followlinks=False: links are not entered
        folders[:] = [name for name in folders if name != ".git"]
        for name in names:
            path = Path(folder, name)
            if name == ".git" or not path.is_file():  # a worktree's .git file; broken links
                continue
            if path.is_symlink() and not _inside(root, path.resolve()):
                continue
            found.append(path)
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _clip(text: str) -> str:
    limit = settings.ORCHESTRA_TOOL_OUTPUT_LIMIT
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


PATH_ARG = {"type": "string", "minLength": 1, "maxLength": 500}
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


def _folder(context: ToolContext, arguments: dict) -> tuple[Path, Path]:
    """The workspace root and the folder the arguments name (the root when they name none)."""
    root = context.workspace.resolve()
    if "folder" not in arguments:
        return root, root
    base = confined_path(context.workspace, arguments["folder"])
    if not base.is_dir():
        raise ToolError(f"{arguments['folder']!r} is not a folder")
    return root, base
