"""The clock: what happens to a checkpoint when no person decides in time.

A pending checkpoint past its deadline is decided by the system with the policy's timeout
outcome (`record_expiry`); one whose reminder is due is reminded, once, and escalated to the
reminder's group (`send_due_reminders`). The engine's `expire_due`, run by beat, drives both.
"""

from approvals.models import Checkpoint
from approvals.notify import notify_checkpoint
from approvals.policies import TIMEOUT_OUTCOMES
from approvals.services import Decided, close_checkpoint
from orchestra.events import emit, locked_run


def due_for_expiry(now) -> list[tuple[int, int]]:
    """(checkpoint id, run id) of every pending checkpoint past its deadline."""
    return list(
        Checkpoint.objects.filter(status=Checkpoint.Status.PENDING, expires_at__lte=now)
        .values_list("pk", "run_id")
        .order_by("pk")
    )


def send_due_reminders(now) -> None:
    """Remind (and escalate to the reminder's group) every pending checkpoint whose reminder
    is due."""
    for checkpoint_id, run_id in Checkpoint.objects.filter(
        status=Checkpoint.Status.PENDING, remind_at__lte=now, reminded_at__isnull=True
    ).values_list("pk", "run_id"):
        _remind(checkpoint_id, run_id, now)


def record_expiry(checkpoint_id: int, run_id: int, now) -> Decided | None:
    """Decide an expired checkpoint as the system, with the policy's timeout outcome; None
    when it was decided meanwhile or its deadline moved."""
    with locked_run(run_id) as run:
        checkpoint = Checkpoint.objects.select_related("tool_call").get(pk=checkpoint_id)
        if checkpoint.status != Checkpoint.Status.PENDING or checkpoint.expires_at > now:
            return None
        outcome = checkpoint.timeout_outcome
        decision = outcome if outcome in TIMEOUT_OUTCOMES else "reject"
        if decision == "reject_stop" and checkpoint.step_id is None:
            decision = "reject"
        waited = round((checkpoint.expires_at - checkpoint.requested_at).total_seconds() / 60)
        reason = (
            f"expired: no decision within {waited} minutes (deadline "
            f"{checkpoint.expires_at.isoformat(timespec='seconds')})"
        )
        close_checkpoint(run, checkpoint, Checkpoint.Status.EXPIRED, decision, reason)
        return Decided(checkpoint, decision, reason)


def _remind(checkpoint_id: int, run_id: int, now) -> None:
    with locked_run(run_id) as run:
        updated = Checkpoint.objects.filter(
            pk=checkpoint_id, status=Checkpoint.Status.PENDING, reminded_at__isnull=True
        ).update(reminded_at=now)
        if not updated:
            return
        checkpoint = Checkpoint.objects.get(pk=checkpoint_id)
        emit(
            run,
            "approval.reminder",
            step=checkpoint.step,
            data={"checkpoint": checkpoint.pk, "escalated_to": checkpoint.escalate_group},
        )
        notify_checkpoint(checkpoint, "reminder")
