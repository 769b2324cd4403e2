"""Retrying a failed step by hand, in the same run.

A step fails after its last attempt (or when a person stopped it) and takes its run down with
it; the completed steps' outputs and merged work are kept. A retry re-opens that run instead
of starting a new one: the failed step gets one fresh attempt (a further attempt in its own
count and worktree, so earlier tool calls are never mistaken for this attempt's), the steps
the failure cut short wait for dispatch again, and the run goes on to its report.
"""

from orchestra.engine.dispatch import dispatch_locked
from orchestra.engine.runs import EngineError, actor_of, sync_run_status
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

# Runs a failed step ended: by its last attempt, or a person who stopped it at a checkpoint.
RETRIABLE = (Run.Status.FAILED, Run.Status.STOPPED)
# What a failure leaves behind that must run again for the run to complete.
CUT_SHORT = (Step.Status.FAILED, Step.Status.CANCELLED, Step.Status.SKIPPED)


def retry_step(user, run: Run, key: str) -> Run:
    """Give the failed step `key` a fresh attempt and take its failed (or stopped) run up
    again. Refused unless the run ended that way and the step is one that failed."""
    with locked_run(run.pk) as run:
        step = run.steps.filter(key=key).first()
        if step is None:
            raise EngineError(f"Run {run.pk} has no step {key!r}.")
        if run.status not in RETRIABLE:
            raise EngineError(
                f"Only a failed or stopped run's steps can be retried; this run is {run.status}."
            )
        if step.status != Step.Status.FAILED:
            raise EngineError(f"Step {key!r} did not fail (it is {step.status}).")
        error = step.error
        again = list(run.steps.filter(status__in=CUT_SHORT).values_list("key", flat=True))
        run.steps.filter(status__in=CUT_SHORT).update(
            status=Step.Status.PENDING, error="", finished_at=None
        )
        run.status, run.phase = Run.Status.RUNNING, Run.Phase.DISPATCH
        run.error = ""
        run.stopped_by = None
        run.finished_at = None
        run.paused_at, run.paused_by = None, ""
        run.save(
            update_fields=[
                "status",
                "phase",
                "error",
                "stopped_by",
                "finished_at",
                "paused_at",
                "paused_by",
            ]
        )
        who = actor_of(user)
        emit(
            run,
            "run.retried",
            step=step,
            actor=who,
            data={"by": who, "step": key, "error": error, "again": again},
        )
        dispatch_locked(run)  # the step is pending again: never the report's turn yet
        sync_run_status(run)
    return run
