"""Git workspaces for runs and steps: a small library over the `git` command line.

The model: each project has a normal git repository whose default branch is `main`. A run
works on its own branch (`run_branch_name`) cut from `main`; each step works in its own
worktree on its own branch (`step_branch_name`) cut from the run branch. After review, the
merge queue (`merge_step`) integrates one step branch at a time into the run branch, inside a
dedicated integration worktree of the run branch.

Every function takes plain paths and strings and runs git in a subprocess with a fixed
identity and without the user's or the system's git configuration, so results do not depend
on the machine. Failures raise `GitError` naming the command and git's own message.

Operations that change refs or the worktree list shared by all worktrees of a repository
(`start_run_branch`, `add_worktree`, `merge_step`, `remove_worktree`) hold an exclusive
`flock` on a lock file in the repository's common git directory. The lock is taken on a fresh
file descriptor per call, so it serialises threads of one process as well as processes.
Nothing here imports Django.
"""

import contextlib
import fcntl
import io
import os
import re
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAIN_BRANCH = "main"
STEP_KEY_PATTERN = re.compile(r"[a-z0-9_-]+")
DETAIL_LIMIT = 8000
INITIAL_COMMIT_MESSAGE = "Initial commit"
RUN_MERGE_MESSAGE = "Merge run branch"

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
_CLONE_TIMEOUT = 900
_CONTEXT_LINES = 3


class GitError(Exception):
    """A git command failed (or a workspace operation refused); the message says which and why."""

    def __init__(self, message: str, command: tuple[str, ...] = (), stderr: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.stderr = stderr


@dataclass(frozen=True)
class MergeOutcome:
    """The result of integrating one step branch into the run branch.

    On success `commit` is the run branch head after the merge. On conflict the run branch is
    untouched, `commit` is empty, `conflicts` lists the conflicting paths (sorted) and
    `detail` shows their conflict hunks, capped at about `DETAIL_LIMIT` characters.
    """

    ok: bool
    commit: str
    conflicts: list[str] = field(default_factory=list)
    detail: str = ""


# -- Running git -------------------------------------------------------------------------------


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
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


def _run(
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
            env=_environment(env),
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
        stderr = _text(result.stderr).strip() or _text(result.stdout).strip()
        raise GitError(
            f"`git {shlex.join(args)}` failed in {cwd} (exit {result.returncode}): {stderr}",
            tuple(args),
            stderr,
        )
    return result


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a git command that must succeed; return its standard output as text."""
    return _text(_run(cwd, *args, env=env).stdout)


def _succeeds(cwd: Path, *args: str) -> bool:
    return _run(cwd, *args, check=False).returncode == 0


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _nul_separated(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]


# -- Locking -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _repository_lock(repo: Path) -> Iterator[None]:
    """Hold the repository's exclusive workspace lock (blocking until it is free).

    Not re-entrant: a locked operation must call the `_..._locked` helpers, never the public
    functions that lock again.
    """
    common_dir = Path(_git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    fd = os.open(common_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- Names -------------------------------------------------------------------------------------


def run_branch_name(run_id: int) -> str:
    """The branch a run integrates its steps into: `orchestra/run-<id>`."""
    return f"orchestra/run-{int(run_id)}"


def step_branch_name(run_id: int, step_key: str) -> str:
    """A step's own branch: `orchestra/run-<id>-steps/<step-key>`.

    Not `orchestra/run-<id>/<step-key>`: git stores branches as paths, so the run branch
    `orchestra/run-<id>` cannot also be a folder holding branches below it.
    """
    if not STEP_KEY_PATTERN.fullmatch(step_key):
        raise ValueError(f"Step key {step_key!r} must match [a-z0-9_-]+.")
    return f"{run_branch_name(run_id)}-steps/{step_key}"


# -- Repositories and branches ------------------------------------------------------------------


def ensure_repository(
    path: Path, source: str = "", seed_files: dict[str, str] | None = None
) -> Path:
    """Make sure `path` holds a git repository with a `main` branch; return `path`.

    Idempotent: an existing repository is returned as it is. Otherwise, with `source` (a local
    path or a clone URL) the repository is cloned and a local `main` is created if the clone's
    default branch has another name (from `origin/main` if the source has one, else at the
    clone's HEAD) and checked out. Without `source`, a repository is initialised on `main`:
    an existing non-empty folder is committed as it is, an empty or missing one receives
    `seed_files` (relative path -> text; a README.md when there are none). The first commit
    is "Initial commit".
    """
    path = Path(path)
    if (path / ".git").exists():
        _git(path, "rev-parse", "--git-dir")  # fails loudly on a broken repository
        return path
    if source:
        path.parent.mkdir(parents=True, exist_ok=True)
        _run(path.parent, "clone", "--quiet", "--", source, str(path), timeout=_CLONE_TIMEOUT)
        _ensure_main_after_clone(path)
        return path
    path.mkdir(parents=True, exist_ok=True)
    has_files = any(path.iterdir())
    _git(path, "init", "--quiet", "--initial-branch", MAIN_BRANCH)
    if not has_files:
        _write_seed_files(path, seed_files or {"README.md": f"# {path.name}\n"})
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "--allow-empty", "--message", INITIAL_COMMIT_MESSAGE)
    return path


def _ensure_main_after_clone(path: Path) -> None:
    main_ref = f"refs/heads/{MAIN_BRANCH}"
    if _ref_exists(path, main_ref):
        return
    if _ref_exists(path, f"refs/remotes/origin/{MAIN_BRANCH}"):
        _git(path, "checkout", "--quiet", "-b", MAIN_BRANCH, f"origin/{MAIN_BRANCH}")
    elif _succeeds(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"):
        _git(path, "checkout", "--quiet", "-b", MAIN_BRANCH)
    else:  # an empty source: start `main` with the initial commit
        _git(path, "symbolic-ref", "HEAD", main_ref)
        _write_seed_files(path, {"README.md": f"# {path.name}\n"})
        _git(path, "add", "--all")
        _git(path, "commit", "--quiet", "--message", INITIAL_COMMIT_MESSAGE)


def _write_seed_files(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or ".git" in parts:
            raise ValueError(f"Seed file path {relative!r} must be relative and inside the repo.")
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _ref_exists(repo: Path, ref: str) -> bool:
    return _succeeds(repo, "show-ref", "--verify", "--quiet", ref)


def head_commit(repo: Path, ref: str = "HEAD") -> str:
    """The full sha of the commit `ref` names (a branch, a sha, HEAD...)."""
    return _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


def start_run_branch(repo: Path, run_id: int, base_ref: str = MAIN_BRANCH) -> tuple[str, str]:
    """Create the run's branch at `base_ref`; return (branch, its head commit).

    Idempotent: an existing run branch is left where it is. Holds the repository lock.
    """
    branch = run_branch_name(run_id)
    with _repository_lock(repo):
        if not _ref_exists(repo, f"refs/heads/{branch}"):
            _git(repo, "branch", "--no-track", branch, head_commit(repo, base_ref))
        return branch, head_commit(repo, branch)


# -- Worktrees ---------------------------------------------------------------------------------


def _worktrees(repo: Path) -> list[dict[str, str]]:
    """The repository's worktrees as `git worktree list --porcelain` records."""
    records: list[dict[str, str]] = []
    record: dict[str, str] = {}
    for item in _git(repo, "worktree", "list", "--porcelain", "-z").split("\0"):
        if not item:
            if record:
                records.append(record)
            record = {}
            continue
        key, _, value = item.partition(" ")
        record[key] = value
    if record:
        records.append(record)
    return records


def _registered_worktree(repo: Path, path: Path) -> dict[str, str] | None:
    wanted = Path(path).resolve()
    for record in _worktrees(repo):
        if Path(record["worktree"]).resolve() == wanted:
            return record
    return None


def add_worktree(repo: Path, path: Path, branch: str, start_commit: str) -> Path:
    """Check `branch` out in a new worktree at `path`; return `path`.

    The branch is created at `start_commit` if missing; an existing branch is checked out as it
    is. Idempotent: a worktree already at `path` on `branch` is returned untouched; one on
    another branch raises GitError. Holds the repository lock.
    """
    with _repository_lock(repo):
        return _add_worktree_locked(repo, Path(path), branch, start_commit)


def _add_worktree_locked(repo: Path, path: Path, branch: str, start_commit: str) -> Path:
    _git(repo, "worktree", "prune")  # forget worktrees whose folder was deleted
    existing = _registered_worktree(repo, path)
    if existing is not None:
        if existing.get("branch") == f"refs/heads/{branch}":
            return path
        current = existing.get("branch", "a detached HEAD").removeprefix("refs/heads/")
        raise GitError(f"{path} is already a worktree on {current}, not on {branch}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if _ref_exists(repo, f"refs/heads/{branch}"):
        _git(repo, "worktree", "add", "--quiet", str(path), branch)
    else:
        _git(repo, "worktree", "add", "--quiet", "-b", branch, str(path), start_commit)
    return path


def remove_worktree(repo: Path, path: Path) -> None:
    """Remove the worktree at `path` even with uncommitted changes, then prune.

    No error if it is already gone. The branch is kept. Holds the repository lock.
    """
    with _repository_lock(repo):
        _git(repo, "worktree", "prune")
        if _registered_worktree(repo, path) is not None:
            _git(repo, "worktree", "remove", "--force", "--force", str(path))
        _git(repo, "worktree", "prune")


# -- Work in a worktree -------------------------------------------------------------------------


def _merge_in_progress(worktree: Path) -> bool:
    return _succeeds(worktree, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")


def _unmerged_paths(worktree: Path) -> list[str]:
    output = _git(worktree, "diff", "--name-only", "--diff-filter=U", "-z")
    return sorted(set(_nul_separated(output)))


def _files_with_conflict_markers(worktree: Path) -> list[str]:
    # `git diff --check` reports conflict markers on lines added since HEAD (and whitespace
    # errors, which are not our business here); it exits non-zero when it reports anything.
    result = _run(worktree, "diff", "--check", "--no-color", "HEAD", check=False)
    paths = set()
    for line in _text(result.stdout).splitlines():
        match = re.match(r"(.+):\d+: leftover conflict marker", line)
        if match:
            paths.add(match.group(1))
    return sorted(paths)


def commit_all(worktree: Path, message: str, *, allow_empty: bool = False) -> str | None:
    """Stage every change (new, modified, deleted files) and commit it; return the new HEAD.

    Returns None when nothing changed, unless `allow_empty` (then an empty commit records
    the step all the same). During a merge (after `merge_into_worktree` reported
    conflicts) the commit concludes the merge, and it is refused with GitError while any file
    still holds conflict markers; nothing is staged then, so git still lists the conflicts.
    """
    worktree = Path(worktree)
    merging = _merge_in_progress(worktree)
    if merging:
        leftover = _files_with_conflict_markers(worktree)
        if leftover:
            raise GitError(
                "Refusing to commit: conflict markers remain in " + ", ".join(leftover) + ". "
                "Resolve every <<<<<<< ======= >>>>>>> block first."
            )
    _git(worktree, "add", "--all")
    if not merging and _succeeds(worktree, "diff", "--cached", "--quiet"):
        if not allow_empty:
            return None
        _git(worktree, "commit", "--quiet", "--allow-empty", "--message", message)
        return head_commit(worktree)
    _git(worktree, "commit", "--quiet", "--message", message)
    return head_commit(worktree)


def changed_paths(worktree: Path, since_commit: str) -> list[str]:
    """Repo-relative paths that differ between `since_commit` and the working tree, sorted.

    Includes uncommitted and untracked (not ignored) files; a rename lists both paths.
    """
    tracked = _git(worktree, "diff", "--name-only", "--no-renames", "-z", since_commit)
    untracked = _git(worktree, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted(set(_nul_separated(tracked)) | set(_nul_separated(untracked)))


def diff_since(worktree: Path, since_commit: str, limit: int = 20000) -> str:
    """A unified diff from `since_commit` to the working tree, untracked files included.

    For display: capped at `limit` characters with a note saying how much was cut. The
    worktree's own index is not touched; untracked files are staged into a temporary copy.
    """
    worktree = Path(worktree)
    index = Path(
        _git(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index").strip()
    )
    fd, name = tempfile.mkstemp(dir=index.parent, prefix=f"{index.name}.orchestra-diff-")
    os.close(fd)
    snapshot = Path(name)
    try:
        if index.exists():
            snapshot.write_bytes(index.read_bytes())
        else:
            snapshot.unlink()  # git rejects an empty index file but creates a missing one
        env = {"GIT_INDEX_FILE": str(snapshot)}
        _git(worktree, "add", "--all", env=env)
        diff = _git(
            worktree, "diff", "--cached", "--no-color", "--no-ext-diff", since_commit, env=env
        )
    finally:
        snapshot.unlink(missing_ok=True)
    return _capped(diff, limit, "diff")


def _capped(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {what} truncated: {len(text) - limit} more characters]\n"


# -- Merging -----------------------------------------------------------------------------------


def merge_step(
    repo: Path, run_branch: str, step_branch: str, integration_path: Path, message: str
) -> MergeOutcome:
    """Integrate `step_branch` into `run_branch` with a merge commit: the merge queue.

    A clean merge is computed with `git merge-tree` and committed without a checkout. On
    conflict the merge is replayed in the integration worktree at `integration_path`
    (created on `run_branch` if missing; leftovers of an interrupted merge there are
    discarded first) to collect the conflict hunks, then aborted, so the run branch is
    untouched, and the outcome lists the conflicts. A step branch that is already merged is a
    no-op returning the current head. Holds the repository lock for the whole merge: one
    merge at a time per repository.
    """
    integration_path = Path(integration_path)
    with _repository_lock(repo):
        run_head, step_head = _git(
            repo, "rev-parse", f"refs/heads/{run_branch}", f"refs/heads/{step_branch}"
        ).split()
        if _is_ancestor(repo, step_head, run_head):
            return MergeOutcome(ok=True, commit=run_head)
        # The clean case, in git's object store alone: no files are checked out or written.
        tree = _run(repo, "merge-tree", "--write-tree", run_head, step_head, check=False)
        if tree.returncode == 0:
            commit = _git(
                repo,
                "commit-tree",
                _text(tree.stdout).split()[0],
                "-p",
                run_head,
                "-p",
                step_head,
                "-m",
                message,
            ).strip()
            # Compare-and-swap: the branch moves only from the head this merge was made on.
            _git(repo, "update-ref", f"refs/heads/{run_branch}", commit, run_head)
            return MergeOutcome(ok=True, commit=commit)
        # A conflict (or an error): a real merge in the integration worktree shows the
        # conflict hunks as git writes them, then is aborted.
        _add_worktree_locked(repo, integration_path, run_branch, run_branch)
        _reset_integration_worktree(integration_path)
        result = _run(
            integration_path,
            "merge",
            "--no-ff",
            "--message",
            message,
            step_branch,
            check=False,
        )
        if result.returncode == 0:
            return MergeOutcome(ok=True, commit=head_commit(integration_path))
        conflicts = _unmerged_paths(integration_path)
        if not conflicts:
            _reset_integration_worktree(integration_path)
            stderr = _text(result.stderr).strip() or _text(result.stdout).strip()
            raise GitError(
                f"`git merge {step_branch}` failed in {integration_path}: {stderr}",
                ("merge", step_branch),
                stderr,
            )
        detail = _conflict_detail(integration_path, conflicts)
        _git(integration_path, "merge", "--abort")
        return MergeOutcome(ok=False, commit="", conflicts=conflicts, detail=detail)


def _reset_integration_worktree(path: Path) -> None:
    # Nobody works in the integration worktree; anything there beyond the run branch head is
    # debris of a merge that was interrupted (a killed process).
    if _merge_in_progress(path):
        _git(path, "merge", "--abort")
    _git(path, "reset", "--quiet", "--hard", "HEAD")
    _git(path, "clean", "--quiet", "--force", "-d")


def _is_ancestor(cwd: Path, ancestor: str, descendant: str) -> bool:
    result = _run(cwd, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    if result.returncode in (0, 1):
        return result.returncode == 0
    stderr = _text(result.stderr).strip()
    raise GitError(
        f"`git merge-base --is-ancestor {ancestor} {descendant}` failed in {cwd}: {stderr}",
        ("merge-base", "--is-ancestor", ancestor, descendant),
        stderr,
    )


def _conflict_detail(worktree: Path, conflicts: list[str]) -> str:
    """Each conflicting file's conflict hunks with a little context, capped for display."""
    stages = _unmerged_stages(worktree)
    sections = []
    for relative in conflicts:
        present = stages.get(relative, set())
        if 2 not in present:
            sections.append(f"=== {relative}: deleted on the run branch, changed by the step\n")
            continue
        if 3 not in present:
            sections.append(f"=== {relative}: changed on the run branch, deleted by the step\n")
            continue
        try:
            text = (worktree / relative).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        hunks = _conflict_hunks(text)
        if hunks:
            sections.append(f"=== {relative}\n{hunks}")
        else:
            sections.append(f"=== {relative}: both sides changed it (no text hunks to show)\n")
    return _capped("\n".join(sections), DETAIL_LIMIT, "conflict detail")


def _unmerged_stages(worktree: Path) -> dict[str, set[int]]:
    # Records look like "<mode> <sha> <stage>\t<path>"; stage 2 is ours, 3 is theirs.
    stages: dict[str, set[int]] = {}
    for record in _nul_separated(_git(worktree, "ls-files", "--unmerged", "-z")):
        info, _, relative = record.partition("\t")
        stages.setdefault(relative, set()).add(int(info.split()[2]))
    return stages


def _conflict_hunks(text: str) -> str:
    """The marked blocks of a conflicted file, each with a few lines around it and its line."""
    lines = text.splitlines()
    blocks: list[tuple[int, int]] = []
    start = None
    for number, line in enumerate(lines):
        if line.startswith("<<<<<<<") and start is None:
            start = number
        elif line.startswith(">>>>>>>") and start is not None:
            blocks.append((start, number))
            start = None
    windows: list[list[int]] = []
    for first, last in blocks:
        low = max(0, first - _CONTEXT_LINES)
        high = min(len(lines) - 1, last + _CONTEXT_LINES)
        if windows and low <= windows[-1][1] + 1:
            windows[-1][1] = high
        else:
            windows.append([low, high])
    return "".join(
        f"@@ line {low + 1} @@\n" + "\n".join(lines[low : high + 1]) + "\n" for low, high in windows
    )


def merge_into_worktree(worktree: Path, commit: str) -> list[str]:
    """Merge `commit` (e.g. the run branch head) into a step's worktree; return the conflicts.

    With conflicts the merge stays in progress and the files hold conflict markers for the
    agent to resolve; `commit_all` then concludes it. Without conflicts the merge is committed
    at once ("Merge run branch") and [] is returned. Precondition: no uncommitted changes that
    the merge would overwrite (git refuses, raising GitError); call `commit_all` first.
    """
    worktree = Path(worktree)
    result = _run(worktree, "merge", "--no-ff", "--no-commit", commit, check=False)
    if result.returncode == 0:
        if _merge_in_progress(worktree):
            _git(worktree, "commit", "--quiet", "--message", RUN_MERGE_MESSAGE)
        return []
    conflicts = _unmerged_paths(worktree)
    if not conflicts:
        stderr = _text(result.stderr).strip() or _text(result.stdout).strip()
        raise GitError(
            f"`git merge --no-ff --no-commit {commit}` failed in {worktree}: {stderr}",
            ("merge", "--no-ff", "--no-commit", commit),
            stderr,
        )
    return conflicts


# -- Reading -----------------------------------------------------------------------------------


def export_tree(repo: Path, commit: str, target: Path) -> None:
    """Extract the files of `commit` into `target` (created if missing), without `.git`.

    Files already in `target` are overwritten or left alone; pass a fresh folder for an exact
    copy.
    """
    archive = _run(repo, "archive", "--format=tar", head_commit(repo, commit)).stdout
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def file_at(repo: Path, commit: str, relative: str) -> str | None:
    """The text of file `relative` at `commit`, or None if it does not exist there."""
    sha = head_commit(repo, commit)  # a bad commit is an error, not an absent file
    result = _run(repo, "cat-file", "blob", f"{sha}:{PurePosixPath(relative)}", check=False)
    if result.returncode != 0:
        return None
    return _text(result.stdout)


def log_subjects(repo: Path, ref: str) -> list[str]:
    """The subject lines of the commits reachable from `ref`, newest first.

    Topological order: commits made within the same second still list children first.
    """
    return _nul_separated(_git(repo, "log", "--topo-order", "--format=%s", "-z", ref))
