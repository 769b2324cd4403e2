"""Approval operations on the dashboard: the project's policy page, every decision on the
approval page (votes, exclusions, deadlines, respond, reject and stop, for the rest of the
run, for matching arguments), plan review with edits, run rules, and the event lines."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django.utils.html import escape

from approvals import audit
from approvals.models import AuditRecord, Checkpoint, Delivery, PolicyRule
from orchestra.dashboard import present
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run, Step

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

LIVE_JS = Path(__file__).resolve().parents[2] / "static" / "orchestra" / "live.js"
BUTTONS = [
    "Approve",
    "Edit and approve",
    "Reject",
    "Reject and stop",
    "Respond",
    "Approve for this run",
    "Approve matching",
]


def button(name: str) -> re.Pattern:
    """A submit button whose text (its accessible name) is exactly `name`."""
    return re.compile(rf"<button [^>]*type=\"submit\"[^>]*>{re.escape(name)}</button>")


def rule_names(project) -> list[str]:
    return list(
        PolicyRule.objects.filter(project=project, run__isnull=True, revoked_at__isnull=True)
        .order_by("position", "pk")
        .values_list("name", flat=True)
    )


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&#x27;")


# --- the policy page ------------------------------------------------------------------------
def test_the_policy_page_reads_the_rules_in_order_in_plain_words(demo, owner, viewer):
    project_page = client_for(viewer).get("/projects/demo/").text
    assert 'href="/projects/demo/policy/"' in project_page

    page = client_for(viewer).get("/projects/demo/policy/")
    assert page.status_code == 200
    text = page.text
    assert "The first rule that matches a tool call decides it" in text
    names = rule_names(demo)
    positions = [text.index(f"<strong>{escaped(name)}</strong>") for name in names]
    assert positions == sorted(positions)
    assert "The tool&#x27;s risk is read" in text and "Runs without asking anyone." in text
    assert "every path it writes lies inside the step&#x27;s claimed files" in text
    # The viewer reads; only admins get the controls.
    assert "Only the project's admins can change its policy." in text
    assert not button("Add rule").search(text)
    assert "Move up" not in text and "Delete" not in text

    admin_page = client_for(owner).get("/projects/demo/policy/").text
    assert button("Add rule").search(admin_page)
    assert "Move down" in admin_page and "Delete" in admin_page


def test_the_policy_page_is_for_project_members_and_edits_for_admins(
    client, demo, owner, approver, outsider
):
    rule = PolicyRule.objects.filter(project=demo, run__isnull=True).first()
    posts = [
        ("/projects/demo/policy/rules/", {"name": "x", "outcome": "allow"}),
        (f"/projects/demo/policy/rules/{rule.pk}/", {"name": "x", "outcome": "allow"}),
        (f"/projects/demo/policy/rules/{rule.pk}/delete/", {}),
        (f"/projects/demo/policy/rules/{rule.pk}/move/", {"direction": "down"}),
        ("/projects/demo/policy/reset/", {}),
    ]
    anonymous = client.get("/projects/demo/policy/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert client_for(outsider).get("/projects/demo/policy/").status_code == 404
    for path, data in posts:
        assert client_for(outsider).post(path, data).status_code == 404, path
        assert client_for(approver).post(path, data).status_code == 403, path
        assert client.post(path, data).status_code == 302, path  # to sign in
    assert client_for(approver).get(f"/projects/demo/policy/rules/{rule.pk}/").status_code == 403
    assert not AuditRecord.objects.filter(project=demo).exists()


def test_an_admin_adds_edits_moves_and_deletes_a_rule(demo, owner):
    client = client_for(owner)
    before = rule_names(demo)
    added = client.post(
        "/projects/demo/policy/rules/",
        {
            "name": "Pytest runs freely",
            "tool": "run_command",
            "arguments": "command = pytest*",
            "outcome": "allow",
            "approvals_required": "1",
            "timeout_outcome": "reject",
        },
        follow=True,
    )
    assert added.redirect_chain == [("/projects/demo/policy/", 302)]
    assert "Rule “Pytest runs freely” added at the end." in added.text
    assert rule_names(demo) == [*before, "Pytest runs freely"]
    rule = PolicyRule.objects.get(name="Pytest runs freely")
    assert rule.arguments == {"command": "pytest*"}
    assert "The tool is run_command and its command matches pytest*" in added.text

    # Move it up with htmx: the rules partial comes back, already in the new order.
    moved = client.post(
        f"/projects/demo/policy/rules/{rule.pk}/move/",
        {"direction": "up"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="policy-rules",
    )
    assert moved.status_code == 200
    assert moved.text.lstrip().startswith('<section id="policy-rules"')
    assert "<html" not in moved.text
    assert rule_names(demo)[-2] == "Pytest runs freely"
    assert moved.text.index("Pytest runs freely") < moved.text.index(escaped(before[-1]))

    # Edit: the form comes prefilled; saving changes the outcome.
    form = client.get(f"/projects/demo/policy/rules/{rule.pk}/").text
    assert "Edit “Pytest runs freely”" in form
    assert "command = pytest*</textarea>" in form
    saved = client.post(
        f"/projects/demo/policy/rules/{rule.pk}/",
        {
            "name": "Pytest needs two",
            "tool": "run_command",
            "arguments": "command = pytest*",
            "outcome": "require_approval",
            "approvals_required": "2",
            "exclude_task_creator": "on",
            "deadline_minutes": "60",
            "timeout_outcome": "reject_stop",
            "remind_after_minutes": "30",
            "escalate_group": "oncall",
        },
        follow=True,
    )
    assert "Rule “Pytest needs two” saved." in saved.text
    assert (
        "Needs 2 different approvers, none of them the task&#x27;s creator. Undecided after "
        "60 min, it is rejected and the step stopped. A reminder goes out after 30 min, and "
        "then the oncall group may decide too."
    ) in saved.text

    deleted = client.post(f"/projects/demo/policy/rules/{rule.pk}/delete/", follow=True)
    assert "Rule “Pytest needs two” deleted." in deleted.text
    assert rule_names(demo) == before

    kinds = list(AuditRecord.objects.filter(project=demo).values_list("kind", flat=True))
    assert kinds == ["policy.created", "policy.changed", "policy.changed", "policy.deleted"]
    assert audit.verify(demo).ok


def test_bad_rules_are_explained_beside_their_fields_and_the_input_kept(demo, owner):
    client = client_for(owner)
    before = rule_names(demo)
    page = client.post(
        "/projects/demo/policy/rules/",
        {
            "name": "Slow reminder",
            "outcome": "require_approval",
            "approvals_required": "1",
            "timeout_outcome": "reject",
            "deadline_minutes": "10",
            "remind_after_minutes": "20",
            "arguments": "path: src/*",
        },
    )
    assert page.status_code == 400
    assert "Line 1 should read: argument = glob" in page.text
    assert 'id="id_arguments-errors"' in page.text
    assert "path: src/*</textarea>" in page.text

    # The form's shape is right; the rules service refuses, naming the field.
    page = client.post(
        "/projects/demo/policy/rules/",
        {
            "name": "Slow reminder",
            "outcome": "require_approval",
            "approvals_required": "1",
            "timeout_outcome": "reject",
            "deadline_minutes": "10",
            "remind_after_minutes": "20",
        },
        HTTP_HX_REQUEST="true",
    )
    assert page.status_code == 200  # htmx swaps only 2xx answers
    assert 'id="id_remind_after_minutes-errors"' in page.text
    assert "The reminder must come before the deadline" in page.text
    assert 'value="Slow reminder"' in page.text
    assert rule_names(demo) == before


def test_reset_to_default_from_the_page(demo, owner):
    from approvals.policies import DEFAULT_RULES

    client = client_for(owner)
    response = client.post("/projects/demo/policy/reset/", follow=True)
    assert "The policy is back to Orchestra&#x27;s default rules." in response.text
    assert rule_names(demo) == [spec["name"] for spec in DEFAULT_RULES]


# --- the approval page: who may decide ------------------------------------------------------
def test_controls_only_for_eligible_users_and_the_refusal_otherwise(
    checkpoint, approver, viewer, owner
):
    page = client_for(approver).get(f"/approvals/{checkpoint.pk}/").text
    for name in BUTTONS:
        assert button(name).search(page), name
    assert "rule “Commands”" in page  # the policy's reason
    assert "one approver decides" in page

    page = client_for(viewer).get(f"/approvals/{checkpoint.pk}/").text
    assert not any(button(name).search(page) for name in BUTTONS)
    assert "You may not decide checkpoints in this project." in page

    # The task's creator is excluded from this checkpoint (a policy's exclude_task_creator).
    Checkpoint.objects.filter(pk=checkpoint.pk).update(excluded_approvers=[owner.pk])
    client = client_for(owner)
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert not any(button(name).search(page) for name in BUTTONS)
    assert "The person who created the task may not approve this checkpoint." in page
    assert "olivia (the task's creator)" in page
    refused = client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert refused.status_code == 403
    assert 'id="decision-problem"' in refused.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING


def test_two_approvers_votes_deadline_and_escalation_are_shown(
    waiting_run, checkpoint, approver, second_approver
):
    deadline = timezone.now() + timedelta(hours=2)
    Checkpoint.objects.filter(pk=checkpoint.pk).update(
        approvals_required=2,
        expires_at=deadline,
        timeout_outcome="reject_stop",
        remind_at=timezone.now() + timedelta(hours=1),
        escalate_group="oncall",
    )
    ada = client_for(approver)
    counted = ada.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"}, follow=True)
    assert counted.redirect_chain == [(f"/approvals/{checkpoint.pk}/", 302)]
    assert "Your approval is counted: 1 of 2." in counted.text
    assert "1 of 2 approvals: ada" in counted.text
    assert "then it is rejected and the step stopped" in counted.text
    assert "then the oncall group may decide too" in counted.text
    assert timezone.localtime(deadline).strftime("%b %-d, %H:%M") in counted.text

    again = ada.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert again.status_code == 409
    assert "You already approved this checkpoint" in again.text

    done = client_for(second_approver).post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert done.status_code == 302 and done["Location"] == f"/runs/{waiting_run.pk}/"
    page = ada.get(f"/approvals/{checkpoint.pk}/").text
    assert "Approved by grace" in page
    assert "Approved by ada, grace." in page


# --- the approval page: decisions -----------------------------------------------------------
def test_edit_and_approve_keeps_the_text_on_errors_then_shows_the_diff(checkpoint, approver):
    client = client_for(approver)
    typed = '{"command": "python3 -m unittest",'
    page = client.post(f"/approvals/{checkpoint.pk}/", {"action": "edit", "arguments": typed})
    assert page.status_code == 400
    assert "The arguments are not valid JSON" in page.text
    assert escaped(typed) + "</textarea>" in page.text

    wrong = '{"command": 42}'
    page = client.post(f"/approvals/{checkpoint.pk}/", {"action": "edit", "arguments": wrong})
    assert page.status_code == 400
    assert "Not accepted: the edited arguments do not fit the tool: command: 42 is not of " in (
        page.text.replace("&#x27;", "'")
    )
    assert escaped(wrong) + "</textarea>" in page.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING

    edited = {"command": "python3 -m unittest discover -s tests"}
    response = client.post(
        f"/approvals/{checkpoint.pk}/", {"action": "edit", "arguments": json.dumps(edited)}
    )
    assert response.status_code == 302
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert "Approved with edited arguments by ada" in page
    table = page[page.index('id="arguments-diff"') :]
    assert "<code>command</code>" in table
    assert escaped(json.dumps(checkpoint.shown["arguments"]["command"])) in table
    assert escaped(json.dumps(edited["command"])) in table


def test_respond_answers_the_agent_without_running_the_tool(waiting_run, checkpoint, approver):
    client = client_for(approver)
    page = client.post(f"/approvals/{checkpoint.pk}/", {"action": "respond", "comment": ""})
    assert page.status_code == 400
    assert "Write the answer the agent will get" in page.text

    response = client.post(
        f"/approvals/{checkpoint.pk}/",
        {"action": "respond", "comment": "The code compiles; skip this."},
        follow=True,
    )
    assert response.redirect_chain == [(f"/runs/{waiting_run.pk}/", 302)]
    assert "Answered; the tool did not run." in response.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.RESPONDED
    assert checkpoint.tool_call.status != "done"
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert "Answered without running the tool by ada" in page
    assert "Answer: “The code compiles; skip this.”" in page


def test_reject_and_stop_stops_the_step_and_the_run(waiting_run, checkpoint, approver):
    response = client_for(approver).post(
        f"/approvals/{checkpoint.pk}/", {"action": "reject_stop", "comment": "Wrong approach."}
    )
    assert response.status_code == 302
    checkpoint.refresh_from_db()
    assert (checkpoint.status, checkpoint.decision) == ("rejected", "reject_stop")
    verify = Step.objects.get(run=waiting_run, key="verify")
    assert verify.status == Step.Status.FAILED
    assert "Wrong approach." in verify.error
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.STOPPED
    assert waiting_run.stopped_by == approver
    run_page = client_for(approver).get(f"/runs/{waiting_run.pk}/").text
    assert "rejected and the step stopped: Wrong approach." in run_page
    # Its own status, not a red failure: who stopped it and why.
    status = '<span class="status s-stopped" id="run-status" data-status="stopped">stopped</span>'
    assert status in run_page
    assert "<strong>Stopped by ada</strong>" in run_page
    assert 'class="callout error"' not in run_page
    assert 'data-state="stopped"' in run_page


def test_approve_for_this_run_adds_a_run_rule_that_can_be_revoked(
    waiting_run, checkpoint, approver, viewer
):
    client = client_for(approver)
    response = client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve_run"}, follow=True)
    assert "Approved, and allowed for the rest of this run." in response.text
    rule = PolicyRule.objects.get(run=waiting_run)
    assert rule.tool == "run_command" and rule.arguments == {}
    section = response.text[response.text.index('id="run-rules"') :]
    assert escaped(rule.name) in section[: section.index("</section>")]
    assert "by ada" in section and 'data-state="active"' in section
    assert button(f'Revoke<span class="visually-hidden"> {escaped(rule.name)}</span>').search(
        section
    )
    assert f"rule “{escaped(rule.name)}”" in response.text  # policy.rule_added in the feed

    viewer_page = client_for(viewer).get(f"/runs/{waiting_run.pk}/").text
    assert escaped(rule.name) in viewer_page
    assert ">Revoke<" not in viewer_page
    revoke_url = f"/runs/{waiting_run.pk}/rules/{rule.pk}/revoke/"
    assert client_for(viewer).post(revoke_url).status_code == 403

    revoked = client.post(revoke_url, HTTP_HX_REQUEST="true")
    assert revoked.status_code == 200
    assert revoked.text.lstrip().startswith('<section id="run-rules"')
    assert 'data-state="revoked"' in revoked.text and "by ada" in revoked.text
    rule.refresh_from_db()
    assert rule.revoked_by == approver
    run_page = client.get(f"/runs/{waiting_run.pk}/").text
    assert f"rule “{escaped(rule.name)}” revoked" in run_page


def test_approve_matching_checks_the_pattern_and_keeps_the_form(waiting_run, checkpoint, approver):
    client = client_for(approver)
    command = checkpoint.tool_call.arguments["command"]
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert f'value="{escaped(command)}"' in page  # the glob starts as the current value

    page = client.post(
        f"/approvals/{checkpoint.pk}/",
        {"action": "approve_pattern", "pattern_argument": "command", "pattern_glob": "pytest*"},
    )
    assert page.status_code == 400
    assert 'id="pattern-errors"' in page.text
    assert "does not match this call" in page.text
    assert 'value="pytest*"' in page.text
    assert escaped(json.dumps(checkpoint.shown["arguments"], indent=2)) in page.text

    glob = command.split()[0] + " *"
    response = client.post(
        f"/approvals/{checkpoint.pk}/",
        {"action": "approve_pattern", "pattern_argument": "command", "pattern_glob": glob},
    )
    assert response.status_code == 302
    rule = PolicyRule.objects.get(run=waiting_run)
    assert rule.arguments == {"command": glob}
    checkpoint.refresh_from_db()
    assert checkpoint.decision == "approve_pattern"


def test_failed_notifications_are_shown_with_their_error(checkpoint, approver):
    Delivery.objects.create(
        checkpoint=checkpoint,
        event="opened",
        channel=Delivery.Channel.WEBHOOK,
        target="https://hooks.example.test/orchestra",
        status=Delivery.Status.FAILED,
        attempts=5,
        last_status=500,
        last_error="HTTP 500 Internal Server Error: boom",
    )
    page = client_for(approver).get(f"/approvals/{checkpoint.pk}/").text
    assert (
        "Notification failed: webhook to https://hooks.example.test/orchestra — HTTP 500 "
        "Internal Server Error: boom"
    ) in page


def test_a_decision_on_a_decided_checkpoint_says_who_decided(checkpoint, approver, owner):
    decide_checkpoint(owner, checkpoint, "reject", "No.")
    late = client_for(approver).post(
        f"/approvals/{checkpoint.pk}/", {"action": "respond", "comment": "x"}
    )
    assert late.status_code == 409
    assert "This checkpoint was already rejected by olivia." in late.text
    assert not button("Respond").search(late.text)


# --- plan review ----------------------------------------------------------------------------
@pytest.fixture
def plan_checkpoint(demo, owner) -> Checkpoint:
    demo.requires_plan_approval = True
    demo.save(update_fields=["requires_plan_approval"])
    run = start_run(owner, demo, "Greeting, planned first")
    checkpoint = run.checkpoints.get()
    assert checkpoint.kind == Checkpoint.Kind.PLAN
    return checkpoint


def plan_post(checkpoint: Checkpoint, **changes) -> dict:
    """The review form as the page submits it: every objective as shown, plus `changes`."""
    data = {"action": "approve", "comment": "", "dep_step": "", "dep_on": ""}
    for step in checkpoint.shown["plan"]["steps"]:
        data[f"objective-{step['key']}"] = step["brief"]["objective"]
    return data | changes


def test_the_plan_review_shows_the_graph_and_the_edit_controls(plan_checkpoint, owner, viewer):
    page = client_for(owner).get(f"/approvals/{plan_checkpoint.pk}/").text
    assert 'class="plan-graph"' in page
    assert '<g class="node s-proposed" data-step="research"' in page
    assert 'href="/runs/' + str(plan_checkpoint.run_id) + "/steps/" not in page  # no steps yet
    assert page.count("> Remove step<") == 5
    assert "<legend>Add dependency</legend>" in page
    assert button("Approve plan").search(page) and button("Reject plan").search(page)
    assert "Write src/greeting.py with a greet(name) function.</textarea>" in page

    read_only = client_for(viewer).get(f"/approvals/{plan_checkpoint.pk}/").text
    assert 'class="plan-graph"' in read_only
    assert "<textarea" not in read_only
    assert "<strong>implement</strong> — Implement the greeting module" in read_only


def test_plan_edits_from_the_form_become_the_runs_steps(plan_checkpoint, owner):
    client = client_for(owner)
    data = plan_post(
        plan_checkpoint,
        **{
            "remove-research": "on",
            "dep_step": "tests",
            "dep_on": "implement",
            "objective-implement": "Write src/greeting.py with greet(name) and a docstring.",
        },
    )
    response = client.post(f"/approvals/{plan_checkpoint.pk}/", data, follow=True)
    assert response.redirect_chain == [(f"/runs/{plan_checkpoint.run_id}/", 302)]
    assert "Plan approved with your edits." in response.text

    run = Run.objects.get(pk=plan_checkpoint.run_id)
    steps = {s.key: s for s in run.steps.all()}
    assert sorted(steps) == ["deploy", "implement", "tests", "verify"]
    assert steps["implement"].depends_on == []  # it waited for research, which waited for none
    assert steps["tests"].depends_on == ["implement"]
    assert steps["implement"].brief["objective"] == (
        "Write src/greeting.py with greet(name) and a docstring."
    )
    assert steps["implement"].brief["acceptance_criteria"]  # the other brief fields kept
    plan = run.plans.get(version=2)
    assert plan.edited_by == owner and plan.based_on_id == plan_checkpoint.plan_id

    page = client.get(f"/approvals/{plan_checkpoint.pk}/").text
    assert "Plan version 2: edited by olivia" in page
    assert "Changed the brief of implement" in page
    assert "tests now waits for implement" in page
    assert "Removed step research; implement, tests now wait for what it waited for" in page
    assert "plan.edited" in client.get(f"/runs/{run.pk}/").text


def test_a_cyclic_dependency_is_refused_and_the_input_kept(plan_checkpoint, owner):
    data = plan_post(
        plan_checkpoint,
        **{
            "dep_step": "research",
            "dep_on": "deploy",
            "objective-verify": "Run every test, twice.",
        },
    )
    page = client_for(owner).post(f"/approvals/{plan_checkpoint.pk}/", data)
    assert page.status_code == 400
    assert 'id="plan-errors"' in page.text
    assert "cycle" in page.text.lower()
    assert "Run every test, twice.</textarea>" in page.text
    assert re.search(
        r'<select name="dep_step"[^>]*>.*?<option value="research" selected>', page.text, re.S
    )
    assert re.search(
        r'<select name="dep_on"[^>]*>.*?<option value="deploy" selected>', page.text, re.S
    )
    plan_checkpoint.refresh_from_db()
    assert plan_checkpoint.status == Checkpoint.Status.PENDING
    assert not Step.objects.filter(run_id=plan_checkpoint.run_id).exists()


def test_rejecting_a_plan_needs_a_comment(plan_checkpoint, owner):
    client = client_for(owner)
    page = client.post(
        f"/approvals/{plan_checkpoint.pk}/", plan_post(plan_checkpoint, action="reject")
    )
    assert page.status_code == 400
    assert "Say why you reject the plan" in page.text
    response = client.post(
        f"/approvals/{plan_checkpoint.pk}/",
        plan_post(plan_checkpoint, action="reject", comment="Too many steps."),
    )
    assert response.status_code == 302
    run = Run.objects.get(pk=plan_checkpoint.run_id)
    assert run.status == Run.Status.FAILED
    assert "Too many steps." in run.error


# --- event lines ----------------------------------------------------------------------------
EVENTS = [
    ("step.merged", {"branch": "run-1/implement", "commit": "0123456789abcdef", "files": ["a"]}),
    ("merge.conflict", {"files": ["src/a.py", "src/b.py"], "round": 2}),
    ("merge.queued", {"branch": "run-1/tests", "commit": "abc"}),
    ("step.checks", {"passed": True, "results": [{"command": "pytest", "passed": True}]}),
    (
        "step.checks",
        {
            "passed": False,
            "results": [
                {"command": "ruff", "passed": True},
                {"command": "pytest", "passed": False},
            ],
        },
    ),
    ("step.taken_over", {"agent_run": 3, "from": "w1", "to": "w2"}),
    ("step.taken_over", {"agent_run": 3, "from": "", "to": "w2"}),
    ("approval.voted", {"checkpoint": 4, "approvals": 1, "approvals_required": 2}),
    ("approval.reminder", {"checkpoint": 4, "escalated_to": "oncall"}),
    ("approval.reminder", {"checkpoint": 4, "escalated_to": ""}),
    ("policy.rule_added", {"rule": 1, "name": "run_command: approved by ada for run 1"}),
    ("policy.rule_revoked", {"rule": 1, "name": "run_command: approved by ada for run 1"}),
    ("plan.edited", {"plan": 2, "version": 2, "based_on": 1, "diff": [{}, {}]}),
    (
        "notification.failed",
        {"channel": "webhook", "target": "https://h.test/x", "attempts": 5, "error": "HTTP 500"},
    ),
    ("approval.decided", {"checkpoint": 4, "decision": "approve_run", "status": "approved"}),
    ("approval.decided", {"checkpoint": 4, "decision": "reject", "status": "expired"}),
    ("approval.decided", {"checkpoint": 4, "decision": "respond", "comment": "use make"}),
    (
        "approval.decided",
        {"checkpoint": 4, "decision": "approve", "edited_arguments": {"a": 1}, "comment": ""},
    ),
]


def test_new_event_kinds_read_as_one_line(db):
    lines = [present.describe_event(kind, data) for kind, data in EVENTS]
    assert lines[:4] == [
        "run-1/implement merged as 0123456789 (1 file)",
        "conflict in src/a.py, src/b.py (round 2)",
        "run-1/tests waits to merge",
        "checks passed",
    ]
    assert lines[4] == "checks failed: pytest"
    assert lines[5] == "a step was taken over from w1 by w2"
    assert lines[6] == "a step was taken over from a lost worker by w2"
    assert lines[7] == "checkpoint #4: 1 of 2 approvals"
    assert lines[8] == "checkpoint #4 is still waiting; the oncall group may decide too"
    assert lines[11] == "rule “run_command: approved by ada for run 1” revoked"
    assert lines[12] == "version 2 from version 1: 2 changes"
    assert lines[13] == "webhook to https://h.test/x failed after 5 attempts: HTTP 500"
    assert lines[14] == "checkpoint #4 approved for the rest of the run"
    assert lines[15] == "checkpoint #4 expired and was rejected"
    assert lines[16] == "checkpoint #4 answered without running the tool: use make"


def test_event_lines_are_worded_by_the_server_alone(db):
    """live.js inserts the line the server rendered (each WebSocket frame's `html`): it keeps
    no wording of its own that could drift from present.describe_event."""
    source = LIVE_JS.read_text()
    assert "event.html" in source
    for words in [*present.DECISIONS.values(), "checkpoint #", "taken over", "characters"]:
        assert words not in source
    for seq, (kind, data) in enumerate(EVENTS, start=1):
        event = {"seq": seq, "kind": kind, "at": "2025-01-02T03:04:05+00:00", "step": "s1"}
        html = present.render_event_line({**event, "actor": "ada", "data": data})
        assert html.startswith(f'<li data-seq="{seq}" data-kind="{kind}">')
        assert f'<span class="what">{escape(present.describe_event(kind, data, "s1"))}</span>' in (
            html
        )


# --- in a real browser ----------------------------------------------------------------------
@pytest.fixture
def browser_page(transactional_db, tmp_path_factory):
    """An admin signed in to a real `orchestra up` (see test_browser.py), in Chromium.

    Function-scoped, after the test database: Playwright's sync API runs an event loop in
    this thread, and Django refuses database work (this module's setup and flush) inside one.
    """
    from tests.dashboard import test_browser as setup

    if setup.sync_playwright is None or not Path(setup.CHROMIUM).exists():
        pytest.skip("needs playwright and /usr/bin/chromium (see test_browser.py)")
    setup.ARTIFACTS.mkdir(exist_ok=True)
    tmp = tmp_path_factory.mktemp("approval-ops")
    with (
        setup.embedded_server(tmp, ORCHESTRA_ADMIN_PASSWORD=setup.ADMIN_PASSWORD) as running,
        setup.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=setup.CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = setup.sign_in(browser, running.base, "admin", setup.ADMIN_PASSWORD)
        yield page
        browser.close()


def test_in_the_browser_move_a_rule_then_edit_and_approve(browser_page):
    from playwright.sync_api import expect

    from tests.dashboard import test_browser as setup

    page = browser_page
    page.goto("/projects/demo/")
    page.get_by_role("link", name="Approval policy").click()
    expect(page.get_by_role("heading", name="Approval policy")).to_be_visible()
    first_row = page.locator("#policy-rules tbody tr").first
    expect(first_row).to_contain_text("Reading is free")
    setup.mark_page(page)
    page.get_by_role("button", name="Move down Reading is free").click()
    expect(page.locator("#policy-notice")).to_have_text("Rule “Reading is free” moved down.")
    expect(first_row).not_to_contain_text("Reading is free")
    expect(page.locator("#policy-rules tbody tr").nth(1)).to_contain_text("Reading is free")
    setup.assert_not_reloaded(page)  # htmx swapped the table
    page.screenshot(path=setup.ARTIFACTS / "policy-page.png", full_page=True)

    run_id = setup.create_task(page, "Edit the command")
    expect(setup.status(page)).to_have_text("awaiting approval", timeout=setup.LONG)
    setup.open_pending_checkpoint(page, "run_command")
    expect(page.locator("#policy-reason")).to_have_text("rule “Commands”")
    arguments = page.get_by_label("Arguments (JSON)")
    arguments.fill('{"command": ')
    page.get_by_role("button", name="Edit and approve").click()
    expect(page.locator("#arguments-errors")).to_contain_text("not valid JSON")
    expect(arguments).to_have_value('{"command": ')  # nothing the person typed is lost
    page.screenshot(path=setup.ARTIFACTS / "approval-ops.png", full_page=True)
    arguments.fill('{"command": "python3 -m compileall src"}')
    page.get_by_role("button", name="Edit and approve").click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}/$"))
    expect(page.locator(".messages")).to_contain_text("Approved with edited arguments.")
    expect(page.locator("#feed")).to_contain_text("with edited arguments")
    setup.cancel(page, run_id)
