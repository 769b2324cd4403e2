"""A remote worker's worktrees, against the central repository served by a live server: made
from the fetched run head, pushed after the commit, rebuilt from the central branch when
another worker did a round since, the run head merged in for a conflict round, and removed
once the run has ended."""

import pytest

from agents import workspace as git
from orchestra.credentials import issue_worker_token
from orchestra.engine import workspaces
from orchestra.models import Plan, Run, Step, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote_step(demo, live_server, settings, tmp_path):
    """A run of one step, its central repository in `central/`, this process a remote worker
    whose own workspaces are in `box/`."""
    demo.workspace_path = str(tmp_path / "central" / "demo")
    demo.save(update_fields=["workspace_path"])
    task = Task.objects.create(project=demo, title="Remote work")
    run = Run.objects.create(task=task, project=demo, status=Run.Status.RUNNING)
    plan = Plan.objects.create(run=run, version=1)
    step = Step.objects.create(
        run=run, plan=plan, key="build", title="Build", agent_role="coder", attempts=1
    )
    run.branch, run.base_commit = workspaces.cut_run_branch(run)
    run.save(update_fields=["branch", "base_commit"])
    settings.ORCHESTRA_WORKSPACES = tmp_path / "box"
    settings.ORCHESTRA_GIT_REMOTE = f"{live_server.url}/git"
    settings.ORCHESTRA_GIT_TOKEN = issue_worker_token("box")
    step.status = Step.Status.READY
    return run, step


def central_commit(run: Run, branch: str, path: str, text: str) -> str:
    """A commit on `branch` of the central repository, as another worker's push or a merge
    would leave it."""
    repo = workspaces.central_repository(run.project)
    worktree = git.add_worktree(
        repo, repo.parent / "other" / branch.replace("/", "_"), branch, run.base_commit
    )
    (worktree / path).write_text(text)
    return git.commit_all(worktree, f"elsewhere: {path}")


def test_a_remote_step_is_prepared_here_and_pushed_to_the_central_repository(remote_step):
    run, step = remote_step
    fields = workspaces.prepare_worktree(run, step)
    assert set(fields) == {"branch", "base_commit", "worktree"}
    worktree = workspaces.worktree_of(step)
    assert str(worktree) == step.worktree
    assert worktree.is_relative_to(workspaces.repository_for(run.project).parent)
    assert step.base_commit == run.base_commit

    (worktree / "built.txt").write_text("built here\n")
    workspaces.commit_step(step)
    central = workspaces.central_repository(run.project)
    assert git.head_commit(central, step.branch) == step.head_commit
    assert step.touched == ["built.txt"]


def test_a_revision_starts_from_the_central_branch_and_a_conflict_round_from_the_run_head(
    remote_step,
):
    run, step = remote_step
    workspaces.prepare_worktree(run, step)
    worktree = workspaces.worktree_of(step)
    (worktree / "shared.txt").write_text("mine\n")
    workspaces.commit_step(step)

    # Another worker did a round since: the stale worktree starts from the central head.
    other = central_commit(run, step.branch, "other.txt", "another worker's round\n")
    (worktree / "scratch.txt").write_text("left behind\n")
    step.status = Step.Status.REVISING
    step.feedback = "Please also add other.txt"
    workspaces.prepare_worktree(run, step)
    assert git.head_commit(worktree) == other
    assert (worktree / "other.txt").is_file() and not (worktree / "scratch.txt").exists()

    # The run branch moved with a clashing change: the conflict round gets the markers.
    central_commit(run, run.branch, "shared.txt", "theirs\n")
    step.feedback = f"{workspaces.CONFLICT_FEEDBACK} with work another step merged first."
    workspaces.prepare_worktree(run, step)
    assert git.merge_in_progress(worktree)
    assert "<<<<<<<" in (worktree / "shared.txt").read_text()


def test_a_finished_runs_worktrees_go_when_the_worker_next_prepares_one(remote_step):
    run, step = remote_step
    workspaces.prepare_worktree(run, step)
    folder = workspaces.worktree_of(step).parent
    Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED)
    workspaces.remove_finished_worktrees(run.project)
    assert not folder.exists()
    repo = workspaces.repository_for(run.project)
    assert git.head_commit(repo, step.branch)  # the branch stays
