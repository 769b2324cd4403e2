"""Worktrees and the work in them: add and remove them, commit, list and show changes."""

import os
import re
import tempfile
from pathlib import Path

from agents.workspace.gitcmd import (
    GitError,
    capped,
    decoded,
    git_output,
    nul_separated,
    repository_lock,
    run_git,
    succeeds,
)
from agents.workspace.repository import head_commit, ref_exists

# -- Worktrees ---------------------------------------------------------------------------------


def _worktrees(repo: Path) -> list[dict[str, str]]:
    """The repository's worktrees as `git worktree list --porcelain` records."""
    records: list[dict[str, str]] = []
    record: dict[str, str] = {}
    for item in git_output(repo, "worktree", "list", "--porcelain", "-z").split("\0"):
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
    with repository_lock(repo):
        return add_worktree_locked(repo, Path(path), branch, start_commit)


def add_worktree_locked(repo: Path, path: Path, branch: str, start_commit: str) -> Path:
    git_output(repo, "worktree", "prune")  # forget worktrees whose folder was deleted
    existing = _registered_worktree(repo, path)
    if existing is not None:
        if existing.get("branch") == f"refs/heads/{branch}":
            return path
        current = existing.get("branch", "a detached HEAD").removeprefix("refs/heads/")
        raise GitError(f"{path} is already a worktree on {current}, not on {branch}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ref_exists(repo, f"refs/heads/{branch}"):
        git_output(repo, "worktree", "add", "--quiet", str(path), branch)
    else:
        git_output(repo, "worktree", "add", "--quiet", "-b", branch, str(path), start_commit)
    return path


def remove_worktree(repo: Path, path: Path) -> None:
    """Remove the worktree at `path` even with uncommitted changes, then prune.

    No error if it is already gone. The branch is kept. Holds the repository lock.
    """
    with repository_lock(repo):
        git_output(repo, "worktree", "prune")
        if _registered_worktree(repo, path) is not None:
            git_output(repo, "worktree", "remove", "--force", "--force", str(path))
        git_output(repo, "worktree", "prune")


# -- Work in a worktree -------------------------------------------------------------------------


def merge_in_progress(worktree: Path) -> bool:
    return succeeds(worktree, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")


def unmerged_paths(worktree: Path) -> list[str]:
    output = git_output(worktree, "diff", "--name-only", "--diff-filter=U", "-z")
    return sorted(set(nul_separated(output)))


def _files_with_conflict_markers(worktree: Path) -> list[str]:
    # `git diff --check` reports conflict markers on lines added since HEAD (and whitespace
    # errors, which are not our business here); it exits non-zero when it reports anything.
    result = run_git(worktree, "diff", "--check", "--no-color", "HEAD", check=False)
    paths = set()
    for line in decoded(result.stdout).splitlines():
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
    merging = merge_in_progress(worktree)
    if merging:
        leftover = _files_with_conflict_markers(worktree)
        if leftover:
            raise GitError(
                "Refusing to commit: conflict markers remain in " + ", ".join(leftover) + ". "
                "Resolve every <<<<<<< ======= >>>>>>> block first."
            )
    git_output(worktree, "add", "--all")
    if not merging and succeeds(worktree, "diff", "--cached", "--quiet"):
        if not allow_empty:
            return None
        git_output(worktree, "commit", "--quiet", "--allow-empty", "--message", message)
        return head_commit(worktree)
    git_output(worktree, "commit", "--quiet", "--message", message)
    return head_commit(worktree)


def changed_paths(worktree: Path, since_commit: str) -> list[str]:
    """Repo-relative paths that differ between `since_commit` and the working tree, sorted.

    Includes uncommitted and untracked (not ignored) files; a rename lists both paths.
    """
    tracked = git_output(worktree, "diff", "--name-only", "--no-renames", "-z", since_commit)
    untracked = git_output(worktree, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted(set(nul_separated(tracked)) | set(nul_separated(untracked)))


def diff_since(worktree: Path, since_commit: str, limit: int = 20000) -> str:
    """A unified diff from `since_commit` to the working tree, untracked files included.

    For display: capped at `limit` characters with a note saying how much was cut. The
    worktree's own index is not touched; untracked files are staged into a temporary copy.
    """
    worktree = Path(worktree)
    index = Path(
        git_output(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index").strip()
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
        git_output(worktree, "add", "--all", env=env)
        diff = git_output(
            worktree, "diff", "--cached", "--no-color", "--no-ext-diff", since_commit, env=env
        )
    finally:
        snapshot.unlink(missing_ok=True)
    return capped(diff, limit, "diff")
