"""The whole cycle with the demo model, in process: plan, parallel steps, a revision, two
gated tool calls, approvals, report."""

import pytest

from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def pending(run):
    return list(Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING))


def test_demo_run_reaches_completed_through_approvals(demo, owner, approver):
    run = start_run(owner, demo, "Add a greeting module", "Say hello.")
    run.refresh_from_db()
    assert run.status == Run.Status.AWAITING_APPROVAL, run.error
    [exec_checkpoint] = pending(run)
    assert exec_checkpoint.kind == Checkpoint.Kind.TOOL_CALL
    assert exec_checkpoint.shown["tool"] == "run_command"

    decide_checkpoint(approver, exec_checkpoint, "approve", "go")
    run.refresh_from_db()
    [deploy_checkpoint] = pending(run)
    assert deploy_checkpoint.kind == Checkpoint.Kind.DEPLOY

    decide_checkpoint(approver, deploy_checkpoint, "approve", "ship it")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert "implement" in run.report and "deploy" in run.report
    steps = {s.key: s for s in run.steps.all()}
    assert all(s.status == Step.Status.DONE for s in steps.values())
    assert steps["implement"].revisions == 1
    kinds = set(run.events.values_list("kind", flat=True))
    for kind in [
        "run.created",
        "plan.proposed",
        "plan.accepted",
        "step.dispatched",
        "step.started",
        "model.called",
        "tool.called",
        "approval.requested",
        "approval.decided",
        "review.verdict",
        "step.completed",
        "report.published",
        "run.completed",
    ]:
        assert kind in kinds, kind
    seqs = list(run.events.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_content_team_runs_two_research_steps_side_by_side(db, owner):
    from orchestra.engine.projects import create_project

    owner.is_superuser = True
    owner.save()
    project = create_project(owner, "blog", "Blog", "content")
    run = start_run(owner, project, "Write about checkpoints")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    steps = {s.key: s for s in run.steps.all()}
    assert list(steps) == ["research-sources", "research-audience", "write", "edit", "format"]
    assert steps["research-sources"].depends_on == steps["research-audience"].depends_on == []
    assert set(steps["write"].depends_on) == {"research-sources", "research-audience"}
    dispatched = list(
        run.events.filter(kind="step.dispatched").values_list("step__key", flat=True)[:2]
    )
    assert dispatched == ["research-sources", "research-audience"]  # one dispatch, together


def test_plan_approval_is_a_checkpoint_before_dispatch(demo, owner, approver):
    demo.requires_plan_approval = True
    demo.save()
    run = start_run(owner, demo, "Approve my plan first")
    run.refresh_from_db()
    assert run.status == Run.Status.AWAITING_APPROVAL
    assert not run.steps.exists()
    [checkpoint] = pending(run)
    assert checkpoint.kind == Checkpoint.Kind.PLAN
    assert [s["key"] for s in checkpoint.shown["plan"]["steps"]][:2] == ["research", "implement"]
    decide_checkpoint(approver, checkpoint, "approve", "scope ok")
    run.refresh_from_db()
    assert run.steps.count() == 5
    assert pending(run)[0].kind == Checkpoint.Kind.TOOL_CALL  # dispatched and ran to the exec


def test_rejected_plan_fails_the_run_with_the_comment(demo, owner, approver):
    demo.requires_plan_approval = True
    demo.save()
    run = start_run(owner, demo, "Reject my plan")
    decide_checkpoint(approver, pending(run)[0], "reject", "Too broad.")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and "Too broad." in run.error
