"""Reading and writing files in the workspace."""

import difflib
import time
from pathlib import Path

import regex
from django.conf import settings

from agents.inplace import rewrite
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


READ_MAX_BYTES = 1_000_000


@register(
    "read_file",
    Risk.READ,
    "Read a text file from the workspace (its first 1 MB at most).",
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
    # Never more than the cap in memory, however large the file (or however fast it grows).
    with path.open("rb") as file:
        data = file.read(READ_MAX_BYTES + 1)
    if len(data) <= READ_MAX_BYTES:
        return _clip(data.decode(errors="replace"))
    size = path.stat().st_size
    return _clip(data[:READ_MAX_BYTES].decode(errors="replace")) + (
        f"\n[the file has {size} bytes; only its first {READ_MAX_BYTES} were read]"
    )


SEARCH_MAX_FILE_BYTES = 1_000_000
SEARCH_LINE_CHARS = 300
# The counted repeats of a pattern (`x{n}`) multiplied together: the regex module compiles a
# counted repeat by writing it out, so `(?:(?:a{1000}){1000}){100}` alone would take minutes
# and gigabytes before the first match could be timed.
SEARCH_MAX_REPEAT = 100_000
_COUNTED_REPEAT = regex.compile(r"(?<!\\)\{(\d*)(?:,(\d*))?\}")


def _compiled(pattern: str) -> regex.Pattern:
    product = 1
    for low, high in _COUNTED_REPEAT.findall(pattern):
        product *= max(int(low or 0), int(high or 0), 1)
        if product > SEARCH_MAX_REPEAT:
            raise ToolError(
                f"the pattern's counted repeats ({{n}}) multiply to more than "
                f"{SEARCH_MAX_REPEAT}; use + or * or smaller counts"
            )
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None


class _SearchTimeout(Exception):
    pass


@register(
    "search_text",
    Risk.READ,
    "Search the workspace's text files (or those under a folder) for a literal, case-sensitive "
    "string, or a Python regular expression with regex=true. Returns `path:line: text` lines. "
    "The search has a time limit of a few seconds.",
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
    """Every match up to `max_results`, and how many more there were. The whole search,
    every regular-expression match included, has ORCHESTRA_SEARCH_TIMEOUT seconds."""
    pattern = arguments["pattern"]
    max_results = arguments.get("max_results", 100)
    limit = settings.ORCHESTRA_SEARCH_TIMEOUT
    deadline = time.monotonic() + limit

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _SearchTimeout
        return remaining

    if arguments.get("regex", False):
        compiled = _compiled(pattern)

        def matches(line: str) -> bool:
            try:
                return compiled.search(line, timeout=left()) is not None
            except TimeoutError:
                raise _SearchTimeout from None

    else:

        def matches(line: str) -> bool:
            return pattern in line

    root, base = _folder(context, arguments)
    found: list[str] = []
    more = 0  # matches past max_results, counted while time allows
    too_large = 0
    try:
        for path in _workspace_files(root, base):
            left()
            if path.stat().st_size > SEARCH_MAX_FILE_BYTES:
                too_large += 1
                continue
            data = path.read_bytes()
            if b"\0" in data[:8192]:  # binary
                continue
            name = path.relative_to(root).as_posix()
            # split("\n"), not splitlines(): line numbers must match what editors and git show.
            for number, line in enumerate(data.decode(errors="replace").split("\n"), start=1):
                if not matches(line):
                    continue
                if len(found) < max_results:
                    found.append(f"{name}:{number}: {line.rstrip(chr(13))[:SEARCH_LINE_CHARS]}")
                else:
                    more += 1
        counted = True
    except _SearchTimeout:
        if len(found) < max_results:
            if arguments.get("regex", False):
                raise ToolError(f"the pattern took longer than {limit:g} s; simplify it") from None
            raise ToolError(
                f"the search took longer than {limit:g} s; search a smaller folder"
            ) from None
        counted = False  # every result shown was found; how many more there were is unknown
    text = "\n".join(found) or "(no matches)"
    if not counted:
        text += (
            f"\n[results cut at {max_results}; the search stopped after {limit:g} s, so how "
            "many more there are is unknown; narrow the pattern or the folder]"
        )
    elif more:
        text += (
            f"\n[results cut at {max_results}: {more} more not shown; "
            "narrow the pattern or the folder]"
        )
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
    rewrite(path, arguments["content"])
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
