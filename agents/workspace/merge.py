"""Merging: the merge queue, the conflicts it reports, and the run branch into a step.

The merge queue (`merge_step`) integrates step branches into the run branch one at a time;
`merge_into_worktree` brings the run branch into a step's worktree for its agent to resolve.
"""

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from agents.workspace import libgit, parking
from agents.workspace.gitcmd import (
    GitError,
    capped,
    decoded,
    git_output,
    nul_separated,
    repository_lock,
    run_git,
)
from agents.workspace.repository import head_commit
from agents.workspace.worktrees import add_worktree_locked, merge_in_progress, unmerged_paths

DETAIL_LIMIT = 8000
RUN_MERGE_MESSAGE = "Merge run branch"
_CONTEXT_LINES = 3


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


# -- Merging -----------------------------------------------------------------------------------


def merge_step(
    repo: Path,
    run_branch: str,
    step_branch: str,
    integration_path: Path,
    message: str,
    *,
    cut_from: str = "",
) -> MergeOutcome:
    """Integrate `step_branch` into `run_branch` with a merge commit: the merge queue.

    When no path changed on both sides (steps keep to their claims, so nearly always) the
    merge is computed in process from the trees that differ and committed without a checkout;
    the run branch moves by compare-and-swap from the head the merge was made on. Otherwise
    git decides: `git merge-tree` (a clean result is committed as above), else the merge is
    replayed in the integration worktree at `integration_path` (created on `run_branch` if
    missing; leftovers of an interrupted merge there are discarded first) to collect the
    conflict hunks, then aborted, so the run branch is untouched, and the outcome lists the
    conflicts. A step branch that is already merged is a no-op returning the current head.
    `cut_from`: the commit the step branch was cut from, when known (the merge base is then
    found without walking the run's history, see `libgit.step_ancestry`). Holds the
    repository lock for the whole merge: one merge at a time per repository.
    """
    integration_path = Path(integration_path)
    with repository_lock(repo):
        repository = libgit.open_repository(repo)
        run_ref = libgit.branch_ref(repository, run_branch)
        run_head = run_ref.peel(pygit2.Commit).id
        step_head = libgit.commit_of(repository, f"refs/heads/{step_branch}").id
        base = _merge_base(repository, run_head, step_head, cut_from)
        if base == step_head:  # merged already
            return MergeOutcome(ok=True, commit=str(run_head))
        try:
            tree = libgit.trivial_merge(
                repository,
                repository[base].tree if base is not None else None,
                repository[run_head].tree,
                repository[step_head].tree,
            )
        except libgit.NotTrivial:
            return _merge_with_git(
                repo, repository, run_ref, step_branch, step_head, integration_path, message
            )
        return _commit_merge(repository, run_ref, step_head, tree, message)


def _merge_base(
    repository: pygit2.Repository, run_head: pygit2.Oid, step_head: pygit2.Oid, cut_from: str
) -> pygit2.Oid | None:
    """The merge base of the run head and the step head; the step head when it is merged
    already (the run head descends from it)."""
    if step_head == run_head:
        return step_head
    known = None
    if cut_from:
        with contextlib.suppress(ValueError):  # not a commit id: libgit2's walk below
            cut = pygit2.Oid(hex=cut_from)
            known = libgit.step_ancestry(repository, run_head, step_head, cut)
    if known is not None:
        return known
    return repository.merge_base(run_head, step_head)  # the step head when it is merged


def _commit_merge(
    repository: pygit2.Repository,
    run_ref: pygit2.Reference,
    step_head: pygit2.Oid,
    tree: pygit2.Oid,
    message: str,
) -> MergeOutcome:
    """The merge commit of the run head and the step head with `tree`, as `git commit-tree`
    would make it; the run branch moves to it by compare-and-swap (libgit2 moves the ref only
    from the head it was read at, so a merge made on a stale head fails instead of losing
    work)."""
    author = libgit.signature()
    parents = [run_ref.target, step_head]
    commit = repository.create_commit(None, author, author, message + "\n", tree, parents)
    libgit.remember_parents(commit, parents)
    try:
        run_ref.set_target(commit, f"merge: {message}")
    except pygit2.GitError as exc:
        raise GitError(f"The run branch {run_ref.shorthand} moved during the merge: {exc}") from exc
    return MergeOutcome(ok=True, commit=str(commit))


def _merge_with_git(
    repo: Path,
    repository: pygit2.Repository,
    run_ref: pygit2.Reference,
    step_branch: str,
    step_head: pygit2.Oid,
    integration_path: Path,
    message: str,
) -> MergeOutcome:
    """A merge where both sides changed the same paths: git's own merge machinery decides
    (renames, merge attributes), and shows conflicts as git writes them. Caller holds the
    repository lock."""
    run_branch = run_ref.shorthand
    tree = run_git(
        repo, "merge-tree", "--write-tree", str(run_ref.target), str(step_head), check=False
    )
    if tree.returncode == 0:
        clean = pygit2.Oid(hex=decoded(tree.stdout).split()[0])
        return _commit_merge(repository, run_ref, step_head, clean, message)
    # A conflict (or an error): a real merge in the integration worktree shows the
    # conflict hunks as git writes them, then is aborted.
    add_worktree_locked(repo, integration_path, run_branch, run_branch)
    _reset_integration_worktree(integration_path)
    result = run_git(
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
    conflicts = unmerged_paths(integration_path)
    if not conflicts:
        _reset_integration_worktree(integration_path)
        stderr = decoded(result.stderr).strip() or decoded(result.stdout).strip()
        raise GitError(
            f"`git merge {step_branch}` failed in {integration_path}: {stderr}",
            ("merge", step_branch),
            stderr,
        )
    detail = _conflict_detail(integration_path, conflicts)
    git_output(integration_path, "merge", "--abort")
    return MergeOutcome(ok=False, commit="", conflicts=conflicts, detail=detail)


def _reset_integration_worktree(path: Path) -> None:
    # Nobody works in the integration worktree; anything there beyond the run branch head is
    # debris of a merge that was interrupted (a killed process).
    if merge_in_progress(path):
        git_output(path, "merge", "--abort")
    git_output(path, "reset", "--quiet", "--hard", "HEAD")
    git_output(path, "clean", "--quiet", "--force", "-d")


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
    return capped("\n".join(sections), DETAIL_LIMIT, "conflict detail")


def _unmerged_stages(worktree: Path) -> dict[str, set[int]]:
    # Records look like "<mode> <sha> <stage>\t<path>"; stage 2 is ours, 3 is theirs.
    stages: dict[str, set[int]] = {}
    for record in nul_separated(git_output(worktree, "ls-files", "--unmerged", "-z")):
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
    parking.unmark(worktree)
    result = run_git(worktree, "merge", "--no-ff", "--no-commit", commit, check=False)
    if result.returncode == 0:
        if merge_in_progress(worktree):
            git_output(worktree, "commit", "--quiet", "--message", RUN_MERGE_MESSAGE)
        return []
    conflicts = unmerged_paths(worktree)
    if not conflicts:
        stderr = decoded(result.stderr).strip() or decoded(result.stdout).strip()
        raise GitError(
            f"`git merge --no-ff --no-commit {commit}` failed in {worktree}: {stderr}",
            ("merge", "--no-ff", "--no-commit", commit),
            stderr,
        )
    return conflicts
