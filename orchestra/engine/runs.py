"""A run's lifecycle: start, the status derived from its steps, failure and cancel.

Locking rule: every transaction in the engine is a `locked_run(run_id)` block: it starts with
SELECT ... FOR NO KEY UPDATE on the run row before touching the run's steps, checkpoints or
events.
That one lock per run makes each transition happen exactly once when workers or requests race,
and keeps event sequence numbers committed in order. Model calls, git and processes never run
inside a transaction.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from agents.llm import uses_demo_model
from agents.loop import FinalOutput, NeedsApproval, Outcome, closing_fields
from agents.models import AgentRun
from approvals.models import Checkpoint
from orchestra import activities, queue, telemetry
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Project, Run, Step, Task
from orchestra.prepared import Ahead, PreparedRead

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineError(Exception):
    """A request the engine refuses, with a message fit for the person who made it."""


def start_run(
    user,
    project: Project,
    title: str,
    description: str = "",
    *,
    on_created: Callable[[Run], None] | None = None,
) -> Run:
    """Create the task and its run, and enqueue planning after commit. `on_created(run)`
    runs in the transaction that creates the run (its budget, see `engine.budgets`)."""
    title = (title or "").strip()
    description = (description or "").strip()
    if not title:
        raise EngineError("A task needs a title.")
    if len(title) > 300:
        raise EngineError("The title is longer than 300 characters.")
    if len(description) > settings.ORCHESTRA_MAX_TEXT:
        raise EngineError(
            f"The description is longer than {settings.ORCHESTRA_MAX_TEXT} characters."
        )
    with transaction.atomic():
        task = Task.objects.create(
            project=project,
            title=title,
            description=description,
            created_by=user if user and user.is_authenticated else None,
        )
        created = Run.objects.create(task=task, project=project, uses_demo_model=uses_demo_model())
        if on_created is not None:
            on_created(created)
    with locked_run(created.pk) as run:
        emit(
            run,
            "run.created",
            actor=actor_of(user),
            data={"task": task.pk, "title": title, "demo_model": run.uses_demo_model},
        )
        activities.schedule(Activity.Kind.PLAN, "orchestra.plan_run", run_id=run.pk)
    return run


def gave_up(activity: Activity, what: str) -> bool:
    """True (and the run failed, naming the work) when the activity was claimed more times
    than ORCHESTRA_ACTIVITY_ATTEMPTS: work that kills or crashes every worker that takes it
    must end the run with a reason, not loop forever."""
    limit = settings.ORCHESTRA_ACTIVITY_ATTEMPTS
    if activity.attempt <= limit:
        return False
    with locked_run(activity.run_id) as run:
        activities.finish_now(activity)
        if not run.is_terminal:
            fail_run(
                run,
                f"The work on {what} ({activity.kind}) was interrupted {activity.attempt - 1} "
                f"times; it is not tried again. Look at its last attempt in the trace.",
            )
    return True


def run_activity(
    kind: str,
    work: Callable[[], T],
    *,
    run_id: int | None,
    step_id=None,
    what: str,
    begun: Activity | None = None,
):
    """Claim the activity and do `work` holding it (heartbeat, then done); its result, or
    None when another worker holds the activity or it was given up (see `gave_up`). An
    activity this worker `begun` in a transaction that committed is held already: no claim."""
    if begun is not None and begun.pk is not None:
        activity = begun
    else:
        activity = activities.claim(kind, run_id=run_id, step_id=step_id)
    if activity is None or gave_up(activity, what):
        return None
    with activities.held(activity):
        return work()


def actor_of(user) -> str:
    return user.get_username() if user and user.is_authenticated else "system"


# What `sync_run_status` tells apart among a run's steps, each group by one of its statuses.
_DISPATCHING = (Step.Status.READY, Step.Status.RUNNING, Step.Status.REVISING)
_SIBLING_GROUPS = {
    "siblings_dispatching": (_DISPATCHING, Step.Status.READY),
    "siblings_in_review": ((Step.Status.IN_REVIEW,), Step.Status.IN_REVIEW),
    "siblings_awaiting": ((Step.Status.AWAITING_APPROVAL,), Step.Status.AWAITING_APPROVAL),
}


def with_siblings(steps: QuerySet[Step]) -> QuerySet[Step]:
    """`steps`, each read with what `sync_run_status` needs to know of the other steps of its
    run, in the same statement: a transition that reads its step costs no read of the rest."""
    others = Step.objects.filter(run_id=OuterRef("run_id")).exclude(pk=OuterRef("pk"))
    return steps.annotate(
        **{
            name: Exists(others.filter(status__in=statuses))
            for name, (statuses, _shown_as) in _SIBLING_GROUPS.items()
        }
    )


# Three transitions of every step read it so: compiled once per connection.
_STEP_WITH_SIBLINGS = PreparedRead(
    "step_with_siblings", lambda step_id: with_siblings(Step.objects.filter(pk=step_id))
)


def step_with_siblings(step_id: int) -> Step:
    """The step, read with its siblings (see `with_siblings`). Step.DoesNotExist when it is
    gone."""
    return _STEP_WITH_SIBLINGS.get(step_id)


def step_with_siblings_ahead(step_id: int) -> Ahead:
    """`step_with_siblings`, to be read with a run's lock (`locked_run`'s `then`)."""
    return _STEP_WITH_SIBLINGS.ahead(step_id)


def as_among(step: Step, rows: list[dict]) -> Step | None:
    """`step`, held in memory, with its status and its siblings (see `with_siblings`) as
    `rows` (what `dispatch.unfinished` read under this lock) have them; None when it is not
    among them (done, or gone)."""
    own = next((row for row in rows if row["pk"] == step.pk), None)
    if own is None:
        return None
    step.status = own["status"]
    for name, (statuses, _shown_as) in _SIBLING_GROUPS.items():
        others = (row for row in rows if row["pk"] != step.pk)
        setattr(step, name, any(row["status"] in statuses for row in others))
    return step


def reread_step(step: Step) -> Step:
    """`step` read again in place (like `refresh_from_db`), with its siblings (see
    `step_with_siblings`). Caller holds the run lock."""
    fresh = step_with_siblings(step.pk)
    for field in Step._meta.concrete_fields:
        setattr(step, field.attname, getattr(fresh, field.attname))
    for name in _SIBLING_GROUPS:
        setattr(step, name, getattr(fresh, name))
    return step


def sync_run_status(
    run: Run, statuses: set[str] | None = None, *, step: Step | None = None
) -> None:
    """Derive the run's status and phase from its steps. Caller holds the run lock.
    `statuses` are those of all the run's unfinished steps as they now are; or `step`, the
    one step this transaction changed, read with `step_with_siblings` (or `reread_step`) under
    this lock; else the statuses are read."""
    if run.is_terminal or run.status in (Run.Status.PLANNING, Run.Status.REPORTING):
        return
    if statuses is None and step is not None and all(hasattr(step, n) for n in _SIBLING_GROUPS):
        statuses = {step.status}
        statuses |= {shown for name, (_, shown) in _SIBLING_GROUPS.items() if getattr(step, name)}
    elif statuses is None:
        statuses = set(run.steps.values_list("status", flat=True))
    if statuses & set(_DISPATCHING):
        status, phase = Run.Status.RUNNING, Run.Phase.DISPATCH
    elif Step.Status.IN_REVIEW in statuses:
        status, phase = Run.Status.REVIEWING, Run.Phase.REVIEW
    elif Step.Status.AWAITING_APPROVAL in statuses:
        status, phase = Run.Status.AWAITING_APPROVAL, run.phase
    else:
        status, phase = Run.Status.RUNNING, Run.Phase.DISPATCH
    if (status, phase) != (run.status, run.phase):
        phase_changed = phase != run.phase
        run.status, run.phase = status, phase  # written when the locked_run transaction ends
        if phase_changed:
            emit(run, "phase.changed", data={"phase": phase})


@contextmanager
def locked_run_of_step(step_id: int, run_id: int | None = None) -> Iterator[Run | None]:
    """`locked_run` for the run owning `step_id`; None if the step is gone (a stale task)."""
    if run_id is None:
        run_id = Step.objects.filter(pk=step_id).values_list("run_id", flat=True).first()
    if run_id is None:
        yield None
        return
    with locked_run(run_id) as run:
        yield run


def close_agent_run(agent_run: AgentRun, outcome: Outcome) -> None:
    """The attempt's end, unless paused, or closed already by the loop with the final reply
    it recorded (in this same transaction)."""
    if isinstance(outcome, NeedsApproval):
        return  # paused in the same transaction that opened the checkpoint
    if isinstance(outcome, FinalOutput) and agent_run.status == AgentRun.Status.COMPLETED:
        return
    AgentRun.objects.filter(pk=agent_run.pk).update(**closing_fields(outcome))


def usage(run: Run) -> dict:
    run.refresh_from_db(fields=["input_tokens", "output_tokens", "cost_usd"])
    return {
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": str(run.cost_usd),
    }


def fail_run(run: Run, message: str, *, stopped_by=None, stopped: bool = False) -> None:
    """Fail the run, keeping finished steps' outputs; with `stopped`, a person (`stopped_by`,
    None for a deadline) ended it at a checkpoint: status `stopped`, event `run.stopped`.
    Caller holds the run lock."""
    run.status = Run.Status.STOPPED if stopped else Run.Status.FAILED
    run.error = message
    run.stopped_by = stopped_by
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "stopped_by", "finished_at"])
    kept = list(run.steps.filter(status=Step.Status.DONE).values_list("key", flat=True))
    run.steps.filter(
        status__in=[Step.Status.PENDING, Step.Status.READY, Step.Status.PAUSED]
    ).update(status=Step.Status.SKIPPED)
    run.checkpoints.filter(status=Checkpoint.Status.PENDING).update(
        status=Checkpoint.Status.CANCELLED, decided_at=timezone.now()
    )
    data = {"error": message, "completed_steps": kept, **usage(run)}
    if stopped:
        data["by"] = stopped_by.get_username() if stopped_by else None
    emit(run, "run.stopped" if stopped else "run.failed", data=data)
    telemetry.run_ended(run)


def cancel_run(user, run: Run) -> Run:
    """Stop dispatch, revoke queued work, cancel waiting checkpoints; running agents stop at
    their next turn. Refused for a run that already ended."""
    with locked_run(run.pk) as run:
        if run.is_terminal:
            raise EngineError(f"The run already ended ({run.status}).")
        run.status = Run.Status.CANCELLED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
        waiting = run.steps.exclude(status__in=[*Step.FINISHED, Step.Status.RUNNING])
        task_ids = list(waiting.values_list("task_id", flat=True))
        waiting.update(status=Step.Status.CANCELLED, finished_at=timezone.now())
        run.checkpoints.filter(status=Checkpoint.Status.PENDING).update(
            status=Checkpoint.Status.CANCELLED, decided_at=timezone.now()
        )
        emit(run, "run.cancelled", actor=actor_of(user))
        telemetry.run_ended(run)
        transaction.on_commit(lambda: queue.revoke(task_ids))
    return run
