"""The approvals inbox and the approval page: what the approver is shown, the three
decisions, inline errors from the services, and a second decision on a decided checkpoint."""

import json

import pytest

from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run, Step

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_inbox_lists_pending_checkpoints_newest_first(waiting_run, checkpoint, approver):
    second = start_run(approver, waiting_run.project, "A second task")
    newer = second.checkpoints.get()
    page = client_for(approver).get("/approvals/").text
    assert page.index(f'data-checkpoint="{newer.pk}"') < page.index(
        f'data-checkpoint="{checkpoint.pk}"'
    )
    assert "2 waiting" in page
    decide_checkpoint(approver, newer, "approve")
    page = client_for(approver).get("/approvals/").text
    assert f'data-checkpoint="{newer.pk}"' not in page
    assert "Recently decided" in page and "ada" in page


def test_approval_page_shows_exactly_what_is_asked(checkpoint, approver):
    page = client_for(approver).get(f"/approvals/{checkpoint.pk}/").text
    shown = checkpoint.shown
    assert shown["tool"] == "run_command"
    assert ">run_command</span>" in page
    assert "risk: exec" in page
    assert json.dumps(shown["arguments"], indent=2).replace('"', "&quot;") in page
    assert shown["reason"] and shown["reason"] in page
    assert "Check that the code compiles, run the tests and report the result." in page
    for button in (">Approve</button>", ">Edit and approve</button>", ">Reject</button>"):
        assert button in page


def test_approve_resumes_the_step_and_returns_to_the_run(waiting_run, checkpoint, approver):
    response = client_for(approver).post(
        f"/approvals/{checkpoint.pk}/", {"action": "approve", "comment": "ok"}, follow=True
    )
    assert response.redirect_chain == [(f"/runs/{waiting_run.pk}/", 302)]
    assert "Approved." in response.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.APPROVED
    assert checkpoint.decided_by == approver
    assert checkpoint.arguments is None
    # The synchronous engine carried on to the deploy checkpoint.
    assert waiting_run.checkpoints.filter(status="pending", kind="deploy").exists()


def test_edit_and_approve_runs_the_edited_arguments(waiting_run, checkpoint, approver):
    edited = {"command": "python3 -m unittest discover -s tests"}
    response = client_for(approver).post(
        f"/approvals/{checkpoint.pk}/", {"action": "edit", "arguments": json.dumps(edited)}
    )
    assert response.status_code == 302
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.APPROVED
    assert checkpoint.arguments == edited
    checkpoint.tool_call.refresh_from_db()
    assert checkpoint.tool_call.arguments == edited


BAD_ARGUMENTS = [
    ("{not json", "The arguments are not valid JSON"),
    ("[1, 2]", "The arguments must be a JSON object."),
    ('{"cmd": "ls"}', "Not accepted: the edited arguments do not fit the tool"),
    ('{"command": ""}', "Not accepted: the edited arguments do not fit the tool"),
]


def test_bad_edited_arguments_are_refused_inline(checkpoint, approver):
    client = client_for(approver)
    for arguments, message in BAD_ARGUMENTS:
        page = client.post(
            f"/approvals/{checkpoint.pk}/", {"action": "edit", "arguments": arguments}
        )
        assert page.status_code == 400, arguments
        assert message in page.text, arguments
        assert 'id="arguments-errors"' in page.text
        assert arguments.replace('"', "&quot;") in page.text  # what they typed is kept
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING


def test_reject_needs_a_comment_and_the_agent_reads_it(waiting_run, checkpoint, approver):
    client = client_for(approver)
    page = client.post(f"/approvals/{checkpoint.pk}/", {"action": "reject", "comment": " "})
    assert page.status_code == 400
    assert "Say why you reject it" in page.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING

    response = client.post(
        f"/approvals/{checkpoint.pk}/", {"action": "reject", "comment": "Use make test."}
    )
    assert response.status_code == 302
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.REJECTED
    assert checkpoint.comment == "Use make test."
    verify = Step.objects.get(run=waiting_run, key="verify")
    assert "rejected by ada: Use make test." in str(verify.agent_runs.first().messages)


def test_a_second_decision_is_told_who_decided(checkpoint, approver, second_approver):
    first, second = client_for(approver), client_for(second_approver)
    assert ">Approve</button>" in second.get(f"/approvals/{checkpoint.pk}/").text
    assert first.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"}).status_code == 302
    late = second.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert late.status_code == 409
    assert "This checkpoint was already approved by ada." in late.text
    assert ">Approve</button>" not in late.text
    checkpoint.refresh_from_db()
    assert checkpoint.decided_by == approver


def test_a_decided_checkpoint_shows_the_decision_without_controls(checkpoint, approver):
    decide_checkpoint(approver, checkpoint, "reject", "Not now.")
    page = client_for(approver).get(f"/approvals/{checkpoint.pk}/").text
    assert "Rejected by ada" in page
    assert "Not now." in page
    assert '<form method="post" class="decision-form"' not in page


def test_a_cancelled_runs_checkpoint_says_nobody_decided(waiting_run, checkpoint, owner):
    from orchestra.engine import cancel_run

    cancel_run(owner, waiting_run)
    page = client_for(owner).get(f"/approvals/{checkpoint.pk}/").text
    assert "no one decided" in page
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.CANCELLED


def test_an_unknown_action_is_refused(checkpoint, approver):
    page = client_for(approver).post(f"/approvals/{checkpoint.pk}/", {"action": "shrug"})
    assert page.status_code == 400
    assert "Choose Approve, Edit and approve, or Reject." in page.text


def test_plan_approval_shows_the_plan_and_approving_dispatches_it(demo, owner):
    demo.requires_plan_approval = True
    demo.save(update_fields=["requires_plan_approval"])
    run = start_run(owner, demo, "Greeting, planned first")
    checkpoint = run.checkpoints.get()
    assert checkpoint.kind == Checkpoint.Kind.PLAN
    client = client_for(owner)
    run_page = client.get(f"/runs/{run.pk}/").text
    assert "Plan version 1 is proposed." in run_page
    page = client.get(f"/approvals/{checkpoint.pk}/").text
    assert "Approve the plan" in page
    assert "<strong>implement</strong> — Implement the greeting module" in page
    assert ">Edit and approve</button>" not in page  # a plan has no arguments to edit
    assert client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"}).status_code == 302
    run.refresh_from_db()
    assert run.steps.count() == 5
    assert run.status == Run.Status.AWAITING_APPROVAL  # now at the verify command


def test_an_escalation_shows_the_output_and_the_reason(waiting_run, owner):
    step = waiting_run.steps.get(key="implement")
    escalation = Checkpoint.objects.create(
        run=waiting_run,
        step=step,
        kind=Checkpoint.Kind.ESCALATION,
        shown={
            "step": "implement",
            "brief": step.brief,
            "output": "def greet(): ...",
            "reason": "Still not accepted after 2 revision rounds.",
        },
    )
    page = client_for(owner).get(f"/approvals/{escalation.pk}/").text
    assert "Decide an escalated step" in page
    assert "Why it was escalated" in page
    assert "Still not accepted after 2 revision rounds." in page
    assert "def greet(): ..." in page
