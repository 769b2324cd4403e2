"""Reading and writing files in the workspace."""

import difflib
import re
from pathlib import Path

from agents.tools.confinement import (
    PATH_ARG,
    _clip,
    _folder,
    _workspace_files,
    confined_path,
)
from agents.tools.registry import (
    Risk,
    ToolContext,
    ToolError,
    register,
)

# --- Reading -------------------------------------------------------------------------------

LIST_LIMIT = 500


@register(
    "list_files",
    Risk.READ,
    "List the files in the workspace (or under a folder of it).",
    {
        "type": "object",
        "properties": {"folder": PATH_ARG},
        "additionalProperties": False,
    },
)
def list_files(context: ToolContext, arguments: dict) -> str:
    root, base = _folder(context, arguments)
    names = [path.relative_to(root).as_posix() for path in _workspace_files(root, base)]
    if not names:
        return "(no files)"
    listing = "\n".join(names[:LIST_LIMIT])
    if len(names) > LIST_LIMIT:
        listing += f"\n[... {len(names) - LIST_LIMIT} more files; list a folder to see them]"
    return listing


@register(
    "read_file",
    Risk.READ,
    "Read a text file from the workspace.",
    {
        "type": "object",
        "properties": {"path": PATH_ARG},
        "required": ["path"],
        "additionalProperties": False,
    },
)
def read_file(context: ToolContext, arguments: dict) -> str:
    path = confined_path(context.workspace, arguments["path"])
    if not path.is_file():
        raise ToolError(f"no file at {arguments['path']!r}")
    return _clip(path.read_text(errors="replace"))


SEARCH_MAX_FILE_BYTES = 1_000_000
SEARCH_LINE_CHARS = 300


@register(
    "search_text",
    Risk.READ,
    "Search the workspace's text files (or those under a folder) for a literal, case-sensitive "
    "string, or a Python regular expression with regex=true. Returns `path:line: text` lines.",
    {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "maxLength": 1000},
            "folder": PATH_ARG,
            "regex": {"type": "boolean", "default": False},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    },
)
def search_text(context: ToolContext, arguments: dict) -> str:
    pattern = arguments["pattern"]
    max_results = arguments.get("max_results", 100)
    if arguments.get("regex", False):
        try:
            matches = re.compile(pattern).search
        except re.error as exc:
            raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
    else:

        def matches(line: str) -> bool:
            return pattern in line

    root, base = _folder(context, arguments)
    found: list[str] = []
    cut = False
    too_large = 0
    for path in _workspace_files(root, base):
        if path.stat().st_size > SEARCH_MAX_FILE_BYTES:
            too_large += 1
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        name = path.relative_to(root).as_posix()
        # split("\n"), not splitlines(): line numbers must match what editors and git show.
        for number, line in enumerate(data.decode(errors="replace").split("\n"), start=1):
            if matches(line):
                if len(found) == max_results:
                    cut = True
                    break
                found.append(f"{name}:{number}: {line.rstrip(chr(13))[:SEARCH_LINE_CHARS]}")
        if cut:
            break
    text = "\n".join(found) or "(no matches)"
    if cut:
        text += f"\n[results cut at {max_results}; narrow the pattern or the folder]"
    if too_large:
        text += f"\n[{too_large} files over 1 MB not searched]"
    return _clip(text)


# --- Writing -------------------------------------------------------------------------------


@register(
    "write_file",
    Risk.WRITE,
    "Create or replace a text file in the workspace.",
    {
        "type": "object",
        "properties": {
            "path": PATH_ARG,
            "content": {"type": "string", "maxLength": 200_000},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
def write_file(context: ToolContext, arguments: dict) -> str:
    path = confined_path(context.workspace, arguments["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(arguments["content"])
    return f"wrote {len(arguments['content'])} characters to {arguments['path']}"


def write_diff(workspace: Path, arguments: dict) -> str:
    """The unified diff `write_file` with these arguments would make: shown to approvers."""
    try:
        path = confined_path(workspace, arguments["path"])
    except ToolError as exc:
        return f"(no diff: {exc})"
    old = path.read_text(errors="replace") if path.is_file() else ""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            arguments["content"].splitlines(keepends=True),
            "/dev/null" if not path.exists() else f"a/{arguments['path']}",
            f"b/{arguments['path']}",
        )
    )
