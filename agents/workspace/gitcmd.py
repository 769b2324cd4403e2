"""Running git: a fixed identity and no outside configuration, errors, the repository lock.

Every command runs in a subprocess with a fixed identity and without the user's or the
system's git configuration, so results do not depend on the machine. Failures raise
`GitError` naming the command and git's own message.

Operations that change refs or the worktree list shared by all worktrees of a repository hold
an exclusive `flock` on a lock file in the repository's common git directory
(`repository_lock`). The lock is taken on a fresh file descriptor per call, so it serialises
threads of one process as well as processes.
"""

import contextlib
import fcntl
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Passed on every call: they override anything in the repository's own config as well.
_CONFIG = (
    "user.name=Orchestra",
    "user.email=orchestra@localhost",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "core.hooksPath=/dev/null",
    "core.quotePath=false",
    "core.autocrlf=false",
    "core.fsmonitor=false",
    "init.defaultBranch=main",
    "merge.conflictStyle=merge",
    "advice.detachedHead=false",
)
_LOCK_FILE = "orchestra-workspace.lock"
_TIMEOUT = 120


class GitError(Exception):
    """A git command failed (or a workspace operation refused); the message says which and why."""

    def __init__(self, message: str, command: tuple[str, ...] = (), stderr: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.stderr = stderr


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in: this process's, without inherited GIT_* variables and
    without the user's or the system's configuration, plus `extra`."""
    # Drop GIT_* variables inherited from a parent git process (a hook, a test runner inside a
    # repository): GIT_DIR or GIT_INDEX_FILE would silently point commands elsewhere.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        GIT_EDITOR="true",
        GIT_MERGE_AUTOEDIT="no",
        GIT_PAGER="cat",
        LANG="C",
        LC_ALL="C",
    )
    env.update(extra or {})
    return env


def run_git(
    cwd: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: int = _TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `git <args>` in `cwd`; raise GitError on a non-zero exit when `check` is set."""
    command = ["git"]
    for option in _CONFIG:
        command += ["-c", option]
    command += args
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=environment(env),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            f"`git {shlex.join(args)}` in {cwd} timed out after {timeout} s", tuple(args)
        ) from exc
    except OSError as exc:
        raise GitError(f"`git {shlex.join(args)}` in {cwd} could not start: {exc}") from exc
    if check and result.returncode != 0:
        stderr = decoded(result.stderr).strip() or decoded(result.stdout).strip()
        raise GitError(
            f"`git {shlex.join(args)}` failed in {cwd} (exit {result.returncode}): {stderr}",
            tuple(args),
            stderr,
        )
    return result


def config_environment(*pairs: tuple[str, str]) -> dict[str, str]:
    """The fixed configuration, then `pairs`, as GIT_CONFIG_* variables: for git processes
    that start others (`http-backend`), and for values that must not appear in an argument
    list (a credential header)."""
    options = [option.split("=", 1) for option in _CONFIG] + [list(pair) for pair in pairs]
    env = {"GIT_CONFIG_COUNT": str(len(options))}
    for index, (key, value) in enumerate(options):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def git_output(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a git command that must succeed; return its standard output as text."""
    return decoded(run_git(cwd, *args, env=env).stdout)


def succeeds(cwd: Path, *args: str) -> bool:
    return run_git(cwd, *args, check=False).returncode == 0


def decoded(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def nul_separated(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]


# -- Locking -----------------------------------------------------------------------------------

# Repository or worktree path -> its common git directory. Asked of git once per path and
# process: the lock is taken several times per step.
_common_dirs: dict[Path, Path] = {}


def common_dir(repo: Path) -> Path:
    """The git directory shared by a repository and all its worktrees."""
    key = Path(repo).absolute()
    known = _common_dirs.get(key)
    if known is not None and known.is_dir():
        return known
    found = Path(
        git_output(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
    )
    _common_dirs[key] = found
    return found


@contextlib.contextmanager
def repository_lock(repo: Path) -> Iterator[None]:
    """Hold the repository's exclusive workspace lock (blocking until it is free).

    Not re-entrant: a locked operation must call the `..._locked` helpers, never the public
    functions that lock again.
    """
    with _flocked(common_dir(repo) / _LOCK_FILE, os.O_RDWR | os.O_CREAT):
        yield


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder `path`, which exists (flock on the folder itself,
    so it works across processes and leaves no file behind): a repository is made or cloned
    under it, since the first tasks of a new project all find it missing at once, and none may
    see it half made (a `.git` without its first commit) or make it twice."""
    with _flocked(path, os.O_RDONLY):
        yield


@contextlib.contextmanager
def _flocked(path: Path, flags: int) -> Iterator[None]:
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def capped(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {what} truncated: {len(text) - limit} more characters]\n"
