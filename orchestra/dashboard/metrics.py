"""The metrics page's read side: aggregate queries over the runs a user may see, and the
percentiles of their durations. Nothing here changes state.

Scope: the runs *created* in the period, in the projects `user` may see (or one of them).
Steps, agent runs and checkpoints count with their run, so every table on the page describes
the same runs. A fixed number of queries whatever the data: counts and sums are aggregated in
the database; durations come back as one column each and are ranked in Python, newest first
and at most DURATION_LIMIT of them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import (
    Count,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, Trunc
from django.urls import reverse
from django.utils import dateformat, timezone

from agents.models import AgentRun
from approvals.models import Checkpoint
from orchestra.access import visible_projects
from orchestra.models import Project, Run, Step

from . import charts, present, queries

# key: (label, how far back; None for all time)
PERIODS: dict[str, tuple[str, timedelta | None]] = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
    "all": ("All time", None),
}
DEFAULT_PERIOD = "7d"
# Durations ranked in Python per query (steps, checkpoint waits). 100k timedeltas are a few MB
# and a sort of well under a second; past that, the newest ones stand for the rest.
DURATION_LIMIT = 100_000
# Only human decisions: a checkpoint cancelled with its run or expired waited for nobody.
DECIDED = (Checkpoint.Status.APPROVED, Checkpoint.Status.REJECTED)
# The runs-per-bucket chart stacks these, bottom up; "active" is every non-terminal status.
OUTCOMES = [
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    ("stopped", "Stopped by a person"),
    ("active", "In progress"),
]


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) of sorted values, interpolating linearly between the two
    nearest ranks (NumPy's default); None for no values."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Durations:
    """Median and 95th percentile of a set of durations, in seconds."""

    count: int = 0
    median: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, seconds: list[float]) -> Durations:
        ordered = sorted(seconds)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 95))


@dataclass
class Row:
    """One line of a table: a project, an agent role, or everything in scope."""

    key: int | str  # a project's id, or a role
    label: str
    url: str = ""
    runs: int = 0
    completed: int = 0
    finished: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal("0")
    steps: Durations = field(default_factory=Durations)
    waits: Durations = field(default_factory=Durations)

    @property
    def success_rate(self) -> float | None:
        """Completed out of finished (completed, failed or cancelled; a run a person stopped
        at a checkpoint is a decision, not a failure, and is left out); None before any end."""
        return self.completed / self.finished if self.finished else None

    @property
    def success_label(self) -> str:
        rate = self.success_rate
        return "—" if rate is None else f"{rate * 100:.0f}%"


@dataclass
class Metrics:
    period: str
    period_label: str
    since: datetime | None
    project: Project | None
    total: Row
    projects: list[Row]
    roles: list[Row]
    timeline: charts.ColumnChart
    timeline_unit: str  # hour | day | week | month
    durations: charts.BarChart
    steps_capped: bool
    waits_capped: bool
    has_projects: bool
    limit: int

    @property
    def is_empty(self) -> bool:
        return self.total.runs == 0

    @property
    def timeline_summary(self) -> str:
        counts = {key: 0 for key, _ in OUTCOMES}
        for column in self.timeline.columns:
            for segment in column.segments:
                counts[segment.key] += segment.value
        parts = [f"{counts[key]} {label.lower()}" for key, label in OUTCOMES if counts[key]]
        text = f"{self.total.runs} run{'s' if self.total.runs != 1 else ''} started, "
        text += f"per {self.timeline_unit}: " + (", ".join(parts) or "none") + "."
        busiest = max(self.timeline.columns, key=lambda c: c.total, default=None)
        if busiest is not None and busiest.total:
            text += f" Busiest {self.timeline_unit}: {busiest.label}, {busiest.total}."
        return text

    @property
    def durations_summary(self) -> str:
        if not self.durations.bars:
            return "No step has finished yet."
        parts = []
        for bar in self.durations.bars:
            part = f"{bar.label} {present.humanize_duration(bar.median)}"
            if bar.p95 is not None:
                part += f" (p95 {present.humanize_duration(bar.p95)})"
            parts.append(part)
        return "Median step duration by agent role: " + "; ".join(parts) + "."


def compute(
    user, period: str = DEFAULT_PERIOD, project: Project | None = None, now: datetime | None = None
) -> Metrics:
    """Everything the metrics page shows. `project` must already be one `user` may see (the
    form offers only those); the scope re-checks it anyway, so a wrong one shows nothing."""
    label, back = PERIODS[period]
    now = now or timezone.now()
    since = now - back if back else None
    projects = visible_projects(user)
    runs = Run.objects.filter(project__in=projects)
    if project is not None:
        runs = runs.filter(project=project)
    if since is not None:
        runs = runs.filter(created_at__gte=since)

    project_rows, first = _project_rows(runs)
    role_rows = _role_rows(runs)
    # A step's duration is its work: the time it waited for people is the waits' own figure.
    step_times, steps_capped = _durations(
        Step.objects.filter(
            run__in=runs,
            status=Step.Status.DONE,
            started_at__isnull=False,
            finished_at__isnull=False,
        ),
        "started_at",
        "finished_at",
        ("run__project", "agent_role"),
        less=queries.waited_for_people(),
    )
    waits, waits_capped = _durations(
        Checkpoint.objects.filter(run__in=runs, status__in=DECIDED, decided_at__isnull=False),
        "requested_at",
        "decided_at",
        # Plan approvals have no step, hence no role: they count in the project rows only.
        ("run__project", "step__agent_role"),
    )

    total = Row(key="", label="All")
    for row in project_rows.values():
        for name in ("runs", "completed", "finished", "input_tokens", "output_tokens", "cost"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    total.steps = Durations.of([seconds for _, _, seconds in step_times])
    total.waits = Durations.of([seconds for _, _, seconds in waits])
    steps_by, waits_by = _group(step_times), _group(waits)
    for key, row in project_rows.items():
        row.steps = Durations.of(steps_by[key])
        row.waits = Durations.of(waits_by[key])
    for role in {r for _, r, _ in step_times} | {r for _, r, _ in waits if r}:
        role_rows.setdefault(role, Row(key=role, label=role))
    for role, row in role_rows.items():
        row.steps = Durations.of(steps_by[role])
        row.waits = Durations.of(waits_by[role])
    roles = sorted(role_rows.values(), key=lambda r: r.label)

    start = since or first or now
    unit = _unit(now - start)
    timeline = charts.stacked_columns(
        _buckets(runs, start, now, unit) if total.runs else [],
        series=OUTCOMES,
    )
    durations = charts.duration_bars(
        [(r.label, r.steps.median, r.steps.p95) for r in roles if r.steps.count]
    )
    return Metrics(
        period=period,
        period_label=label,
        since=since,
        project=project,
        total=total,
        projects=sorted(project_rows.values(), key=lambda r: r.label),
        roles=roles,
        timeline=timeline,
        timeline_unit=unit,
        durations=durations,
        steps_capped=steps_capped,
        waits_capped=waits_capped,
        has_projects=projects.exists(),
        limit=DURATION_LIMIT,
    )


# --- queries -------------------------------------------------------------------------------
def _counts(prefix: str = "") -> dict:
    """Runs, completed and finished runs; `prefix` reaches the run from a related model."""
    run = f"{prefix}__" if prefix else ""
    target = prefix or "id"
    distinct = bool(prefix)  # one run has many agent runs
    return {
        "n_runs": Count(target, distinct=distinct),
        "n_completed": Count(
            target, distinct=distinct, filter=Q(**{f"{run}status": Run.Status.COMPLETED})
        ),
        "n_finished": Count(
            target,
            distinct=distinct,
            filter=Q(**{f"{run}status__in": Run.TERMINAL})
            & ~Q(**{f"{run}status": Run.Status.STOPPED}),
        ),
    }


def _usage() -> dict:
    return {
        "n_input": Sum("input_tokens"),
        "n_output": Sum("output_tokens"),
        "n_cost": Sum("cost_usd"),
    }


def _row(key: str, label: str, values: dict, url: str = "") -> Row:
    return Row(
        key=key,
        label=label,
        url=url,
        runs=values["n_runs"],
        completed=values["n_completed"],
        finished=values["n_finished"],
        input_tokens=values["n_input"] or 0,
        output_tokens=values["n_output"] or 0,
        cost=values["n_cost"] or Decimal("0"),
    )


def _project_rows(runs: QuerySet[Run]) -> tuple[dict[int, Row], datetime | None]:
    """One row per project with runs in scope (tokens and cost are the runs' totals: every
    agent, planning and review included), and the oldest run's creation."""
    rows = {}
    first = None
    grouped = (
        runs.values("project", "project__name", "project__slug")
        .annotate(**_counts(), **_usage(), first=Min("created_at"))
        .order_by()
    )
    for values in grouped:
        slug = values["project__slug"]
        url = reverse("dashboard:project", args=[slug])
        rows[values["project"]] = _row(values["project"], values["project__name"], values, url)
        first = min(first or values["first"], values["first"])
    return rows, first


def _role_rows(runs: QuerySet[Run]) -> dict[str, Row]:
    """One row per agent role that worked in a run in scope: the runs it worked in, how those
    ended, and the tokens and cost of its own agent runs (reviews count for the reviewer)."""
    grouped = (
        AgentRun.objects.filter(run__in=runs)
        .values("role")
        .annotate(**_counts("run"), **_usage())
        .order_by()
    )
    return {values["role"]: _row(values["role"], values["role"], values) for values in grouped}


def _durations(
    queryset: QuerySet, start: str, end: str, keys: tuple[str, str], less=None
) -> tuple[list[tuple[int, str | None, float]], bool]:
    """(project id, role, seconds) for the newest DURATION_LIMIT rows, and whether there
    were more; `less` is a duration taken off each (a step's waits for people)."""
    took = F(end) - F(start)
    if less is not None:
        # Never below zero, as on the run page's step cards (`queries.StepView.worked`).
        took = Greatest(
            ExpressionWrapper(took - less, output_field=DurationField()), Value(timedelta(0))
        )
    rows = list(
        queryset.annotate(took=took)
        .order_by(f"-{end}")
        .values_list(*keys, "took")[: DURATION_LIMIT + 1]
    )
    capped = len(rows) > DURATION_LIMIT
    return [(p, r, took.total_seconds()) for p, r, took in rows[:DURATION_LIMIT]], capped


def _group(rows: list[tuple[int, str | None, float]]) -> defaultdict[int | str, list[float]]:
    """Seconds by project id and, in the same mapping, by role (ids and roles cannot clash)."""
    grouped: defaultdict[int | str, list[float]] = defaultdict(list)
    for project, role, seconds in rows:
        grouped[project].append(seconds)
        if role:
            grouped[role].append(seconds)
    return grouped


# --- the runs-over-time chart --------------------------------------------------------------
def _unit(span: timedelta) -> str:
    """Bucket size giving a readable number of bars (at most about a hundred)."""
    if span <= timedelta(hours=24):
        return "hour"
    if span <= timedelta(days=62):
        return "day"
    if span <= timedelta(days=730):
        return "week"
    return "month"


def _floor(moment: datetime, unit: str) -> datetime:
    """The start of the bucket holding `moment` (naive local time, as the buckets are)."""
    moment = timezone.localtime(moment).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    if unit == "hour":
        return moment
    moment = moment.replace(hour=0)
    if unit == "week":
        return moment - timedelta(days=moment.weekday())
    if unit == "month":
        return moment.replace(day=1)
    return moment


def _next(moment: datetime, unit: str) -> datetime:
    if unit == "hour":
        return moment + timedelta(hours=1)
    if unit == "day":
        return moment + timedelta(days=1)
    if unit == "week":
        return moment + timedelta(weeks=1)
    year, month = divmod(moment.month, 12)
    return moment.replace(year=moment.year + year, month=month + 1)


LABELS = {  # unit: (axis label, full label), Django date formats
    "hour": ("H:i", "M j, H:i"),
    "day": ("M j", "D M j"),
    "week": ("M j", "M j, Y"),
    "month": ("M Y", "F Y"),
}


def _buckets(runs: QuerySet[Run], start: datetime, now: datetime, unit: str) -> list:
    """(full label, axis label, {outcome: runs}) for every bucket from `start` to `now`,
    empty ones included, from one GROUP BY query."""
    counts: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    grouped = (
        runs.annotate(bucket=Trunc("created_at", unit, output_field=DateTimeField()))
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for values in grouped:
        outcome = values["status"] if values["status"] in Run.TERMINAL else "active"
        counts[_floor(values["bucket"], unit)][outcome] += values["n"]
    axis_format, full_format = LABELS[unit]
    buckets = []
    moment, last = _floor(start, unit), _floor(now, unit)
    while moment <= last:
        buckets.append(
            (
                ("week of " if unit == "week" else "") + dateformat.format(moment, full_format),
                dateformat.format(moment, axis_format),
                dict(counts.get(moment, {})),
            )
        )
        moment = _next(moment, unit)
    return buckets
