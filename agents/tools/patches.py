"""Patches: what approvers see and what `apply_patch` applies, all of it or none.

What a patch touches is read by git itself (`git apply --numstat --summary -z`), never by a
parser of our own: git accepts header forms a home-made parser misses, and the policy's
"within the step's claims" rule is only as good as its agreement with what git will write.
"""

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from django.conf import settings

from agents.tools.confinement import _path_refusal, confined_path
from agents.tools.registry import Risk, ToolContext, ToolError, register


def patch_preview(workspace: Path, arguments: dict) -> str:
    """What approvers see for `apply_patch`: the patch itself."""
    return arguments["patch"]


# --- What git reads a patch to touch -------------------------------------------------------

# The only modes a patch may give: a regular file, executable or not. Symbolic links (120000)
# could point anywhere and gitlinks (160000) pull in other repositories.
REGULAR_MODES = frozenset({"100644", "100755"})


@dataclass(frozen=True)
class PatchSummary:
    """What git reads a patch to do, one entry per file it changes, in the patch's order.

    `changes` are git's numstat records `(added, removed, path)` (`-` counts for binary
    files); `renames` and `copies` are `(old, new)` pairs; `modes` maps a path to the mode git
    reports for it (created, deleted or changed); `paths` is every path touched, both sides of
    renames and copies, in order of first mention."""

    changes: tuple[tuple[str, str, str], ...]
    renames: tuple[tuple[str, str], ...] = ()
    copies: tuple[tuple[str, str], ...] = ()
    created: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    modes: Mapping[str, str] = field(default_factory=dict)
    binary: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per changed file, as `apply_patch` reports them."""
        sources = {new: old for old, new in (*self.renames, *self.copies)}
        return [
            f"{sources[path] + ' => ' if path in sources else ''}{path} (+{added} -{removed})"
            for added, removed, path in self.changes
        ]


def _git_env(home: Path) -> dict[str, str]:
    """Git's configuration comes from the repository alone: a `.gitconfig` an agent writes
    into the workspace (its HOME for commands) must not be able to make git run a program."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        # A folder that is not a repository must not be taken for part of one above it.
        "GIT_CEILING_DIRECTORIES": str(home.resolve().parent),
    }


def _git(workspace: Path, arguments: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    """Run git in `workspace` (a workspace, or an empty folder to read a patch in)."""
    try:
        return subprocess.run(
            ["git", *arguments],
            cwd=workspace,
            env=_git_env(workspace),
            input=stdin,
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


def _patch_bytes(patch: str) -> bytes:
    if not patch.endswith("\n"):  # git reports a missing last newline as a corrupt patch
        patch += "\n"
    try:
        return patch.encode()
    except UnicodeEncodeError:
        raise ToolError("patch refused: it is not valid UTF-8 text") from None


# Header lines git reads a mode from. Git reports the mode of a created, deleted or changed
# file in its summary, but not the one an `index` line gives, nor `old mode`/`new mode` lines
# that agree: these are screened on their text, and anything but a plain regular-file mode
# is refused (git reads the mode as a C number: leading blanks, even a line break, a sign or
# extra zeros would all pass it, so only the exact forms git writes are accepted).
_MODE_LINE = re.compile(r"(old mode|new mode|new file mode|deleted file mode) ")
_PLAIN_MODE = re.compile(r"100644|100755")


def _mode_line_refusal(patch: str) -> str | None:
    for number, line in enumerate(patch.split("\n"), start=1):
        if header := _MODE_LINE.match(line):
            mode = line[header.end() :].removesuffix("\r")
        elif line.startswith("index "):
            # `index <old>..<new>[ <mode>]`: git takes a mode from after the first space
            # that follows the `..`.
            rest = line[len("index ") :]
            dot = rest.find(".")
            if dot < 0 or rest[dot + 1 : dot + 2] != ".":
                continue
            _, space, mode = rest[dot + 2 :].partition(" ")
            if not space:
                continue
            mode = mode.removesuffix("\r")
        else:
            continue
        if not _PLAIN_MODE.fullmatch(mode):
            where = f"line {number}: {line.rstrip()!r}"
            digits = mode.strip().lstrip("+").lstrip("0")
            if digits.startswith("12"):
                return f"it makes or changes a symbolic link ({where})"
            if digits.startswith("16"):
                return f"it makes or changes a submodule ({where})"
            return f"only a regular file's mode (100644 or 100755) is accepted ({where})"
    return None


def _numstat_names(output: str) -> tuple[list[tuple[str, str, str]], str]:
    """`git apply --numstat -z` records `(added, removed, path)`, and the text after them
    (the `--summary` lines, when asked for)."""
    *records, summary = output.split("\0")
    changes = []
    for record in records:
        added, removed, path = record.split("\t", 2)
        changes.append((added, removed, path))
    return changes, summary


def _rename_text(old: str, new: str) -> str:
    """How git's summary writes a rename or copy: `a/{b => c}` for a common leading folder."""
    common = 0
    while True:
        old_slash, new_slash = old.find("/", common), new.find("/", common)
        if old_slash < 0 or old_slash != new_slash or old[:old_slash] != new[:new_slash]:
            break
        common = old_slash + 1
    if common:
        return f"{old[:common]}{{{old[common:]} => {new[common:]}}}"
    return f"{old} => {new}"


def _rename_pair(text: str, names: list[str], targets: list[str]) -> tuple[str, str] | None:
    """The (old, new) pair among `names` whose summary text is `text`."""
    for new in targets:
        candidates = []
        if text.endswith(" => " + new):
            candidates.append(text[: -len(" => " + new)])
        for slash in (i for i, char in enumerate(new) if char == "/"):
            prefix, tail = new[: slash + 1], new[slash + 1 :]
            if text.startswith(prefix + "{") and text.endswith(f" => {tail}}}"):
                candidates.append(prefix + text[len(prefix) + 1 : -len(f" => {tail}}}")])
        for old in candidates:
            if old in names and _rename_text(old, new) == text:
                return old, new
    return None


_SUMMARY_MODE = re.compile(r" (create|delete) mode (\d+) (.*)")
_SUMMARY_NAME = re.compile(r" (create|delete) (.*)")
_SUMMARY_MODE_CHANGE = re.compile(r" mode change (\d+) => (\d+)(?: (.*))?")
_SUMMARY_MOVE = re.compile(r" (rename|copy) (.*) \(\d+%\)")


def _refuse_mode(mode: str, path: str) -> None:
    if mode == "120000":
        raise ToolError(f"patch refused: it makes or changes a symbolic link ({path!r})")
    if mode == "160000":
        raise ToolError(f"patch refused: it makes or changes a submodule (gitlink {path!r})")
    if mode not in REGULAR_MODES:
        raise ToolError(f"patch refused: {path!r} would get mode {mode}, not a regular file's")


# The policy reads a patch once or twice for each call and apply_patch once more: a few
# summaries are kept, so git reads each patch once and every reader gets the same answer.
@functools.lru_cache(maxsize=32)
def patch_summary(patch: str) -> PatchSummary:
    """What git reads `patch` to touch: asked of `git apply` in an empty folder, so nothing of
    a workspace (its configuration, its files) changes the answer. A patch git cannot read,
    a symbolic link, a submodule or any other mode but a regular file's is refused."""
    data = _patch_bytes(patch)
    with tempfile.TemporaryDirectory(prefix="orchestra-patch-") as scratch:
        folder = Path(scratch)
        forward = _git(folder, ["apply", "--numstat", "--summary", "-z"], data)
        if forward.returncode != 0:
            raise ToolError(f"patch refused: git cannot read it: {_git_message(forward)}")
        changes, summary = _numstat_names(forward.stdout.decode(errors="surrogateescape"))
        # Read forwards git names each file by its new name (a deleted one by its old);
        # read in reverse, by its old name. Both readings name every file touched: a rename's
        # source too, even one git reads from `---`/`+++` names that differ, with no header
        # saying "rename".
        backward = _git(folder, ["apply", "--numstat", "-z", "-R"], data)
        if backward.returncode != 0:
            raise ToolError(f"patch refused: git cannot read it: {_git_message(backward)}")
        sources, _ = _numstat_names(backward.stdout.decode(errors="surrogateescape"))
        names = [path for _, _, path in changes]
        names += [path for _, _, path in sources if path not in names]
    if not changes:
        raise ToolError("patch refused: it names no files (give ---/+++ headers)")
    if any("\n" in name for name in names):
        raise ToolError("patch refused: a file name holds a line break")

    renames, copies, created, deleted, modes = [], [], [], [], {}
    last = ""
    for line in summary.split("\n"):
        if not line:
            continue
        if (match := _SUMMARY_MODE.fullmatch(line)) and match[3] in names:
            kind, mode, path = match[1], match[2], match[3]
            modes[path] = mode
            (created if kind == "create" else deleted).append(path)
        elif (match := _SUMMARY_NAME.fullmatch(line)) and match[2] in names:
            kind, path = match[1], match[2]
            (created if kind == "create" else deleted).append(path)
        elif match := _SUMMARY_MODE_CHANGE.fullmatch(line):
            path = match[3] if match[3] is not None else last
            _refuse_mode(match[1], path)
            modes[path] = match[2]
        elif match := _SUMMARY_MOVE.fullmatch(line):
            pair = _rename_pair(match[2], names, [path for _, _, path in changes])
            if pair is None:
                raise ToolError(f"patch refused: git's summary line {line!r} is not understood")
            (renames if match[1] == "rename" else copies).append(pair)
            last = pair[1]
            continue
        elif line.startswith(" rewrite "):
            last = line[len(" rewrite ") :].rsplit(" (", 1)[0]
            continue
        else:
            raise ToolError(f"patch refused: git's summary line {line!r} is not understood")
        last = path
    for path, mode in modes.items():
        _refuse_mode(mode, path)
    if reason := _mode_line_refusal(patch):
        raise ToolError(f"patch refused: {reason}")

    sources = {new: old for old, new in (*renames, *copies)}
    ordered = []
    for _, _, path in changes:
        if path in sources:
            ordered.append(sources[path])
        ordered.append(path)
    ordered += names
    return PatchSummary(
        changes=tuple(changes),
        renames=tuple(renames),
        copies=tuple(copies),
        created=tuple(created),
        deleted=tuple(deleted),
        modes=MappingProxyType(modes),
        binary=tuple(path for added, removed, path in changes if (added, removed) == ("-", "-")),
        paths=tuple(dict.fromkeys(ordered)),
    )


def patch_paths(patch: str) -> list[str]:
    """The workspace paths a unified diff touches, as git reads it, in order of first
    mention: both sides of renames and copies, created and deleted files. Raises ToolError
    for a patch git cannot read or one that makes or changes a symbolic link or submodule."""
    return list(patch_summary(patch).paths)


# --- apply_patch ---------------------------------------------------------------------------


def _confined_target(workspace: Path, path: str) -> None:
    """`path`, as git reads it from a patch, may be written: confined to the workspace, and
    not a symbolic link or folder there (git would rewrite a link's target, wherever to)."""
    if reason := _path_refusal(path):
        raise ToolError(f"patch refused: {path!r}: {reason}")
    try:
        confined_path(workspace, path)
    except ToolError as exc:
        raise ToolError(f"patch refused: {exc}") from None
    target = workspace / path
    if target.is_symlink():
        raise ToolError(f"patch refused: {path!r} is a symbolic link; patches change files only")
    if target.is_dir():
        raise ToolError(f"patch refused: {path!r} is a folder")


@register(
    "apply_patch",
    Risk.WRITE,
    "Apply a unified diff (as `git diff` writes it, paths prefixed a/ and b/) to the workspace. "
    "All of it applies or none of it does. Regular files only: a patch that makes or changes a "
    "symbolic link or submodule is refused.",
    {
        "type": "object",
        "properties": {"patch": {"type": "string", "minLength": 1, "maxLength": 200_000}},
        "required": ["patch"],
        "additionalProperties": False,
    },
)
def apply_patch(context: ToolContext, arguments: dict) -> str:
    patch = arguments["patch"]
    summary = patch_summary(patch)  # the same reading the policy judged the call by
    for path in summary.paths:
        _confined_target(context.workspace, path)
    data = _patch_bytes(patch)
    for step in (["apply", "--check"], ["apply"]):
        completed = _git(context.workspace, step, data)
        if completed.returncode != 0:
            raise ToolError(f"patch does not apply: {_git_message(completed)}")
    return "applied the patch; changed:\n" + "\n".join(summary.lines())
