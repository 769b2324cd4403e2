"""The engine: Plan -> Dispatch -> Review -> Report, as service functions, one module per job.

Interfaces (the API, the dashboard, the CLI, Celery tasks) call the actions exported here.
Each re-reads state under the run's lock and returns quietly when the transition was already
made by someone else, so a duplicate task does nothing.
"""

from orchestra.engine.budgets import raise_budget, start_run
from orchestra.engine.decisions import decide_checkpoint, expire_due
from orchestra.engine.dispatch import dispatch_ready_steps
from orchestra.engine.forks import fork_run
from orchestra.engine.merge import merge_step
from orchestra.engine.pausing import pause_run, resume_run
from orchestra.engine.planning import plan_run
from orchestra.engine.recovery import (
    reclaim_expired_leases,
    recover_embedded_work,
    sweep_active_runs,
)
from orchestra.engine.report import report_run
from orchestra.engine.retries import retry_step
from orchestra.engine.review import apply_verdict, review_step
from orchestra.engine.runs import EngineError, cancel_run
from orchestra.engine.steps import execute_step, resume_step, take_over_step

__all__ = [
    "EngineError",
    "apply_verdict",
    "cancel_run",
    "decide_checkpoint",
    "dispatch_ready_steps",
    "execute_step",
    "expire_due",
    "fork_run",
    "merge_step",
    "pause_run",
    "plan_run",
    "raise_budget",
    "reclaim_expired_leases",
    "recover_embedded_work",
    "report_run",
    "resume_run",
    "resume_step",
    "retry_step",
    "review_step",
    "start_run",
    "sweep_active_runs",
    "take_over_step",
]
