"""A step's shared transitions: sent back for another round, completed, escalated to a
person, stopped."""

import logging

from django.utils import timezone

from agents.models import AgentRun, ToolCall
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from orchestra import activities
from orchestra.engine.runs import fail_run, sync_run_status
from orchestra.events import emit
from orchestra.models import Activity, Run, Step
from orchestra.writes import save_later

logger = logging.getLogger(__name__)


def complete_step(run: Run, step: Step, also: list[str] = ()) -> None:
    """Done; `also` names other fields the caller set, written in the same UPDATE, when the
    block ends (a dispatch in the same block is told: `dispatch_locked(done=...)`)."""
    step.status = Step.Status.DONE
    step.finished_at = timezone.now()
    save_later(run, step, ["status", "finished_at", *also])
    emit(run, "step.completed", step=step, data={"attempts": step.attempts})


def escalate(run: Run, step: Step, reason: str) -> None:
    """A human decides about the step. Caller holds the run lock."""
    open_checkpoint(
        run,
        kind=Checkpoint.Kind.ESCALATION,
        step=step,
        shown={
            "step": step.key,
            "title": step.title,
            "brief": step.brief,
            "output": step.output,
            "reason": reason,
        },
    )
    step.status = Step.Status.AWAITING_APPROVAL
    step.save(update_fields=["status"])
    sync_run_status(run, step=step)


def stop_step(run: Run, step: Step, reason: str, by=None) -> None:
    """A human (`by`; None for a deadline) stopped the step at a checkpoint: it fails without
    another attempt, and the run is stopped with it (completed outputs are kept). Caller
    holds the run lock."""
    step.status = Step.Status.FAILED
    step.error = reason
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])
    ToolCall.objects.filter(step=step, status=ToolCall.Status.AWAITING_APPROVAL).update(
        status=ToolCall.Status.REJECTED, result=reason, finished_at=step.finished_at
    )
    step.agent_runs.filter(status=AgentRun.Status.PAUSED).update(
        status=AgentRun.Status.CANCELLED, error=reason, finished_at=step.finished_at
    )
    emit(run, "step.failed", step=step, data={"error": reason, "stopped": True})
    fail_run(run, f"Step {step.key!r} was {reason}", stopped_by=by, stopped=True)


def schedule_step(step: Step, task: str = "orchestra.execute_step") -> None:
    """Make the step's activity due (its task sent after commit). Caller holds the run lock
    and saves `task_id`."""
    step.task_id = activities.schedule(
        Activity.Kind.STEP, task, run_id=step.run_id, step_id=step.pk
    )


def send_back(
    run: Run, step: Step, feedback: str, *, event_data: dict, merge_conflict: bool = False
) -> None:
    """Another round for the step's agent with `feedback` (a reviewer's, a person's, the
    checks', git's): counted as a revision, or as a merge round for a merge conflict. Caller
    holds the run lock."""
    if merge_conflict:
        step.merge_rounds += 1
    else:
        step.revisions += 1
    step.feedback = feedback
    step.status = Step.Status.REVISING
    schedule_step(step)
    step.save(update_fields=["revisions", "merge_rounds", "feedback", "status", "task_id"])
    emit(run, "step.revising", step=step, data={"round": step.revisions, **event_data})
    sync_run_status(run, step=step)
