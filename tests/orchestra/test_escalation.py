"""Escalations: a reviewer that escalates (or runs out of revision rounds) hands the output
to a human, whose approval completes the step and whose rejection sends it back."""

import pytest

from agents.llm import override_client
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run, Step
from tests.scripted import ScriptedModel, call, tool_reply

pytestmark = pytest.mark.django_db(transaction=True)


def reviewer_says(verdict_for):
    def answer(messages, tools):
        if "submit_verdict" not in tools:
            return None
        first = next(m["content"] for m in messages if m["role"] == "user")
        key = first.split("Review the output of step ", 1)[1].split(" ", 1)[0]
        verdict = verdict_for(key, first)
        return tool_reply(call("submit_verdict", {"verdict": verdict, "feedback": f"{verdict}!"}))

    return answer


def test_escalation_approved_by_a_human_completes_the_step(demo, owner, approver):
    model = ScriptedModel(reviewer_says(lambda key, _: "escalate" if key == "research" else "pass"))
    with override_client(model):
        run = start_run(owner, demo, "Escalate research")
        [checkpoint] = Checkpoint.objects.filter(run=run, status="pending")
        assert checkpoint.kind == Checkpoint.Kind.ESCALATION
        assert checkpoint.shown["output"] and checkpoint.shown["reason"] == "escalate!"
        research = run.steps.get(key="research")
        assert research.status == Step.Status.AWAITING_APPROVAL
        decide_checkpoint(approver, checkpoint, "approve", "Good enough.")
    research.refresh_from_db()
    assert research.status == Step.Status.DONE
    assert run.steps.get(key="implement").status != Step.Status.PENDING


def test_revision_rounds_are_bounded_then_a_human_sends_it_back(demo, owner, approver):
    demo.max_revisions = 1
    demo.save()
    model = ScriptedModel(
        reviewer_says(
            lambda key, text: (
                "revise" if key == "research" and "(attempt 3)" not in text else "pass"
            )
        )
    )
    with override_client(model):
        run = start_run(owner, demo, "Never good enough")
        research = run.steps.get(key="research")
        assert research.revisions == 1 and research.attempts == 2
        [checkpoint] = Checkpoint.objects.filter(run=run, status="pending")
        assert checkpoint.kind == Checkpoint.Kind.ESCALATION
        assert "after 1 revision rounds" in checkpoint.shown["reason"]
        decide_checkpoint(approver, checkpoint, "reject", "Human says: cite the files.")
    research.refresh_from_db()
    assert research.attempts == 3 and research.status == Step.Status.DONE
    assert (
        "Human says: cite the files."
        in research.agent_runs.filter(purpose="step").last().messages[1]["content"]
    )
    run.refresh_from_db()
    assert run.status != Run.Status.FAILED


def test_a_verdict_refused_once_then_given_still_moves_the_step_on(demo, owner):
    def answer(messages, tools):
        if "submit_verdict" not in tools:
            return None
        if not any(m["role"] == "tool" for m in messages):
            return tool_reply(call("submit_verdict", {"verdict": "maybe", "feedback": "hm"}))
        return tool_reply(call("submit_verdict", {"verdict": "pass", "feedback": "ok"}, "c2"))

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Refused verdicts")
    research = run.steps.get(key="research")
    assert research.status == Step.Status.DONE
    verdicts = research.tool_calls.filter(tool="submit_verdict").order_by("pk")
    assert [v.status for v in verdicts][:2] == ["invalid", "succeeded"]
    assert run.steps.get(key="implement").status != Step.Status.PENDING
