"""Git in process through libgit2 (pygit2): refs, commits, trees and merges without a fork.

A step's path (its worktree, its base, its commit, the files it touched, its merge) reads and
writes the repository here: each `git` process costs a few milliseconds, more on a loaded
machine, and a step used to start two dozen of them. What is rare or shown to people (a
merge where both sides changed the same paths and its conflicts, diffs, clones, a run's
branch) still runs the git command line through `gitcmd`.

The same rules as `gitcmd`: the fixed identity and no outside configuration (the system,
global and XDG git configuration are not read), no hooks (libgit2 runs none), and failures
raise `GitError`.
"""

import os
import threading
from pathlib import Path

import pygit2
from pygit2.enums import ConfigLevel, FileMode, RepositoryOpenFlag

from agents.workspace.gitcmd import GitError

IDENTITY = ("Orchestra", "orchestra@localhost")

# Like GIT_CONFIG_NOSYSTEM and GIT_CONFIG_GLOBAL=/dev/null for the command line: only the
# repository's own configuration counts. Process-wide, and nothing else here uses libgit2.
for _level in (ConfigLevel.SYSTEM, ConfigLevel.GLOBAL, ConfigLevel.XDG, ConfigLevel.PROGRAMDATA):
    pygit2.settings.search_path[_level] = ""

# libgit2's strict object creation reads back every object a new tree or commit names, to
# check it exists and has the right type: a step's commit read every file of each folder it
# wrote in (a folder that all of a plan's steps write to grows with the plan), and its merge
# the same again. Everything named here was read from this repository or written to it just
# before (the index's blobs, the trees of a merge), as `git commit-tree` and `git mktree`
# trust their input; git's own `fsck` is what checks a repository's objects.
pygit2.settings.enable_strict_object_creation(False)


def open_repository(path: Path) -> pygit2.Repository:
    """The repository or worktree at `path` exactly (no search upwards from a subfolder).

    A main repository (its `.git` a folder: a project's central one) is opened once per
    thread and kept (see `_kept`); a worktree (its `.git` a file) is opened each time."""
    kept = _kept(path)
    if kept is not None:
        return kept
    return _opened(path)


def _opened(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError, OSError) as exc:
        raise GitError(f"{path} is not a git repository git can open here: {exc}") from exc


# Each thread's open main repositories: path -> (identity, repository). Opening one reads its
# configuration, HEAD and the pack folder, and a new instance starts with a cold object
# cache; a step opened its project's repository four times (its base, its branch, its merge,
# the run's head). libgit2 reads refs, loose objects and the configuration from disk when
# they change, so a kept instance sees other processes' writes; its identity (the config
# file's inode and change time) tells a repository deleted and made again at the same path.
# A libgit2 repository is not shared between threads, hence one per thread.
_KEPT_AT_MOST = 8
_threads_kept = threading.local()


def _kept(path: Path) -> pygit2.Repository | None:
    try:
        config = os.stat(os.path.join(path, ".git", "config"))
    except OSError:
        return None  # a worktree, a bare repository, or none: opened each time
    identity = (config.st_dev, config.st_ino, config.st_ctime_ns)
    kept = _threads_kept.__dict__.setdefault("repositories", {})
    key = str(path)
    found = kept.get(key)
    if found is not None and found[0] == identity:
        return found[1]
    repository = _opened(path)
    if key not in kept and len(kept) >= _KEPT_AT_MOST:
        del kept[next(iter(kept))]  # the first kept
    kept[key] = (identity, repository)
    return repository


def signature() -> pygit2.Signature:
    """The fixed identity, dated now in the local time zone, as `git commit` would date it."""
    return pygit2.Signature(*IDENTITY)


def commit_of(repository: pygit2.Repository, ref: str) -> pygit2.Commit:
    """The commit `ref` names (a branch, a full ref, a sha, HEAD...), as `rev-parse --verify`."""
    try:
        return repository.revparse_single(ref).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        where = repository.workdir or repository.path
        raise GitError(
            f"`git rev-parse --verify {ref}^{{commit}}` failed in {where}: {ref!r} names no "
            f"commit ({exc})",
            ("rev-parse", "--verify", f"{ref}^{{commit}}"),
            str(exc),
        ) from exc


def branch_ref(repository: pygit2.Repository, branch: str) -> pygit2.Reference:
    try:
        return repository.references[f"refs/heads/{branch}"]
    except KeyError as exc:
        raise GitError(f"No branch {branch} in {repository.path}.") from exc


def has_ref(repository: pygit2.Repository, ref: str) -> bool:
    return repository.references.get(ref) is not None


def cleaned_message(message: str) -> str:
    """A commit message as `git commit --message` stores it (its "whitespace" cleanup):
    trailing spaces cut, runs of blank lines squeezed to one, none at either end, a final
    newline."""
    lines: list[str] = []
    for line in message.splitlines():
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def changed_between(repository: pygit2.Repository, old: str, new: str) -> list[str]:
    """Repo-relative paths that differ between two commits, sorted; a rename lists both
    paths. Trees are compared, not files: unchanged folders are skipped by their ids."""
    return differing(repository, commit_of(repository, old).tree, commit_of(repository, new).tree)


def differing(repository: pygit2.Repository, old: pygit2.Tree, new: pygit2.Tree) -> list[str]:
    """Repo-relative paths that differ between two trees, sorted (see `changed_between`):
    the files libgit2's diff of the two names, found by opening only the folders whose ids
    differ. libgit2's diff reads every folder of both trees; in a repository just opened (a
    worktree is opened afresh each time) that was 0.56 ms against 0.07 for a one-file change
    in the benchmark's 532 files, and it grows with the repository, not with the change."""
    if old.id == new.id:  # a worktree parked at the commit it is taken for, say
        return []
    paths: list[str] = []
    _differing_under(repository, old, new, "", paths)
    return sorted(set(paths))


# Two folders holding more names than this between them are compared by libgit2's diff, which
# reads each name in C: with 10,000 files in 50 folders, half of them changed, walking every
# name in Python took 27.7 ms against 13.7 for libgit2's diff of the whole trees, and 11.6
# with each folder left to libgit2.
_WALKED_AT_MOST = 256


def _differing_under(repository, old: pygit2.Tree | None, new: pygit2.Tree | None, prefix, paths):
    """Add to `paths` the files that differ between the folders `old` and `new` (None: the
    folder is absent on that side), named under `prefix`."""
    if old is not None and new is not None and len(old) + len(new) > _WALKED_AT_MOST:
        for delta in repository.diff(old, new).deltas:
            paths += (prefix + delta.old_file.path, prefix + delta.new_file.path)
        return
    olds = {entry.name: entry for entry in old} if old is not None else {}
    news = {entry.name: entry for entry in new} if new is not None else {}
    for name in olds.keys() | news.keys():
        before, after = olds.get(name), news.get(name)
        if _key(before) == _key(after):
            continue
        folder_before, folder_after = _is_tree(before), _is_tree(after)
        if folder_before or folder_after:
            _differing_under(
                repository,
                repository[before.id] if folder_before else None,
                repository[after.id] if folder_after else None,
                f"{prefix}{name}/",
                paths,
            )
        if (before is not None and not folder_before) or (after is not None and not folder_after):
            paths.append(prefix + name)  # a file (or a link, a submodule) on either side


# Each commit's parents, by id: a commit never changes, so what was read once holds in any
# repository. A run branch's merges are walked again at every merge (`step_ancestry`). About
# 200 bytes a commit: 4 MB at most, the merges of fifty 200-step plans.
_PARENTS_KEPT = 20_000
_parents: dict[pygit2.Oid, tuple[pygit2.Oid, ...]] = {}


def parents_of(repository: pygit2.Repository, commit: pygit2.Oid) -> tuple[pygit2.Oid, ...]:
    known = _parents.get(commit)
    if known is None:
        known = tuple(repository[commit].parent_ids)
        remember_parents(commit, known)
    return known


def remember_parents(commit: pygit2.Oid, parents) -> None:
    """`commit` has `parents`: for a commit just made here, which then need not be read."""
    if len(_parents) >= _PARENTS_KEPT:
        _parents.clear()
    _parents[commit] = tuple(parents)


# How far the walks of `step_ancestry` go before leaving it to libgit2: a step's own commits
# are its attempts and revisions; a run branch's first-parent line, a merge a step.
_STEP_COMMITS = 64
_RUN_COMMITS = 20_000


def step_ancestry(
    repository: pygit2.Repository, head: pygit2.Oid, step_head: pygit2.Oid, cut_from: pygit2.Oid
) -> pygit2.Oid | None:
    """The merge base of a run branch at `head` and a step branch at `step_head` that was cut
    from `cut_from`, found by walking first parents only; `step_head` itself when the step is
    merged already (or made no commit). None when the shortcut does not hold (a merge on the
    step branch, say a conflict round's, or `cut_from` not on the run branch's first-parent
    line): the caller asks libgit2, whose walk of both sides' whole history (every commit dated
    within the same second, as a run's are, keeps it going to the run's base) took 3.4 ms at
    the 200th merge of a plan, twice a merge (its base and whether it is merged), under the
    repository lock.

    The step's commits back to `cut_from` each having one parent, and `cut_from` being on the
    run branch's line, `cut_from` is a common ancestor and no later one exists unless the
    step's head is on the run branch: that is, merged, which a merge commit on the line
    naming it as a parent (or the line reaching it) shows; a merge naming one of the step's
    earlier commits gives up."""
    try:
        return _along_first_parents(repository, head, step_head, cut_from)
    except KeyError:  # a commit this repository does not hold
        return None


def _along_first_parents(repository, head, step_head, cut_from) -> pygit2.Oid | None:
    own, commit = [], step_head
    while commit != cut_from:
        parents = parents_of(repository, commit)
        if len(parents) != 1 or len(own) >= _STEP_COMMITS:
            return None
        own.append(commit)
        commit = parents[0]
    commit, seen = head, 0
    while commit != cut_from:
        parents = parents_of(repository, commit)
        for reached in (commit, *parents[1:]):
            if reached == step_head:
                return step_head
            if reached in own:  # an earlier commit of the step was merged: a later base
                return None
        seen += 1
        if not parents or seen > _RUN_COMMITS:
            return None
        commit = parents[0]
    return cut_from


def same_paths(repository: pygit2.Repository, old: str, new: str, paths) -> bool:
    """Whether each of `paths` (repo-relative; a file or a folder) is the same in the two
    commits: absent from both, or the same entry (id and mode) in both. Only the folders on
    the paths are read."""
    old_tree, new_tree = commit_of(repository, old).tree, commit_of(repository, new).tree
    if old_tree.id == new_tree.id:
        return True
    return all(_at(old_tree, path) == _at(new_tree, path) for path in paths)


def _at(tree: pygit2.Tree, path: str) -> tuple | None:
    """The (id, mode) at `path` in `tree`, or None."""
    clean = path.strip("/")
    if not clean:
        return (tree.id, FileMode.TREE)
    try:
        return _key(tree[clean])
    except (KeyError, ValueError):
        return None


class NotAnUpdate(Exception):
    """A change `tree_with` does not make by name: a file where the tree has a folder, or
    under a name the tree holds as a file."""


def tree_with(
    repository: pygit2.Repository,
    tree: pygit2.Tree,
    changes: dict[str, tuple[pygit2.Oid, int] | None],
) -> pygit2.Oid:
    """The tree `tree` with each path of `changes` (repo-relative, normalised) set to its
    (id, file mode), or removed (None; a name the tree does not hold as a file is left as
    it is, as `git rm` of a missing file would); a folder left empty goes. Only the folders
    on the changed paths are read and written: what `Index.write_tree` gives for an index
    that held `tree` before these paths were staged, without libgit2 reading every folder
    of the repository back into the index's cache after it. Raises NotAnUpdate for a file
    where a folder was, or under a file."""
    written = _tree_with(repository, tree, _by_name(changes))
    return written if written is not None else repository.TreeBuilder().write()


def _tree_with(repository, tree, grouped: dict[str, dict]) -> pygit2.Oid | None:
    """`tree_with` below the root (`tree` may be None: a new folder); None when empty."""
    builder = repository.TreeBuilder(tree) if tree is not None else repository.TreeBuilder()
    for name, below in grouped.items():
        held = _entry(tree, name)
        if "" in below:  # the name itself
            if len(below) > 1:
                raise NotAnUpdate(name)
            change = below[""]
            if _is_tree(held):
                if change is not None:
                    raise NotAnUpdate(name)
            elif change is None:
                if held is not None:
                    builder.remove(name)
            else:
                builder.insert(name, change[0], change[1])
            continue
        if held is not None and not _is_tree(held):
            raise NotAnUpdate(name)
        folder = _tree_with(
            repository, repository[held.id] if held is not None else None, _by_name(below)
        )
        if folder is not None:
            builder.insert(name, folder, FileMode.TREE)
        elif held is not None:
            builder.remove(name)
    return builder.write() if len(builder) else None


class NotTrivial(Exception):
    """Both sides changed the same path: a merge for git's own machinery to decide."""


def trivial_merge(repository: pygit2.Repository, base, ours, theirs) -> pygit2.Oid:
    """The tree merging `ours` and `theirs` (trees) from `base` (a tree, or None) when every
    path changed on one side at most; raise NotTrivial otherwise.

    Only the names `theirs` changed are looked at (`differing` finds them), and only folders
    that differ on both sides are opened, so the cost follows what changed, not the
    repository's size nor how many files share a folder (a plan's steps all writing into one:
    at 200 files, looking at every name was 0.7 ms of a merge, under the repository lock).
    When no path changed on both sides, git's merge (renames included) gives this same tree,
    with one exception this refuses as well: the same change made on both sides, which
    covers a file deleted on both (perhaps renamed apart: a rename/rename conflict for git)
    and identical additions.
    """
    changed = None
    if base is not None and base.id not in (ours.id, theirs.id):
        changed = _by_name(dict.fromkeys(differing(repository, base, theirs)))
    return _merged(repository, base, ours, theirs, changed)


def _by_name(paths: dict[str, object]) -> dict[str, dict[str, object]]:
    """Paths (with a value each) grouped by their first name: {name: {the path under it,
    relative to it ("" for the name itself): its value}}."""
    grouped: dict[str, dict[str, object]] = {}
    for path, value in paths.items():
        name, _, rest = path.partition("/")
        grouped.setdefault(name, {})[rest] = value
    return grouped


def _merged(repository, base, ours, theirs, changed: dict[str, dict] | None) -> pygit2.Oid:
    """`trivial_merge` of three trees; `changed`: the names `theirs` changed from `base`, with
    the paths under each (None: every name is looked at)."""
    if base is not None and base.id == ours.id:
        return theirs.id
    if base is not None and base.id == theirs.id:
        return ours.id
    if ours.id == theirs.id:
        raise NotTrivial
    builder = repository.TreeBuilder(ours)
    if changed is None:
        names = {entry.name for entry in ours} | {entry.name for entry in theirs}
        names |= {entry.name for entry in base} if base is not None else set()
    else:
        names = set(changed)
    for name in sorted(names):
        was, mine, their = (_entry(tree, name) for tree in (base, ours, theirs))
        if _key(mine) == _key(their):
            if _key(mine) != _key(was):
                raise NotTrivial
        elif _key(was) == _key(mine):  # only theirs changed it
            if their is None:
                builder.remove(name)
            else:
                builder.insert(name, their.id, their.filemode)
        elif _key(was) == _key(their):  # only ours changed it: the builder has it
            continue
        elif _is_tree(mine) and _is_tree(their) and (was is None or _is_tree(was)):
            below = None
            if changed is not None and was is not None:
                below = _by_name({path: None for path in changed[name] if path})
            merged = _merged(
                repository,
                repository[was.id] if was is not None else None,
                repository[mine.id],
                repository[their.id],
                below,
            )
            builder.insert(name, merged, FileMode.TREE)
        else:
            raise NotTrivial
    return builder.write()


def _entry(tree, name: str):
    if tree is None or name not in tree:
        return None
    return tree[name]


def _key(entry) -> tuple | None:
    return None if entry is None else (entry.id, entry.filemode)


def _is_tree(entry) -> bool:
    return entry is not None and entry.filemode == FileMode.TREE
