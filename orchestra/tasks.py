"""Celery tasks: thin, idempotent, take ids. Each re-reads state inside the service it calls,
so a duplicate delivery finds the transition already made and returns."""

import functools

from celery import shared_task
from django.core.exceptions import ObjectDoesNotExist

from orchestra import engine, queue, retention, slots, telemetry


def _gone_is_done(func):
    """A task whose run or step was deleted since it was queued has nothing left to do. Its
    body holds an engine slot (`orchestra.slots`), and the step it makes due next is carried
    on by the same thread (`queue.carrying_on`)."""

    @functools.wraps(func)
    def wrapper(*args):
        with queue.carrying_on():
            try:
                with slots.engine_slot():
                    return func(*args)
            except ObjectDoesNotExist:
                return None

    return wrapper


# A step's agent may wait on slow models; the soft limit lets it record the failure.
STEP_LIMITS = {"soft_time_limit": 1700, "time_limit": 1800}


@shared_task(name="orchestra.plan_run", **STEP_LIMITS)
@_gone_is_done
def plan_run_task(run_id: int) -> None:
    engine.plan_run(run_id)


@shared_task(name="orchestra.execute_step", **STEP_LIMITS)
@_gone_is_done
def execute_step_task(step_id: int) -> None:
    engine.execute_step(step_id)


@shared_task(name="orchestra.resume_step", **STEP_LIMITS)
@_gone_is_done
def resume_step_task(step_id: int) -> None:
    engine.resume_step(step_id)


@shared_task(name="orchestra.review_step", **STEP_LIMITS)
@_gone_is_done
def review_step_task(step_id: int) -> None:
    engine.review_step(step_id)


@shared_task(name="orchestra.merge_step", soft_time_limit=270, time_limit=300)
@_gone_is_done
def merge_step_task(step_id: int) -> None:
    engine.merge_step(step_id)


@shared_task(name="orchestra.take_over_step", **STEP_LIMITS)
@_gone_is_done
def take_over_step_task(step_id: int, now: str | None = None) -> None:
    # `now` is accepted from messages queued by earlier versions; the claim decides.
    engine.take_over_step(step_id)


@shared_task(name="orchestra.dispatch", soft_time_limit=50, time_limit=60)
@_gone_is_done
def dispatch_task(run_id: int) -> None:
    engine.dispatch_ready_steps(run_id)


@shared_task(name="orchestra.report_run", **STEP_LIMITS)
@_gone_is_done
def report_run_task(run_id: int) -> None:
    engine.report_run(run_id)


@shared_task(name="orchestra.sweep", soft_time_limit=100, time_limit=120)
def sweep_task() -> int:
    """Periodic (beat): dispatch again for every active run. Dispatch is idempotent, so this
    only matters when a dispatch was lost with a broker restart; it then costs one query."""
    return engine.sweep_active_runs()


@shared_task(name="approvals.expire_due", soft_time_limit=100, time_limit=120)
def expire_due_task() -> int:
    """Periodic (beat): checkpoints past their deadline get the policy's timeout outcome,
    decided by the system, and what waited on them moves on; due reminders escalate."""
    return engine.expire_due()


@shared_task(name="orchestra.export_trace", soft_time_limit=100, time_limit=120)
def export_trace_task(run_id: int) -> int:
    """After a run ended: its trace, built from the stored records, to the OTLP endpoint."""
    return telemetry.export_run(run_id)


@shared_task(name="orchestra.apply_retention", soft_time_limit=1700, time_limit=1800)
def apply_retention_task() -> int:
    """Periodic (beat): each project's retention settings applied; how many projects purged."""
    return len(retention.apply_settings())
