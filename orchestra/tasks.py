"""Celery tasks: thin, idempotent, take ids. Each re-reads state inside the service it calls,
so a duplicate delivery finds the transition already made and returns."""

from celery import shared_task

from orchestra.services import engine

# A step's agent may wait on slow models; the soft limit lets it record the failure.
STEP_LIMITS = {"soft_time_limit": 1700, "time_limit": 1800}


@shared_task(name="orchestra.plan_run", **STEP_LIMITS)
def plan_run_task(run_id: int) -> None:
    engine.plan_run(run_id)


@shared_task(name="orchestra.execute_step", **STEP_LIMITS)
def execute_step_task(step_id: int) -> None:
    engine.execute_step(step_id)


@shared_task(name="orchestra.resume_step", **STEP_LIMITS)
def resume_step_task(step_id: int) -> None:
    engine.resume_step(step_id)


@shared_task(name="orchestra.review_step", **STEP_LIMITS)
def review_step_task(step_id: int) -> None:
    engine.review_step(step_id)


@shared_task(name="orchestra.dispatch", time_limit=60)
def dispatch_task(run_id: int) -> None:
    engine.dispatch_ready_steps(run_id)


@shared_task(name="orchestra.report_run", **STEP_LIMITS)
def report_run_task(run_id: int) -> None:
    engine.report_run(run_id)
