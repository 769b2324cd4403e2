"""What the workspace library does in process (libgit2) is what git itself would have done:
the step's commit, the merge queue's trees, the ref moves, the worktrees. (A step's git
processes are pinned in tests/orchestra/test_step_cost.py.)"""

import os
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from agents.workspace import (
    GitError,
    add_worktree,
    changed_between,
    changed_paths,
    commit_all,
    ensure_repository,
    file_at,
    head_commit,
    libgit,
    merge_step,
    remove_worktrees,
    start_run_branch,
    step_branch_name,
)
from agents.workspace.merge import _commit_merge
from agents.workspace.remote import clone_repository


@pytest.fixture
def repo(tmp_path) -> Path:
    return ensure_repository(
        tmp_path / "project",
        seed_files={
            "README.md": "# Project\n",
            "src/app.py": "print('app')\n",
            "src/lib/util.py": "X = 1\n",
            "docs/guide.md": "guide\n",
        },
    )


def _git(cwd: Path, *args: str) -> str:
    # The user's configuration is kept out, as the library keeps it out.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=True
    )
    return result.stdout


def _step(repo: Path, tmp_path: Path, key: str) -> Path:
    branch, base = start_run_branch(repo, 3)
    return add_worktree(repo, tmp_path / "wt" / key, step_branch_name(3, key), base)


def test_the_step_commit_is_the_one_git_commit_would_make(repo, tmp_path):
    worktree = _step(repo, tmp_path, "implement")
    base = head_commit(worktree)
    (worktree / ".gitignore").write_text("*.log\nbuild/\n")
    (worktree / "debug.log").write_text("ignored\n")
    (worktree / "build").mkdir()
    (worktree / "build" / "out.bin").write_text("ignored too\n")
    (worktree / "docs" / "guide.md").unlink()
    (worktree / "src" / "app.py").write_text("print('changed')\n")
    (worktree / "run.sh").write_text("#!/bin/sh\n")
    (worktree / "run.sh").chmod(0o755)

    sha = commit_all(worktree, "  implement: Step  \n\n\n(attempt 1)   \n\n")

    assert sha == head_commit(worktree)
    shown = _git(worktree, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%P|%B", sha)
    assert shown == f"Orchestra <orchestra@localhost>|Orchestra <orchestra@localhost>|{base}|" + (
        "  implement: Step\n\n(attempt 1)\n\n"
    )
    # git agrees that everything but the ignored files is committed and the index is current.
    assert _git(worktree, "status", "--porcelain") == ""
    assert _git(worktree, "ls-files", "-s", "run.sh").startswith("100755 ")
    assert file_at(repo, sha, "debug.log") is None and file_at(repo, sha, "docs/guide.md") is None
    touched = [".gitignore", "docs/guide.md", "run.sh", "src/app.py"]
    assert changed_between(worktree, base, sha) == touched == changed_paths(worktree, base)
    assert commit_all(worktree, "Nothing") is None
    empty = commit_all(worktree, "Empty", allow_empty=True)
    trees = _git(worktree, "rev-parse", f"{empty}^{{tree}}", f"{empty}~1^{{tree}}").split()
    assert trees[0] == trees[1]


def _tree(repo: Path, sha: str) -> str:
    return _git(repo, "rev-parse", f"{sha}^{{tree}}").strip()


def _same_work(worktree: Path) -> list[str]:
    """Writes, a deletion, an ignored file, a file in a new folder; the paths it wrote."""
    (worktree / ".gitignore").write_text("*.log\n")
    (worktree / "debug.log").write_text("ignored\n")
    (worktree / "docs" / "guide.md").unlink()
    (worktree / "src" / "app.py").write_text("print('changed')\n")
    (worktree / "src" / "new").mkdir()
    (worktree / "src" / "new" / "mod.py").write_text("Y = 2\n")
    return [".gitignore", "debug.log", "./docs/guide.md", "src/app.py", "src/new/mod.py"]


def test_a_commit_of_the_paths_written_is_the_commit_of_everything(repo, tmp_path):
    everything, named = _step(repo, tmp_path, "all"), _step(repo, tmp_path, "named")
    _same_work(everything)
    paths = _same_work(named)
    staged_all = commit_all(everything, "Work", allow_empty=True)
    staged_named = commit_all(named, "Work", allow_empty=True, changed=paths)
    assert _tree(repo, staged_named) == _tree(repo, staged_all)
    assert _git(named, "status", "--porcelain") == ""
    # Only what is named is staged: a change no tool said it made stays out (the caller
    # names every path that may differ, or none).
    (named / "README.md").write_text("changed behind the tools' back\n")
    (named / "src" / "app.py").write_text("print('again')\n")
    again = commit_all(named, "Again", changed=["src/app.py"])
    assert changed_between(named, staged_named, again) == ["src/app.py"]
    assert _git(named, "status", "--porcelain") == " M README.md\n"


@pytest.mark.parametrize("odd", ["../outside.txt", "src", ".git/config", "linked/x.py", ""])
def test_a_path_that_cannot_be_staged_by_name_stages_everything(repo, tmp_path, odd):
    worktree = _step(repo, tmp_path, "odd")
    (worktree / "linked").symlink_to(worktree / "src")
    (worktree / "README.md").write_text("changed\n")
    sha = commit_all(worktree, "Odd", changed=[odd])
    assert file_at(repo, sha, "README.md") == "changed\n"
    assert file_at(repo, sha, "linked") is not None  # the link itself, as git add stages it
    assert _git(worktree, "status", "--porcelain") == ""


def _parallel_steps(repo: Path, tmp_path: Path, changes: dict[str, callable]) -> dict[str, str]:
    """Each step changes its worktree and commits; their step branches, by key."""
    branches = {}
    for key, change in changes.items():
        worktree = _step(repo, tmp_path, key)
        change(worktree)
        commit_all(worktree, f"Work on {key}")
        branches[key] = step_branch_name(3, key)
    return branches


def test_the_merge_queue_builds_the_tree_git_merge_tree_builds(repo, tmp_path):
    """Disjoint changes in shared folders, new folders, a deletion, a mode change: merged in
    process, each result is the tree git computes for the same two heads."""

    def research(worktree):
        (worktree / "src" / "lib" / "sources.py").write_text("SOURCES = []\n")
        (worktree / "docs" / "guide.md").unlink()

    def implement(worktree):
        (worktree / "src" / "lib" / "util.py").write_text("X = 2\n")
        (worktree / "src" / "new" / "deep").mkdir(parents=True)
        (worktree / "src" / "new" / "deep" / "mod.py").write_text("Y = 1\n")

    def tests(worktree):
        (worktree / "src" / "app.py").chmod(0o755)
        (worktree / "tests").mkdir()
        (worktree / "tests" / "test_app.py").write_text("def test(): pass\n")

    branch, _ = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"research": research, "implement": implement})
    steps |= _parallel_steps(repo, tmp_path, {"tests": tests})
    for key, step_branch in steps.items():
        before = head_commit(repo, branch)
        expected = _git(repo, "merge-tree", "--write-tree", before, step_branch).split()[0]

        outcome = merge_step(repo, branch, step_branch, tmp_path / "_merge", f"Merge {key}")

        assert outcome.ok and outcome.commit == head_commit(repo, branch)
        assert _git(repo, "rev-parse", f"{outcome.commit}^{{tree}}").strip() == expected
        parents = _git(repo, "log", "-1", "--format=%P|%an|%B", outcome.commit)
        assert parents == f"{before} {head_commit(repo, step_branch)}|Orchestra|Merge {key}\n\n"
    assert not (tmp_path / "_merge").exists()  # no checkout was needed
    assert _git(repo, "fsck", "--no-progress") == ""


def test_the_same_change_on_both_sides_is_left_to_git(repo, tmp_path):
    def same(worktree):
        (worktree / "shared.txt").write_text("the same\n")
        (worktree / "docs" / "guide.md").unlink()

    branch, _ = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"one": same, "two": same})
    merge_step(repo, branch, steps["one"], tmp_path / "_merge", "Merge one")
    before = head_commit(repo, branch)
    expected = _git(repo, "merge-tree", "--write-tree", before, steps["two"]).split()[0]

    repository = libgit.open_repository(repo)
    ours, theirs = (libgit.commit_of(repository, ref) for ref in (before, steps["two"]))
    base = repository[repository.merge_base(ours.id, theirs.id)]
    with pytest.raises(libgit.NotTrivial):  # so git's merge-tree decides
        libgit.trivial_merge(repository, base.tree, ours.tree, theirs.tree)
    outcome = merge_step(repo, branch, steps["two"], tmp_path / "_merge", "Merge two")

    assert outcome.ok
    assert _git(repo, "rev-parse", f"{outcome.commit}^{{tree}}").strip() == expected


def test_a_merge_made_on_a_stale_run_head_does_not_move_the_branch(repo, tmp_path):
    branch, _ = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"late": lambda w: (w / "a.txt").write_text("a\n")})
    repository = libgit.open_repository(repo)
    run_ref = libgit.branch_ref(repository, branch)
    step_head = repository.revparse_single(steps["late"]).id
    elsewhere = commit_all(_step(repo, tmp_path, "other"), "Other", allow_empty=True)
    _git(repo, "update-ref", f"refs/heads/{branch}", elsewhere)  # someone moved it meanwhile

    with pytest.raises(GitError, match="moved during the merge"):
        _commit_merge(repository, run_ref, step_head, repository[step_head].tree_id, "Merge")

    assert head_commit(repo, branch) == elsewhere


def test_a_worktree_whose_folder_was_deleted_is_added_again(repo, tmp_path):
    worktree = _step(repo, tmp_path, "implement")
    shutil.rmtree(worktree)  # deleted behind git's back: still registered

    again = _step(repo, tmp_path, "implement")
    elsewhere = add_worktree(repo, tmp_path / "moved", step_branch_name(3, "other"), "main")
    shutil.rmtree(elsewhere)
    moved = add_worktree(repo, tmp_path / "moved-again", step_branch_name(3, "other"), "main")

    (moved / "locked").mkdir()
    (moved / "locked" / "file.txt").write_text("kept\n")
    (moved / "locked").chmod(0o500)  # an agent's read-only folder

    assert again == worktree and (worktree / "README.md").is_file()
    assert (moved / "README.md").is_file()
    remove_worktrees(repo, [worktree, moved, tmp_path / "never-made", repo])
    listing = _git(repo, "worktree", "list", "--porcelain")
    assert "implement" not in listing and "moved" not in listing
    assert not worktree.exists() and not moved.exists()
    assert (repo / "README.md").is_file()  # the repository itself is not a worktree to remove


def test_a_worktree_added_in_process_is_one_git_knows(repo, tmp_path):
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("README.md")
    commit_all(repo, "Modes")
    branch = step_branch_name(3, "implement")

    worktree = add_worktree(repo, tmp_path / "wt" / "implement", branch, "main")
    (tmp_path / "empty").mkdir()  # an existing empty folder: git's own add takes it
    second = add_worktree(repo, tmp_path / "empty", step_branch_name(3, "other"), "main")

    assert _git(worktree, "status", "--porcelain") == "" == _git(second, "status", "--porcelain")
    assert _git(worktree, "symbolic-ref", "HEAD").strip() == f"refs/heads/{branch}"
    assert os.access(worktree / "run.sh", os.X_OK) and (worktree / "link").is_symlink()
    listing = _git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {worktree}\nHEAD {head_commit(repo)}\nbranch refs/heads/{branch}" in listing
    with pytest.raises(GitError, match="already a worktree on orchestra/run-3-steps/implement"):
        add_worktree(repo, worktree, step_branch_name(3, "other"), "main")
    with pytest.raises(GitError, match="already checked out|already used by worktree"):
        add_worktree(repo, tmp_path / "wt" / "again", branch, "main")
    assert not (tmp_path / "wt" / "again").exists()


def test_a_main_repository_is_kept_per_thread_and_sees_what_git_writes(repo, tmp_path):
    import threading

    first = libgit.open_repository(repo)
    assert libgit.open_repository(repo) is first
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(libgit.open_repository(repo)))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first  # libgit2's repositories are not shared between threads

    # What the command line writes meanwhile, the kept instance reads: refs, objects, index.
    worktree = _step(repo, tmp_path, "kept")
    assert libgit.open_repository(worktree) is not libgit.open_repository(worktree)
    (worktree / "new.txt").write_text("new\n")
    _git(worktree, "add", "new.txt")
    _git(worktree, "-c", "user.name=T", "-c", "user.email=t@t", "commit", "-qm", "From git")
    made = _git(worktree, "rev-parse", "HEAD").strip()
    assert head_commit(repo, step_branch_name(3, "kept")) == made
    assert str(libgit.open_repository(repo)[made].id) == made
    (repo / "mine.txt").write_text("mine\n")
    commit_all(repo, "Mine", changed=["mine.txt"])  # the kept instance has read the index
    (repo / "cli.txt").write_text("cli\n")
    _git(repo, "add", "cli.txt")
    _git(repo, "-c", "user.name=T", "-c", "user.email=t@t", "commit", "-qm", "From git")
    (repo / "mine.txt").write_text("mine again\n")
    commit_all(repo, "Mine again", changed=["mine.txt"])
    assert "cli.txt" in _git(repo, "ls-tree", "--name-only", "HEAD").split()


def test_a_repository_made_again_at_the_same_path_is_opened_again(tmp_path):
    path = tmp_path / "again"
    ensure_repository(path, seed_files={"one.txt": "one\n"})
    kept = libgit.open_repository(path)
    first = head_commit(path)
    shutil.rmtree(path)
    ensure_repository(path, seed_files={"two.txt": "two\n"})

    assert libgit.open_repository(path) is not kept
    assert head_commit(path) != first
    assert file_at(path, "HEAD", "two.txt") == "two\n"


def test_a_commit_by_name_is_the_tree_of_its_index(repo, tmp_path):
    """A commit that names its paths builds its tree from its parent's (`tree_with`), not
    from the index: the tree is the one git writes from the index after, in every round."""
    worktree = _step(repo, tmp_path, "by-name")
    (worktree / "src" / "deep" / "er").mkdir(parents=True)
    rounds = [
        {"src/new0.py": "N = 0\n"},
        {"src/deep/er/x.py": "X\n", "README.md": "changed\n"},
        {"src/new0.py": None, "src/deep/er/x.py": None},  # removed: the folders go too
        {"docs/guide.md": None, "top.txt": "top\n"},
    ]
    for round, files in enumerate(rounds):
        for path, text in files.items():
            if text is None:
                (worktree / path).unlink()
            else:
                (worktree / path).write_text(text)
        head = commit_all(worktree, f"Round {round}", changed=list(files))
        tree = _git(worktree, "rev-parse", f"{head}^{{tree}}").strip()
        assert _git(worktree, "write-tree").strip() == tree, round
        assert _git(worktree, "status", "--porcelain", "--ignored") == "", round
    listed = _git(worktree, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "top.txt" in listed and "src/new0.py" not in listed
    assert not any(path.startswith("src/deep/") for path in listed)


def test_tree_with_makes_the_tree_the_index_writes(repo):
    """Random changes by name (added, changed, removed, in new and shared folders, a file
    below a file, a file where a folder is) applied to a tree: the tree the index writes,
    or NotAnUpdate, never a different tree."""
    import random

    repository = libgit.open_repository(repo)
    chance = random.Random(7)
    blobs = [repository.create_blob(f"text {n}\n".encode()) for n in range(30)]
    folders = ["", "src/", "src/lib/", "docs/", "out/"]
    refused = 0
    for case in range(40):
        files = {f"{chance.choice(folders)}f{n}.txt": chance.choice(blobs) for n in range(25)}
        index = pygit2.Index()
        for path, blob in files.items():
            index.add(pygit2.IndexEntry(path, blob, pygit2.enums.FileMode.BLOB))
        base = repository[index.write_tree(repository)]
        changes = {}
        for path in chance.sample(sorted(files), 4):
            action = chance.choice(["change"] * 5 + ["remove"] * 3 + ["under", "over"])
            if action == "change":
                changes[path] = (chance.choice(blobs), pygit2.enums.FileMode.BLOB_EXECUTABLE)
            elif action == "remove":
                changes[path] = None
            elif action == "under":  # a path below a file
                changes[f"{path}/inner.txt"] = (chance.choice(blobs), pygit2.enums.FileMode.BLOB)
            else:  # a file where a folder is
                folder = path.rpartition("/")[0] or "src"
                changes[folder] = (chance.choice(blobs), pygit2.enums.FileMode.BLOB)
        changes[f"{chance.choice(folders)}new/deep/n{case}.txt"] = (blobs[0], 0o100644)
        try:
            made = libgit.tree_with(repository, base, changes)
        except libgit.NotAnUpdate:
            refused += 1
            continue
        for path, change in changes.items():
            if change is None:
                index.remove(path)
            else:
                index.add(pygit2.IndexEntry(path, change[0], change[1]))
        assert made == index.write_tree(repository), case
    assert 5 < refused < 35, refused  # both kinds of case were met


def test_the_trivial_merge_makes_the_tree_git_merge_makes(repo):
    """Random changes on two sides from one base (files added, changed, removed, a file
    made a folder; in shared folders and apart), none on both sides: the same tree as
    `git merge-tree`."""
    import random

    repository = libgit.open_repository(repo)
    chance = random.Random(11)
    blobs = [repository.create_blob(f"text {n}\n".encode()) for n in range(40)]
    folders = ["", "src/", "src/lib/", "docs/", "out/"]
    base_files = {f"{chance.choice(folders)}f{n}.txt": chance.choice(blobs) for n in range(30)}

    def commit(files: dict, parents: list) -> pygit2.Oid:
        index = pygit2.Index()
        for path, blob in files.items():
            index.add(pygit2.IndexEntry(path, blob, pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(repository)
        author = libgit.signature()
        return repository.create_commit(None, author, author, "c\n", tree, parents)

    base = commit(base_files, [])
    skipped = []
    for case in range(25):
        paths = sorted(base_files)
        chance.shuffle(paths)
        sides = []
        for taken in (paths[:6], paths[6:12]):
            files = dict(base_files)
            for path in taken:
                action = chance.choice(["change", "remove", "folder", "keep"])
                if action == "change":
                    files[path] = chance.choice(blobs)
                elif action == "remove":
                    del files[path]
                elif action == "folder" and not any(p.startswith(f"{path}/") for p in files):
                    del files[path]
                    files[f"{path}/inner.txt"] = chance.choice(blobs)
            folder = chance.choice(folders)
            files[f"{folder}new-{case}-{len(sides)}.txt"] = chance.choice(blobs)
            sides.append(commit(files, [base]))
        ours, theirs = (repository[side] for side in sides)
        expected = _git(repo, "merge-tree", "--write-tree", str(ours.id), str(theirs.id))
        try:
            merged = libgit.trivial_merge(repository, repository[base].tree, ours.tree, theirs.tree)
        except libgit.NotTrivial:
            skipped.append(case)
            continue  # the same change made on both sides: git decides, as the merge does
        assert str(merged) == expected.split()[0], case
    assert len(skipped) < 5, skipped  # most cases are merged here


def test_the_paths_two_trees_differ_in_are_those_libgit2s_diff_names(repo):
    """Random changes between two trees (files added, changed, removed, made executable or
    a link, a file made a folder and a folder a file, whole folders added and removed):
    `differing`, which opens only the folders that differ, names the paths libgit2's diff
    of the two trees names."""
    import random

    from pygit2.enums import FileMode

    repository = libgit.open_repository(repo)
    chance = random.Random(7)
    blobs = [repository.create_blob(f"text {n}\n".encode()) for n in range(20)]
    folders = ["", "a/", "a/b/", "a/b/c/", "d/", "d/e/"]

    def tree(files: dict) -> pygit2.Tree:
        index = pygit2.Index()
        for path, (blob, mode) in files.items():
            index.add(pygit2.IndexEntry(path, blob, mode))
        return repository[index.write_tree(repository)]

    def libgit2s(old: pygit2.Tree, new: pygit2.Tree) -> list[str]:
        deltas = repository.diff(old, new).deltas
        return sorted({path for d in deltas for path in (d.old_file.path, d.new_file.path)})

    kinds = set()
    for case in range(40):
        old = {
            f"{chance.choice(folders)}f{n}": (chance.choice(blobs), FileMode.BLOB)
            for n in range(25)
        }
        new = dict(old)
        for path in chance.sample(sorted(old), 6):
            action = chance.choice(["change", "remove", "mode", "link", "folder", "keep"])
            kinds.add(action)
            if action == "change":
                new[path] = (chance.choice(blobs), FileMode.BLOB)
            elif action == "remove":
                del new[path]
            elif action == "mode":
                new[path] = (old[path][0], FileMode.BLOB_EXECUTABLE)
            elif action == "link":
                new[path] = (old[path][0], FileMode.LINK)
            elif action == "folder":
                del new[path]
                new[f"{path}/inner"] = (chance.choice(blobs), FileMode.BLOB)
        if case % 4 == 0:  # a whole folder goes, another comes
            gone = chance.choice(folders[1:])
            new = {p: v for p, v in new.items() if not p.startswith(gone)}
            new[f"x{case}/y/z"] = (chance.choice(blobs), FileMode.BLOB)
        before, after = tree(old), tree(new)
        assert libgit.differing(repository, before, after) == libgit2s(before, after), case
        # and back: a folder made a file, a link or executable file made a plain one
        assert libgit.differing(repository, after, before) == libgit2s(after, before), case
    assert kinds >= {"change", "remove", "mode", "link", "folder"}, kinds

    # Folders holding more names than are walked: libgit2 compares them, named the same.
    many = libgit._WALKED_AT_MOST + 20
    old = {f"big/f{n}": (blobs[0], FileMode.BLOB) for n in range(2 * many)}
    old |= {f"big/sub/g{n}": (blobs[0], FileMode.BLOB) for n in range(5)}
    new = {path: (blobs[1], mode) for path, (_, mode) in old.items() if not path.endswith("7")}
    new |= {"big/f1/inner": (blobs[2], FileMode.BLOB), "small/x": (blobs[2], FileMode.BLOB)}
    del new["big/f1"]
    before, after = tree(old), tree(new)
    assert len(libgit2s(before, after)) > many
    assert libgit.differing(repository, before, after) == libgit2s(before, after)
    assert libgit.differing(repository, after, before) == libgit2s(after, before)


def _commit_on(repository: pygit2.Repository, ref: str, parents: list, name: str) -> pygit2.Oid:
    """A commit adding `name` to the first parent's tree, on `ref`."""
    tree = repository[parents[0]].peel(pygit2.Commit).tree
    builder = repository.TreeBuilder(tree)
    builder.insert(name, repository.create_blob(name.encode()), pygit2.enums.FileMode.BLOB)
    author = libgit.signature()
    return repository.create_commit(ref, author, author, name, builder.write(), parents)


def test_the_merge_base_found_along_first_parents_is_libgit2s(repo, tmp_path):
    """A run branch of merges; steps cut from its base and from a later head, one with two
    attempts, one merged already, one that merged the run head in (a conflict round), one
    whose first attempt was merged: the shortcut gives libgit2's merge base, or gives up."""
    repository = libgit.open_repository(repo)
    branch, base_sha = start_run_branch(repo, 3)
    base = pygit2.Oid(hex=base_sha)
    line = [base]
    for i in range(30):  # thirty steps cut from the base, each merged
        step = _commit_on(repository, f"refs/heads/s{i}", [base], f"s{i}.txt")
        line.append(_commit_on(repository, f"refs/heads/{branch}", [line[-1], step], f"m{i}"))
    head = line[-1]

    def shortcut(step_head, cut_from):
        return libgit.step_ancestry(repository, head, step_head, cut_from)

    from_base = _commit_on(repository, "refs/heads/a", [base], "a.txt")
    second = _commit_on(repository, "refs/heads/a", [from_base], "a2.txt")  # a revision
    from_middle = _commit_on(repository, "refs/heads/b", [line[12]], "b.txt")
    for step_head, cut_from in [(second, base), (from_middle, line[12])]:
        assert shortcut(step_head, cut_from) == cut_from
        assert repository.merge_base(head, step_head) == cut_from

    merged = repository[line[7]].parent_ids[1]  # the seventh step's head
    assert shortcut(merged, base) == merged == repository.merge_base(head, merged)
    assert shortcut(line[20], line[20]) == line[20]  # no commit of its own: on the run branch

    conflict_round = _commit_on(repository, "refs/heads/c", [from_base, line[25]], "c.txt")
    assert shortcut(conflict_round, base) is None
    assert repository.merge_base(head, conflict_round) == line[25]
    assert shortcut(from_middle, line[3]) is None  # not cut where it says
    assert shortcut(from_base, pygit2.Oid(hex="ab" * 20)) is None  # not on the run branch

    # The step's first attempt merged, then a revision: the merge base is that attempt.
    attempt = _commit_on(repository, "refs/heads/d", [base], "d.txt")
    merge = _commit_on(repository, f"refs/heads/{branch}", [head, attempt], "md")
    revision = _commit_on(repository, "refs/heads/d", [attempt], "d2.txt")
    assert libgit.step_ancestry(repository, merge, revision, base) is None
    assert repository.merge_base(merge, revision) == attempt


def test_a_merge_told_where_the_step_was_cut_makes_the_same_commit(repo, tmp_path):
    def work(name):
        return lambda worktree: (worktree / name).write_text(f"{name}\n")

    branch, base = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"one": work("one.txt"), "two": work("two.txt")})
    merge_step(repo, branch, steps["one"], tmp_path / "_merge", "Merge one", cut_from=base)
    before = head_commit(repo, branch)
    expected = _git(repo, "merge-tree", "--write-tree", before, steps["two"]).split()[0]

    outcome = merge_step(repo, branch, steps["two"], tmp_path / "_merge", "Two", cut_from=base)
    again = merge_step(repo, branch, steps["two"], tmp_path / "_merge", "Two", cut_from=base)

    assert outcome.ok and _git(repo, "rev-parse", f"{outcome.commit}^{{tree}}").strip() == expected
    assert again.ok and again.commit == outcome.commit == head_commit(repo, branch)  # merged
    assert _git(repo, "rev-list", "--count", f"{base}..{branch}").strip() == "4"


def _reflogs(repo: Path, worktree: Path) -> list[str]:
    """The reflog files of `repo` and of the worktree's registration."""
    folders = [repo / ".git" / "logs", repo / ".git" / "worktrees" / worktree.name / "logs"]
    return sorted(str(path) for folder in folders for path in folder.rglob("*") if path.is_file())


@pytest.mark.parametrize("made", ["initialised", "cloned", "cloned by a worker"])
def test_a_repository_orchestra_makes_keeps_no_reflogs(repo, tmp_path, made):
    """Nor do a step's branch, commit and merge write one, in process or through git."""
    if made == "cloned":
        repo = ensure_repository(tmp_path / "clone", source=str(repo))
    elif made == "cloned by a worker":
        repo = clone_repository(str(repo), tmp_path / "worker" / "project", "token")
    branch, _ = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"k": lambda w: (w / "k.txt").write_text("k\n")})
    worktree = tmp_path / "wt" / "k"
    _git(worktree, "-c", "user.name=A", "-c", "user.email=a@b", "commit", "--allow-empty", "-mx")

    assert merge_step(repo, branch, steps["k"], tmp_path / "_merge", "Merge k").ok
    assert _git(repo, "config", "--get", "core.logAllRefUpdates") == "false\n"
    assert _reflogs(repo, worktree) == []


def test_a_repository_that_keeps_reflogs_keeps_them(repo, tmp_path):
    """What a repository's own configuration says is kept: a person's repository used as a
    project's workspace is not changed."""
    _git(repo, "config", "core.logAllRefUpdates", "true")
    branch, _ = start_run_branch(repo, 3)
    steps = _parallel_steps(repo, tmp_path, {"k": lambda w: (w / "k.txt").write_text("k\n")})

    assert merge_step(repo, branch, steps["k"], tmp_path / "_merge", "Merge k").ok
    logs = repo / ".git" / "logs" / "refs" / "heads"
    assert (logs / branch).read_text().count("\n") == 2  # created, merged
    assert (logs / steps["k"]).is_file()


def test_what_a_step_touched_is_read_in_its_main_repository_not_its_worktree_again(
    repo, tmp_path, monkeypatch
):
    """`changed_between` on a worktree reads the objects through its main repository's kept
    instance: no repository is opened for it, and it finds what git's diff finds."""
    worktree = _step(repo, tmp_path, "touch")
    base = head_commit(worktree)
    (worktree / "src" / "lib" / "util.py").write_text("X = 2\n")
    (worktree / "docs" / "new.md").write_text("new\n")
    head = commit_all(worktree, "touch")
    changed_between(repo, base, head)  # the main repository kept by this thread
    opened: list[Path] = []
    real = libgit._opened
    monkeypatch.setattr(libgit, "_opened", lambda path: opened.append(path) or real(path))

    touched = changed_between(worktree, base, head)

    assert opened == []
    assert touched == _git(worktree, "diff", "--name-only", base, head).split()
    assert touched == ["docs/new.md", "src/lib/util.py"]
