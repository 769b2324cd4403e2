"""Editing a project's approval policy: the only way its rules change after it is created.

Only the project's admins may edit (`PermissionDenied` otherwise). Every change validates its
input (`InvalidRule`, saying what to fix), runs in one transaction holding the Project row
lock (SELECT ... FOR UPDATE, the same lock the audit chain takes, so concurrent edits and
renumbering are serialised per project) and appends a "policy.created", "policy.changed" or
"policy.deleted" record with the rule's fields before and after to the project's audit trail.

Only project rules are edited here; a run's own rules ("approved for the rest of this run")
are withdrawn with `approvals.run_rules.revoke_run_rule`.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from agents.tools import REGISTRY, Risk
from approvals import audit
from approvals.models import PolicyRule
from approvals.policies import DEFAULT_RULES, TIMEOUT_OUTCOMES
from orchestra.access import role_in
from orchestra.models import Membership, Project
from orchestra.text import text_problem

# The fields a person sets; everything else (project, run, position, who and when) is ours.
FIELDS = (
    "name",
    "tool",
    "risk",
    "agent_role",
    "arguments",
    "within_claims",
    "outcome",
    "approvals_required",
    "approver_group",
    "exclude_task_creator",
    "deadline_minutes",
    "timeout_outcome",
    "remind_after_minutes",
    "escalate_group",
)
MAX_APPROVALS = 5
# Deadlines and reminders: whole minutes, at most 30 days. A larger value is a typo, and one
# past what a datetime can hold would leave the checkpoint unable to get its deadline.
MAX_MINUTES = 30 * 24 * 60
MAX_ARGUMENT_CONDITIONS = 20
MAX_GLOB = 500
MAX_ARGUMENT_NAME = 100
POSITION_STEP = 10


class InvalidRule(Exception):
    """Bad rule input: the message says what to fix; `field` names the field when one is
    to blame."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def project_rules(project: Project) -> list[PolicyRule]:
    """The project's rules in evaluation order (first match wins); run rules excluded."""
    return list(
        PolicyRule.objects.filter(
            project=project, run__isnull=True, revoked_at__isnull=True
        ).order_by("position", "pk")
    )


def may_edit_policy(user, project: Project) -> bool:
    return role_in(user, project) == Membership.Role.ADMIN


def rule_fields(rule: PolicyRule) -> dict:
    """The rule as the audit trail records it (JSON-safe)."""
    return {"id": rule.pk, "position": rule.position} | {f: getattr(rule, f) for f in FIELDS}


# --- changes --------------------------------------------------------------------------------
def create_rule(user, project: Project, **fields) -> PolicyRule:
    """Add a rule at the end of the project's policy (tried after every existing rule)."""
    require_admin(user, project)
    values = _validated({f: getattr(PolicyRule(), f) for f in FIELDS}, fields)
    with transaction.atomic():
        _lock(project)
        rules = project_rules(project)
        position = (rules[-1].position if rules else 0) + POSITION_STEP
        rule = PolicyRule.objects.create(
            project=project, position=position, created_by=user, **values
        )
        audit.record(project, "policy.created", _actor(user), {"after": rule_fields(rule)})
    return rule


def update_rule(user, rule: PolicyRule, **fields) -> PolicyRule:
    """Change some of a rule's fields; the others keep their values."""
    project = _editable(user, rule)
    with transaction.atomic():
        _lock(project)
        rule = _current(rule)
        before = rule_fields(rule)
        values = _validated({f: getattr(rule, f) for f in FIELDS}, fields)
        for name, value in values.items():
            setattr(rule, name, value)
        rule.save(update_fields=list(values))
        audit.record(
            project,
            "policy.changed",
            _actor(user),
            {"before": before, "after": rule_fields(rule)},
        )
    return rule


def delete_rule(user, rule: PolicyRule) -> None:
    """Take a rule out of the policy. The row stays, marked revoked, so the checkpoints it
    opened still name the rule that asked for them; the policy never reads it again."""
    project = _editable(user, rule)
    with transaction.atomic():
        _lock(project)
        rule = _current(rule)
        PolicyRule.objects.filter(pk=rule.pk).update(revoked_at=timezone.now(), revoked_by=user)
        audit.record(project, "policy.deleted", _actor(user), {"before": rule_fields(rule)})


def move_rule(user, rule: PolicyRule, direction: str) -> list[PolicyRule]:
    """Swap a rule with its neighbour ("up": tried earlier, "down": later) and renumber the
    policy 10, 20, 30...; returns the rules in their new order. Moving the first rule up or
    the last one down changes nothing and records nothing."""
    project = _editable(user, rule)
    if direction not in ("up", "down"):
        raise InvalidRule("direction must be up or down")
    with transaction.atomic():
        _lock(project)
        rule = _current(rule)
        rules = project_rules(project)
        index = next(i for i, r in enumerate(rules) if r.pk == rule.pk)
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(rules):
            return rules
        before = [r.pk for r in rules]
        rules[index], rules[other] = rules[other], rules[index]
        _renumber(rules)
        audit.record(
            project,
            "policy.changed",
            _actor(user),
            {
                "rule": rule.pk,
                "moved": direction,
                "order_before": before,
                "order_after": [r.pk for r in rules],
            },
        )
    return rules


def reset_to_default(user, project: Project) -> list[PolicyRule]:
    """Replace the project's rules with Orchestra's default policy."""
    require_admin(user, project)
    with transaction.atomic():
        _lock(project)
        old = project_rules(project)
        PolicyRule.objects.filter(pk__in=[r.pk for r in old]).update(
            revoked_at=timezone.now(), revoked_by=user
        )
        for index, spec in enumerate(DEFAULT_RULES, start=1):
            PolicyRule.objects.create(
                project=project, position=index * POSITION_STEP, created_by=user, **spec
            )
        rules = project_rules(project)
        audit.record(
            project,
            "policy.changed",
            _actor(user),
            {
                "reset_to_default": True,
                "before": [rule_fields(r) for r in old],
                "after": [rule_fields(r) for r in rules],
            },
        )
    return rules


# --- helpers --------------------------------------------------------------------------------
def _actor(user) -> str:
    return user.get_username()


def require_admin(user, project: Project) -> None:
    if not may_edit_policy(user, project):
        raise PermissionDenied("Only the project's admins may change its approval policy.")


def _editable(user, rule: PolicyRule) -> Project:
    project = rule.project
    require_admin(user, project)
    if rule.run_id is not None:
        raise InvalidRule("this rule belongs to one run; revoke it on the run's page")
    return project


def _lock(project: Project) -> None:
    Project.objects.select_for_update().filter(pk=project.pk).first()


def _current(rule: PolicyRule) -> PolicyRule:
    """The rule as stored now, under the project lock; gone if someone deleted it."""
    current = PolicyRule.objects.filter(
        pk=rule.pk, run__isnull=True, revoked_at__isnull=True
    ).first()
    if current is None:
        raise InvalidRule("this rule is no longer in the policy (someone deleted it)")
    return current


def _renumber(rules: list[PolicyRule]) -> None:
    for index, rule in enumerate(rules, start=1):
        if rule.position != index * POSITION_STEP:
            rule.position = index * POSITION_STEP
            rule.save(update_fields=["position"])


def _validated(current: dict, changes: dict) -> dict:
    """`current` updated with `changes`, each field checked; raises InvalidRule."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidRule(f"unknown rule field(s): {', '.join(unknown)}")
    values = {**current, **changes}
    for name in ("name", "tool", "risk", "agent_role", "approver_group", "escalate_group"):
        values[name] = _text(name, values[name])
    if values["outcome"] not in PolicyRule.Outcome.values:
        raise InvalidRule(
            f"outcome must be one of {', '.join(PolicyRule.Outcome.values)}", "outcome"
        )
    risks = [r.value for r in Risk]
    if values["risk"] and values["risk"] not in risks:
        raise InvalidRule(f"risk must be one of {', '.join(risks)}, or empty for any", "risk")
    if values["tool"] and values["tool"] not in REGISTRY:
        raise InvalidRule(f"there is no tool called {values['tool']!r}", "tool")
    values["arguments"] = _arguments(values["arguments"])
    for name in ("within_claims", "exclude_task_creator"):
        if not isinstance(values[name], bool):
            raise InvalidRule(f"{name} must be true or false", name)
    required = values["approvals_required"]
    if not _is_int(required) or not 1 <= required <= MAX_APPROVALS:
        raise InvalidRule(
            f"approvals_required must be a whole number from 1 to {MAX_APPROVALS}",
            "approvals_required",
        )
    if values["timeout_outcome"] not in TIMEOUT_OUTCOMES:
        raise InvalidRule(
            f"timeout_outcome must be one of {', '.join(TIMEOUT_OUTCOMES)}", "timeout_outcome"
        )
    for name in ("deadline_minutes", "remind_after_minutes"):
        minutes = values[name]
        if minutes is not None and (not _is_int(minutes) or not 1 <= minutes <= MAX_MINUTES):
            raise InvalidRule(
                f"{name} must be a positive number of minutes, at most {MAX_MINUTES} "
                "(30 days), or empty",
                name,
            )
    deadline, remind = values["deadline_minutes"], values["remind_after_minutes"]
    if deadline and remind and remind >= deadline:
        raise InvalidRule(
            "the reminder must come before the deadline (remind_after_minutes < deadline_minutes)",
            "remind_after_minutes",
        )
    return {name: values[name] for name in FIELDS}


def _text(name: str, value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRule(f"{name} must be text", name)
    limit = PolicyRule._meta.get_field(name).max_length
    value = value.strip()
    if len(value) > limit:
        raise InvalidRule(f"{name} is longer than {limit} characters", name)
    if problem := text_problem(value):
        raise InvalidRule(f"{name} {problem}", name)
    return value


def _arguments(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRule("arguments must map argument names to glob patterns", "arguments")
    if len(value) > MAX_ARGUMENT_CONDITIONS:
        raise InvalidRule(
            f"at most {MAX_ARGUMENT_CONDITIONS} argument conditions per rule", "arguments"
        )
    for key, pattern in value.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidRule("every argument condition needs an argument name", "arguments")
        if len(key) > MAX_ARGUMENT_NAME:
            raise InvalidRule(
                f"an argument name is longer than {MAX_ARGUMENT_NAME} characters", "arguments"
            )
        if problem := text_problem(key):
            raise InvalidRule(f"an argument name {problem}", "arguments")
        if not isinstance(pattern, str) or not pattern:
            raise InvalidRule(
                f"the condition on argument {key!r} needs a glob pattern (text)", "arguments"
            )
        if len(pattern) > MAX_GLOB:
            raise InvalidRule(
                f"the pattern for {key!r} is longer than {MAX_GLOB} characters", "arguments"
            )
        if problem := text_problem(pattern):
            raise InvalidRule(f"the pattern for {key!r} {problem}", "arguments")
    return dict(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
