"""A project's spending limits as its admins set them: the defaults each new run gets, and what
the project may spend in a day and a month (`budgets` enforces both)."""

from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents.models import ProjectBudget
from approvals import audit
from orchestra.access import role_in
from orchestra.engine.budgets import (
    LIMITS,
    Spend,
    check_soft_below_hard,
    parse_limit,
    periods,
    project_spend,
)
from orchestra.models import Membership, Project

RUN_DEFAULTS = tuple(f"run_{name}" for name in LIMITS)
PERIOD_LIMITS = ("day_usd", "day_tokens", "month_usd", "month_tokens")
FIELDS = RUN_DEFAULTS + PERIOD_LIMITS


def project_limits(project: Project) -> dict[str, Decimal | int | None]:
    """Every limit of the project, None where it has none."""
    budget = ProjectBudget.objects.filter(project=project).first()
    return {name: getattr(budget, name, None) for name in FIELDS}


def project_spending(project: Project) -> dict[str, Spend]:
    """What the project has spent in the current "daily" and "monthly" periods."""
    return {name: project_spend(project, since) for name, (since, _) in periods().items()}


def may_edit_budget(user, project: Project) -> bool:
    return role_in(user, project) == Membership.Role.ADMIN


def set_project_budget(user, project: Project, **changes) -> ProjectBudget:
    """Set some of the project's limits (`FIELDS`); a None or empty value removes that limit,
    the limits not named keep theirs.

    Admins only (`PermissionDenied`). Each value is checked, and a run's soft default may not
    be above its hard one (`InvalidBudget`, naming the field; nothing is saved). Locks the
    Project row (SELECT ... FOR UPDATE) while the limits are read and written, and appends a
    "budget.changed" record with the limits before and after to the project's audit trail.
    """
    if not may_edit_budget(user, project):
        raise PermissionDenied("Only the project's admins may change its budget.")
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise ValueError(f"Unknown budget field(s): {', '.join(unknown)}.")
    parsed = {name: parse_limit(name, value) for name, value in changes.items()}
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        budget, _ = ProjectBudget.objects.get_or_create(project=project)
        before = {name: getattr(budget, name) for name in FIELDS}
        after = {**before, **parsed}
        check_soft_below_hard(after, prefix="run_")
        for name, value in parsed.items():
            setattr(budget, name, value)
        budget.save(update_fields=list(parsed) or None)
        audit.record(
            project,
            "budget.changed",
            user.get_username(),
            {"before": _json(before), "after": _json(after)},
        )
    return budget


def _json(limits: dict) -> dict:
    return {
        name: f"{value:.4f}" if isinstance(value, Decimal) else value
        for name, value in limits.items()
    }
