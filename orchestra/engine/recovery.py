"""Recovery: work a stopped worker or process left behind is taken over.

One rule for every kind of work: an activity whose lease ran out (queued and never started,
or running with an owner that stopped renewing it) is sent again, and its task carries the
work on from what was stored. The sweep applies it every ORCHESTRA_SWEEP_INTERVAL seconds
(beat in a deployment, a thread in the embedded server).
"""

import logging

from django.utils import timezone

from agents.models import AgentRun
from approvals.models import Checkpoint
from orchestra import activities, queue
from orchestra.engine.dispatch import dispatch_ready_steps
from orchestra.engine.transitions import schedule_step
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Run, Step

logger = logging.getLogger(__name__)


def recover_embedded_work() -> int:
    """Re-enqueue work that an embedded server lost when its process stopped.

    Only for the embedded default, at start-up, when no other process can be running steps:
    every unfinished activity is due again; planning restarts, ready and revising steps are
    queued again, steps caught mid-attempt carry on, outputs caught before review are
    reviewed, decided checkpoints whose resume was lost resume, and a report in progress is
    written again. Runs that are only waiting for a human are left alone. Returns the number
    of runs touched.
    """
    activities.forget_owners()
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
        activities.schedule(Activity.Kind.PLAN, "orchestra.plan_run", run_id=run.pk)
        return 1
    if run.status == Run.Status.REPORTING:
        if run.checkpoints.filter(
            kind=Checkpoint.Kind.REPORT, status=Checkpoint.Status.PENDING
        ).exists():
            return 0  # the written report waits for a person
        run.status = Run.Status.RUNNING
        run.save(update_fields=["status"])
        Activity.objects.filter(run=run, kind=Activity.Kind.REPORT).update(
            status=Activity.Status.DONE
        )
        queue.enqueue("orchestra.report_run", run.pk)
        return 1
    requeued = 0
    for step in run.steps.filter(status__in=Step.ACTIVE):
        if step.status == Step.Status.IN_REVIEW:  # a review taken but maybe never finished
            step.reviewed_attempt = step.attempts - 1
            step.save(update_fields=["reviewed_attempt"])
        if requeue_step(step):
            requeued += 1
    queue.enqueue("orchestra.dispatch", run.pk)
    return requeued


def requeue_step(step: Step) -> bool:
    """Make due again the activity a dispatched step waits for: its attempt, its review, its
    merge, or its resume after a decided checkpoint. False when it waits for a human. Caller
    holds the run lock."""
    if step.status in (Step.Status.READY, Step.Status.REVISING, Step.Status.RUNNING):
        schedule_step(step, "orchestra.take_over_step")
        step.save(update_fields=["task_id"])
        return True
    if step.status == Step.Status.IN_REVIEW:
        activities.schedule(
            Activity.Kind.REVIEW, "orchestra.review_step", run_id=step.run_id, step_id=step.pk
        )
        return True
    if step.status == Step.Status.MERGING:
        activities.schedule(
            Activity.Kind.MERGE, "orchestra.merge_step", run_id=step.run_id, step_id=step.pk
        )
        return True
    if (
        step.status == Step.Status.AWAITING_APPROVAL
        and not step.checkpoints.filter(status=Checkpoint.Status.PENDING).exists()
    ):
        schedule_step(step, "orchestra.resume_step")
        step.save(update_fields=["task_id"])
        return True
    return False


def sweep_active_runs() -> int:
    """Periodic safety net: take over every activity whose lease ran out, then dispatch every
    active run (dispatch is idempotent, so this only matters when a dispatch was lost). Runs
    that are only waiting for a human are untouched. Returns the runs swept."""
    reclaim_expired_leases()
    active = Run.objects.filter(
        status__in=[Run.Status.RUNNING, Run.Status.REVIEWING, Run.Status.AWAITING_APPROVAL]
    ).values_list("pk", flat=True)
    count = 0
    for run_id in active:
        dispatch_ready_steps(run_id)
        count += 1
    return count


def reclaim_expired_leases(now=None) -> int:
    """Send again every activity whose lease ran out: queued work nobody started (a lost
    message, a broker that was down) and running work whose worker stopped. Its task takes
    the work over from what was stored, with the same idempotency keys. Tests pass `now`.
    Returns the activities sent again."""
    now = now or timezone.now()
    reclaimed = 0
    for activity in activities.expired(now):
        with locked_run(activity.run_id) as run:
            current = Activity.objects.filter(
                pk=activity.pk,
                status__in=[Activity.Status.QUEUED, Activity.Status.RUNNING],
                lease_expires_at__lt=now,
            ).first()
            if current is None:
                continue  # renewed or finished meanwhile
            if run.is_terminal:
                activities.finish_now(current)
                continue
            activities.resend(current)
            emit(
                run,
                "activity.reclaimed",
                step=current.step,
                data={
                    "activity": current.kind,
                    "owner": current.owner,
                    "was": current.status,
                    "attempt": current.attempt,
                },
            )
            reclaimed += 1
    return reclaimed
