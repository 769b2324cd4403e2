"""Spending limits: a run's soft and hard limits, and a project's day and month.

A run gets its limits when it starts (its project's defaults, or the task's own). Before each
model call of a step's agent the host asks `hold_before_model_call`: past the hard limit the
run fails, finished steps keeping their outputs; past the soft limit one budget checkpoint
opens ("this run has spent $X of $Y: continue with a new limit, or stop") and every branch
pauses at its next model call until a person decides. A project past its day or month limit
is refused new tasks. A model without a price counts as "cost unknown", never as $0: its
calls are counted and named, and only token limits can stop them.
"""

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agents.host import Hold
from agents.models import AgentRun, ModelCall, ProjectBudget, RunBudget
from approvals import services as approvals
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from approvals.services import Decided
from orchestra import activities
from orchestra.engine import runs
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Project, Run, Step

GO = Hold()
LIMITS = ("soft_usd", "hard_usd", "soft_tokens", "hard_tokens")


@dataclass(frozen=True)
class Spend:
    usd: Decimal
    tokens: int
    #: Calls to models without a price: their cost is unknown, not zero.
    unpriced_calls: int = 0

    def usd_text(self) -> str:
        text = f"${self.usd:.4f}"
        if self.unpriced_calls:
            text += f" (plus {self.unpriced_calls} calls whose cost is unknown)"
        return text


# --- starting a run -------------------------------------------------------------------------


def start_run(user, project: Project, title: str, description: str = "", *, budget=None) -> Run:
    """`runs.start_run` within the project's budget: refused past its day or month limit;
    the run gets the project's run limits, or `budget`'s ({"soft_usd": "2", ...})."""
    refusal = refusal_for_new_run(project)
    if refusal:
        raise runs.EngineError(refusal)
    limits = run_limits(project, budget)

    def open_budget(run: Run) -> None:
        if any(value is not None for value in limits.values()):
            RunBudget.objects.create(run=run, **limits)

    return runs.start_run(user, project, title, description, on_created=open_budget)


def run_limits(project: Project, budget: dict | None) -> dict:
    """The limits a new run gets: the task's, else the project's defaults."""
    defaults = ProjectBudget.objects.filter(project=project).first()
    limits = {name: getattr(defaults, f"run_{name}", None) for name in LIMITS}
    for name, value in (budget or {}).items():
        if name not in LIMITS:
            raise runs.EngineError(f"Unknown budget field {name!r}; use {', '.join(LIMITS)}.")
        limits[name] = parse_limit(name, value)
    check_soft_below_hard(limits)
    return limits


class InvalidBudget(runs.EngineError):
    """A limit that is not one: `field` names it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# What the limits' columns hold (12 digits, 4 of them decimals; a signed 64-bit integer).
MAX_USD = Decimal("99999999.9999")
MAX_TOKENS = 2**63 - 1


def parse_limit(name: str, value) -> Decimal | int | None:
    """A limit as given (text or number; empty or None for no limit), checked: a positive
    number of dollars with at most 4 decimals, or a positive whole number of tokens."""
    if value in (None, ""):
        return None
    usd = "usd" in name
    try:
        if isinstance(value, bool):
            raise ValueError
        number = Decimal(str(value).strip()) if usd else int(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        raise InvalidBudget(f"The budget's {name} must be a number, not {value!r}.", name) from None
    if usd and not number.is_finite():
        raise InvalidBudget(f"The budget's {name} must be a finite number.", name)
    if number <= 0:
        raise InvalidBudget(f"The budget's {name} must be above zero.", name)
    if number > (MAX_USD if usd else MAX_TOKENS):
        raise InvalidBudget(
            f"The budget's {name} must be at most {MAX_USD if usd else MAX_TOKENS}.", name
        )
    if usd and number.as_tuple().exponent < -4:
        raise InvalidBudget(f"The budget's {name} has more than 4 decimal places.", name)
    return number


def check_soft_below_hard(limits: dict, prefix: str = "") -> None:
    """A soft limit above its hard one would never be reached: refused, naming the soft one."""
    for kind in ("usd", "tokens"):
        soft, hard = limits.get(f"{prefix}soft_{kind}"), limits.get(f"{prefix}hard_{kind}")
        if soft is not None and hard is not None and soft > hard:
            raise InvalidBudget(
                f"The soft limit ({soft}) is above the hard one ({hard}).", f"{prefix}soft_{kind}"
            )


def periods(now: datetime | None = None) -> dict[str, tuple[datetime, datetime]]:
    """The project's budget periods, "daily" and "monthly", as (start, end) in local time."""
    now = timezone.localtime(now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return {"daily": (day, day + timedelta(days=1)), "monthly": (month, next_month)}


def refusal_for_new_run(project: Project) -> str:
    """Why `project` may not start a task now (its day or month limit is spent), or ""."""
    limits = ProjectBudget.objects.filter(project=project).first()
    if limits is None:
        return ""
    bounds = periods()
    for name, usd, tokens in (
        ("daily", limits.day_usd, limits.day_tokens),
        ("monthly", limits.month_usd, limits.month_tokens),
    ):
        since, until = bounds[name]
        if usd is None and tokens is None:
            continue
        spend = project_spend(project, since)
        reached = (usd is not None and spend.usd >= usd) or (
            tokens is not None and spend.tokens >= tokens
        )
        if reached:
            limit = f"${usd:.2f}" if usd is not None else f"{tokens} tokens"
            used = spend.usd_text() if usd is not None else f"{spend.tokens} tokens"
            return (
                f"{project.name} has spent {used} of its {name} budget of {limit}: no new task "
                f"until {_when(until)}, unless a project admin raises the limit."
            )
    return ""


def _when(moment: datetime) -> str:
    return moment.strftime("%B %-d, %H:%M")


def project_spend(project: Project, since: datetime) -> Spend:
    totals = ModelCall.objects.filter(run__project=project, started_at__gte=since).aggregate(
        usd=Sum("cost_usd"),
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        unpriced=Count("pk", filter=Q(cost_unknown=True)),
    )
    return Spend(
        totals["usd"] or Decimal(0),
        (totals["input"] or 0) + (totals["output"] or 0),
        totals["unpriced"],
    )


def run_spend(run: Run) -> Spend:
    """What `run` has spent, from the usage the model calls added to it."""
    unpriced = ModelCall.objects.filter(run=run, cost_unknown=True).count()
    return Spend(run.cost_usd, run.input_tokens + run.output_tokens, unpriced)


# --- before each model call -------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _budgeted(run_id: int, created_at: datetime) -> bool:
    """Whether the run has limits: fixed when it starts, so read once per process (keyed by
    its creation time too, as a test database may hand out the same id twice)."""
    return RunBudget.objects.filter(run_id=run_id).exists()


def hold_before_model_call(agent_run: AgentRun, step: Step | None) -> Hold:
    """Go on, wait at the budget checkpoint, or stop. Only a step's agent is held: a
    planner, reviewer or reporter finishes what it started."""
    if step is None or agent_run.purpose != AgentRun.Purpose.STEP:
        return GO
    if not _budgeted(agent_run.run_id, agent_run.run.created_at):
        return GO
    with locked_run(agent_run.run_id) as run:
        if run.is_terminal:
            return GO  # the loop's own check stops it
        budget = RunBudget.objects.get(run=run)
        spend = run_spend(run)
        hard = _reached(budget, spend, "hard")
        if hard:
            message = (
                f"The run reached its hard budget: it has spent {hard}. It is stopped; the "
                "finished steps keep their outputs."
            )
            runs.fail_run(run, message)
            return Hold(stop=message)
        soft = _reached(budget, spend, "soft")
        if not soft:
            return GO
        checkpoint = run.checkpoints.filter(
            kind=Checkpoint.Kind.BUDGET, status=Checkpoint.Status.PENDING
        ).first() or _open_budget_checkpoint(run, budget, spend, soft)
        Step.objects.filter(pk=step.pk).update(status=Step.Status.AWAITING_APPROVAL)
        AgentRun.objects.filter(pk=agent_run.pk).update(status=AgentRun.Status.PAUSED)
        emit(
            run,
            "step.paused",
            step=step,
            actor="budget",
            data={"checkpoint": checkpoint.pk, "reason": "budget"},
        )
    return Hold(checkpoint_id=checkpoint.pk)


def _reached(budget: RunBudget, spend: Spend, which: str) -> str:
    """ "$X of $Y" (or tokens) when the run is at or past its `which` limit, else ""."""
    usd, tokens = getattr(budget, f"{which}_usd"), getattr(budget, f"{which}_tokens")
    if usd is not None and spend.usd >= usd:
        return f"{spend.usd_text()} of ${usd:.4f}"
    if tokens is not None and spend.tokens >= tokens:
        return f"{spend.tokens} tokens of {tokens}"
    return ""


def _open_budget_checkpoint(run: Run, budget: RunBudget, spend: Spend, reached: str):
    shown = {
        "message": f"This run has spent {reached}: continue with a new limit, or stop.",
        "spent_usd": str(spend.usd),
        "spent_tokens": spend.tokens,
        "unpriced_calls": spend.unpriced_calls,
        **{
            name: None if getattr(budget, name) is None else str(getattr(budget, name))
            for name in LIMITS
        },
    }
    return open_checkpoint(run, kind=Checkpoint.Kind.BUDGET, shown=shown, actor="budget")


# --- the person's decision --------------------------------------------------------------------


def raise_budget(user, checkpoint: Checkpoint, *, soft_usd=None, soft_tokens=None, comment=""):
    """Continue past the budget checkpoint with new soft limits (above what was spent, not
    above the hard ones). The raise and the decision commit together."""
    if checkpoint.kind != Checkpoint.Kind.BUDGET:
        raise runs.EngineError("Only a budget checkpoint takes a new limit.")
    with transaction.atomic():
        with locked_run(checkpoint.run_id) as run:
            _set_soft_limits(run, soft_usd, soft_tokens)
        # As `decide_checkpoint` does, with this kind's follow-up.
        decided = approvals.record_decision(user, checkpoint, "approve", comment)
        if decided.closed:
            with locked_run(checkpoint.run_id) as run:
                follow_up(run, decided)
    return decided.checkpoint


def _set_soft_limits(run: Run, soft_usd, soft_tokens) -> None:
    budget = RunBudget.objects.get(run=run)
    spend = run_spend(run)
    for name, value, spent in (
        ("soft_usd", soft_usd, spend.usd),
        ("soft_tokens", soft_tokens, spend.tokens),
    ):
        number = parse_limit(name, value)
        if number is None:
            continue
        if number <= spent:
            raise runs.EngineError(
                f"The new limit ({number}) must be above what the run has spent ({spent})."
            )
        hard = getattr(budget, name.replace("soft", "hard"))
        if hard is not None and number > hard:
            raise runs.EngineError(
                f"The new limit ({number}) is above the run's hard limit ({hard})."
            )
        setattr(budget, name, number)
    budget.save(update_fields=["soft_usd", "soft_tokens"])


def follow_up(run: Run, decided: Decided) -> None:
    """Approved: the soft limits still reached are lifted, and every step paused at its model
    call carries on. Rejected: the run stops, finished steps keeping their outputs. Caller
    holds the run lock."""
    checkpoint = decided.checkpoint
    if checkpoint.status != Checkpoint.Status.APPROVED:
        who = checkpoint.decided_by.get_username() if checkpoint.decided_by else "the system"
        runs.fail_run(
            run,
            f"Stopped by {who} at the budget checkpoint ({checkpoint.shown.get('message', '')})"
            + (f": {decided.comment}" if decided.comment else ""),
        )
        return
    budget = RunBudget.objects.get(run=run)
    spend = run_spend(run)
    if budget.soft_usd is not None and spend.usd >= budget.soft_usd:
        budget.soft_usd = None
    if budget.soft_tokens is not None and spend.tokens >= budget.soft_tokens:
        budget.soft_tokens = None
    budget.save(update_fields=["soft_usd", "soft_tokens"])
    emit(
        run,
        "budget.raised",
        actor=checkpoint.decided_by.get_username() if checkpoint.decided_by else "",
        data={
            name: None if getattr(budget, name) is None else str(getattr(budget, name))
            for name in LIMITS
        },
    )
    paused = run.steps.filter(
        status=Step.Status.AWAITING_APPROVAL,
        agent_runs__purpose=AgentRun.Purpose.STEP,
        agent_runs__status=AgentRun.Status.PAUSED,
    ).distinct()
    for step in paused:
        activities.schedule(
            Activity.Kind.STEP, "orchestra.resume_step", run_id=run.pk, step_id=step.pk
        )
