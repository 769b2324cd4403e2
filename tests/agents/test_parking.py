"""Parked worktrees: a removed worktree kept for the next one is, once taken, exactly what a
fresh `git worktree add` would have given, as git itself sees it."""

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from agents.workspace import (
    add_worktree,
    commit_all,
    ensure_repository,
    head_commit,
    merge_into_worktree,
    parking,
    remove_worktrees,
    start_run_branch,
    step_branch_name,
    unmark_clean,
    worktrees,
)
from agents.workspace.gitcmd import GitError, common_dir
from agents.workspace.parking import parked_dir
from tests.agents.test_workspace_inprocess import _git


@pytest.fixture
def repo(tmp_path) -> Path:
    return ensure_repository(
        tmp_path / "project",
        seed_files={"README.md": "# Project\n", "src/app.py": "print('app')\n", "docs/a.md": "a\n"},
    )


def _files(worktree: Path) -> set[str]:
    return {
        str(path.relative_to(worktree))
        for path in worktree.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(worktree).parts
    }


def _worktrees(repo: Path) -> dict[str, str]:
    """git's own list: worktree path -> what is checked out there."""
    listed, path = {}, None
    for line in _git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line.removeprefix("worktree ")
        elif line.startswith(("branch ", "detached")):
            listed[path] = line.removeprefix("branch ")
    return listed


def _finished_run(repo: Path, tmp_path: Path) -> tuple[Path, str]:
    """A run whose step changed files, left untracked and ignored files, and is removed."""
    _, base = start_run_branch(repo, 1)
    old = add_worktree(repo, tmp_path / "run-1" / "build", step_branch_name(1, "build"), base)
    (old / "src" / "app.py").write_text("print('changed')\n")
    (old / ".gitignore").write_text("*.log\n")
    commit_all(old, "build")
    (old / "scratch.txt").write_text("left behind\n")
    (old / "debug.log").write_text("ignored, left behind\n")
    (old / "cache").mkdir()
    (old / "cache" / "x.bin").write_bytes(b"\0")
    return old, step_branch_name(1, "build")


def test_a_taken_worktree_is_what_a_fresh_one_would_be(repo, tmp_path):
    old, old_branch = _finished_run(repo, tmp_path)
    remove_worktrees(repo, [old], park=4)
    assert not old.exists()
    assert len(os.listdir(parked_dir(repo))) == 1

    # A later run starts from main, which has moved on since.
    (repo / "docs" / "b.md").write_text("b\n")
    commit_all(repo, "main moves")
    _, base = start_run_branch(repo, 2)
    branch = step_branch_name(2, "write")
    taken = add_worktree(repo, tmp_path / "run-2" / "write", branch, base)
    fresh = tmp_path / "fresh"
    _git(repo, "worktree", "add", "--quiet", "--detach", str(fresh), base)

    assert os.listdir(parked_dir(repo)) == []
    assert _files(taken) == _files(fresh)
    for name in _files(fresh):
        assert (taken / name).read_bytes() == (fresh / name).read_bytes(), name
    assert _git(taken, "status", "--porcelain", "--ignored") == ""
    assert _git(taken, "rev-parse", "HEAD").strip() == base == head_commit(taken)
    assert _git(taken, "symbolic-ref", "HEAD").strip() == f"refs/heads/{branch}"
    _git(repo, "worktree", "prune")  # git keeps it registered where it now is
    assert _worktrees(repo)[str(taken)] == f"refs/heads/{branch}"
    # The finished step's branch is free again: git checks it out elsewhere.
    _git(repo, "worktree", "add", "--quiet", str(tmp_path / "again"), old_branch)
    # Work in the taken worktree commits as in any other.
    (taken / "new.txt").write_text("new\n")
    assert commit_all(taken, "write") == _git(repo, "rev-parse", branch).strip()


def test_parking_keeps_at_most_the_setting_and_deletes_the_rest(repo, tmp_path):
    _, base = start_run_branch(repo, 1)
    paths = [
        add_worktree(repo, tmp_path / "run-1" / key, step_branch_name(1, key), base)
        for key in ("a", "b", "c")
    ]
    remove_worktrees(repo, paths, park=2)
    assert not any(path.exists() for path in paths)
    assert len(os.listdir(parked_dir(repo))) == 2
    _git(repo, "worktree", "prune")
    listed = _worktrees(repo)
    parked = sorted(str(parked_dir(repo) / name) for name in os.listdir(parked_dir(repo)))
    assert sorted(p for p in listed if p != str(repo)) == parked
    assert all(listed[path] == "detached" for path in parked)
    assert all(_git(Path(path), "rev-parse", "HEAD").strip() == base for path in parked)


def _lock_free(repo: Path) -> bool:
    """Whether the repository lock is free now (taken and let go at once when it is)."""
    fd = os.open(common_dir(repo) / "orchestra-workspace.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_worktree_files_are_written_and_deleted_outside_the_repository_lock(
    repo, tmp_path, monkeypatch
):
    """Only registering, claiming, parking and pruning hold the lock: one step's checkout or
    deletion does not hold up every other step's worktree and merge."""
    seen = []

    def observed(name, original):
        def call(*args, **kwargs):
            seen.append((name, _lock_free(repo)))
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(parking, "_check_out", observed("take", parking._check_out))
    monkeypatch.setattr(worktrees, "run_git", observed("fresh", worktrees.run_git))
    monkeypatch.setattr(shutil, "rmtree", observed("delete", shutil.rmtree))
    _, base = start_run_branch(repo, 1)
    first = add_worktree(repo, tmp_path / "a", step_branch_name(1, "a"), base)
    remove_worktrees(repo, [first], park=1)
    taken = add_worktree(repo, tmp_path / "b", step_branch_name(1, "b"), base)
    fresh = add_worktree(repo, tmp_path / "c", step_branch_name(1, "c"), base)
    remove_worktrees(repo, [taken, fresh], park=1)

    assert {name for name, _ in seen} == {"fresh", "take", "delete"}, seen
    assert all(free for _, free in seen), seen
    assert not fresh.exists() and str(fresh) not in _worktrees(repo)  # pruned, under the lock
    assert len(os.listdir(parked_dir(repo))) == 1


def test_a_worktree_left_mid_merge_is_parked_clean(repo, tmp_path):
    _, base = start_run_branch(repo, 1)
    one = add_worktree(repo, tmp_path / "one", step_branch_name(1, "one"), base)
    two = add_worktree(repo, tmp_path / "two", step_branch_name(1, "two"), base)
    (one / "README.md").write_text("one\n")
    (two / "README.md").write_text("two\n")
    commit_all(one, "one")
    commit_all(two, "two")
    assert merge_into_worktree(two, head_commit(one)) == ["README.md"]
    remove_worktrees(repo, [two], park=4)

    taken = add_worktree(repo, tmp_path / "three", step_branch_name(1, "three"), base)
    assert _git(taken, "status", "--porcelain", "--ignored") == ""
    git_dir = Path(_git(taken, "rev-parse", "--absolute-git-dir").strip())
    assert not (git_dir / "MERGE_HEAD").exists()
    assert (taken / "README.md").read_text() == "# Project\n"


def test_without_parking_worktrees_are_deleted(repo, tmp_path):
    _, base = start_run_branch(repo, 1)
    path = add_worktree(repo, tmp_path / "a", step_branch_name(1, "a"), base)
    remove_worktrees(repo, [path])
    assert not path.exists() and not parked_dir(repo).exists()
    assert list(_worktrees(repo)) == [str(repo)]


def _committed_by_name(repo: Path, tmp_path: Path) -> tuple[Path, str]:
    """A step's worktree whose work was committed naming every path written (a first
    attempt written by the file tools alone): a new folder, a changed file."""
    _, base = start_run_branch(repo, 1)
    old = add_worktree(repo, tmp_path / "run-1" / "build", step_branch_name(1, "build"), base)
    (old / "src" / "new").mkdir()
    (old / "src" / "new" / "mod.py").write_text("NEW = 1\n")
    (old / "README.md").write_text("# Changed\n")
    commit_all(old, "build", changed={"src/new/mod.py", "README.md"})
    return old, base


def _main_moves_and_a_run_takes(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """main changes a file, deletes one and adds one in a new folder; a run from it takes
    the parked worktree. The taken worktree, and a fresh one at the same commit."""
    (repo / "docs" / "a.md").write_text("a, again\n")
    (repo / "src" / "app.py").unlink()
    (repo / "lib").mkdir()
    (repo / "lib" / "x.py").write_text("X = 1\n")
    commit_all(repo, "main moves")
    return _taken_and_fresh(repo, tmp_path)


def _taken_and_fresh(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A run from main takes the parked worktree; the taken one, and a fresh one beside it."""
    _, base = start_run_branch(repo, 2)
    taken = add_worktree(repo, tmp_path / "run-2" / "write", step_branch_name(2, "write"), base)
    fresh = tmp_path / "fresh"
    _git(repo, "worktree", "add", "--quiet", "--detach", str(fresh), base)
    return taken, fresh


def _same(taken: Path, fresh: Path) -> None:
    assert _files(taken) == _files(fresh)
    for name in _files(fresh):
        assert (taken / name).read_bytes() == (fresh / name).read_bytes(), name
    assert _git(taken, "status", "--porcelain", "--ignored") == ""
    assert _git(taken, "rev-parse", "HEAD") == _git(fresh, "rev-parse", "HEAD")


def test_a_worktree_committed_by_name_is_taken_by_what_differs_alone(repo, tmp_path):
    old, _ = _committed_by_name(repo, tmp_path)
    remove_worktrees(repo, [old], park=4)
    [name] = os.listdir(parked_dir(repo))
    # Planted behind the mark's back (nothing the engine runs can): it survives the take,
    # which shows the worktree was not walked.
    (parked_dir(repo) / name / "planted.txt").write_text("not walked\n")

    taken, fresh = _main_moves_and_a_run_takes(repo, tmp_path)

    assert (taken / "planted.txt").read_text() == "not walked\n"
    (taken / "planted.txt").unlink()
    _same(taken, fresh)
    assert not (taken / "src" / "new" / "mod.py").exists()
    # Its index is right for the next commit by name, which the next take trusts again.
    (taken / "lib" / "y.py").write_text("Y = 2\n")
    head = commit_all(taken, "write", changed={"lib/y.py"})
    assert _git(taken, "show", "--name-status", "--format=", head).split() == ["A", "lib/y.py"]
    assert _git(taken, "status", "--porcelain", "--ignored") == ""


@pytest.mark.parametrize("how", ["ignored file written", "a command may write", "a merge"])
def test_a_worktree_anything_else_may_have_written_is_walked_when_taken(repo, tmp_path, how):
    old, base = _committed_by_name(repo, tmp_path)
    if how == "ignored file written":  # named, but not staged: the commit does not mark it
        (old / ".gitignore").write_text("*.log\n")
        (old / "debug.log").write_text("ignored\n")
        commit_all(old, "ignore logs", changed={".gitignore", "debug.log"})
    elif how == "a command may write":
        unmark_clean(old)  # what the engine does before a command or a check runs in it
    else:  # left in progress, its conflicts in the files, its commit still the same
        other = add_worktree(repo, tmp_path / "other", step_branch_name(1, "other"), base)
        (other / "README.md").write_text("# Other\n")
        commit_all(other, "other", changed={"README.md"})
        assert merge_into_worktree(old, head_commit(other)) == ["README.md"]
    (old / "left.txt").write_text("left behind\n")
    remove_worktrees(repo, [old], park=4)

    taken, fresh = _main_moves_and_a_run_takes(repo, tmp_path)

    assert not (taken / "left.txt").exists() and not (taken / "debug.log").exists()
    _same(taken, fresh)


def test_a_known_clean_worktree_is_taken_right_where_a_file_replaces_a_folder(repo, tmp_path):
    old, _ = _committed_by_name(repo, tmp_path)  # it made the folder src/new
    remove_worktrees(repo, [old], park=4)
    (repo / "src" / "new").write_text("a file now\n")  # main: a file of that name
    (repo / "docs" / "a.md").unlink()  # and a file where its folder docs was
    (repo / "docs").rmdir()
    (repo / "docs").write_text("docs\n")
    commit_all(repo, "main moves")
    taken, fresh = _taken_and_fresh(repo, tmp_path)
    _same(taken, fresh)
    assert (taken / "src" / "new").read_text() == "a file now\n"


def test_a_branch_checked_out_in_one_worktree_is_refused_to_another_with_one_parked(repo, tmp_path):
    _, base = start_run_branch(repo, 1)
    olds = [
        add_worktree(repo, tmp_path / "run-1" / key, step_branch_name(1, key), base)
        for key in ("a", "b")
    ]
    remove_worktrees(repo, olds, park=4)
    branch = step_branch_name(2, "write")
    first = add_worktree(repo, tmp_path / "run-2" / "write", branch, base)  # takes one
    assert len(os.listdir(parked_dir(repo))) == 1

    with pytest.raises(GitError, match="already"):
        add_worktree(repo, tmp_path / "run-2" / "again", branch, base)

    assert len(os.listdir(parked_dir(repo))) == 1  # the other stays parked, untouched
    assert not (tmp_path / "run-2" / "again").exists()
    assert _git(first, "symbolic-ref", "HEAD").strip() == f"refs/heads/{branch}"
    assert parking.branch_checked_out(repo, f"refs/heads/{branch}")
    assert not parking.branch_checked_out(repo, f"refs/heads/{step_branch_name(1, 'a')}")


@pytest.mark.parametrize("named", ["relatively", "through a link"])
def test_a_registration_named_otherwise_than_git_writes_it_is_still_found(repo, tmp_path, named):
    """A worktree's `.git` names its registration absolute and resolved, as git and parking
    write it, and is taken as written; one named relatively, or through a symbolic link to a
    folder on the way, is resolved: still the same registration."""
    _, base = start_run_branch(repo, 1)
    worktree = add_worktree(repo, tmp_path / "run-1" / "build", step_branch_name(1, "build"), base)
    admin = common_dir(repo) / "worktrees" / "build"
    assert (worktree / ".git").read_text() == f"gitdir: {admin}\n"
    if named == "relatively":
        pointer = os.path.relpath(admin, worktree)
    else:
        (tmp_path / "link").symlink_to(tmp_path)
        pointer = str(tmp_path / "link" / admin.relative_to(tmp_path))
    (worktree / ".git").write_text(f"gitdir: {pointer}\n")

    assert worktrees._registered(repo, worktree)
    parking.mark_clean(worktree, base)
    assert (admin / "orchestra-clean").read_text() == base
    assert parking.known_clean(worktree) == base
    assert add_worktree(repo, worktree, step_branch_name(1, "build"), base) == worktree
