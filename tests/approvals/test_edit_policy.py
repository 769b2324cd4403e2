"""An approver's edit answers to the project's policy, and only an explicit edit changes the
arguments: deny rules refuse an edit by name, a rule asking for more approvers refuses it,
a plain approve never drops (nor silently runs) an edit, and a run's own rules never let
through what the project's rules deny. Real demo runs, stopped at the `verify` step's
command (`python3 -m compileall -q src tests`)."""

import json

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from agents.models import ToolCall
from approvals.errors import InvalidDecision
from approvals.models import Checkpoint, PolicyRule
from approvals.policies import Call, evaluate
from orchestra.engine import decide_checkpoint, start_run

pytestmark = pytest.mark.django_db(transaction=True)

PROPOSED = {"command": "python3 -m compileall -q src tests"}


def pending(run) -> Checkpoint:
    return Checkpoint.objects.get(run=run, status=Checkpoint.Status.PENDING)


def first_rule(project, **fields) -> PolicyRule:
    """A project rule tried before every other one."""
    return PolicyRule.objects.create(project=project, position=1, **fields)


def no_rm(project) -> PolicyRule:
    return first_rule(
        project,
        name="No rm, ever",
        tool="run_command",
        arguments={"command": "rm *"},
        outcome=PolicyRule.Outcome.DENY,
    )


@pytest.fixture
def waiting(demo, owner):
    run = start_run(owner, demo, "Edit the command")
    checkpoint = pending(run)
    assert checkpoint.shown["tool"] == "run_command"
    assert checkpoint.tool_call.arguments == PROPOSED
    return run, checkpoint


def assert_untouched(checkpoint: Checkpoint) -> None:
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING
    assert checkpoint.arguments is None and checkpoint.votes.count() == 0
    call = ToolCall.objects.get(pk=checkpoint.tool_call_id)
    assert call.status == ToolCall.Status.AWAITING_APPROVAL
    assert call.arguments == PROPOSED and call.result == ""


# --- deny rules ----------------------------------------------------------------------------
def test_an_edit_a_deny_rule_forbids_is_refused_by_the_rules_name(demo, approver, waiting):
    run, checkpoint = waiting
    no_rm(demo)
    with pytest.raises(InvalidDecision, match="denies the edited arguments.*No rm, ever"):
        decide_checkpoint(approver, checkpoint, "edit", arguments={"command": "rm -rf src"})
    assert_untouched(checkpoint)
    assert not run.events.filter(kind="approval.decided").exists()
    # The call as proposed is still the approver's to approve, and it runs as proposed.
    decide_checkpoint(approver, checkpoint, "approve")
    call = ToolCall.objects.get(pk=checkpoint.tool_call_id)
    assert call.status == ToolCall.Status.SUCCEEDED and call.arguments == PROPOSED


def test_the_api_refuses_a_denied_edit_with_400_naming_the_rule(demo, approver, waiting):
    _, checkpoint = waiting
    no_rm(demo)
    client = Client()
    client.force_login(approver)
    response = client.post(
        f"/api/approvals/{checkpoint.pk}/decision",
        json.dumps({"decision": "edit", "arguments": {"command": "rm -rf src"}}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "No rm, ever" in response.json()["detail"]
    assert_untouched(checkpoint)


def test_an_approval_of_a_call_the_policy_now_denies_is_refused(demo, approver, waiting):
    """A deny rule added while the checkpoint waits wins over the approver too."""
    _, checkpoint = waiting
    first_rule(
        demo,
        name="No compiling today",
        tool="run_command",
        arguments={"command": "python3 -m compileall*"},
        outcome=PolicyRule.Outcome.DENY,
    )
    for decision in ("approve", "approve_run"):
        with pytest.raises(InvalidDecision, match="now denies this call.*No compiling today"):
            decide_checkpoint(approver, checkpoint, decision)
    assert_untouched(checkpoint)
    assert not PolicyRule.objects.filter(run=checkpoint.run_id).exists()


def test_an_edit_the_policy_would_send_to_a_person_anyway_runs(demo, approver, waiting):
    run, checkpoint = waiting
    no_rm(demo)
    edited = {"command": "python3 -c \"print('edited by ada')\""}
    decide_checkpoint(approver, checkpoint, "edit", arguments=edited)
    checkpoint.refresh_from_db()
    assert checkpoint.status == "approved" and checkpoint.decision == "edit"
    assert checkpoint.arguments == edited
    call = ToolCall.objects.get(pk=checkpoint.tool_call_id)
    assert call.arguments == edited and "edited by ada" in call.result


# --- several approvers ----------------------------------------------------------------------
def test_an_edit_under_a_rule_needing_more_approvers_is_refused(demo, approver, waiting):
    _, checkpoint = waiting
    assert checkpoint.approvals_required == 1
    first_rule(
        demo,
        name="Inline Python: two people",
        tool="run_command",
        arguments={"command": "python3 -c*"},
        outcome=PolicyRule.Outcome.REQUIRE_APPROVAL,
        approvals_required=2,
    )
    with pytest.raises(InvalidDecision, match="Inline Python: two people.*2 approvers"):
        decide_checkpoint(approver, checkpoint, "edit", arguments={"command": "python3 -c 1"})
    assert_untouched(checkpoint)


def test_an_edit_under_a_rule_for_another_group_is_refused(demo, approver, waiting):
    _, checkpoint = waiting
    approver.groups.add(Group.objects.create(name="release-managers"))
    first_rule(
        demo,
        name="Network: release managers",
        tool="run_command",
        arguments={"command": "curl *"},
        outcome=PolicyRule.Outcome.REQUIRE_APPROVAL,
        approver_group="release-managers",
    )
    with pytest.raises(InvalidDecision, match="'release-managers' group"):
        decide_checkpoint(
            approver, checkpoint, "edit", arguments={"command": "curl https://example.com"}
        )
    assert_untouched(checkpoint)


def test_an_edit_on_a_two_person_checkpoint_restarts_the_count_under_the_same_rule(
    demo, approver, second_approver, waiting
):
    """The same requirement as the checkpoint's is no escalation: the vote restarts (as
    before) and the second approver approves the edit as it now stands."""
    _, checkpoint = waiting
    Checkpoint.objects.filter(pk=checkpoint.pk).update(approvals_required=2)
    checkpoint.refresh_from_db()
    decide_checkpoint(approver, checkpoint, "approve")
    edited = {"command": "python3 -c 'print(2)'"}
    decide_checkpoint(second_approver, checkpoint, "edit", arguments=edited)
    checkpoint.refresh_from_db()
    assert checkpoint.status == "pending" and checkpoint.arguments == edited
    assert list(checkpoint.votes.values_list("user__username", flat=True)) == ["grace"]
    # Approving now approves the edit as it stands; the proposal is no longer what runs.
    with pytest.raises(InvalidDecision, match="differ from the proposed ones"):
        decide_checkpoint(approver, checkpoint, "approve", arguments=PROPOSED)
    decide_checkpoint(approver, checkpoint, "approve", arguments=edited)
    checkpoint.refresh_from_db()
    assert checkpoint.status == "approved"
    assert ToolCall.objects.get(pk=checkpoint.tool_call_id).arguments == edited


# --- only "edit" edits ----------------------------------------------------------------------
def test_a_plain_approve_with_other_arguments_is_refused_and_drops_nothing(approver, waiting):
    _, checkpoint = waiting
    for decision in ("approve", "approve_run"):
        with pytest.raises(InvalidDecision, match="decide edit"):
            decide_checkpoint(approver, checkpoint, decision, arguments={"command": "ls"})
    assert_untouched(checkpoint)
    with pytest.raises(InvalidDecision, match="edit needs the edited arguments"):
        decide_checkpoint(approver, checkpoint, "edit")
    assert_untouched(checkpoint)


def test_a_plain_approve_with_the_proposed_arguments_is_a_plain_approval(approver, waiting):
    _, checkpoint = waiting
    decide_checkpoint(approver, checkpoint, "approve", arguments=dict(PROPOSED))
    checkpoint.refresh_from_db()
    assert checkpoint.status == "approved" and checkpoint.decision == "approve"
    assert checkpoint.arguments is None and checkpoint.arguments_diff == []


def test_the_api_takes_edit_and_refuses_approve_with_changed_arguments(approver, waiting):
    _, checkpoint = waiting
    client = Client()
    client.force_login(approver)
    path = f"/api/approvals/{checkpoint.pk}/decision"
    edited = {"command": "python3 -m unittest discover -s tests"}
    refused = client.post(
        path,
        json.dumps({"decision": "approve", "arguments": edited}),
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert "decide edit" in refused.json()["detail"]
    assert_untouched(checkpoint)
    done = client.post(
        path,
        json.dumps({"decision": "edit", "arguments": edited}),
        content_type="application/json",
    )
    assert done.status_code == 200, done.content
    assert done.json()["decision"] == "edit"
    assert done.json()["arguments_diff"][0]["approved"] == edited["command"]


# --- run rules never shadow a project deny ----------------------------------------------------
def test_a_run_rule_never_lets_through_what_a_project_deny_rule_forbids(demo, approver, waiting):
    run, checkpoint = waiting
    deny = no_rm(demo)
    decide_checkpoint(approver, checkpoint, "approve_run")
    run_rule = PolicyRule.objects.get(run=run)
    assert run_rule.tool == "run_command" and run_rule.outcome == "allow"

    verdict = evaluate(demo, Call("run_command", {"command": "rm -rf src"}), run_id=run.pk)
    assert verdict.denied and verdict.rule == deny
    # Without the deny, the run's rule decides (a person is still asked where no sandbox
    # confines commands, but it is the run rule speaking).
    other = evaluate(demo, Call("run_command", {"command": "ls src"}), run_id=run.pk)
    assert not other.denied and other.rule == run_rule

    pattern = PolicyRule.objects.create(
        project=demo,
        run=run,
        name="rm for this run",
        tool="run_command",
        arguments={"command": "rm *"},
        outcome=PolicyRule.Outcome.ALLOW,
    )
    verdict = evaluate(demo, Call("run_command", {"command": "rm -rf src"}), run_id=run.pk)
    assert verdict.denied and verdict.rule == deny and pattern.pk
