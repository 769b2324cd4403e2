"""Bad input is a 4xx with a message, never a 500, a hang or a stuck run, and nothing is
stored half-way: lone surrogates, NUL and other control characters in any text field, wrong
JSON types in plan edits, numbers that are not finite, out-of-range policy numbers and
oversized bodies, on the API and on the dashboard forms.

Each case is a refused request followed by a check that no row was written or changed.
"""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import ToolCall
from approvals import rules
from approvals.models import AuditRecord, Checkpoint, PolicyRule, Vote
from orchestra.engine import start_run
from orchestra.models import ApiToken, Event, Plan, Project, Run, Task
from orchestra.plan_edits import InvalidEdit, apply_plan_edits

pytestmark = pytest.mark.django_db(transaction=True)


def state() -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "counts": {
            model.__name__: model.objects.count()
            for model in (
                Project,
                Task,
                Run,
                Event,
                Plan,
                Checkpoint,
                Vote,
                AuditRecord,
                PolicyRule,
                ToolCall,
            )
        },
        "checkpoints": list(Checkpoint.objects.order_by("pk").values_list("pk", "status")),
        "runs": list(Run.objects.order_by("pk").values_list("pk", "status")),
        "rules": list(PolicyRule.objects.order_by("pk").values()),
    }


def api_client(user=None) -> Client:
    if user is None:
        return Client()
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_raw(client: Client, path: str, raw: str):
    """POST `raw` as the JSON body, byte for byte (escapes like \\ud800 stay escapes)."""
    return client.post(path, raw.encode(), content_type="application/json")


def assert_refused(response, status: int = 400) -> str:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


@pytest.fixture
def tool_checkpoint(demo, owner) -> Checkpoint:
    """The demo run paused at the `verify` step's command."""
    run = start_run(owner, demo, "Add a greeting", "Say hello politely.")
    return run.checkpoints.get(status=Checkpoint.Status.PENDING)


@pytest.fixture
def plan_checkpoint(demo, owner) -> Checkpoint:
    demo.requires_plan_approval = True
    demo.save(update_fields=["requires_plan_approval"])
    run = start_run(owner, demo, "Plan first")
    checkpoint = run.checkpoints.get(status=Checkpoint.Status.PENDING)
    assert checkpoint.kind == Checkpoint.Kind.PLAN
    return checkpoint


# --- API: creating tasks ----------------------------------------------------------------------
TASK_BODIES = {
    "lone surrogate in title": r'{"project": "demo", "title": "\ud800"}',
    "low surrogate in description": (
        r'{"project": "demo", "title": "ok", "description": "a\udfffb"}'
    ),
    "NUL in title": r'{"project": "demo", "title": "ok\u0000"}',
    "NUL in description": r'{"project": "demo", "title": "ok", "description": "x\u0000y"}',
    "control character in title": r'{"project": "demo", "title": "bell\u0007"}',
    "NUL in project": r'{"project": "demo\u0000", "title": "ok"}',
    "list as title": r'{"project": "demo", "title": ["ok"]}',
    "object as project": r'{"project": {"slug": "demo"}, "title": "ok"}',
    "number as description": r'{"project": "demo", "title": "ok", "description": 5}',
    "not JSON": r'{"project": "demo", "title": ',
    "a list body": r'["demo", "ok"]',
    "no title": r'{"project": "demo"}',
}


@pytest.mark.parametrize("raw", TASK_BODIES.values(), ids=TASK_BODIES.keys())
def test_bad_task_bodies_are_400_and_store_nothing(raw, owner):
    before = state()
    assert_refused(post_raw(api_client(owner), "/api/tasks", raw))
    assert state() == before


def test_the_refusal_names_the_field_and_the_problem(owner):
    detail = assert_refused(
        post_raw(api_client(owner), "/api/tasks", r'{"project": "demo", "title": "a\u0000"}')
    )
    assert "title" in detail and "NUL" in detail
    detail = assert_refused(
        post_raw(api_client(owner), "/api/tasks", r'{"project": "demo", "title": "\ud800"}')
    )
    assert "title" in detail and "surrogate" in detail


def test_a_good_task_still_starts(owner):
    response = post_raw(
        api_client(owner), "/api/tasks", '{"project": "demo", "title": "Tabs\\tand\\nlines"}'
    )
    assert response.status_code == 201, response.content
    assert Task.objects.get().title == "Tabs\tand\nlines"


def test_anonymous_bad_body_is_401_and_stores_nothing(demo):
    before = state()
    assert_refused(post_raw(api_client(), "/api/tasks", TASK_BODIES["NUL in title"]), 401)
    assert state() == before


def test_viewer_is_refused_with_bad_or_good_input(viewer):
    before = state()
    client = api_client(viewer)
    assert_refused(post_raw(client, "/api/tasks", TASK_BODIES["NUL in title"]))
    assert_refused(post_raw(client, "/api/tasks", '{"project": "demo", "title": "ok"}'), 403)
    assert state() == before


def test_an_oversized_body_is_413_with_a_json_detail(owner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    before = state()
    raw = json.dumps({"project": "demo", "title": "big", "description": "x" * 5_000})
    detail = assert_refused(post_raw(api_client(owner), "/api/tasks", raw), 413)
    assert "2000 bytes" in detail
    assert state() == before


def test_an_oversized_body_from_the_browser_session_is_413_too(owner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    client = signed_in(owner)
    client.get("/")  # sets the CSRF cookie
    before = state()
    raw = json.dumps({"project": "demo", "title": "big", "description": "x" * 5_000})
    response = client.post(
        "/api/tasks",
        raw,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert_refused(response, 413)
    assert state() == before


# --- API: query and path parameters ----------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/api/runs?project=de%00mo",
        "/api/runs?status=%00",
        "/api/approvals?status=pending%00",
        "/api/projects/de%00mo/audit/verify",
        "/api/projects/de%00mo/audit.jsonl",
    ],
)
def test_nul_in_parameters_is_400(path, owner):
    before = state()
    assert_refused(api_client(owner).get(path))
    assert state() == before


# --- API: decisions -------------------------------------------------------------------------
DECISION_BODIES = {
    "NUL in comment": r'{"decision": "reject", "comment": "no\u0000"}',
    "surrogate in comment": r'{"decision": "reject", "comment": "\ud83d"}',
    "escape character in comment": r'{"decision": "reject", "comment": "\u001b[31mred"}',
    "NUL in an argument": r'{"decision": "approve", "arguments": {"command": "ls\u0000"}}',
    "surrogate in an argument name": r'{"decision": "approve", "arguments": {"\udc00": "x"}}',
    "NUL deep in arguments": r'{"decision": "approve", "arguments": {"a": [{"b": "\u0000"}]}}',
    "NaN in arguments": r'{"decision": "approve", "arguments": {"command": NaN}}',
    "infinity in arguments": r'{"decision": "approve", "arguments": {"command": 1e999}}',
    "NUL in a pattern": (
        r'{"decision": "approve_pattern", "pattern": {"argument": "command", "glob": "\u0000*"}}'
    ),
    "list as comment": r'{"decision": "reject", "comment": ["no"]}',
    "list as arguments": r'{"decision": "approve", "arguments": ["ls"]}',
    "unknown decision": r'{"decision": "maybe"}',
    "wrong arguments for the tool": r'{"decision": "approve", "arguments": {"command": 5}}',
    "plan edits on a tool call": r'{"decision": "approve", "plan_edits": [{"op": "x"}]}',
}


@pytest.mark.parametrize("raw", DECISION_BODIES.values(), ids=DECISION_BODIES.keys())
def test_bad_decisions_are_400_and_decide_nothing(raw, tool_checkpoint, approver):
    before = state()
    url = f"/api/approvals/{tool_checkpoint.pk}/decision"
    assert_refused(post_raw(api_client(approver), url, raw))
    assert state() == before


def test_bad_decision_from_someone_who_may_not_decide_decides_nothing(tool_checkpoint, viewer):
    before = state()
    url = f"/api/approvals/{tool_checkpoint.pk}/decision"
    client = api_client(viewer)
    assert_refused(post_raw(client, url, DECISION_BODIES["NUL in comment"]))
    assert_refused(post_raw(client, url, '{"decision": "reject", "comment": "no"}'), 403)
    assert state() == before


PLAN_EDITS = {
    "list as step key": [{"op": "edit_title", "step": ["implement"], "title": "x"}],
    "object as step key": [{"op": "remove_step", "step": {"key": "implement"}}],
    "object as dependency": [{"op": "add_dependency", "step": "implement", "on": {"a": 1}}],
    "list as dependency": [{"op": "remove_dependency", "step": "implement", "on": ["x"]}],
    "list as op": [{"op": ["edit_title"], "step": "implement", "title": "x"}],
    "number as title": [{"op": "edit_title", "step": "implement", "title": 7}],
    "number as objective": [
        {
            "op": "edit_brief",
            "step": "implement",
            "brief": {"objective": 5, "expected_output": "x", "acceptance_criteria": ["y"]},
        }
    ],
    "NUL in a title": [{"op": "edit_title", "step": "implement", "title": "x\u0000"}],
    "surrogate in a brief": [
        {
            "op": "edit_brief",
            "step": "implement",
            "brief": {"objective": "\ud800", "expected_output": "x", "acceptance_criteria": ["y"]},
        }
    ],
    "not an object": ["remove_step"],
    "not a list": {"op": "remove_step", "step": "implement"},
    "too many": [{"op": "edit_title", "step": "implement", "title": "x"}] * 500,
}


@pytest.mark.parametrize("edits", PLAN_EDITS.values(), ids=PLAN_EDITS.keys())
def test_bad_plan_edits_are_400_and_leave_the_plan_alone(edits, plan_checkpoint, approver):
    before = state()
    raw = json.dumps({"decision": "approve", "plan_edits": edits})  # escapes surrogates
    url = f"/api/approvals/{plan_checkpoint.pk}/decision"
    assert_refused(post_raw(api_client(approver), url, raw))
    assert state() == before


EDIT_LISTS = {name: edits for name, edits in PLAN_EDITS.items() if isinstance(edits, list)}


@pytest.mark.parametrize("edits", EDIT_LISTS.values(), ids=EDIT_LISTS.keys())
def test_plan_edits_refuse_wrong_types_with_invalid_edit(edits):
    plan = {
        "steps": [
            {
                "key": "implement",
                "title": "Implement",
                "agent": "coder",
                "brief": {"objective": "o", "expected_output": "x", "acceptance_criteria": ["y"]},
            }
        ]
    }
    with pytest.raises(InvalidEdit):
        apply_plan_edits(plan, edits, known_agents={"coder"}, max_steps=10)


# --- policy rules: bounded numbers and clean text --------------------------------------------
RULE_CHANGES = {
    "deadline of 10^10 minutes": {"deadline_minutes": 10**10},
    "deadline past 30 days": {"deadline_minutes": rules.MAX_MINUTES + 1},
    "reminder of 10^10 minutes": {"remind_after_minutes": 10**10},
    "zero deadline": {"deadline_minutes": 0},
    "text deadline": {"deadline_minutes": "60"},
    "too many approvals": {"approvals_required": 1000},
    "no approvals": {"approvals_required": 0},
    "NUL in name": {"name": "rule\x00"},
    "surrogate in approver group": {"approver_group": "\ud800"},
    "NUL in an argument name": {"arguments": {"pa\x00th": "src/*"}},
    "NUL in an argument glob": {"arguments": {"path": "src/\x00*"}},
    "long glob": {"arguments": {"path": "x" * 1000}},
    "list as agent role": {"agent_role": ["coder"]},
}


@pytest.mark.parametrize("change", RULE_CHANGES.values(), ids=RULE_CHANGES.keys())
def test_rule_service_refuses_out_of_range_and_unstorable_values(change, demo, owner):
    fields = {"outcome": "require_approval", "tool": "run_command"} | change
    before = state()
    with pytest.raises(rules.InvalidRule) as refused:
        rules.create_rule(owner, demo, **fields)
    assert str(refused.value)
    rule = rules.project_rules(demo)[0]
    with pytest.raises(rules.InvalidRule):
        rules.update_rule(owner, rule, **change)
    assert state() == before


def test_rule_service_accepts_the_bounds(demo, owner):
    rule = rules.create_rule(
        owner,
        demo,
        outcome="require_approval",
        deadline_minutes=rules.MAX_MINUTES,
        remind_after_minutes=rules.MAX_MINUTES - 1,
        approvals_required=rules.MAX_APPROVALS,
    )
    assert rule.deadline_minutes == rules.MAX_MINUTES


# --- dashboard forms ------------------------------------------------------------------------
def rule_post(**overrides) -> dict:
    return {
        "name": "",
        "tool": "run_command",
        "risk": "",
        "agent_role": "",
        "arguments": "",
        "outcome": "require_approval",
        "approvals_required": "1",
        "approver_group": "",
        "deadline_minutes": "",
        "timeout_outcome": "reject",
        "remind_after_minutes": "",
        "escalate_group": "",
    } | overrides


RULE_FORMS = {
    "deadline of 10^10 minutes": (rule_post(deadline_minutes="10000000000"), "less than or equal"),
    "reminder of 10^10 minutes": (
        rule_post(remind_after_minutes="10000000000"),
        "less than or equal",
    ),
    "too many approvals": (rule_post(approvals_required="1000"), "less than or equal"),
    "NUL in name": (rule_post(name="a\x00b"), "NUL"),
    "control character in group": (rule_post(approver_group="ops\x1b"), "control character"),
    "NUL in an argument glob": (rule_post(arguments="path = src/\x00*"), "NUL"),
}


@pytest.mark.parametrize("data,message", RULE_FORMS.values(), ids=RULE_FORMS.keys())
def test_policy_form_refuses_bad_input(data, message, demo, owner):
    before = state()
    page = signed_in(owner).post("/projects/demo/policy/rules/", data)
    assert page.status_code == 400
    assert message in page.text
    assert state() == before


def test_policy_form_is_for_admins_only(demo, operator):
    before = state()
    page = signed_in(operator).post("/projects/demo/policy/rules/", rule_post(name="x\x00"))
    assert page.status_code in (403, 404)
    assert state() == before


NEW_TASKS = {
    "NUL in title": {"title": "ok\x00"},
    "NUL in description": {"title": "ok", "description": "a\x00b"},
    "control character in description": {"title": "ok", "description": "a\x08b"},
}


@pytest.mark.parametrize("data", NEW_TASKS.values(), ids=NEW_TASKS.keys())
def test_new_task_form_refuses_unstorable_text(data, owner):
    before = state()
    page = signed_in(owner).post("/projects/demo/tasks/", data)
    assert page.status_code == 400
    assert "The text contains a" in page.text
    assert state() == before


def test_new_task_form_anonymous_and_viewer_store_nothing(demo, viewer):
    before = state()
    anonymous = Client().post("/projects/demo/tasks/", NEW_TASKS["NUL in title"])
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    refused = signed_in(viewer).post("/projects/demo/tasks/", {"title": "ok"})
    assert refused.status_code in (403, 404)
    assert state() == before


DECISION_FORMS = {
    "NUL in a rejection": ({"action": "reject", "comment": "no\x00"}, "NUL"),
    "escaped NUL in edited arguments": (
        {"action": "edit", "arguments": '{"command": "ls \\u0000"}'},
        "cannot be stored",
    ),
    "escaped surrogate in edited arguments": (
        {"action": "edit", "arguments": '{"command": "\\ud800"}'},
        "surrogate",
    ),
    "NaN in edited arguments": (
        {"action": "edit", "arguments": '{"command": NaN}'},
        "not a finite number",
    ),
    "NUL in a pattern": (
        {"action": "approve_pattern", "pattern_argument": "command", "pattern_glob": "\x00"},
        "NUL",
    ),
}


@pytest.mark.parametrize("data,message", DECISION_FORMS.values(), ids=DECISION_FORMS.keys())
def test_decision_form_refuses_bad_input(data, message, tool_checkpoint, approver):
    before = state()
    page = signed_in(approver).post(f"/approvals/{tool_checkpoint.pk}/", data)
    assert page.status_code == 400
    assert message in page.text
    assert state() == before


def test_plan_review_form_refuses_unstorable_objective(plan_checkpoint, approver):
    before = state()
    page = signed_in(approver).post(
        f"/approvals/{plan_checkpoint.pk}/",
        {"action": "approve", "objective-implement": "Implement\x00 it"},
    )
    assert page.status_code == 400
    assert "NUL" in page.text
    assert state() == before


def test_history_search_with_nul_is_not_an_error(owner):
    page = signed_in(owner).get("/runs/", {"q": "a\x00"})
    assert page.status_code == 200


def test_deactivated_user_cannot_use_a_token(owner):
    client = api_client(owner)
    get_user_model().objects.filter(pk=owner.pk).update(is_active=False)
    assert client.get("/api/projects").status_code == 401
