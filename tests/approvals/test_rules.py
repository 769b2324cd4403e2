"""Editing a project's approval policy: admins only, validated input, positions kept in
order, and every change in the project's audit chain."""

import pytest
from django.core.exceptions import PermissionDenied

from approvals import audit, rules
from approvals.models import AuditRecord, PolicyRule
from approvals.policies import DEFAULT_RULES, Call, evaluate
from approvals.rules import InvalidRule
from orchestra.models import Run, Task

pytestmark = pytest.mark.django_db


def names(project) -> list[str]:
    return [r.name for r in rules.project_rules(project)]


def positions(project) -> list[int]:
    return [r.position for r in rules.project_rules(project)]


def kinds(project) -> list[str]:
    return list(AuditRecord.objects.filter(project=project).values_list("kind", flat=True))


# --- permissions ----------------------------------------------------------------------------
def test_only_admins_change_the_policy(demo, owner, operator, approver, viewer, outsider):
    first = rules.project_rules(demo)[0]
    for user in (operator, approver, viewer, outsider):
        with pytest.raises(PermissionDenied):
            rules.create_rule(user, demo, name="x", outcome="allow")
        with pytest.raises(PermissionDenied):
            rules.update_rule(user, first, name="x")
        with pytest.raises(PermissionDenied):
            rules.delete_rule(user, first)
        with pytest.raises(PermissionDenied):
            rules.move_rule(user, first, "down")
        with pytest.raises(PermissionDenied):
            rules.reset_to_default(user, demo)
    assert kinds(demo) == []
    assert rules.create_rule(owner, demo, name="ok", outcome="allow").pk


def test_a_run_rule_is_not_edited_as_project_policy(demo, owner):
    task = Task.objects.create(project=demo, title="t")
    run = Run.objects.create(task=task, project=demo)
    run_rule = PolicyRule.objects.create(project=demo, run=run, tool="run_command", outcome="allow")
    with pytest.raises(InvalidRule, match="revoke it on the run's page"):
        rules.delete_rule(owner, run_rule)
    assert run_rule not in rules.project_rules(demo)


# --- validation -----------------------------------------------------------------------------
INVALID = [
    ({"outcome": "maybe"}, "outcome", "outcome must be one of"),
    ({"outcome": "allow", "risk": "dangerous"}, "risk", "risk must be one of"),
    ({"outcome": "allow", "tool": "rm_rf"}, "tool", "no tool called 'rm_rf'"),
    ({"outcome": "allow", "arguments": ["path"]}, "arguments", "map argument names"),
    ({"outcome": "allow", "arguments": {"path": 3}}, "arguments", "needs a glob pattern"),
    ({"outcome": "allow", "arguments": {"": "x"}}, "arguments", "needs an argument name"),
    ({"outcome": "allow", "approvals_required": 0}, "approvals_required", "from 1 to 5"),
    ({"outcome": "allow", "approvals_required": 6}, "approvals_required", "from 1 to 5"),
    ({"outcome": "allow", "timeout_outcome": "approve"}, "timeout_outcome", "reject, reject"),
    ({"outcome": "allow", "deadline_minutes": 0}, "deadline_minutes", "positive number"),
    ({"outcome": "allow", "remind_after_minutes": -5}, "remind_after_minutes", "positive"),
    (
        {"outcome": "allow", "deadline_minutes": 30, "remind_after_minutes": 30},
        "remind_after_minutes",
        "before the deadline",
    ),
    ({"outcome": "allow", "name": "x" * 201}, "name", "longer than 200"),
    ({"outcome": "allow", "within_claims": "yes"}, "within_claims", "true or false"),
]


@pytest.mark.parametrize(("fields", "field", "message"), INVALID)
def test_bad_rules_are_refused_with_a_reason(demo, owner, fields, field, message):
    before = names(demo)
    with pytest.raises(InvalidRule, match=message) as refused:
        rules.create_rule(owner, demo, **fields)
    assert refused.value.field == field
    assert names(demo) == before
    assert kinds(demo) == []


def test_unknown_fields_are_refused(demo, owner):
    with pytest.raises(InvalidRule, match="unknown rule field"):
        rules.create_rule(owner, demo, outcome="allow", run=None)


def test_an_invalid_update_changes_nothing(demo, owner):
    rule = rules.project_rules(demo)[0]
    with pytest.raises(InvalidRule):
        rules.update_rule(owner, rule, name="Renamed", approvals_required=9)
    rule.refresh_from_db()
    assert rule.name == "Reading is free"
    assert kinds(demo) == []


# --- changes and the audit chain ------------------------------------------------------------
def test_create_update_move_delete_are_audited_and_the_chain_verifies(demo, owner):
    created = rules.create_rule(
        owner,
        demo,
        name="  Pytest only  ",
        tool="run_command",
        arguments={"command": "pytest*"},
        outcome="allow",
    )
    assert created.name == "Pytest only"
    assert names(demo)[-1] == "Pytest only"
    assert positions(demo) == sorted(positions(demo))

    rules.update_rule(owner, created, outcome="require_approval", approvals_required=2)
    created.refresh_from_db()
    assert (created.outcome, created.approvals_required, created.tool) == (
        "require_approval",
        2,
        "run_command",
    )

    rules.move_rule(owner, created, "up")
    assert names(demo)[-2] == "Pytest only"
    assert positions(demo) == [10 * i for i in range(1, len(positions(demo)) + 1)]

    rules.delete_rule(owner, created)
    assert "Pytest only" not in names(demo)
    created.refresh_from_db()
    assert created.revoked_by == owner  # kept for the checkpoints that name it

    assert kinds(demo) == ["policy.created", "policy.changed", "policy.changed", "policy.deleted"]
    records = list(AuditRecord.objects.filter(project=demo).order_by("seq"))
    assert {r.actor for r in records} == {"olivia"}
    assert records[0].data["after"]["arguments"] == {"command": "pytest*"}
    assert records[1].data["before"]["outcome"] == "allow"
    assert records[1].data["after"]["outcome"] == "require_approval"
    assert records[2].data["moved"] == "up"
    assert records[2].data["order_before"] != records[2].data["order_after"]
    assert records[3].data["before"]["name"] == "Pytest only"
    assert audit.verify(demo).ok


def test_moving_past_the_ends_changes_nothing(demo, owner):
    ordered = rules.project_rules(demo)
    rules.move_rule(owner, ordered[0], "up")
    rules.move_rule(owner, ordered[-1], "down")
    assert names(demo) == [r.name for r in ordered]
    assert kinds(demo) == []
    with pytest.raises(InvalidRule, match="up or down"):
        rules.move_rule(owner, ordered[0], "sideways")


def test_the_first_matching_rule_decides_after_a_move(demo, owner):
    call = Call(tool="run_command", arguments={"command": "pytest -q"})
    assert evaluate(demo, call).outcome == "require_approval"  # "Commands"
    allow = rules.create_rule(
        owner,
        demo,
        name="Pytest",
        tool="run_command",
        arguments={"command": "pytest*"},
        outcome="allow",
    )
    assert evaluate(demo, call).outcome == "require_approval"  # still after "Commands"
    while rules.project_rules(demo)[0] != allow:
        rules.move_rule(owner, allow, "up")
    assert evaluate(demo, call).outcome == "allow"


def test_a_deleted_rule_no_longer_decides(demo, owner):
    reading = rules.project_rules(demo)[0]
    call = Call(tool="read_file", arguments={"path": "README.md"})
    assert evaluate(demo, call).allowed
    rules.delete_rule(owner, reading)
    assert not evaluate(demo, call).allowed
    with pytest.raises(InvalidRule, match="no longer in the policy"):
        rules.update_rule(owner, reading, name="back")


def test_reset_to_default_replaces_the_rules(demo, owner):
    rules.create_rule(owner, demo, name="Extra", outcome="deny")
    rules.reset_to_default(owner, demo)
    assert names(demo) == [spec["name"] for spec in DEFAULT_RULES]
    assert positions(demo) == [10 * i for i in range(1, len(DEFAULT_RULES) + 1)]
    last = AuditRecord.objects.filter(project=demo).order_by("-seq").first()
    assert last.kind == "policy.changed" and last.data["reset_to_default"] is True
    assert "Extra" in [r["name"] for r in last.data["before"]]
    assert audit.verify(demo).ok
