"""A deploy's approval page shows what ships: the run branch's integrated head, the files it
changes since the environment's last deploy (or the run's base commit), and the full diff.
Real demo runs through the in-process engine, taken to their deploy checkpoint."""

import re

import pytest

from agents import workspace as git
from agents.models import ToolCall
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run, workspaces
from orchestra.engine.shipping import deploy_preview, last_deployed_commit
from orchestra.models import Run

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def at_the_deploy(run: Run, approver) -> Checkpoint:
    """Approve the run's tool calls until its deploy asks."""
    for _ in range(6):
        checkpoint = Checkpoint.objects.get(run=run, status=Checkpoint.Status.PENDING)
        if checkpoint.kind == Checkpoint.Kind.DEPLOY:
            return checkpoint
        decide_checkpoint(approver, checkpoint, "approve")
    raise AssertionError("the run never asked to deploy")


def test_the_deploy_page_shows_the_commit_and_the_changed_files(demo, owner, approver):
    run = start_run(owner, demo, "Ship the greeting")
    deploy = at_the_deploy(run, approver)
    run.refresh_from_db()
    head = workspaces.run_head(run)
    assert head != run.base_commit
    # Recorded when the checkpoint opened: what the person approves is what was shown.
    assert deploy.shown["ships"]["commit"] == head

    page = client_for(approver).get(f"/approvals/{deploy.pk}/")
    assert page.status_code == 200
    text = page.text
    assert re.search(rf'id="ships-commit" title="{head}">{head[:12]}<', text)
    assert "the run's base commit: nothing was deployed to <strong>demo</strong>" in text
    preview = page.context["ships"]
    assert preview["commit"] == head and preview["base"] == run.base_commit
    assert preview["base_is_last_deploy"] is False
    greeting = next(f for f in preview["files"] if f["path"] == "src/greeting.py")
    assert greeting["status"] == "added" and greeting["added"] > 0 and greeting["deleted"] == 0
    assert preview["insertions"] == sum(f["added"] for f in preview["files"])
    assert preview["file_count"] == len(preview["files"])
    assert "<code>src/greeting.py</code>" in text
    assert re.search(r"\d+ files? changed, <span class=\"diff-add\">\+\d+", text)

    link = f"/runs/{run.pk}/diff/?from={run.base_commit}&amp;to={head}"
    assert link in text
    diff = client_for(approver).get(link.replace("&amp;", "&"))
    assert diff.status_code == 200
    assert "+++ b/src/greeting.py" in diff.text and "diff-add" in diff.text


def test_the_diff_view_takes_only_commits_of_the_runs_repository(demo, owner, approver, outsider):
    run = start_run(owner, demo, "Diff access")
    run.refresh_from_db()
    head = workspaces.run_head(run)
    path = f"/runs/{run.pk}/diff/"
    ok = client_for(approver).get(path, {"from": run.base_commit, "to": head})
    assert ok.status_code == 200
    for query in (
        {"from": "0" * 40, "to": head},  # well formed, not a commit here
        {"from": "--output=/tmp/x", "to": head},  # not a sha at all
        {"from": run.base_commit, "to": "HEAD"},  # refs are not taken
        {"to": head},
    ):
        assert client_for(approver).get(path, query).status_code == 404, query
    # The tree of a commit is not a commit.
    tree = git._git(workspaces.repository_for(demo), "rev-parse", f"{head}^{{tree}}").strip()
    assert client_for(approver).get(path, {"from": tree, "to": head}).status_code == 404
    assert client_for(outsider).get(path, {"from": run.base_commit, "to": head}).status_code == 404


def test_a_second_deploy_diffs_against_the_first_ones_commit(demo, owner, approver):
    first = start_run(owner, demo, "First release")
    deploy = at_the_deploy(first, approver)
    first.refresh_from_db()
    shipped = workspaces.run_head(first)  # what the deploy exports
    decide_checkpoint(approver, deploy, "approve")
    first.refresh_from_db()
    assert first.status == Run.Status.COMPLETED, first.error
    assert shipped[:10] in ToolCall.objects.get(pk=deploy.tool_call_id).result
    assert last_deployed_commit(demo, "demo") == shipped
    assert last_deployed_commit(demo, "production") is None

    second = start_run(owner, demo, "Second release")
    again = at_the_deploy(second, approver)
    second.refresh_from_db()
    page = client_for(approver).get(f"/approvals/{again.pk}/")
    preview = page.context["ships"]
    assert preview["base"] == shipped and preview["base_is_last_deploy"] is True
    assert preview["commit"] == workspaces.run_head(second)
    assert "the last commit deployed to <strong>demo</strong>" in page.text
    # Another environment has seen nothing: the run's own base.
    elsewhere = deploy_preview(second, "staging")
    assert elsewhere["base"] == second.base_commit and not elsewhere["base_is_last_deploy"]


def test_a_recorded_preview_is_shown_as_recorded(demo, owner, approver):
    run = start_run(owner, demo, "Recorded preview")
    deploy = at_the_deploy(run, approver)
    recorded = {
        "environment": "demo",
        "commit": "a" * 40,
        "base": "b" * 40,
        "base_is_last_deploy": True,
        "commits": [{"sha": "a" * 40, "subject": "Recorded when the checkpoint opened"}],
        "commit_count": 1,
        "files": [{"path": "docs/recorded.md", "status": "modified", "added": 3, "deleted": 1}],
        "file_count": 1,
        "insertions": 3,
        "deletions": 1,
    }
    Checkpoint.objects.filter(pk=deploy.pk).update(shown={**deploy.shown, "ships": recorded})
    page = client_for(approver).get(f"/approvals/{deploy.pk}/")
    assert page.context["ships"] == recorded
    assert "<code>docs/recorded.md</code>" in page.text
    assert "Recorded when the checkpoint opened" in page.text
    assert "1 file changed" in page.text


def test_what_ships_is_the_commit_that_was_approved(demo, owner, approver):
    run = start_run(owner, demo, "Ship what was shown")
    deploy = at_the_deploy(run, approver)
    shown = deploy.shown["ships"]["commit"]
    decide_checkpoint(approver, deploy, "approve")

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    [call] = ToolCall.objects.filter(run=run, tool="deploy")
    assert call.status == ToolCall.Status.SUCCEEDED, call.result
    assert last_deployed_commit(demo, "demo") == shown


def test_a_deploy_whose_run_moved_after_approval_ships_nothing(demo, owner, approver):
    run = start_run(owner, demo, "Ship a stale approval")
    deploy = at_the_deploy(run, approver)
    # As if the run branch moved on after the person saw what would ship.
    shown = dict(deploy.shown)
    shown["ships"] = {**shown["ships"], "commit": "f" * 40}
    Checkpoint.objects.filter(pk=deploy.pk).update(shown=shown)
    decide_checkpoint(approver, Checkpoint.objects.get(pk=deploy.pk), "approve")

    [call] = ToolCall.objects.filter(run=run, tool="deploy")
    assert call.status == ToolCall.Status.FAILED
    assert "not the ffffffffffff that was approved; nothing was shipped" in call.result
    assert last_deployed_commit(demo, "demo") is None
