"""Parked worktrees: a finished step's checkout kept for the next step to take.

Adding a worktree writes every file of the repository and removing one deletes them all, so
on a repository of 10,000 files a step spent more than a second and a half on the two. A
removed worktree is parked instead: its HEAD detached (so its branch is free again), and its
folder moved under the common git directory, still registered. The next worktree added
takes a parked one: the folder moves to its path, HEAD goes to its branch, and the checkout
rewrites only the files that differ between the two commits and removes whatever the
commit does not hold (changes, untracked and ignored files). The clean-up happens once,
when it is taken: cleaning at both ends walked every file of the repository twice a step
(a merge's conflicts left in its index are resolved when it is parked). Agents never see a
parked folder (their tools are confined to their own worktree, and nothing may read inside
`.git`).

A worktree known to hold exactly its commit skips the walk: a commit that staged every path
written since a clean start, naming them (`commit_all(changed=...)`), marks the worktree clean
at that commit (`mark_clean`), and whatever may write in it afterwards (a tool other than a
read, a check, a merge or reset in it, another commit) takes the mark off first (`unmark`).
The mark lives in the worktree's registration inside the git directory, which no sandboxed
command may write; taking it off empties the file rather than deleting it (see `_unmarked`).
A worktree parked with its mark is parked without reading its index, and taken by checking
out only the paths that differ between its commit and the branch's: neither end then costs
more on a larger repository.

Parking and claiming a parked worktree run under the repository lock (their callers hold
it): a prune must not find a registration whose folder is moving. Checking a claimed one out
writes only in its own folder and registration, and runs outside the lock, so one step's
checkout does not hold up every other step's worktree and merge. Whatever does not go as
planned deletes the parked worktree, and the caller falls back to a fresh add or removal.
"""

import contextlib
import os
import shutil
from pathlib import Path

import pygit2
from pygit2.enums import CheckoutStrategy

from agents.inplace import rewrite
from agents.workspace import libgit
from agents.workspace.gitcmd import GitError, common_dir

# The clean-up at both ends: tracked files exactly as committed, nothing else left.
_CLEAN = (
    CheckoutStrategy.FORCE | CheckoutStrategy.REMOVE_UNTRACKED | CheckoutStrategy.REMOVE_IGNORED
)


def parked_dir(repo: Path) -> Path:
    return common_dir(repo) / "orchestra-parked"


# Only the paths that differ, exactly as named (no pattern matching), made as committed.
_PATHS = CheckoutStrategy.FORCE | CheckoutStrategy.DISABLE_PATHSPEC_MATCH

# In a worktree's registration: the commit the worktree holds exactly, when that is known.
_MARK = "orchestra-clean"


def mark_clean(path: Path, commit: str) -> None:
    """The worktree at `path` holds exactly `commit`: no change, no untracked or ignored file,
    no merge in progress. Only for a caller that knows it (see `commit_all`)."""
    with contextlib.suppress(OSError):
        rewrite(_admin_dir(path) / _MARK, commit)


def unmark(path: Path) -> None:
    """Something may write in the worktree at `path`: it is no longer known clean. Nothing
    when `path` holds no worktree."""
    with contextlib.suppress(OSError):
        _unmarked(_admin_dir(path))


def _unmarked(admin: Path) -> None:
    """The mark of the worktree registered at `admin` taken off: its file emptied, not
    deleted. A step marked and unmarked its worktree once or twice, and a file deleted and
    another created costs more than its bytes: on an ext4 without a journal, each file created
    looks past every inode of its block group freed in the last minute (five while their table
    is not yet written back: the kernel's `recently_deleted`), which in a 200-step plan was a
    third of the embedded worker's time."""
    try:
        if os.stat(admin / _MARK).st_size:
            os.truncate(admin / _MARK, 0)
    except FileNotFoundError:
        pass


def known_clean(path: Path) -> str:
    """The commit the worktree at `path` is known to hold exactly, or ""."""
    try:
        return _clean_at(_admin_dir(path))
    except OSError:
        return ""


def _clean_at(admin: Path) -> str:
    """The commit the worktree registered at `admin` is known to hold exactly, or ""."""
    try:
        return (admin / _MARK).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def park(repo: Path, path: Path, keep: int) -> bool:
    """Park the worktree at `path` (registered in `repo`) when fewer than `keep` are parked;
    False when it was not (the caller deletes it)."""
    shelf = parked_dir(repo)
    if keep <= 0 or (shelf.is_dir() and len(os.listdir(shelf)) >= keep):
        return False
    admin = _admin_dir(path)
    try:
        worktree = libgit.open_repository(path)
        if not worktree.head_is_unborn:
            commit = worktree.head.peel(pygit2.Commit)
            if _clean_at(admin) != str(commit.id):
                _unmarked(admin)
                worktree.state_cleanup()  # a merge left in progress
                if worktree.index.conflicts is not None:  # its conflicts, resolved here
                    worktree.checkout_tree(commit.tree, strategy=_CLEAN)
            rewrite(admin / "HEAD", f"{commit.id}\n")  # detached, as `set_head` would
        shelf.mkdir(exist_ok=True)
        os.rename(path, shelf / admin.name)
    except (OSError, pygit2.GitError, GitError):
        return False
    try:
        _point(admin, shelf / admin.name)
    except OSError:
        discard(admin, shelf / admin.name)
    return True


def claim(repo: Path, path: Path) -> Path | None:
    """Move a parked worktree to `path`; its registration, for `check_out`, or None when
    none is parked. Under the repository lock: a prune between the move and the pointer's
    rewrite would forget the registration."""
    shelf = parked_dir(repo)
    try:
        names = sorted(os.listdir(shelf))
    except FileNotFoundError:
        return None
    for name in names:
        parked = shelf / name
        admin = common_dir(repo) / "worktrees" / name
        try:
            os.rename(parked, path)
        except OSError:
            continue  # another filesystem, or the path appeared: leave it parked
        try:
            _point(admin, path)
        except OSError:
            discard(admin, path)
            return None
        return admin
    return None


def check_out(path: Path, admin: Path, branch: str) -> bool:
    """Check `branch` out in the worktree claimed at `path`; False when that failed (the
    worktree is deleted). Needs no repository lock: it writes only in this worktree's folder
    and registration (and the claim refused a branch checked out elsewhere)."""
    try:
        worktree = libgit.open_repository(path)
        _check_out(worktree, admin, worktree.references[f"refs/heads/{branch}"])
    except (OSError, KeyError, pygit2.GitError, GitError):
        discard(admin, path)
        return False
    return True


def _check_out(worktree: pygit2.Repository, admin: Path, branch_ref: pygit2.Reference) -> None:
    """Put `branch_ref` in the taken worktree: a worktree known clean gets only the paths
    that differ between its commit and the branch's; any other is cleaned, walking it all."""
    clean = _clean_at(admin)
    _unmarked(admin)
    target = worktree[branch_ref.target].peel(pygit2.Commit)  # read in the worktree's own
    if clean and not worktree.head_is_unborn:
        held = worktree.head.peel(pygit2.Commit)
        if str(held.id) == clean:
            paths = libgit.differing(worktree, held.tree, target.tree)
            try:
                if paths:  # before HEAD moves: what differs from HEAD is what is replaced
                    worktree.checkout_tree(target.tree, paths=paths, strategy=_PATHS)
                _point_head(admin, branch_ref.name)
                return
            except pygit2.GitError:
                pass  # e.g. a file where a folder goes: the whole walk below sorts it out
    _point_head(admin, branch_ref.name)
    worktree.checkout_head(strategy=_CLEAN)


def _point_head(admin: Path, ref_name: str) -> None:
    """The worktree's HEAD on the branch `ref_name`, written in place: libgit2's `set_head`
    writes a lock file and renames it over HEAD (a file created, one freed: see `_unmarked`).
    Nor did its check of a branch checked out in another worktree ever run here: it runs only
    when HEAD is on a branch already, and a parked worktree's is detached. The claim checks
    that instead (`branch_checked_out`)."""
    rewrite(admin / "HEAD", f"ref: {ref_name}\n")


def branch_checked_out(repo: Path, ref_name: str) -> bool:
    """Whether a worktree of `repo` (or `repo` itself) has the branch `ref_name` checked
    out: what `set_head` refuses. Reads each registration's HEAD file, no repository."""
    wanted = f"ref: {ref_name}"
    heads = [common_dir(repo) / "HEAD"]
    with contextlib.suppress(FileNotFoundError):
        heads += [entry / "HEAD" for entry in (common_dir(repo) / "worktrees").iterdir()]
    for head in heads:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if head.read_text(encoding="utf-8").strip() == wanted:
                return True
    return False


def discard(admin: Path, path: Path) -> None:
    """Forget a worktree: its folder and its registration."""
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(admin, ignore_errors=True)


def _admin_dir(path: Path) -> Path:
    return registration_named(path, (Path(path) / ".git").read_text(encoding="utf-8"))


def registration_named(path: Path, pointer: str) -> Path:
    """The registration folder that `pointer` (the text of the `.git` file of the worktree at
    `path`) names. Git and `_point` write it absolute and resolved: it is taken as written
    (resolving it again cost a system call for each folder on its way, seven times a step); a
    relative one is resolved."""
    named = pointer.removeprefix("gitdir: ").strip()
    if os.path.isabs(named):
        return Path(os.path.normpath(named))
    return (Path(path) / named).resolve()


def _point(admin: Path, path: Path) -> None:
    # The registration's `gitdir` file says where the worktree is (`git worktree prune` forgets
    # a registration whose worktree is gone); the worktree's `.git` file names the
    # registration, which does not move: it is written only when it does not name it already,
    # absolutely (git may have written it relative), since writing a file costs some thirty
    # reads of it.
    dot_git = Path(path).absolute() / ".git"
    rewrite(admin / "gitdir", f"{dot_git}\n")
    pointer = f"gitdir: {admin}\n"
    if dot_git.read_text(encoding="utf-8") != pointer:
        rewrite(dot_git, pointer)
