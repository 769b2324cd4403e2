"""Patches: what approvers see and what `apply_patch` applies, all of it or none."""

import os
import re
import subprocess
from pathlib import Path

from django.conf import settings

from agents.tools.confinement import _path_refusal, confined_path
from agents.tools.registry import Risk, ToolContext, ToolError, register


def patch_preview(workspace: Path, arguments: dict) -> str:
    """What approvers see for `apply_patch`: the patch itself."""
    return arguments["patch"]


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_SYMLINK_MODE = re.compile(r"^(new file mode|new mode|index \S+) 120000\s*$")
_C_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, '"': 34, "\\": 92}


def _unquote(name: str) -> str:
    """A file name as git writes it: C-quoted (octal bytes, backslash escapes) when unusual."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    raw, body, i = bytearray(), name[1:-1], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            if body[i + 1 : i + 4].isdigit() and len(body[i + 1 : i + 4]) == 3:
                raw.append(int(body[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            raw.append(_C_ESCAPES.get(body[i + 1], ord(body[i + 1])))
            i += 2
            continue
        raw.extend(body[i].encode())
        i += 1
    return raw.decode(errors="surrogateescape")


def _header_name(text: str) -> str:
    """The name in a `---`/`+++` line's rest: quoted, or up to a tab (before a timestamp)."""
    text = text.rstrip("\r")
    if text.startswith('"'):
        end = text.find('"', 1)
        while end > 0 and text[end - 1] == "\\":
            end = text.find('"', end + 1)
        return _unquote(text[: end + 1]) if end > 0 else text
    return text.split("\t", 1)[0].rstrip()


def _git_header_names(rest: str) -> list[str]:
    """The names in `diff --git a/x b/x` when git can tell them apart: both quoted, or both
    the same (a rename's names come from its `rename from/to` lines instead)."""
    rest = rest.rstrip("\r")
    if rest.startswith('"'):
        first = _header_name(rest)
        second = rest[len(rest.split('" ', 1)[0]) + 2 :] if '" ' in rest else ""
        return [first, _header_name(second)] if second else [first]
    half = len(rest) // 2
    if len(rest) % 2 == 1 and rest[half] == " ":
        first, second = rest[:half], rest[half + 1 :]
        if first.split("/", 1)[-1] == second.split("/", 1)[-1]:
            return [first, second]
    return []


def _strip_prefix(name: str) -> str:
    """The name with its first component removed, as `git apply` (-p1) does: a/x -> x."""
    return name.split("/", 1)[1].lstrip("/") if "/" in name else name


def _patch_headers(patch: str) -> tuple[list[tuple[str, str]], bool]:
    """Every (name as written, path it touches) in the patch's file headers, and whether a
    header makes or changes a symbolic link. Hunk bodies are skipped by their line counts, as
    git does, so a removed line starting with "-- " is not taken for a header."""
    names: list[tuple[str, str]] = []
    symlink = False
    old = new = 0
    for line in patch.split("\n"):
        if old > 0 or new > 0:
            tag = line[:1]
            if tag == "-":
                old -= 1
            elif tag == "+":
                new -= 1
            elif tag != "\\":
                old, new = old - 1, new - 1
            continue
        if match := _HUNK.match(line):
            old = int(match[1]) if match[1] is not None else 1
            new = int(match[2]) if match[2] is not None else 1
        elif line.startswith("diff --git "):
            names += [(name, _strip_prefix(name)) for name in _git_header_names(line[11:])]
        elif line.startswith(("--- ", "+++ ")):
            name = _header_name(line[4:])
            if name != "/dev/null":
                names.append((name, _strip_prefix(name)))
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            name = _header_name(line.split(" ", 2)[2])
            names.append((name, name))
        elif _SYMLINK_MODE.match(line.rstrip("\r")):
            symlink = True
    return names, symlink


def patch_paths(patch: str) -> list[str]:
    """The workspace paths a unified diff touches, in order of first mention."""
    return list(dict.fromkeys(path for _, path in _patch_headers(patch)[0]))


def _git(workspace: Path, arguments: list[str], stdin: str) -> subprocess.CompletedProcess:
    """Run git in the workspace for a write tool. Its configuration comes from the repository
    alone: a `.gitconfig` an agent writes into the workspace (its HOME for commands) must not
    be able to make git run a program."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        # A workspace that is not a repository must not be taken for part of one above it.
        "GIT_CEILING_DIRECTORIES": str(workspace.resolve().parent),
    }
    try:
        return subprocess.run(
            ["git", *arguments],
            cwd=workspace,
            env=env,
            input=stdin.encode(),
            capture_output=True,
            timeout=settings.ORCHESTRA_COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError("git is not installed on this worker") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"git timed out after {settings.ORCHESTRA_COMMAND_TIMEOUT:g} s") from None


def _git_message(completed: subprocess.CompletedProcess) -> str:
    return completed.stderr.decode(errors="replace").strip() or f"exit {completed.returncode}"


@register(
    "apply_patch",
    Risk.WRITE,
    "Apply a unified diff (as `git diff` writes it, paths prefixed a/ and b/) to the workspace. "
    "All of it applies or none of it does.",
    {
        "type": "object",
        "properties": {"patch": {"type": "string", "minLength": 1, "maxLength": 200_000}},
        "required": ["patch"],
        "additionalProperties": False,
    },
)
def apply_patch(context: ToolContext, arguments: dict) -> str:
    patch = arguments["patch"]
    if not patch.endswith("\n"):  # git reports a missing last newline as a corrupt patch
        patch += "\n"
    names, symlink = _patch_headers(patch)
    if not names:
        raise ToolError("patch refused: it names no files (give ---/+++ headers)")
    for written, path in names:
        if reason := _path_refusal(written):
            raise ToolError(f"patch refused: {written!r}: {reason}")
        try:
            confined_path(context.workspace, path)
        except ToolError as exc:
            raise ToolError(f"patch refused: {exc}") from None
    if symlink:
        raise ToolError("patch refused: it makes or changes a symbolic link")
    # What git itself will touch, confined too: the header parse above is only as good as
    # its agreement with git's.
    numstat = _git(context.workspace, ["apply", "--numstat", "-z"], patch)
    if numstat.returncode != 0:
        raise ToolError(f"patch does not apply: {_git_message(numstat)}")
    changes = _numstat(numstat.stdout.decode(errors="surrogateescape"))
    for change in changes:
        for path in change[2:]:
            try:
                confined_path(context.workspace, path)
            except ToolError as exc:
                raise ToolError(f"patch refused: {exc}") from None
    for step in (["apply", "--check"], ["apply"]):
        completed = _git(context.workspace, step, patch)
        if completed.returncode != 0:
            raise ToolError(f"patch does not apply: {_git_message(completed)}")
    lines = [f"{' => '.join(paths)} (+{added} -{removed})" for added, removed, *paths in changes]
    return "applied the patch; changed:\n" + "\n".join(lines)


def _numstat(output: str) -> list[list[str]]:
    """`git apply --numstat -z` records: [added, removed, path] or, for a rename or copy,
    [added, removed, old path, new path]."""
    fields, records, i = output.split("\0"), [], 0
    while i < len(fields) and fields[i]:
        added, removed, path = fields[i].split("\t", 2)
        if path:
            records.append([added, removed, path])
            i += 1
        else:
            records.append([added, removed, fields[i + 1], fields[i + 2]])
            i += 3
    return records
