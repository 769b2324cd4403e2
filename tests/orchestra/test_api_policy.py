"""The approval policy written over the API: admins add and revoke rules, which decide the
next tool call of a run through the policy itself; the audit trail records both; viewers and
operators are refused (403), outsiders see nothing (404); a wrong rule is a 422 naming the
field, and nothing is saved."""

import json

import pytest
from django.test import Client

from agents.llm import override_client
from agents.models import ToolCall
from approvals import audit
from approvals.models import AuditRecord, PolicyRule
from orchestra.engine import start_run
from orchestra.models import ApiToken
from tests.scripted import ScriptedModel, call, role_of, text_reply, tool_reply

pytestmark = pytest.mark.django_db(transaction=True)

RULES = "/api/projects/demo/policy/rules"
BRIEF = {"objective": "Clean the build", "expected_output": "y", "acceptance_criteria": ["z"]}
PLAN = {"steps": [{"key": "clean", "title": "Clean", "agent": "coder", "brief": BRIEF}]}
REMOVAL = {"command": "rm -rf build"}


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def post(user, body) -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    return api(user).post(RULES, data, content_type="application/json")


def live_rules(project) -> list[PolicyRule]:
    return list(PolicyRule.objects.filter(project=project, run__isnull=True, revoked_at=None))


def audit_kinds(project) -> list[str]:
    return list(AuditRecord.objects.filter(project=project).order_by("seq").values_list("kind"))


def removal_attempt(owner, project, title: str) -> ToolCall:
    """A run whose coder asks once to run `rm -rf build`, then reports: the tool call as the
    policy decided it."""

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", PLAN, "plan"))
        if role_of(messages) != "specialist":
            return None
        if not any(m["role"] == "tool" for m in messages):
            return tool_reply(call("run_command", REMOVAL, "rm"))
        return text_reply("Cleaned.")

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, project, title)
    return ToolCall.objects.get(run=run, tool="run_command")


def test_a_rule_added_over_the_api_decides_the_next_tool_call_and_revoking_removes_it(
    demo, owner, viewer
):
    commands = next(r for r in live_rules(demo) if r.name == "Commands")
    assert api(owner).delete(f"{RULES}/{commands.pk}").status_code == 204

    added = post(
        owner,
        {
            "name": "No deleting",
            "tool": "run_command",
            "arguments": {"command": "rm *"},
            "outcome": "deny",
        },
    )

    assert added.status_code == 201, added.content
    rule = added.json()
    assert rule["name"] == "No deleting" and rule["outcome"] == "deny"
    assert rule["arguments"] == {"command": "rm *"} and rule["approvals_required"] == 1
    listed = api(viewer).get("/api/projects/demo/policy").json()["rules"]
    assert listed[-1] == rule  # at the end: tried after every other rule
    assert "Commands" not in [r["name"] for r in listed]

    denied = removal_attempt(owner, demo, "Clean up")
    assert denied.status == ToolCall.Status.DENIED
    assert "No deleting" in denied.result

    assert api(owner).delete(f"{RULES}/{rule['id']}").status_code == 204
    assert rule["id"] not in [
        r["id"] for r in api(viewer).get("/api/projects/demo/policy").json()["rules"]
    ]

    # No rule matches now: the policy fails closed and asks a person.
    asked = removal_attempt(owner, demo, "Clean up again")
    assert asked.status == ToolCall.Status.AWAITING_APPROVAL

    assert audit_kinds(demo)[-3:] == [("policy.deleted",), ("policy.created",), ("policy.deleted",)]
    created = AuditRecord.objects.get(project=demo, kind="policy.created")
    assert created.actor == "olivia" and created.data["after"]["name"] == "No deleting"
    revoked = PolicyRule.objects.get(pk=rule["id"])
    assert revoked.revoked_by == owner and revoked.revoked_at is not None
    assert audit.verify(demo).ok
    gone = api(owner).delete(f"{RULES}/{rule['id']}")
    assert gone.status_code == 404 and "no rule" in gone.json()["detail"]


def test_only_the_projects_admins_write_rules(demo, owner, operator, approver, viewer, outsider):
    rule = live_rules(demo)[0]
    before = (len(live_rules(demo)), audit_kinds(demo))
    for member in (operator, approver, viewer):
        refused = post(member, {"name": "Mine", "outcome": "allow"})
        assert refused.status_code == 403 and "admins" in refused.json()["detail"]
        # A malformed rule tells a non-admin nothing more than a good one does.
        assert post(member, {"outcome": 7}).status_code == 403
        assert api(member).delete(f"{RULES}/{rule.pk}").status_code == 403
    assert post(outsider, {"name": "Mine", "outcome": "allow"}).status_code == 404
    assert api(outsider).delete(f"{RULES}/{rule.pk}").status_code == 404
    anonymous = Client().post(RULES, {"outcome": "allow"}, content_type="application/json")
    assert anonymous.status_code == 401
    assert Client().delete(f"{RULES}/{rule.pk}").status_code == 401
    assert (len(live_rules(demo)), audit_kinds(demo)) == before


def test_a_run_rule_is_not_revoked_as_project_policy(demo, owner):
    run_rule = PolicyRule.objects.create(
        project=demo, run=start_run(owner, demo, "A run"), outcome="allow", tool="run_command"
    )
    assert api(owner).delete(f"{RULES}/{run_rule.pk}").status_code == 404
    run_rule.refresh_from_db()
    assert run_rule.revoked_at is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "No outcome"}, "outcome", "Field required"),
        ({"outcome": "maybe"}, "outcome", "outcome must be one of"),
        ({"outcome": "deny", "tool": "format_disk"}, "tool", "format_disk"),
        ({"outcome": "deny", "risk": "lethal"}, "risk", "risk must be one of"),
        ({"outcome": "require_approval", "approvals_required": 9}, "approvals_required", "1 to 5"),
        ({"outcome": "allow", "approvals_required": "two"}, "approvals_required", "integer"),
        ({"outcome": "deny", "arguments": {"path": ""}}, "arguments", "glob"),
        ({"outcome": "deny", "arguments": ["path"]}, "arguments", "should be an object"),
        ({"outcome": "deny", "name": "bad\u0000name"}, "name", "NUL"),
        ({"outcome": "deny", "name": "x" * 201}, "name", "200 characters"),
        (
            {"outcome": "require_approval", "deadline_minutes": 5, "remind_after_minutes": 10},
            "remind_after_minutes",
            "before the deadline",
        ),
        ({"outcome": "deny", "colour": "red"}, "colour", "Extra inputs"),
        ("{not json", None, "JSON"),
        ("[]", None, "object"),
    ],
)
def test_a_wrong_rule_is_a_422_naming_the_field_and_nothing_is_saved(
    demo, owner, body, field, words
):
    before = (len(live_rules(demo)), audit_kinds(demo))
    response = post(owner, body)
    assert response.status_code == 422, response.content
    error = response.json()
    assert error["field"] == field
    assert words.lower() in error["detail"].lower()
    if field:
        assert field in error["detail"]
    assert (len(live_rules(demo)), audit_kinds(demo)) == before


def test_the_openapi_document_shows_how_to_write_a_rule(db):
    document = Client().get("/api/openapi.json").json()
    rules = document["paths"]["/api/projects/{slug}/policy/rules"]["post"]
    body = rules["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["outcome"]
    assert {"tool", "arguments", "approvals_required", "deadline_minutes"} <= set(
        body["properties"]
    )
    assert {"201", "403", "404", "422"} <= set(rules["responses"])
    revoke = document["paths"]["/api/projects/{slug}/policy/rules/{rule_id}"]["delete"]
    assert {"204", "403", "404"} <= set(revoke["responses"])
