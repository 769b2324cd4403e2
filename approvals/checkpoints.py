"""Opening a checkpoint: the one place a pause for a human is created, whatever asks for it
(a tool call the policy gates, a plan that needs review, an escalated review)."""

from datetime import timedelta

from django.utils import timezone

from approvals.models import Checkpoint
from approvals.policies import Verdict
from orchestra.events import emit
from orchestra.models import Run


def open_checkpoint(
    run: Run,
    *,
    kind: str,
    shown: dict,
    verdict: Verdict | None = None,
    actor: str = "engine",
    **links,
) -> Checkpoint:
    """Create the checkpoint with what the policy asks of it (approvers, deadline, reminder),
    emit `approval.requested` and queue its notifications. Caller holds the run lock;
    `links` are the step, tool_call or plan it belongs to."""
    now = timezone.now()
    excluded = []
    if verdict is not None and verdict.exclude_task_creator and run.task.created_by_id:
        excluded = [run.task.created_by_id]
    checkpoint = Checkpoint.objects.create(
        run=run,
        kind=kind,
        shown=shown,
        rule=verdict.rule if verdict else None,
        approvals_required=verdict.approvals_required if verdict else 1,
        approver_group=verdict.approver_group if verdict else "",
        excluded_approvers=excluded,
        expires_at=_after(now, verdict.deadline_minutes if verdict else None),
        timeout_outcome=verdict.timeout_outcome if verdict else "reject",
        remind_at=_after(now, verdict.remind_after_minutes if verdict else None),
        escalate_group=verdict.escalate_group if verdict else "",
        **links,
    )
    emit(
        run,
        "approval.requested",
        step=links.get("step"),
        actor=actor,
        data={
            "checkpoint": checkpoint.pk,
            "kind": kind,
            "approvals_required": checkpoint.approvals_required,
            "expires_at": checkpoint.expires_at.isoformat() if checkpoint.expires_at else None,
            **({"policy": verdict.reason} if verdict else {}),
            **{k: shown[k] for k in ("tool", "risk", "arguments") if k in shown},
        },
    )
    from approvals.notify import notify_checkpoint

    notify_checkpoint(checkpoint, "opened")
    return checkpoint


def _after(now, minutes: int | None):
    return now + timedelta(minutes=minutes) if minutes else None
