"""The tool registry: callables with a JSON schema for their arguments and a risk level.

Which tools an agent gets is decided here, not in a prompt: the orchestrator and the reviewer
only ever receive `read` tools, whatever their profile lists, and the agent loop refuses any
call to a tool outside the agent's set.

Every path an agent names goes through `confined_path`; every process an agent starts runs
without a shell, in its own process group, with a minimal environment, a timeout and a cap on
the output kept.
"""

import difflib
import fcntl
import hashlib
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

import jsonschema
from django.conf import settings


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    EXEC = "exec"
    DEPLOY = "deploy"


# Roles that plan, judge or report: they never change anything.
READ_ONLY_ROLES = frozenset({"orchestrator", "reviewer"})


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the tool's result."""


def schema_errors(schema: dict, value: object, root: str = "arguments") -> list[str]:
    """Every way `value` breaks the JSON `schema`, as "path: reason" sentences in path order."""
    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or root}: {error.message}"
        for error in sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], e.message))
    ]


@dataclass(frozen=True)
class ToolContext:
    workspace: Path  # the step's git worktree: the cwd of every command
    run_id: int
    step_key: str
    environment: dict  # extra env vars for commands (never the server's env)
    test_command: str = ""
    deploy_command: str = ""  # empty: the built-in release copy
    command_allowlist: tuple[str, ...] = ()
    idempotency_key: str = ""  # of the current call
    releases: Path | None = None  # root folder of releases and deploy receipts
    # Exports the run branch's integrated tree into the folder, returns its commit sha.
    integrated: Callable[[Path], str] | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    risk: Risk
    parameters: dict
    func: Callable[[ToolContext, dict], str]

    def schema_errors(self, arguments: object) -> list[str]:
        """Every way `arguments` breaks this tool's schema, as readable sentences."""
        return schema_errors(self.parameters, arguments)

    def as_openai(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


REGISTRY: dict[str, Tool] = {}


def register(name: str, risk: Risk, description: str, parameters: dict):
    def decorator(func: Callable[[ToolContext, dict], str]):
        REGISTRY[name] = Tool(name, description, risk, parameters, func)
        return func

    return decorator


def toolset_for(role: str, allowed: list[str]) -> dict[str, Tool]:
    """The tools an agent in `role` may call: its allowed list, filtered by risk for the
    read-only roles. Unknown names are ignored."""
    tools = {name: REGISTRY[name] for name in allowed if name in REGISTRY}
    if role in READ_ONLY_ROLES:
        tools = {name: tool for name, tool in tools.items() if tool.risk == Risk.READ}
    return tools


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


# --- Running -------------------------------------------------------------------------------


def command_allowlisted(command: str, allowlist: Sequence[str], test_command: str = "") -> bool:
    """Whether `command` starts, token by token, with an allowlist entry or the test command:
    "pytest" allows "pytest -q tests" but not "pytestx". Unparseable commands are not."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return False
    if not tokens:
        return False
    for entry in [*allowlist, test_command]:
        try:
            prefix = shlex.split(entry)
        except ValueError:
            continue
        if prefix and tokens[: len(prefix)] == prefix:
            return True
    return False


def _command_env(context: ToolContext, extra: dict | None = None) -> dict[str, str]:
    """A minimal environment plus the project's own variables: the server's environment (its
    secrets: API keys, database URLs) never reaches an agent's command."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(context.workspace),
        "LANG": "C.UTF-8",
        "TMPDIR": tempfile.gettempdir(),
    }
    env |= {str(name): str(value) for name, value in context.environment.items()}
    env |= extra or {}
    return env


class _Capture:
    """The first and last `limit // 2` bytes of a stream, and a count of the rest: a command
    printing 50 MB costs `limit` bytes, and the end, where test runners summarise, survives."""

    def __init__(self, limit: int):
        self.head_limit = max(limit, 0) // 2
        self.tail_limit = max(limit, 0) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {cut} bytes cut ...]\n" if cut else ""
        text = self.head.decode(errors="replace") + middle + self.tail.decode(errors="replace")
        return text if not text or text.endswith("\n") else text + "\n"


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def output(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


# After the command exits (or is killed), how long its pipes may take to close: only a
# process that left the command's session can hold them longer.
_DRAIN_SECONDS = 2.0


def _kill_group(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the whole group has exited already
        os.killpg(process.pid, signal.SIGKILL)


def _drain(
    selector: selectors.BaseSelector,
    captures: dict[int, _Capture],
    until: float,
    process: subprocess.Popen | None = None,
) -> None:
    """Read the pipes until both close, `until` passes or (if given) `process` exits."""
    while selector.get_map():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        # A short wait: a command can exit while a background child still holds its pipes.
        for key, _ in selector.select(min(remaining, 0.1)):
            chunk = os.read(key.fd, 65536)
            if chunk:
                captures[key.fd].feed(chunk)
            else:
                selector.unregister(key.fd)
        if process is not None and process.poll() is not None:
            return


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str) -> Finished:
    """Run `argv` (no shell) in its own session, keeping a capped part of its output. On
    timeout, or once it exits, its whole process group is killed: nothing it started in the
    background outlives the call."""
    if not cwd.is_dir():
        raise ToolError(f"{what} refused: its folder {cwd.name!r} does not exist")
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolError(f"{what} not found: {argv[0]}") from None
    except PermissionError:
        raise ToolError(f"{what} is not executable: {argv[0]}") from None
    except OSError as exc:
        raise ToolError(f"{what} could not start: {exc}") from None
    limit = settings.ORCHESTRA_COMMAND_OUTPUT_LIMIT
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    captures = {stdout.fileno(): _Capture(limit), stderr.fileno(): _Capture(limit)}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            for fd in captures:
                selector.register(fd, selectors.EVENT_READ)
            _drain(selector, captures, deadline, process)
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(process)
            _drain(selector, captures, time.monotonic() + _DRAIN_SECONDS)
    finally:
        _kill_group(process)
        process.wait()
        stdout.close()
        stderr.close()
    out, err = captures.values()  # in insertion order: stdout, then stderr
    finished = Finished(process.returncode, out.text(), err.text())
    if timed_out:
        raise ToolError(
            f"{what} timed out after {timeout:g} s (its process group was killed); "
            f"output so far:\n{finished.output()}"
        )
    return finished


def run_in_workspace(context: ToolContext, command: str, what: str) -> Finished:
    """Run `command` (no shell) in the workspace with the tools' environment, timeout and
    output cap; also what the engine's pre-review checks run through."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ToolError(f"cannot parse the {what}: {exc}") from None
    if not argv:
        raise ToolError(f"the {what} is empty")
    return _run(
        argv, context.workspace, _command_env(context), settings.ORCHESTRA_COMMAND_TIMEOUT, what
    )


def _command_result(finished: Finished) -> str:
    return f"exit code {finished.returncode}\n{finished.output()}"


@register(
    "run_command",
    Risk.EXEC,
    "Run a command (no shell) in the workspace and return its exit code and output.",
    {
        "type": "object",
        "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 2000}},
        "required": ["command"],
        "additionalProperties": False,
    },
)
def run_command(context: ToolContext, arguments: dict) -> str:
    return _command_result(run_in_workspace(context, arguments["command"], "command"))


@register(
    "run_tests",
    Risk.EXEC,
    "Run the project's test command in the workspace and return its exit code and output.",
    NO_ARGUMENTS,
)
def run_tests(context: ToolContext, arguments: dict) -> str:
    if not context.test_command.strip():
        raise ToolError("this project has no test command configured")
    return _command_result(run_in_workspace(context, context.test_command, "test command"))


# --- Deploying -----------------------------------------------------------------------------

RECEIPTS_FOLDER = ".receipts"


def _receipt_path(releases: Path, key: str) -> Path:
    return releases / RECEIPTS_FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def deploy_receipt(releases: Path, key: str) -> dict | None:
    """The receipt of the deploy made under idempotency `key`, or None if there is none. A
    file that is not a receipt for `key` (unreadable, another key, no result) counts as none."""
    try:
        receipt = json.loads(_receipt_path(releases, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(receipt, dict) or receipt.get("key") != key:
        return None
    if not isinstance(receipt.get("result"), str):
        return None
    return receipt


def _write_receipt(releases: Path, receipt: dict) -> None:
    """Write the receipt atomically: a reader sees the whole receipt or none."""
    path = _receipt_path(releases, receipt["key"])
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".receipt-", suffix=".tmp", delete=False
    ) as handle:
        json.dump(receipt, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


@contextmanager
def _deploy_lock(releases: Path, key: str) -> Iterator[None]:
    """Hold the lock of deploys under `key` (a flock on a file beside its receipt), so two
    workers retrying the same call deploy once: the second finds the first one's receipt."""
    lock = _receipt_path(releases, key).with_suffix(".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _next_release(folder: Path) -> Path:
    """Create and return the next numbered release folder (mkdir is the atomic claim)."""
    numbers = [
        int(path.name[len("release-") :])
        for path in folder.iterdir()
        if re.fullmatch(r"release-\d+", path.name)
    ]
    number = max(numbers, default=0) + 1
    while True:
        target = folder / f"release-{number:04d}"
        try:
            target.mkdir()
        except FileExistsError:
            number += 1
        else:
            return target


def _copy_release(context: ToolContext, arguments: dict, export: Path, commit: str) -> str:
    assert context.releases is not None
    environment = arguments["environment"]
    folder = context.releases / environment
    folder.mkdir(parents=True, exist_ok=True)
    target = _next_release(folder)
    try:
        # symlinks=True: a link in the tree stays a link, never a copy of what it points to.
        shutil.copytree(
            export,
            target,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git"),
        )
        release = {
            "commit": commit,
            "key": context.idempotency_key,
            "run": context.run_id,
            "step": context.step_key,
            "environment": environment,
            "note": arguments.get("note", ""),
        }
        (target / "RELEASE.json").write_text(json.dumps(release, indent=2) + "\n")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ToolError(f"copying the release failed: {exc}") from None
    return f"deployed commit {commit[:12]} to {environment} as {target.name}"


def _deploy_with_command(context: ToolContext, arguments: dict, export: Path, commit: str) -> str:
    assert context.releases is not None
    environment = arguments["environment"]
    try:
        argv = shlex.split(context.deploy_command)
    except ValueError as exc:
        raise ToolError(f"cannot parse the deploy command: {exc}") from None
    env = _command_env(
        context,
        {
            "ORCHESTRA_ENVIRONMENT": environment,
            "ORCHESTRA_COMMIT": commit,
            "ORCHESTRA_DEPLOY_KEY": context.idempotency_key,
            "ORCHESTRA_RELEASES": str(context.releases),
            "ORCHESTRA_RECEIPT": str(_receipt_path(context.releases, context.idempotency_key)),
        },
    )
    finished = _run(argv, export, env, settings.ORCHESTRA_DEPLOY_TIMEOUT, "deploy command")
    if finished.returncode != 0:
        raise ToolError(
            f"deploy command failed with exit code {finished.returncode}\n{finished.output()}"
        )
    said = [line for line in finished.stdout.splitlines() if line.strip()]
    release = f": {said[-1][:SEARCH_LINE_CHARS]}" if said else ""
    return f"deployed commit {commit[:12]} to {environment} with the deploy command{release}"


@register(
    "deploy",
    Risk.DEPLOY,
    "Ship the run's integrated commit to a named environment.",
    {
        "type": "object",
        "properties": {
            "environment": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"},
            "note": {"type": "string", "maxLength": 2000},
        },
        "required": ["environment"],
        "additionalProperties": False,
    },
)
def deploy(context: ToolContext, arguments: dict) -> str:
    """Deploy once per idempotency key: a receipt under `releases/.receipts` records each
    deploy, and a call whose key has one returns the recorded result without doing anything."""
    if context.integrated is None:
        raise ToolError("deploy needs the run's integrated commit")
    if context.releases is None:
        raise ToolError("deploy needs a releases folder for its receipts")
    if not context.idempotency_key:
        raise ToolError("deploy needs the call's idempotency key")
    releases, key = context.releases, context.idempotency_key
    (releases / RECEIPTS_FOLDER).mkdir(parents=True, exist_ok=True)
    with _deploy_lock(releases, key):
        if receipt := deploy_receipt(releases, key):
            return "already deployed (receipt found): " + receipt["result"]
        with tempfile.TemporaryDirectory(
            prefix="orchestra-deploy-", ignore_cleanup_errors=True
        ) as folder:
            export = Path(folder)
            try:
                commit = context.integrated(export)
            except (OSError, subprocess.SubprocessError) as exc:
                raise ToolError(f"cannot export the run's integrated commit: {exc}") from None
            if not commit:
                raise ToolError("the run has no integrated commit to deploy")
            if context.deploy_command:
                result = _deploy_with_command(context, arguments, export, commit)
            else:
                result = _copy_release(context, arguments, export, commit)
        # A deploy command may write its own receipt (at $ORCHESTRA_RECEIPT); it stands.
        if receipt := deploy_receipt(releases, key):
            return receipt["result"]
        receipt = {"key": key, "commit": commit, "environment": arguments["environment"]}
        _write_receipt(releases, receipt | {"result": result})
    return result
