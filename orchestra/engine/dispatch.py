"""Dispatch: deterministic code, not a model, decides which steps start."""

import functools
import json
import logging

from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from orchestra.engine.report import report_run
from orchestra.engine.runs import sync_run_status
from orchestra.engine.transitions import schedule_step
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step
from orchestra.prepared import Ahead, PreparedRead
from orchestra.writes import save_later

logger = logging.getLogger(__name__)


def dispatch_ready_steps(run_id: int) -> None:
    """Enqueue every step whose dependencies are done and whose claims are free, within the
    project's concurrency cap; report the run when every step is done. Deterministic: no
    model is asked."""
    with locked_run(run_id) as run:
        report = dispatch_locked(run)
    if report:
        report_run(run_id)


# What dispatch reads of each unfinished step, as plain values (a wide plan's every
# completion reads them all: model instances for each cost more than the rest of the
# decision). The lists come as JSON text, decoded only for the steps the decision looks at.
_DECIDES = ("pk", "key", "agent_role", "status", "depends_on_text", "claims_text", "touched_text")
_AS_TEXT = {
    f"{name}_text": Cast(name, output_field=TextField())
    for name in ("depends_on", "claims", "touched")
}

# Only what is not done yet, and only the columns the decision reads: a plan's finished
# steps, briefs and outputs are not read on every completion. In plan order, by position
# alone (the model's default ordering starts with the run's, which costs a join). Read at
# every completion: compiled once per connection.
_UNFINISHED = PreparedRead(
    "unfinished",
    lambda run_id: (
        Step.objects.filter(run_id=run_id)
        .exclude(status=Step.Status.DONE)
        .order_by("position", "pk")
        .annotate(**_AS_TEXT)
        .values_list(*_DECIDES)
    ),
)


def unfinished_ahead(run_id: int) -> Ahead:
    """`unfinished`, to be read with the run's lock (`locked_run`'s `then`)."""
    return _UNFINISHED.ahead(run_id)


def unfinished(run: Run) -> list[dict]:
    """What dispatch reads of the run's steps that are not done, in plan order (see
    `_DECIDES`). Caller holds the run lock."""
    return [dict(zip(_DECIDES, row, strict=True)) for row in _UNFINISHED.tuples(run.pk)]


def dispatch_locked(run: Run, *, done: int | None = None, rows: list[dict] | None = None) -> bool:
    """The dispatch decision. Caller holds the run lock. Returns True when every step is
    done and the report is due. Nothing while the run is paused by hand. `done`: a step this
    block completed, whose write is still to come (`complete_step`); `rows`: `unfinished`,
    read by this block already."""
    if run.status not in (
        Run.Status.RUNNING,
        Run.Status.REVIEWING,
        Run.Status.AWAITING_APPROVAL,
    ):
        return False
    rows = [row for row in (unfinished(run) if rows is None else rows) if row["pk"] != done]
    if run.is_paused:  # nothing starts, and the run's status still follows its steps
        sync_run_status(run, {row["status"] for row in rows})
        return False
    if not rows:
        return done is not None or run.steps.exists()
    remaining = {row["key"] for row in rows}
    active = [row for row in rows if row["status"] in Step.ACTIVE]
    busy = sum(1 for row in active if row["status"] != Step.Status.AWAITING_APPROVAL)
    # Leases: what each active step claimed in the plan, widened by what it touched; read
    # once a pending step's dependencies are done (a completion that frees nothing reads none).
    held: set[str] | None = None
    chosen: set[int] = set()
    now = timezone.now()
    for row in rows:
        if row["status"] != Step.Status.PENDING:
            continue
        if busy >= run.project.concurrency_cap:
            break
        if remaining.intersection(_paths(row, "depends_on")):
            continue
        if held is None:
            held = {p for a in active for p in (*_paths(a, "claims"), *_paths(a, "touched"))}
        claims = set(_paths(row, "claims"))
        if held & claims:
            continue
        step = _dispatched(run, row, now)
        held |= claims
        busy += 1
        chosen.add(step.pk)
        emit(run, "step.dispatched", step=step, data={"agent": step.agent_role})
    statuses = {row["status"] for row in rows if row["pk"] not in chosen}
    sync_run_status(run, statuses | ({Step.Status.READY} if chosen else set()))
    return False


def _paths(row: dict, name: str) -> tuple[str, ...]:
    return _decoded(row[f"{name}_text"] or "[]")


@functools.lru_cache(maxsize=4096)
def _decoded(text: str) -> tuple[str, ...]:
    """A JSON list of paths or keys: every completion reads the same rows of a plan again."""
    return tuple(json.loads(text))


def _dispatched(run: Run, row: dict, now) -> Step:
    """The step of `row` made ready: its activity scheduled, its state written."""
    step = Step(
        pk=row["pk"],
        run=run,
        key=row["key"],
        agent_role=row["agent_role"],
        status=Step.Status.READY,
        dispatched_at=now,
    )
    step._state.adding = False
    step._state.db = run._state.db
    schedule_step(step)
    save_later(run, step, ["status", "dispatched_at", "task_id"])
    return step
