"""What a person's decision (or the clock's, at a deadline) sets in motion for the run.

`approvals` checks and records a decision and returns it; the engine acts on it in the same
transaction, so a recorded decision and its effect commit together or not at all.
"""

from django.db import transaction
from django.utils import timezone

from approvals import expiry
from approvals import services as approvals
from approvals.models import Checkpoint
from approvals.run_rules import Pattern
from approvals.services import Decided
from orchestra import activities, queue
from orchestra.engine import budgets
from orchestra.engine.dispatch import dispatch_ready_steps
from orchestra.engine.merge import accept_step
from orchestra.engine.planning import materialise_plan
from orchestra.engine.report import publish_report, send_report_back
from orchestra.engine.runs import fail_run
from orchestra.engine.transitions import send_back, stop_step
from orchestra.events import locked_run
from orchestra.models import Activity, Plan, Run, Step


def decide_checkpoint(
    user,
    checkpoint: Checkpoint,
    decision: str,
    comment: str = "",
    arguments: dict | None = None,
    *,
    pattern: Pattern | dict | None = None,
    plan_edits: list | None = None,
) -> Checkpoint:
    """Record `user`'s decision (see `approvals.services.record_decision` for the kinds and
    their checks) and resume what waited on it. The run lock taken by the record is held
    until the follow-up commits with it."""
    with transaction.atomic():
        decided = approvals.record_decision(
            user, checkpoint, decision, comment, arguments, pattern=pattern, plan_edits=plan_edits
        )
        if decided.closed:
            with locked_run(checkpoint.run_id) as run:
                follow_up(run, decided)
    checkpoint = decided.checkpoint
    if checkpoint.kind == Checkpoint.Kind.PLAN and checkpoint.status == Checkpoint.Status.APPROVED:
        dispatch_ready_steps(checkpoint.run_id)
    return checkpoint


def expire_due(now=None) -> int:
    """Apply the timeout outcome to every pending checkpoint past its deadline, as decided by
    the system, and send the reminders that are due. Run by beat; tests pass `now`."""
    now = now or timezone.now()
    expired = 0
    for checkpoint_id, run_id in expiry.due_for_expiry(now):
        with transaction.atomic():
            decided = expiry.record_expiry(checkpoint_id, run_id, now)
            if decided is None:
                continue
            with locked_run(run_id) as run:
                follow_up(run, decided)
            expired += 1
    expiry.send_due_reminders(now)
    return expired


def follow_up(run: Run, decided: Decided) -> None:
    """What the decision sets in motion. Caller holds the run lock."""
    checkpoint, decision, comment = decided.checkpoint, decided.decision, decided.comment
    status = checkpoint.status
    if checkpoint.kind in (Checkpoint.Kind.TOOL_CALL, Checkpoint.Kind.DEPLOY):
        if decision == "reject_stop":
            who = checkpoint.decided_by.get_username() if checkpoint.decided_by else "the system"
            stop_step(
                run,
                Step.objects.get(pk=checkpoint.step_id),
                f"stopped by {who} at the `{checkpoint.shown.get('tool')}` checkpoint: "
                + (comment or "no reason given"),
                by=checkpoint.decided_by,
            )
        else:
            activities.schedule(
                Activity.Kind.STEP,
                "orchestra.resume_step",
                run_id=run.pk,
                step_id=checkpoint.step_id,
            )
    elif checkpoint.kind == Checkpoint.Kind.PLAN:
        if status == Checkpoint.Status.APPROVED:
            materialise_plan(run, decided.plan or Plan.objects.get(pk=checkpoint.plan_id))
        else:
            fail_run(run, f"The plan was rejected: {comment or 'no comment given'}")
    elif checkpoint.kind == Checkpoint.Kind.BUDGET:
        budgets.follow_up(run, decided)
    elif checkpoint.kind == Checkpoint.Kind.REPORT:
        if status == Checkpoint.Status.APPROVED:
            publish_report(run)
        elif status == Checkpoint.Status.REJECTED:
            who = checkpoint.decided_by.get_username() if checkpoint.decided_by else "someone"
            send_report_back(run, comment, who)
        else:
            fail_run(run, f"The report was not approved: {comment or 'no decision'}")
    elif checkpoint.kind == Checkpoint.Kind.ESCALATION:
        step = Step.objects.get(pk=checkpoint.step_id)
        if status == Checkpoint.Status.APPROVED:
            if accept_step(run, step):
                queue.enqueue("orchestra.dispatch", run.pk)
        elif decision == "reject_stop":
            reason = f"stopped at review: {comment or 'no reason given'}"
            stop_step(run, step, reason, checkpoint.decided_by)
        else:
            send_back(run, step, comment or "Rejected by a human.", event_data={"by_human": True})
