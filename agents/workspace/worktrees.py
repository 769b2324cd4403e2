"""Worktrees and the work in them: add and remove them, commit, list and show changes."""

import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pygit2
from pygit2.enums import ReferenceType

from agents.workspace import libgit, parking
from agents.workspace.gitcmd import (
    GitError,
    capped,
    common_dir,
    decoded,
    git_output,
    nul_separated,
    repository_lock,
    run_git,
    succeeds,
)
from agents.workspace.repository import head_commit, ref_exists

# -- Worktrees ---------------------------------------------------------------------------------


def add_worktree(repo: Path, path: Path, branch: str, start_commit: str) -> Path:
    """Check `branch` out in a new worktree at `path`; return `path`.

    The branch is created at `start_commit` if missing; an existing branch is checked out as it
    is. Idempotent: a worktree already at `path` on `branch` is returned untouched; one on
    another branch raises GitError. Holds the repository lock to register the worktree (or
    claim a parked one), not while its files are written: those are its own.
    """
    path = Path(path)
    with repository_lock(repo):
        needed, claimed = _begin_add(repo, path, branch, start_commit)
    # Its files, outside the lock: a claimed worktree's are its own, and git registers a fresh
    # one locked ("initializing") until it is complete, so a prune meanwhile leaves it alone.
    if needed and not _fill(repo, path, branch, start_commit, claimed, prune=False):
        with repository_lock(repo):  # a stale registration in the way: pruned, then again
            _add_with_git(repo, path, branch, start_commit, prune=True)
    return path


def add_worktree_locked(repo: Path, path: Path, branch: str, start_commit: str) -> Path:
    """`add_worktree` for a caller that holds the repository lock."""
    needed, claimed = _begin_add(repo, path, branch, start_commit)
    if needed:
        _fill(repo, path, branch, start_commit, claimed, prune=True)
    return path


def _fill(
    repo: Path, path: Path, branch: str, start_commit: str, claimed: Path | None, *, prune: bool
) -> bool:
    """The worktree's files: the claimed parked one checked out, else a fresh one added by
    git (`_add_with_git`, with `prune`); False when git refused and did not prune."""
    if claimed is not None and parking.check_out(path, claimed, branch):
        return True
    return _add_with_git(repo, path, branch, start_commit, prune=prune)


def _begin_add(repo: Path, path: Path, branch: str, start_commit: str) -> tuple[bool, Path | None]:
    """The part of adding a worktree that needs the repository lock. Returns whether a
    worktree is still needed (False: it is there already) and, when a parked one was claimed
    for `path`, its registration, for `parking.check_out`; when none was, git adds a fresh
    one (`_add_with_git`).

    A parked worktree is taken in process (no git process to start). A fresh checkout, and
    whatever libgit2 does not do as git would (a folder already there, filters configured in
    the repository), goes to `git worktree add`, and the worktree list is pruned only when
    that fails, since its cost grows with the number of worktrees (a folder deleted without
    `git worktree remove` stays registered and makes git refuse the path or the branch)."""
    current = _worktree_branch(repo, path)
    if current is not None:
        if current == f"refs/heads/{branch}":
            return False, None
        shown = current.removeprefix("refs/heads/") or "a detached HEAD"
        raise GitError(f"{path} is already a worktree on {shown}, not on {branch}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return True, _claim_parked(repo, path, branch, start_commit)


def _claim_parked(repo: Path, path: Path, branch: str, start_commit: str) -> Path | None:
    """A parked worktree moved to `path` for the branch (created when missing): its
    registration, or None when none could be claimed, and git adds a fresh one instead.

    A fresh checkout writes every file of the repository, and pygit2's `add_worktree` holds
    the interpreter's lock all along (half a second on a 500-file repository, while every
    other thread of an embedded worker waits): git does it, in a process of its own."""
    repository = libgit.open_repository(repo)
    if path.exists() or any(entry.name.startswith("filter.") for entry in repository.config):
        return None
    try:
        if repository.branches.local.get(branch) is None:
            repository.branches.local.create(branch, libgit.commit_of(repository, start_commit))
        elif parking.branch_checked_out(repo, f"refs/heads/{branch}"):
            return None  # git refuses it, and says why
        return parking.claim(repo, path)
    except (pygit2.GitError, GitError, ValueError):
        shutil.rmtree(path, ignore_errors=True)
        return None


def _add_with_git(repo: Path, path: Path, branch: str, start_commit: str, *, prune: bool) -> bool:
    """`git worktree add`; with `prune`, a refusal prunes the worktree list and tries once
    more (which needs the repository lock), else it returns False."""
    if ref_exists(repo, f"refs/heads/{branch}"):
        arguments = ("worktree", "add", "--quiet", str(path), branch)
    else:
        arguments = ("worktree", "add", "--quiet", "-b", branch, str(path), start_commit)
    if run_git(repo, *arguments, check=False).returncode == 0:
        return True
    if not prune:
        return False
    git_output(repo, "worktree", "prune")
    git_output(repo, *arguments)
    return True


def _worktree_branch(repo: Path, path: Path) -> str | None:
    """The ref checked out in the worktree of `repo` at `path` ("" for a detached HEAD), or
    None when `path` holds no worktree of this repository."""
    if not _registered(repo, path):
        return None
    head = libgit.open_repository(path).references.get("HEAD")
    if head is None:
        return None
    return head.target if head.type == ReferenceType.SYMBOLIC else ""


def _registered(repo: Path, path: Path) -> bool:
    """Whether `path` holds a worktree registered in `repo`: its `.git` file points at a
    registration folder in the repository's common git directory."""
    try:
        pointer = (Path(path) / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # missing, a folder (a repository), unreadable
        return False
    if not pointer.startswith("gitdir: "):
        return False
    admin = parking.registration_named(path, pointer)
    registrations = common_dir(repo) / "worktrees"  # as git said it: absolute and resolved
    if admin.parent != registrations:  # not as written: as the filesystem resolves them
        admin, registrations = admin.resolve(), registrations.resolve()
    return admin.parent == registrations and (admin / "HEAD").is_file()


def remove_worktree(repo: Path, path: Path) -> None:
    """Remove the worktree at `path` even with uncommitted changes, then prune.

    No error if it is already gone. The branch is kept. Locks as `remove_worktrees` does.
    """
    remove_worktrees(repo, [path])


def remove_worktrees(repo: Path, paths: list[Path], *, park: int = 0) -> None:
    """Remove the worktrees at `paths` (each as `remove_worktree` does), then prune once.

    What `git worktree remove --force --force` does, without a process per worktree: each
    registered worktree's folder is deleted, and the one prune forgets their registrations.
    With `park`, up to that many are parked instead, for later worktrees to take
    (`parking`), and when every one was parked nothing is pruned (parked worktrees stay
    registered). Holds the repository lock to park and to prune, not while deleting.
    """
    with repository_lock(repo):
        doomed = [path for path in paths if _registered(repo, path)]
        doomed = [path for path in doomed if not parking.park(repo, path, park)]
    # Deleting files needs no lock (a prune meanwhile forgets the registration, as the one
    # below will); forgetting them does.
    for path in doomed:
        shutil.rmtree(path, onerror=_writable_and_retry)
    if doomed or not park:
        with repository_lock(repo):
            git_output(repo, "worktree", "prune")


def _writable_and_retry(function, path, _info) -> None:
    # An agent may leave a read-only folder behind: make it writable and try again.
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if function in (os.unlink, os.rmdir):
            function(path)
        else:  # a folder that could not be opened or listed
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=_writable_and_retry)
    except FileNotFoundError:
        pass


# -- Work in a worktree -------------------------------------------------------------------------


def merge_in_progress(worktree: Path) -> bool:
    return libgit.has_ref(libgit.open_repository(worktree), "MERGE_HEAD")


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


def commit_all(
    worktree: Path,
    message: str,
    *,
    allow_empty: bool = False,
    changed: Iterable[str] | None = None,
) -> str | None:
    """Stage every change (new, modified, deleted files) and commit it; return the new HEAD.
    With `changed` (every path that may differ from HEAD, as the caller knows it: a clean
    worktree written only by tools that say what they write), only those paths are staged,
    and the worktree is not walked: its cost does not grow with the repository.

    Returns None when nothing changed, unless `allow_empty` (then an empty commit records
    the step all the same). During a merge (after `merge_into_worktree` reported
    conflicts) the commit concludes the merge, and it is refused with GitError while any file
    still holds conflict markers; nothing is staged then, so git still lists the conflicts.

    In process (libgit2) but for the merge, which the command line concludes: staging honours
    `.gitignore` as `git add --all` does, and the commit carries the fixed identity and the
    message as `git commit --message` would store it. A worktree committed by `changed` with
    every one of them staged (none ignored, none removed) holds its commit exactly after:
    it is marked clean (`parking.mark_clean`), for parking and taking it without a walk.
    """
    worktree = Path(worktree)
    parking.unmark(worktree)
    repository = libgit.open_repository(worktree)
    if libgit.has_ref(repository, "MERGE_HEAD"):
        return _conclude_merge(worktree, message)
    index = repository.index
    index.read(False)  # as on disk now, if a kept repository read it before (`open_repository`)
    parent = None if repository.head_is_unborn else repository.head.peel(pygit2.Commit)
    try:
        staged = None if changed is None else _staged(repository, index, worktree, changed)
        if staged is None:
            index.add_all()
        tree = _staged_tree(repository, index, parent, staged.paths) if staged and parent else None
        if tree is None:
            tree = index.write_tree()
        index.write()
    except pygit2.GitError:  # what libgit2 cannot stage (say, a repository inside): git can
        return _commit_with_git(worktree, message, allow_empty)
    parents = [] if parent is None else [parent.id]
    if parent is not None and parent.tree_id == tree and not allow_empty:
        head = None
    else:
        author = libgit.signature()
        message = libgit.cleaned_message(message)
        head = str(repository.create_commit("HEAD", author, author, message, tree, parents))
    if staged and staged.exact and (head or parents):
        parking.mark_clean(worktree, head or str(parents[0]))
    return head


def _staged_tree(
    repository: pygit2.Repository, index: pygit2.Index, parent: pygit2.Commit, paths: list[str]
) -> pygit2.Oid | None:
    """The tree of `index` when it held `parent`'s tree before `paths` were staged: the
    parent's tree with those paths as the index has them now (`libgit.tree_with`), which
    reads and writes only the folders on them. `Index.write_tree` writes the same tree, then
    reads every folder of the repository back into the index's cache. None when a path is
    not a change by name (a file where a folder was): the caller asks the index."""
    if index.conflicts is not None:
        return None  # the index refuses a tree: as it says
    changes: dict[str, tuple[pygit2.Oid, int] | None] = {}
    for path in paths:
        try:
            entry = index[path]
        except KeyError:  # removed
            changes[path] = None
        else:
            changes[path] = (entry.id, entry.mode)
    try:
        return libgit.tree_with(repository, parent.tree, changes)
    except libgit.NotAnUpdate:
        return None


class _Staged(NamedTuple):
    exact: bool  # the worktree holds nothing but the index
    paths: list[str]  # as the index names them


def _staged(
    repository: pygit2.Repository, index: pygit2.Index, worktree: Path, paths: Iterable[str]
) -> _Staged | None:
    """Stage `paths` in `index` as `git add --all` would stage them (a file added or updated
    unless ignored and untracked, a missing one removed). None when one cannot be staged by
    its name (outside the worktree, in `.git`, a folder, under a symbolic link): then the
    caller stages everything. Else whether the worktree holds nothing but the index after
    (False: an ignored file written, or a file removed, whose folder may stay), and the
    paths as the index names them."""
    exact = True
    named = []
    for path in paths:
        relative = posixpath.normpath(path)
        named.append(relative)
        parts = relative.split("/")
        if relative.startswith("/") or parts[0] in ("..", ".") or ".git" in parts:
            return None
        full = worktree / relative
        try:
            if any((worktree / "/".join(parts[:n])).is_symlink() for n in range(1, len(parts))):
                return None
            if full.is_symlink() or full.is_file():
                if relative in index or not repository.path_is_ignored(relative):
                    index.add(relative)
                else:
                    exact = False
            elif full.exists():
                return None  # a folder
            elif relative in index:
                index.remove(relative)
                exact = False
        except (OSError, pygit2.GitError, ValueError):
            return None
    return _Staged(exact, named)


def _commit_with_git(worktree: Path, message: str, allow_empty: bool) -> str | None:
    git_output(worktree, "add", "--all")
    if succeeds(worktree, "diff", "--cached", "--quiet"):
        if not allow_empty:
            return None
        git_output(worktree, "commit", "--quiet", "--allow-empty", "--message", message)
    else:
        git_output(worktree, "commit", "--quiet", "--message", message)
    return head_commit(worktree)


def _conclude_merge(worktree: Path, message: str) -> str:
    leftover = _files_with_conflict_markers(worktree)
    if leftover:
        raise GitError(
            "Refusing to commit: conflict markers remain in " + ", ".join(leftover) + ". "
            "Resolve every <<<<<<< ======= >>>>>>> block first."
        )
    git_output(worktree, "add", "--all")
    git_output(worktree, "commit", "--quiet", "--message", message)
    return head_commit(worktree)


def changed_between(repo: Path, old: str, new: str) -> list[str]:
    """Repo-relative paths that differ between commits `old` and `new`, sorted; a rename
    lists both paths. Read in process; right after `commit_all` it equals `changed_paths`."""
    return libgit.changed_between(_objects_of(repo), old, new)


def _objects_of(path: Path) -> pygit2.Repository:
    """A repository that reads the objects of the repository or worktree at `path`: for a
    worktree, the kept instance of its main repository (a worktree's objects are its main
    repository's), found from its `.git` file, rather than the worktree opened again (some
    sixty system calls, and an object cache that starts cold)."""
    try:
        pointer = (Path(path) / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # a main repository's `.git` is a folder
        return libgit.open_repository(path)
    if not pointer.startswith("gitdir: "):
        return libgit.open_repository(path)
    common = parking.registration_named(path, pointer).parent.parent
    return libgit.open_repository(common.parent if common.name == ".git" else path)


def start_point(repo: Path, base: str, head: str, claims: list[str]) -> str:
    """Where a step without dependencies is cut: the run's `base`, when every path it claims
    (`claims`) is there as at the run's `head`; else `head`. Read in process."""
    if base == head or libgit.same_paths(libgit.open_repository(repo), base, head, claims):
        return base
    return head


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
