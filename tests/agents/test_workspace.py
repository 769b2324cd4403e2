"""The git workspace library against real git repositories in a temporary folder."""

import subprocess
import threading
from pathlib import Path

import pytest

from agents.workspace import (
    GitError,
    add_worktree,
    changed_paths,
    clone_repository,
    commit_all,
    diff_since,
    ensure_repository,
    export_tree,
    file_at,
    head_commit,
    log_subjects,
    merge_into_worktree,
    merge_step,
    remove_worktree,
    run_branch_name,
    start_run_branch,
    step_branch_name,
)


@pytest.fixture
def repo(tmp_path) -> Path:
    return ensure_repository(
        tmp_path / "project",
        seed_files={"README.md": "# Project\n", "notes.md": "one\ntwo\nthree\n"},
    )


@pytest.fixture
def run(repo) -> tuple[str, str]:
    return start_run_branch(repo, 7)


def _step(repo: Path, tmp_path: Path, run: tuple[str, str], key: str) -> Path:
    """A step worktree cut from the run branch head, as the engine starts one."""
    branch, _ = run
    return add_worktree(
        repo, tmp_path / "worktrees" / key, step_branch_name(7, key), head_commit(repo, branch)
    )


def _current_branch(worktree: Path) -> str:
    return subprocess.run(
        ["git", "branch", "--show-current"], cwd=worktree, capture_output=True, text=True
    ).stdout.strip()


def test_new_repository_is_seeded_on_main(repo):
    assert _current_branch(repo) == "main"
    assert log_subjects(repo, "main") == ["Initial commit"]
    assert file_at(repo, "main", "notes.md") == "one\ntwo\nthree\n"
    assert file_at(repo, "main", "missing.txt") is None
    assert len(head_commit(repo)) == 40


def test_repository_without_seed_files_gets_a_readme(tmp_path):
    path = ensure_repository(tmp_path / "blank")

    assert file_at(path, "main", "README.md") == "# blank\n"


def test_existing_folder_is_committed_as_it_is(tmp_path):
    folder = tmp_path / "existing"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text("print('hi')\n")

    ensure_repository(folder, seed_files={"ignored.md": "not written"})

    assert file_at(folder, "main", "src/app.py") == "print('hi')\n"
    assert file_at(folder, "main", "ignored.md") is None
    assert log_subjects(folder, "main") == ["Initial commit"]


def _at_once(make, threads: int = 8) -> list:
    """`make()` called by `threads` threads released together; what each returned or raised."""
    barrier, outcomes = threading.Barrier(threads), []

    def call() -> None:
        barrier.wait()
        try:
            outcomes.append(make())
        except GitError as exc:
            outcomes.append(exc)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def test_a_new_repository_made_by_many_at_once_is_made_once(tmp_path):
    # The first tasks of a new project all find its repository missing at the same moment;
    # none may see it half made (a `.git` folder without its first commit) and fail.
    path = tmp_path / "new"

    made = _at_once(lambda: ensure_repository(path, seed_files={"README.md": "# New\n"}))

    assert made == [path] * 8
    assert log_subjects(path, "main") == ["Initial commit"]


def test_a_clone_wanted_by_many_at_once_is_cloned_once(repo, tmp_path):
    # A remote worker's threads all find the project's clone missing at once.
    path = tmp_path / "box" / "project"

    cloned = _at_once(lambda: clone_repository(str(repo), path, "token"))

    assert cloned == [path] * 8
    assert head_commit(path, "main") == head_commit(repo, "main")


def test_ensure_start_and_add_are_idempotent(repo, tmp_path):
    first_head = head_commit(repo)
    assert ensure_repository(repo, seed_files={"other.md": "x"}) == repo
    assert head_commit(repo) == first_head

    branch, commit = start_run_branch(repo, 7)
    assert (branch, commit) == ("orchestra/run-7", first_head)
    worktree = add_worktree(repo, tmp_path / "wt" / "implement", "orchestra/x", commit)
    (worktree / "draft.md").write_text("unsaved work\n")
    commit_all(worktree, "Advance the step")

    # The run branch moved on; a second start and a second add leave everything as it was.
    (repo / "extra.md").write_text("more\n")
    commit_all(repo, "Move main")
    assert start_run_branch(repo, 7) == (branch, commit)
    (worktree / "draft.md").write_text("still unsaved\n")
    assert add_worktree(repo, worktree, "orchestra/x", first_head) == worktree
    assert (worktree / "draft.md").read_text() == "still unsaved\n"
    assert log_subjects(worktree, "HEAD")[0] == "Advance the step"

    with pytest.raises(GitError, match="already a worktree on orchestra/x"):
        add_worktree(repo, worktree, "orchestra/y", first_head)


def test_add_worktree_checks_out_an_existing_branch_as_it_is(repo, run, tmp_path):
    worktree = _step(repo, tmp_path, run, "implement")
    (worktree / "a.txt").write_text("a\n")
    step_head = commit_all(worktree, "Add a")
    remove_worktree(repo, worktree)

    again = add_worktree(repo, tmp_path / "elsewhere", step_branch_name(7, "implement"), run[1])

    assert head_commit(again) == step_head
    assert (again / "a.txt").read_text() == "a\n"


def test_clone_from_a_local_path_creates_main(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.test"]
    subprocess.run(["git", "init", "-q", "-b", "trunk"], cwd=source, check=True)
    (source / "app.py").write_text("print(1)\n")
    subprocess.run(["git", "add", "-A"], cwd=source, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Start"], cwd=source, check=True)

    clone = ensure_repository(tmp_path / "clone", source=str(source))

    assert head_commit(clone, "main") == head_commit(source, "trunk")
    assert _current_branch(clone) == "main"
    assert file_at(clone, "main", "app.py") == "print(1)\n"
    assert ensure_repository(clone, source=str(source)) == clone


def test_step_branches_do_not_clash_with_the_run_branch(repo, run):
    assert run_branch_name(7) == run[0]
    assert step_branch_name(7, "research-sources") == "orchestra/run-7-steps/research-sources"
    with pytest.raises(ValueError):
        step_branch_name(7, "../escape")


def test_non_conflicting_steps_both_merge(repo, run, tmp_path):
    branch, _ = run
    integration = tmp_path / "integration"
    research = _step(repo, tmp_path, run, "research")
    implement = _step(repo, tmp_path, run, "implement")
    (research / "sources.md").write_text("sources\n")
    (implement / "app.py").write_text("print('app')\n")
    commit_all(research, "Research")
    commit_all(implement, "Implement")

    first = merge_step(repo, branch, step_branch_name(7, "research"), integration, "Merge research")
    second = merge_step(
        repo, branch, step_branch_name(7, "implement"), integration, "Merge implement"
    )

    assert first.ok and second.ok
    assert second.commit == head_commit(repo, branch)
    assert file_at(repo, branch, "sources.md") == "sources\n"
    assert file_at(repo, branch, "app.py") == "print('app')\n"
    subjects = log_subjects(repo, branch)
    assert subjects[0] == "Merge implement" and "Merge research" in subjects
    assert file_at(repo, "main", "app.py") is None


def test_merging_an_already_merged_step_is_a_no_op(repo, run, tmp_path):
    branch, _ = run
    integration = tmp_path / "integration"
    worktree = _step(repo, tmp_path, run, "implement")
    (worktree / "app.py").write_text("x = 1\n")
    commit_all(worktree, "Implement")
    merged = merge_step(repo, branch, step_branch_name(7, "implement"), integration, "Merge")

    again = merge_step(repo, branch, step_branch_name(7, "implement"), integration, "Merge")

    assert again.ok and again.commit == merged.commit
    assert log_subjects(repo, branch).count("Merge") == 1


def test_conflicting_step_is_resolved_in_its_worktree(repo, run, tmp_path):
    branch, _ = run
    integration = tmp_path / "integration"
    first = _step(repo, tmp_path, run, "first")
    second = _step(repo, tmp_path, run, "second")
    (first / "notes.md").write_text("one\nTWO from first\nthree\n")
    (second / "notes.md").write_text("one\nTWO from second\nthree\n")
    commit_all(first, "First edit")
    commit_all(second, "Second edit")
    merged = merge_step(repo, branch, step_branch_name(7, "first"), integration, "Merge first")

    refused = merge_step(repo, branch, step_branch_name(7, "second"), integration, "Merge second")

    assert merged.ok
    assert not refused.ok and refused.commit == ""
    assert refused.conflicts == ["notes.md"]
    assert "=== notes.md" in refused.detail
    for marker in ("<<<<<<<", "=======", ">>>>>>>", "TWO from first", "TWO from second"):
        assert marker in refused.detail
    assert head_commit(repo, branch) == merged.commit
    assert file_at(repo, branch, "notes.md") == "one\nTWO from first\nthree\n"
    assert (integration / "notes.md").read_text() == "one\nTWO from first\nthree\n"

    conflicts = merge_into_worktree(second, head_commit(repo, branch))
    assert conflicts == ["notes.md"]
    assert "<<<<<<<" in (second / "notes.md").read_text()
    with pytest.raises(GitError, match="conflict markers remain in notes.md"):
        commit_all(second, "Resolve too early")

    (second / "notes.md").write_text("one\nTWO from both\nthree\n")
    assert commit_all(second, "Resolve the notes conflict") == head_commit(second)
    final = merge_step(repo, branch, step_branch_name(7, "second"), integration, "Merge second")

    assert final.ok
    assert file_at(repo, branch, "notes.md") == "one\nTWO from both\nthree\n"
    subjects = log_subjects(repo, branch)
    assert subjects[0] == "Merge second" and "Resolve the notes conflict" in subjects


def test_merge_into_worktree_commits_a_clean_merge(repo, run, tmp_path):
    branch, _ = run
    done = _step(repo, tmp_path, run, "done")
    later = _step(repo, tmp_path, run, "later")
    (done / "a.txt").write_text("a\n")
    commit_all(done, "Add a")
    merge_step(repo, branch, step_branch_name(7, "done"), tmp_path / "integration", "Merge done")

    assert merge_into_worktree(later, head_commit(repo, branch)) == []
    assert (later / "a.txt").read_text() == "a\n"
    assert log_subjects(later, "HEAD")[0] == "Merge run branch"
    assert changed_paths(later, "HEAD") == []


def test_commit_all_commits_everything_or_nothing(repo, run, tmp_path):
    worktree = _step(repo, tmp_path, run, "implement")
    assert commit_all(worktree, "Nothing") is None

    (worktree / "README.md").unlink()
    (worktree / "new").mkdir()
    (worktree / "new" / "file.txt").write_text("new\n")
    sha = commit_all(worktree, "Everything")

    assert sha == head_commit(repo, step_branch_name(7, "implement"))
    assert file_at(repo, sha, "README.md") is None
    assert file_at(repo, sha, "new/file.txt") == "new\n"
    assert changed_paths(worktree, "HEAD") == []


def test_changed_paths_and_diff_include_untracked_files(repo, run, tmp_path):
    worktree = _step(repo, tmp_path, run, "implement")
    base = head_commit(worktree)
    (worktree / "committed.txt").write_text("committed\n")
    commit_all(worktree, "Commit one")
    (worktree / "notes.md").write_text("one\nchanged\nthree\n")
    (worktree / "fresh").mkdir()
    (worktree / "fresh" / "untracked.txt").write_text("brand new\n")
    (worktree / ".gitignore").write_text("*.log\n")
    (worktree / "debug.log").write_text("ignored\n")

    paths = changed_paths(worktree, base)
    diff = diff_since(worktree, base)

    assert paths == [".gitignore", "committed.txt", "fresh/untracked.txt", "notes.md"]
    assert "+brand new" in diff and "+changed" in diff and "+committed" in diff
    assert "debug.log" not in diff
    assert changed_paths(worktree, "HEAD") == [".gitignore", "fresh/untracked.txt", "notes.md"]
    # The worktree's own index was not touched by the diff.
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=worktree, capture_output=True, text=True
    ).stdout
    assert "?? fresh/" in status
    capped = diff_since(worktree, base, limit=50)
    assert capped.startswith(diff[:50]) and "truncated" in capped


def test_export_tree_has_the_files_and_no_git(repo, run, tmp_path):
    worktree = _step(repo, tmp_path, run, "implement")
    (worktree / "pkg").mkdir()
    (worktree / "pkg" / "mod.py").write_text("VALUE = 1\n")
    sha = commit_all(worktree, "Add a module")
    target = tmp_path / "export" / "tree"

    export_tree(repo, sha, target)

    assert not (target / ".git").exists()
    assert (target / "pkg" / "mod.py").read_text() == "VALUE = 1\n"
    assert (target / "notes.md").read_text() == "one\ntwo\nthree\n"


def test_remove_worktree_is_idempotent(repo, run, tmp_path):
    worktree = _step(repo, tmp_path, run, "implement")
    (worktree / "dirty.txt").write_text("uncommitted\n")

    remove_worktree(repo, worktree)
    remove_worktree(repo, worktree)

    assert not worktree.exists()
    listing = subprocess.run(
        ["git", "worktree", "list"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert "implement" not in listing


def test_git_error_names_the_command_and_git_message(repo):
    with pytest.raises(GitError) as caught:
        head_commit(repo, "no-such-branch")

    assert "git rev-parse --verify 'no-such-branch^{commit}'" in str(caught.value)
    assert "fatal" in str(caught.value)


def test_concurrent_merges_are_serialised(repo, run, tmp_path):
    branch, _ = run
    keys = ["alpha", "beta", "gamma", "delta"]
    for key in keys:
        worktree = _step(repo, tmp_path, run, key)
        (worktree / f"{key}.txt").write_text(f"{key}\n")
        commit_all(worktree, f"Work on {key}")
    outcomes = {}
    barrier = threading.Barrier(len(keys))

    def merge(key: str) -> None:
        barrier.wait()
        outcomes[key] = merge_step(
            repo, branch, step_branch_name(7, key), tmp_path / "integration", f"Merge {key}"
        )

    threads = [threading.Thread(target=merge, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert all(outcomes[key].ok for key in keys), outcomes
    for key in keys:
        assert file_at(repo, branch, f"{key}.txt") == f"{key}\n"
    merges = [subject for subject in log_subjects(repo, branch) if subject.startswith("Merge")]
    assert sorted(merges) == sorted(f"Merge {key}" for key in keys)
