"""The whole cycle with the demo model, in process: plan, parallel steps, a revision, two
gated tool calls, approvals, report."""

import pytest

from approvals.models import Checkpoint
from approvals.services import decide_checkpoint
from orchestra.models import Run, Step
from orchestra.services.engine import start_run

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
