"""Read-side queries for the dashboard pages. Nothing here changes state.

Every function takes objects already resolved through `orchestra.access` (or filters by
`visible_projects`), so what a page shows never outruns what its user may see.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import (
    Count,
    DurationField,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Now
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentRun, ModelCall, ToolCall
from approvals.models import Checkpoint, PolicyRule, Vote
from orchestra.access import visible_projects
from orchestra.models import Event, Plan, Project, Run, Step

from . import present, svg

FEED_LIMIT = 200
# A tool's result as the trace shows it when its span is opened; the step page has the rest.
TRACE_RESULT_LIMIT = 20_000
RECENT_LIMIT = 15


# --- approvals -------------------------------------------------------------------------------
def pending_checkpoints(user) -> QuerySet[Checkpoint]:
    """Undecided checkpoints in every project `user` can see, newest first."""
    return (
        Checkpoint.objects.filter(
            status=Checkpoint.Status.PENDING, run__project__in=visible_projects(user)
        )
        .select_related("run__task", "run__project", "step", "tool_call")
        .order_by("-requested_at", "-pk")
    )


def pending_count(user) -> int:
    if not user.is_authenticated:
        return 0
    return Checkpoint.objects.filter(
        status=Checkpoint.Status.PENDING, run__project__in=visible_projects(user)
    ).count()


def recently_decided(user, limit: int = RECENT_LIMIT) -> list[Checkpoint]:
    return list(
        Checkpoint.objects.filter(run__project__in=visible_projects(user))
        .exclude(status=Checkpoint.Status.PENDING)
        .select_related("run__task", "step", "tool_call", "decided_by")
        .order_by("-decided_at", "-pk")[:limit]
    )


def checkpoint_votes(checkpoint: Checkpoint) -> list[Vote]:
    return list(checkpoint.votes.select_related("user").order_by("at", "pk"))


def excluded_approvers(checkpoint: Checkpoint) -> list[str]:
    """Usernames of the people who may not approve this checkpoint (the task's creator)."""
    from django.contrib.auth import get_user_model

    ids = checkpoint.excluded_approvers or []
    if not ids:
        return []
    users = get_user_model().objects.filter(pk__in=ids)
    return sorted(user.get_username() for user in users)


@dataclass(frozen=True)
class PlannedStep:
    """A step of a proposed plan (not yet a Step row), shaped for the graph layout."""

    key: str
    title: str
    agent_role: str
    depends_on: list
    status: str = "proposed"


def planned_steps(plan: dict) -> list[PlannedStep]:
    return [
        PlannedStep(
            key=s["key"],
            title=s.get("title", ""),
            agent_role=s.get("agent", ""),
            depends_on=list(s.get("depends_on") or []),
        )
        for s in plan.get("steps") or []
    ]


def edited_plan(checkpoint: Checkpoint) -> Plan | None:
    """The version an approver made from the checkpoint's plan, if they edited it."""
    if checkpoint.plan_id is None:
        return None
    return (
        Plan.objects.filter(based_on_id=checkpoint.plan_id)
        .select_related("edited_by")
        .order_by("version")
        .first()
    )


def run_rules(run: Run) -> list[PolicyRule]:
    """The run's own rules (“approved for the rest of this run”), revoked ones included."""
    return list(
        PolicyRule.objects.filter(run=run)
        .select_related("created_by", "revoked_by")
        .order_by("position", "pk")
    )


# --- home and projects -----------------------------------------------------------------------
def visible_runs(user) -> QuerySet[Run]:
    return Run.objects.filter(project__in=visible_projects(user)).select_related("task", "project")


def active_runs(user) -> list[Run]:
    return list(visible_runs(user).exclude(status__in=Run.TERMINAL).order_by("-created_at")[:50])


def recent_runs(user, limit: int = RECENT_LIMIT) -> list[Run]:
    return list(visible_runs(user).filter(status__in=Run.TERMINAL).order_by("-created_at")[:limit])


def project_summaries(projects: QuerySet[Project]) -> list[Project]:
    """The projects by name, each with `run_count` and `active_count`."""
    return list(
        projects.annotate(
            run_count=Count("runs"),
            active_count=Count("runs", filter=~Q(runs__status__in=Run.TERMINAL)),
        ).order_by("name")
    )


def project_runs(project: Project, limit: int = 50) -> list[Run]:
    return list(project.runs.select_related("task").order_by("-created_at")[:limit])


# --- the run page ----------------------------------------------------------------------------
@dataclass
class StepView:
    step: Step
    duration: timedelta | None  # from start to finish (or now), waits included
    waited: timedelta = timedelta(0)  # for people, at the step's checkpoints

    @property
    def tokens(self) -> int:
        return self.step.input_tokens + self.step.output_tokens

    @property
    def worked(self) -> timedelta | None:
        """The step's time less its waits for people: what the machines took."""
        if self.duration is None:
            return None
        return max(self.duration - self.waited, timedelta(0))


def waited_for_people(step: str = "pk"):
    """The time a step (`step` names its id in the outer query) waited at its checkpoints for
    people, a still-open wait counting until now: the run page's step cards and the metrics
    page's step durations both take it out of a step's time, so neither counts it as work."""
    waits = (
        Checkpoint.objects.filter(step=OuterRef(step))
        .order_by()
        .values("step")
        .annotate(total=Sum(Coalesce("decided_at", Now()) - F("requested_at")))
        .values("total")
    )
    return Coalesce(Subquery(waits, output_field=DurationField()), Value(timedelta(0)))


def step_views(run: Run) -> list[StepView]:
    now = timezone.now()
    views = []
    for step in run.steps.annotate(waited=waited_for_people()).order_by("position"):
        duration = None
        if step.started_at:
            duration = (step.finished_at or now) - step.started_at
        views.append(StepView(step, duration, step.waited))
    return views


def plan_graph(steps: list[Step], direction: str) -> svg.Graph:
    return svg.layout_plan(steps, direction=direction)


def proposed_plan(run: Run) -> Plan | None:
    """The latest plan version, for a run still planning (its steps do not exist yet)."""
    return run.plans.order_by("-version").first()


def feed_events(run: Run) -> list[Event]:
    """The newest FEED_LIMIT events in seq order."""
    newest = list(run.events.select_related("step").order_by("-seq")[:FEED_LIMIT])
    newest.reverse()
    return newest


def run_checkpoints(run: Run) -> list[Checkpoint]:
    return list(
        run.checkpoints.select_related("step", "tool_call", "decided_by").order_by("requested_at")
    )


# --- step detail -----------------------------------------------------------------------------
def step_attempts(step: Step) -> list[AgentRun]:
    """Every agent run of the step (work and review), oldest first, with its tool calls."""
    return list(
        step.agent_runs.select_related("profile_version__profile__project")
        .prefetch_related(
            Prefetch("tool_calls", queryset=ToolCall.objects.order_by("started_at", "pk"))
        )
        .order_by("started_at", "pk")
    )


# Tools whose arguments carry a file's whole new content, and the argument that holds it.
FILE_CONTENT = {"write_file": "content"}


def link_previous_writes(attempts: list[AgentRun]) -> None:
    """Give every file write of a later attempt `previous_diff`: the unified diff from what the
    previous attempt wrote to the same path (None when it wrote nothing there), so a revision
    reads as a change. Uses the prefetched tool calls; reads nothing more."""
    written: dict[str, str] = {}  # path -> content, as of the attempts so far
    for attempt in attempts:
        if attempt.purpose != "step":
            for call in attempt.tool_calls.all():
                call.previous_diff = None
            continue
        this_attempt: dict[str, str] = {}
        for call in attempt.tool_calls.all():
            call.previous_diff = None
            field = FILE_CONTENT.get(call.tool)
            arguments = call.arguments if isinstance(call.arguments, dict) else {}
            path, content = arguments.get("path"), arguments.get(field) if field else None
            if not isinstance(path, str) or not isinstance(content, str):
                continue
            before = written.get(path)
            call.previous_diff = None if before is None else unified_diff(before, content, path)
            this_attempt[path] = content
        written |= this_attempt


def unified_diff(before: str, after: str, path: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"a/{path} (previous attempt)",
        tofile=f"b/{path}",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def step_verdicts(step: Step) -> list[Event]:
    return list(
        Event.objects.filter(run_id=step.run_id, step=step, kind="review.verdict").order_by("seq")
    )


def step_checkpoints(step: Step) -> list[Checkpoint]:
    return list(
        step.checkpoints.select_related("tool_call", "decided_by").order_by("requested_at", "pk")
    )


# --- trace -----------------------------------------------------------------------------------
def trace(run: Run) -> svg.Waterfall:
    """Agent runs, each followed by its model calls, tool calls and checkpoint waits, on one
    time axis from the run's creation."""
    agent_runs = list(
        AgentRun.objects.filter(run=run)
        .select_related("step", "profile_version__profile__project")
        .defer("messages", "brief", "outcome")
        .order_by("started_at", "pk")
    )
    calls: dict[int, list[svg.Span]] = {}
    for call in ModelCall.objects.filter(run=run).defer("response").order_by("started_at", "pk"):
        end = call.started_at + timedelta(milliseconds=call.latency_ms)
        calls.setdefault(call.agent_run_id, []).append(
            svg.Span(
                kind="model_call",
                label=f"model · {call.model}",
                start=call.started_at,
                end=end,
                depth=1,
                status="failed" if call.error else "ok",
                detail=call.error or ", ".join(call.tool_calls),
                url=reverse("dashboard:model-call", args=[run.pk, call.pk]),
                tokens=call.input_tokens + call.output_tokens,
                cost=call.cost_usd,
            )
        )
    waits_by_call: dict[int, Checkpoint] = {}
    loose_waits: list[Checkpoint] = []
    for checkpoint in run.checkpoints.select_related("decided_by", "step").order_by("requested_at"):
        if checkpoint.tool_call_id:
            waits_by_call[checkpoint.tool_call_id] = checkpoint
        else:
            loose_waits.append(checkpoint)
    for call in ToolCall.objects.filter(run=run).order_by("started_at", "pk"):
        spans_here = calls.setdefault(call.agent_run_id, [])
        checkpoint = waits_by_call.get(call.pk)
        # A gated call's own span is its execution: it starts when a person decided. The
        # wait before it is its own span, so people's time never reads as machine time.
        start = call.started_at
        if checkpoint is not None:
            spans_here.append(_wait_span(run, checkpoint, depth=1))
            start = checkpoint.decided_at
        if start is not None:
            spans_here.append(
                svg.Span(
                    kind="tool_call",
                    label=f"tool · {call.tool}",
                    start=start,
                    end=max(call.finished_at, start) if call.finished_at else None,
                    depth=1,
                    status=call.status,
                    detail=call.error or call.result[:200],
                    arguments=_tool_input(call),
                    result=_tool_output(call),
                )
            )

    spans: list[svg.Span] = []
    for agent_run in agent_runs:
        target = agent_run.step.key if agent_run.step else agent_run.purpose
        group = f"agent-run-{agent_run.pk}"
        children = sorted(calls.get(agent_run.pk, []), key=lambda s: s.start)
        for child in children:
            child.group = group
        spans.append(
            svg.Span(
                kind="agent_run",
                label=f"{agent_run.role} · {target} #{agent_run.attempt}"
                + profile_label(agent_run, " · "),
                start=agent_run.started_at,
                end=agent_run.finished_at,
                status=agent_run.status,
                detail=agent_run.error,
                url=(
                    reverse("dashboard:step", args=[run.pk, agent_run.step.key])
                    if agent_run.step
                    else ""
                ),
                tokens=agent_run.input_tokens + agent_run.output_tokens,
                cost=agent_run.cost_usd,
                group=group if children else "",
            )
        )
        spans.extend(children)
    for checkpoint in loose_waits:
        spans.append(_wait_span(run, checkpoint, depth=0))
    return svg.waterfall(spans, start=run.created_at, now=run.finished_at or timezone.now())


def profile_label(agent_run: AgentRun, before: str = "") -> str:
    """Which profile version the agent ran with ("profile demo/coder v3": the project's own,
    or "software/coder v1": its team's); empty for runs recorded before versions."""
    version = agent_run.profile_version
    return f"{before}profile {version}" if version is not None else ""


def _tool_input(call: ToolCall) -> str:
    """The arguments as the tool received them; the raw text when they were not valid JSON."""
    if call.arguments or not call.raw_arguments:
        return present.pretty_json(call.arguments)
    return call.raw_arguments


def _tool_output(call: ToolCall) -> str:
    text = call.error or call.result
    if len(text) > TRACE_RESULT_LIMIT:
        cut = len(text) - TRACE_RESULT_LIMIT
        return f"{text[:TRACE_RESULT_LIMIT]}\n… {cut} more characters on the step page"
    return text


def _wait_span(run: Run, checkpoint: Checkpoint, depth: int) -> svg.Span:
    if checkpoint.status == Checkpoint.Status.PENDING:
        who = "waiting for a human"
    elif checkpoint.decided_by:
        who = f"{checkpoint.status} by {checkpoint.decided_by.get_username()}"
    else:
        who = checkpoint.status
    return svg.Span(
        kind="wait",
        label=f"wait · {checkpoint.kind.replace('_', ' ')} approval",
        start=checkpoint.requested_at,
        end=checkpoint.decided_at,
        depth=depth,
        status=checkpoint.status,
        detail=who + (f": {checkpoint.comment}" if checkpoint.comment else ""),
        url=reverse("dashboard:approval", args=[checkpoint.pk]),
    )


# --- history ---------------------------------------------------------------------------------
def history(user, filters: dict) -> QuerySet[Run]:
    """Runs in visible projects matching the (validated) history filters, newest first."""
    runs = visible_runs(user)
    if filters.get("project"):
        runs = runs.filter(project=filters["project"])
    if filters.get("status"):
        runs = runs.filter(status=filters["status"])
    if filters.get("agent"):
        # EXISTS rather than a join: a run with many steps of that role is listed once.
        runs = runs.filter(
            Exists(Step.objects.filter(run=OuterRef("pk"), agent_role=filters["agent"]))
        )
    if filters.get("since"):
        runs = runs.filter(created_at__date__gte=filters["since"])
    if filters.get("until"):
        runs = runs.filter(created_at__date__lte=filters["until"])
    if filters.get("q"):
        runs = runs.filter(task__title__icontains=filters["q"])
    return runs.order_by("-created_at", "-pk")
