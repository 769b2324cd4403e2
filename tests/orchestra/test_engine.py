"""Engine behaviour with a scripted model: plan refusals, read-only orchestrator, human
rejections reaching the agent, failures, cancellation, exactly-once decisions."""

import json
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from agents import workspace as git
from agents.llm import override_client
from agents.loop import session
from agents.models import AgentRun, ToolCall
from approvals.errors import AlreadyDecided, InvalidDecision
from approvals.models import Checkpoint, PolicyRule
from orchestra.engine import EngineError, cancel_run, decide_checkpoint, start_run
from orchestra.engine.workspaces import repository_for
from orchestra.models import Plan, Run, Step
from tests.scripted import ScriptedModel, call, role_of, text_reply, tool_reply

pytestmark = pytest.mark.django_db(transaction=True)

SMALL_PLAN = {
    "steps": [
        {
            "key": "only",
            "title": "The only step",
            "agent": "coder",
            "brief": {"objective": "x", "expected_output": "y", "acceptance_criteria": ["z"]},
        }
    ]
}


def planning(messages, tools):
    return "submit_plan" in tools


def test_cyclic_plan_goes_back_with_reasons_then_the_fixed_plan_runs(demo, owner):
    cyclic = {
        "steps": [
            {**SMALL_PLAN["steps"][0], "key": "a", "depends_on": ["b"]},
            {**SMALL_PLAN["steps"][0], "key": "b", "depends_on": ["a"]},
        ]
    }

    def answer(messages, tools):
        if planning(messages, tools):
            proposals = sum(1 for m in messages if m["role"] == "assistant")
            plan = cyclic if proposals == 0 else SMALL_PLAN
            return tool_reply(call("submit_plan", plan, f"p{proposals}"))
        if role_of(messages) == "specialist":
            return text_reply("done")
        return None

    model = ScriptedModel(answer)
    with override_client(model):
        run = start_run(owner, demo, "Plan twice")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    plans = list(run.plans.order_by("version"))
    assert [p.status for p in plans] == [Plan.Status.REJECTED, Plan.Status.ACCEPTED]
    assert "cycle" in plans[0].errors[0]
    second_planning_request = [r for r in model.requests if role_of(r) == "orchestrator"][1]
    assert "cycle" in second_planning_request[-1]["content"]
    rejected = run.events.get(kind="plan.rejected")
    assert "cycle" in rejected.data["reasons"][0]


def test_unknown_agent_plan_fails_the_run_naming_the_problem(demo, owner, settings):
    settings.ORCHESTRA_MAX_PLAN_ATTEMPTS = 2
    bad = {"steps": [{**SMALL_PLAN["steps"][0], "agent": "wizard"}]}

    def answer(messages, tools):
        if planning(messages, tools):
            return tool_reply(call("submit_plan", bad, f"p{len(messages)}"))
        return None

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Impossible")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "unknown agent 'wizard'" in run.error
    assert run.plans.filter(status=Plan.Status.REJECTED).count() == 2


def test_orchestrator_cannot_write_whatever_the_model_asks(demo, owner):
    def answer(messages, tools):
        if planning(messages, tools):
            assert "write_file" not in tools and "run_command" not in tools
            if not any(m["role"] == "tool" for m in messages):
                return tool_reply(call("write_file", {"path": "pwned.txt", "content": "x"}))
            return tool_reply(call("submit_plan", SMALL_PLAN, "p2"))
        if role_of(messages) == "specialist":
            return text_reply("done")
        return None

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Try to write")
    refused = ToolCall.objects.get(run=run, tool="write_file")
    assert refused.status == ToolCall.Status.REFUSED
    assert "not available to the orchestrator" in refused.result
    assert not (repository_for(demo) / "pwned.txt").exists()
    event = run.events.get(kind="tool.called", data__tool="write_file")
    assert event.data["status"] == "refused"


def test_rejection_reaches_the_agent_as_the_tool_result(demo, owner, approver):
    run = start_run(owner, demo, "Reject the command")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    decide_checkpoint(approver, checkpoint, "reject", "Use the fast test target instead.")
    verify = run.steps.get(key="verify")
    agent_run = verify.agent_runs.filter(purpose=AgentRun.Purpose.STEP).last()
    tool_results = [m["content"] for m in agent_run.messages if m["role"] == "tool"]
    assert "rejected by ada: Use the fast test target instead." in tool_results
    # The agent went on after hearing why: its next call (the allowed test run) ran.
    assert ToolCall.objects.get(agent_run=agent_run, tool="run_tests").status == "succeeded"
    assert ToolCall.objects.get(pk=checkpoint.tool_call_id).status == ToolCall.Status.REJECTED


def test_edited_arguments_are_validated_then_used(demo, owner, approver):
    run = start_run(owner, demo, "Edit the command")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    with pytest.raises(InvalidDecision, match="command"):
        decide_checkpoint(approver, checkpoint, "edit", "", {"command": 42})
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING
    decide_checkpoint(approver, checkpoint, "edit", "", {"command": "python3 -c print(7*6)"})
    call_record = ToolCall.objects.get(pk=checkpoint.tool_call_id)
    assert call_record.arguments == {"command": "python3 -c print(7*6)"}
    assert "42" in call_record.result


def test_second_decision_is_refused_and_outsiders_cannot_decide(
    demo, owner, approver, viewer, outsider
):
    run = start_run(owner, demo, "Decide twice")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    with pytest.raises(PermissionDenied):
        decide_checkpoint(viewer, checkpoint, "approve")
    with pytest.raises(PermissionDenied):
        decide_checkpoint(outsider, checkpoint, "approve")
    decide_checkpoint(approver, checkpoint, "approve")
    with pytest.raises(AlreadyDecided, match="already approved by ada"):
        decide_checkpoint(owner, Checkpoint.objects.get(pk=checkpoint.pk), "reject")


def test_malformed_tool_arguments_go_back_to_the_model(demo, owner):
    def answer(messages, tools):
        if role_of(messages) != "specialist" or planning(messages, tools):
            return (
                None
                if not planning(messages, tools)
                else tool_reply(call("submit_plan", SMALL_PLAN))
            )
        results = [m for m in messages if m["role"] == "tool"]
        if not results:
            return tool_reply(call("write_file", '{"path": "a.txt", "content": '))
        if len(results) == 1:
            return tool_reply(call("write_file", {"path": "a.txt"}, "call_2"))
        return text_reply("gave up politely")

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Bad arguments")
    calls = list(ToolCall.objects.filter(run=run, tool="write_file").order_by("pk"))
    assert [c.status for c in calls] == [ToolCall.Status.INVALID, ToolCall.Status.INVALID]
    assert "not valid JSON" in calls[0].result
    assert "'content' is a required property" in calls[1].result
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED


def test_a_step_that_keeps_failing_fails_the_run_and_keeps_partial_results(demo, owner):
    def answer(messages, tools):
        first = next(m["content"] for m in messages if m["role"] == "user")
        if first.startswith("Step: implement"):
            return text_reply("")  # an empty reply fails the attempt
        return None

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Fail implement")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "implement" in run.error and "empty reply" in run.error
    steps = {s.key: s for s in run.steps.all()}
    assert steps["research"].status == Step.Status.DONE and steps["research"].output
    assert steps["implement"].status == Step.Status.FAILED
    assert steps["implement"].attempts == demo.max_step_attempts
    assert steps["deploy"].status == Step.Status.SKIPPED
    failed = run.events.get(kind="run.failed")
    assert "research" in failed.data["completed_steps"]


def test_cancel_stops_the_run_and_its_checkpoints(demo, owner):
    run = start_run(owner, demo, "Cancel me")
    cancel_run(owner, run)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert not Checkpoint.objects.filter(run=run, status="pending").exists()
    assert not run.steps.filter(status__in=Step.ACTIVE).exists()
    with pytest.raises(EngineError, match="already ended"):
        cancel_run(owner, run)


def test_usage_and_cost_are_summed_per_step_and_run(demo, owner, settings):
    from decimal import Decimal

    settings.ORCHESTRA_PRICES = {"demo": (Decimal("1000000"), Decimal("0"))}
    run = start_run(owner, demo, "Count tokens")
    run.refresh_from_db()
    calls = run.model_calls.all()
    assert run.input_tokens == sum(c.input_tokens for c in calls) > 0
    assert run.cost_usd == sum(c.cost_usd for c in calls) == run.input_tokens
    research = run.steps.get(key="research")
    assert research.input_tokens == sum(
        c.input_tokens for c in calls.filter(agent_run__step=research)
    )


def test_oversized_and_empty_input_is_refused(demo, owner, settings):
    with pytest.raises(EngineError, match="needs a title"):
        start_run(owner, demo, "   ")
    with pytest.raises(EngineError, match="longer than"):
        start_run(owner, demo, "x", "y" * (settings.ORCHESTRA_MAX_TEXT + 1))
    assert not Run.objects.exists()


def test_step_sees_only_its_brief_and_dependency_outputs(demo, owner):
    run = start_run(owner, demo, "Handoff")
    verify = run.steps.get(key="verify")
    agent_run = verify.agent_runs.get(purpose=AgentRun.Purpose.STEP)
    message = agent_run.messages[1]["content"]
    assert "Output of step implement" in message and "Output of step tests" in message
    assert "Output of step research" not in message
    assert set(agent_run.brief["inputs_from"]) == {"implement", "tests"}
    assert json.dumps(verify.brief["objective"])[1:-1] in message


def test_a_gated_file_write_shows_the_diff(demo, owner, approver):
    PolicyRule.objects.create(project=demo, position=1, risk="write", outcome="require_approval")
    repo = repository_for(demo)
    (repo / "notes").mkdir(parents=True, exist_ok=True)
    (repo / "notes" / "research.md").write_text("# Old notes\n")
    git.commit_all(repo, "Old notes")
    run = start_run(owner, demo, "Gate the writes")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    workspace = Path(run.steps.get(key="research").worktree)
    assert checkpoint.shown["tool"] == "write_file"
    diff = checkpoint.shown["diff"]
    assert "--- a/notes/research.md" in diff and "+++ b/notes/research.md" in diff
    assert "-# Old notes" in diff and "+# Research" in diff
    assert (workspace / "notes" / "research.md").read_text() == "# Old notes\n"  # not yet
    decide_checkpoint(approver, checkpoint, "approve")
    # The approved write went on: the step committed it, and its merged worktree is parked.
    step = run.steps.get(key="research")
    assert step.status == Step.Status.DONE and not workspace.exists()
    assert git.file_at(repo, step.head_commit, "notes/research.md").startswith("# Research")


def test_a_run_cancelled_while_the_model_answers_opens_no_checkpoint(demo, owner):
    def answer(messages, tools):
        first = next(m["content"] for m in messages if m["role"] == "user")
        if first.startswith("Step: verify") and not any(m["role"] == "tool" for m in messages):
            cancel_run(owner, Run.objects.get(task__title="Cancel mid-answer"))
            return tool_reply(call("run_command", {"command": "true"}))
        return None

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Cancel mid-answer")
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert not Checkpoint.objects.filter(run=run).exclude(status="cancelled").exists()
    assert run.steps.get(key="verify").status == Step.Status.CANCELLED


def test_a_run_cancelled_while_a_tool_runs_stops_its_agent_before_the_next_call(
    demo, owner, monkeypatch
):
    """The turn after a tool call asks the database nothing before the model: the run's state
    comes back with the tool call's record, and a cancellation it saw stops the agent."""
    halt_reads = []
    read = session._HALT_READ.get
    monkeypatch.setattr(session._HALT_READ, "get", lambda *a: halt_reads.append(a) or read(*a))
    asked = []

    def answer(messages, tools):
        first = next(m["content"] for m in messages if m["role"] == "user")
        if not first.startswith("Step: verify"):
            return None
        asked.append(len(messages))
        if len(messages) == 2:
            cancel_run(owner, Run.objects.get(task__title="Cancel mid-tool"))
            return tool_reply(call("list_files", {"path": "."}, "look"))
        return text_reply("verified")

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Cancel mid-tool")
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert asked == [2]  # no second call for the step
    assert halt_reads == []
    verify = run.steps.get(key="verify")
    assert verify.status == Step.Status.CANCELLED
    assert ToolCall.objects.filter(step=verify, tool="list_files").count() == 1
