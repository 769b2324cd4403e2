"""Dispatch: deterministic code, not a model, decides which steps start."""

import logging

from django.utils import timezone

from orchestra.engine.report import report_run
from orchestra.engine.runs import sync_run_status
from orchestra.engine.transitions import schedule_step
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)


def dispatch_ready_steps(run_id: int) -> None:
    """Enqueue every step whose dependencies are done and whose claims are free, within the
    project's concurrency cap; report the run when every step is done. Deterministic: no
    model is asked."""
    with locked_run(run_id) as run:
        report = dispatch_locked(run)
    if report:
        report_run(run_id)


# What dispatch reads of each unfinished step, and what it writes (status, dispatched_at,
# task_id) without reading.
_DECIDES = ("run", "key", "position", "agent_role", "status", "depends_on", "claims", "touched")


def dispatch_locked(run: Run) -> bool:
    """The dispatch decision. Caller holds the run lock. Returns True when every step is
    done and the report is due. Nothing while the run is paused by hand."""
    if run.is_paused or run.status not in (
        Run.Status.RUNNING,
        Run.Status.REVIEWING,
        Run.Status.AWAITING_APPROVAL,
    ):
        return False
    # Only what is not done yet, and only the columns the decision reads: a plan's finished
    # steps, briefs and outputs are not read on every completion. In plan order, by position
    # alone (the model's default ordering starts with the run's, which costs a join).
    unfinished = run.steps.exclude(status=Step.Status.DONE).order_by("position", "pk")
    steps = list(unfinished.only(*_DECIDES))
    if not steps:
        return run.steps.exists()
    remaining = {s.key for s in steps}
    active = [s for s in steps if s.status in Step.ACTIVE]
    busy = sum(1 for s in active if s.status != Step.Status.AWAITING_APPROVAL)
    # Leases: what each active step claimed in the plan, widened by what it touched.
    held = {path for s in active for path in (*s.claims, *s.touched)}
    now = timezone.now()
    for step in steps:
        if step.status != Step.Status.PENDING:
            continue
        if busy >= run.project.concurrency_cap:
            break
        if remaining & set(step.depends_on) or held & set(step.claims):
            continue
        step.status = Step.Status.READY
        step.dispatched_at = now
        schedule_step(step)
        step.save(update_fields=["status", "dispatched_at", "task_id"])
        held |= set(step.claims)
        busy += 1
        emit(run, "step.dispatched", step=step, data={"agent": step.agent_role})
    sync_run_status(run, steps)
    return False
