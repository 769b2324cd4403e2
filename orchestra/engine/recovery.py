"""Recovery: work a stopped worker or process left behind is taken over."""

import logging
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone

from agents.loop import lease_from_now
from agents.models import AgentRun
from approvals.models import Checkpoint
from orchestra import queue
from orchestra.engine.dispatch import dispatch_ready_steps
from orchestra.engine.host import worker_name
from orchestra.engine.runs import locked_run_of_step
from orchestra.engine.steps import drive_step
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)


def recover_embedded_work() -> int:
    """Re-enqueue work that an embedded server lost when its process stopped.

    Only for the embedded default, at start-up, when no other process can be running steps:
    planning restarts, ready and revising steps are queued again, steps caught mid-attempt
    start a new attempt, outputs caught before review are reviewed, decided checkpoints whose
    resume was lost resume, and a report in progress is written again. Runs that are only
    waiting for a human are left alone. Returns the number of runs touched.
    """
    touched = 0
    for run_id in Run.objects.exclude(status__in=Run.TERMINAL).values_list("pk", flat=True):
        with locked_run(run_id) as run:
            # A step's agent carries on from its stored conversation (see take_over_step);
            # planners and reviewers start again.
            interrupted = (
                AgentRun.objects.filter(run=run, status=AgentRun.Status.RUNNING)
                .exclude(purpose=AgentRun.Purpose.STEP, step__status=Step.Status.RUNNING)
                .update(
                    status=AgentRun.Status.FAILED,
                    error="interrupted: the server stopped",
                    finished_at=timezone.now(),
                )
            )
            requeued = _requeue_lost_work(run)
            if interrupted or requeued:
                emit(run, "run.recovered", data={"status": run.status, "requeued": requeued})
                touched += 1
    return touched


def _requeue_lost_work(run: Run) -> int:
    """Queue again what `run` was doing when the process stopped. Caller holds the run lock."""
    if run.status == Run.Status.PLANNING:
        queue.enqueue("orchestra.plan_run", run.pk)
        return 1
    if run.status == Run.Status.REPORTING:
        run.status = Run.Status.RUNNING
        run.save(update_fields=["status"])
        queue.enqueue("orchestra.report_run", run.pk)
        return 1
    requeued = 0
    for step in run.steps.filter(status__in=Step.ACTIVE):
        if step.status == Step.Status.RUNNING:  # caught mid-attempt: carry on with it
            step.lease_expires_at = None
            step.save(update_fields=["lease_expires_at"])
            queue.enqueue("orchestra.take_over_step", step.pk)
            requeued += 1
            continue
        if step.status == Step.Status.IN_REVIEW:  # a review taken but maybe never finished
            step.reviewed_attempt = step.attempts - 1
            step.save(update_fields=["reviewed_attempt"])
        if requeue_step(step):
            requeued += 1
    queue.enqueue("orchestra.dispatch", run.pk)
    return requeued


def requeue_step(step: Step) -> bool:
    """Queue again the task a dispatched step waits for: its attempt, its review, or its
    resume after a decided checkpoint. False when it waits for nothing a task does (it is
    running, its review is taken, or a human has not decided). Caller holds the run lock."""
    if step.status in (Step.Status.READY, Step.Status.REVISING):
        step.task_id = queue.enqueue("orchestra.execute_step", step.pk)
        step.save(update_fields=["task_id"])
        return True
    if step.status == Step.Status.IN_REVIEW and step.reviewed_attempt < step.attempts:
        queue.enqueue("orchestra.review_step", step.pk)
        return True
    if step.status == Step.Status.MERGING:
        queue.enqueue("orchestra.merge_step", step.pk)
        return True
    if (
        step.status == Step.Status.AWAITING_APPROVAL
        and not step.checkpoints.filter(status=Checkpoint.Status.PENDING).exists()
    ):
        queue.enqueue("orchestra.resume_step", step.pk)
        return True
    return False


# Queued work older than this is assumed lost (a broker restart, a killed worker's prefetched
# messages) and queued again; every task re-checks state, so a duplicate does nothing.
STALE_QUEUED_AFTER = timedelta(seconds=120)


def sweep_active_runs() -> int:
    """Periodic safety net: re-queue work that was queued long ago and never started, then
    dispatch. Runs that are only waiting for a human are untouched. Returns the runs swept."""
    active = Run.objects.filter(
        status__in=[Run.Status.RUNNING, Run.Status.REVIEWING, Run.Status.AWAITING_APPROVAL]
    ).values_list("pk", flat=True)
    stale_before = timezone.now() - STALE_QUEUED_AFTER
    reclaim_expired_leases()
    count = 0
    for run_id in active:
        with locked_run(run_id) as run:
            requeued = _requeue_stale_work(run, stale_before)
            if requeued:
                emit(run, "run.requeued", data={"steps": requeued})
        dispatch_ready_steps(run_id)
        count += 1
    return count


def _requeue_stale_work(run: Run, stale_before) -> list[str]:
    """Queue again the steps whose queued task never ran. Caller holds the run lock."""
    steps = (
        run.steps.filter(status__in=Step.ACTIVE)
        .exclude(status=Step.Status.RUNNING)
        .annotate(last_event_at=Max("event__at"))
    )
    requeued = []
    for step in steps:
        last_move = step.dispatched_at if step.status == Step.Status.READY else step.last_event_at
        if last_move is not None and last_move <= stale_before and requeue_step(step):
            requeued.append(step.key)
    return requeued


def reclaim_expired_leases(now=None) -> int:
    """Hand every running step whose worker stopped renewing its lease to another worker.
    Run by the sweep; tests pass `now`. Returns the steps handed over."""
    now = now or timezone.now()
    expired = (
        Step.objects.filter(status=Step.Status.RUNNING, lease_expires_at__lt=now)
        .exclude(run__status__in=Run.TERMINAL)
        .values_list("pk", flat=True)
    )
    for step_id in expired:
        queue.enqueue("orchestra.take_over_step", step_id, now.isoformat())
    return len(expired)


def take_over_step(step_id: int, now: str | None = None) -> None:
    """Carry on with a running step whose worker stopped: the same attempt, from the stored
    conversation. A side effect caught mid-call is not run again (see the agent loop)."""
    now_at = datetime.fromisoformat(now) if now else timezone.now()
    with locked_run_of_step(step_id) as run:
        if run is None:
            return
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.RUNNING:
            return
        if step.lease_expires_at is not None and step.lease_expires_at >= now_at:
            return  # renewed meanwhile: its worker is alive
        agent_run = (
            step.agent_runs.filter(purpose=AgentRun.Purpose.STEP, attempt=step.attempts)
            .order_by("-pk")
            .first()
        )
        if agent_run is None or agent_run.status not in (
            AgentRun.Status.RUNNING,
            AgentRun.Status.FAILED,
        ):
            # Nothing to carry on from: a new attempt.
            step.status = Step.Status.READY
            step.task_id = queue.enqueue("orchestra.execute_step", step.pk)
            step.save(update_fields=["status", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": "its worker stopped"})
            return
        previous = agent_run.worker
        agent_run.status = AgentRun.Status.RUNNING
        agent_run.worker = worker_name()
        agent_run.error = ""
        agent_run.finished_at = None
        agent_run.save(update_fields=["status", "worker", "error", "finished_at"])
        step.lease_expires_at = lease_from_now()
        step.save(update_fields=["lease_expires_at"])
        emit(
            run,
            "step.taken_over",
            step=step,
            data={"agent_run": agent_run.pk, "from": previous, "to": agent_run.worker},
        )
    drive_step(step, agent_run)
