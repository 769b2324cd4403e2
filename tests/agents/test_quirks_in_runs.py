"""Endpoint quirks seen by the engine, through the real SDK over real HTTP: several tool calls
in one turn (with content, `finish_reason: "stop"` and reasoning), a stream without usage,
and a context window too small for the step."""

import json

import pytest

from agents.llm import reset_clients
from agents.llm.demo import DemoModel
from agents.models import ModelCall, ToolCall
from orchestra.engine import start_run
from orchestra.models import Run
from tests.llm_server import ScriptedLLMServer, reply

pytestmark = pytest.mark.django_db(transaction=True)

PLAN = {
    "summary": "One step that writes three files.",
    "steps": [
        {
            "key": "notes",
            "title": "Write three notes",
            "agent": "researcher",
            "brief": {
                "objective": "Write notes/a.md, notes/b.md and notes/c.md.",
                "expected_output": "Three notes.",
                "acceptance_criteria": ["All three exist"],
            },
            "claims": ["notes/a.md", "notes/b.md", "notes/c.md"],
        }
    ],
}
THREE_WRITES = [
    ("write_file", {"path": f"notes/{name}.md", "content": f"# {name}\n"}, "call_0")
    for name in "abc"
]


def answering(specialist):
    """A responder: the plan above, the demo's reviewer and report, `specialist` for the step."""

    def respond(body: dict):
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        if "submit_plan" in tools:
            return reply(None, [("submit_plan", PLAN)])
        if "submit_verdict" in tools or body["messages"][1]["content"].startswith("Write the"):
            answer = DemoModel().complete(
                model="demo",
                messages=body["messages"],
                tools=body.get("tools") or [],
                temperature=0,
            )
            return reply(answer.content, [(c.name, c.arguments) for c in answer.tool_calls])
        return specialist(body)

    return respond


@pytest.fixture
def endpoint(settings):
    def start(**quirks):
        server = ScriptedLLMServer(**quirks).start()
        settings.ORCHESTRA_USE_DEMO_MODEL = False
        settings.OPENAI_BASE_URL = server.base_url
        settings.OPENAI_API_KEY = "test-key"
        settings.ORCHESTRA_MODEL = "gpt-4o-mini"
        settings.ORCHESTRA_MODEL_MAX_RETRIES = 0
        settings.ORCHESTRA_MODEL_STREAM = True
        reset_clients()
        started.append(server)
        return server

    started: list[ScriptedLLMServer] = []
    yield start
    for server in started:
        server.stop()
    reset_clients()


def test_several_calls_in_one_turn_run_in_order_and_are_each_recorded(endpoint, demo, owner):
    def specialist(body):
        if body["messages"][-1]["role"] == "tool":
            return reply("Wrote the three notes.", usage=False)
        return reply(
            "Writing a, b and c.",
            THREE_WRITES,
            finish_reason="stop",
            reasoning="Three files, one call each.",
        )

    server = endpoint(refuse_reasoning_input=True)
    server.responder = answering(specialist)
    run = start_run(owner, demo, "Three notes")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error

    step = run.steps.get(key="notes")
    calls = list(ToolCall.objects.filter(step=step, agent_run__purpose="step").order_by("pk"))
    assert [(c.tool, c.arguments["path"], c.status) for c in calls] == [
        ("write_file", f"notes/{name}.md", ToolCall.Status.SUCCEEDED) for name in "abc"
    ]
    assert len({c.call_id for c in calls}) == 3, "duplicate ids were made unique"

    # The follow-up request answered every call, in order, and carried no reasoning back.
    follow_up = next(
        body["messages"] for body in server.requests if body["messages"][-1]["role"] == "tool"
    )
    assistant = follow_up[2]
    assert assistant["content"] == "Writing a, b and c."
    assert "reasoning_content" not in assistant
    answers = [m["tool_call_id"] for m in follow_up[3:]]
    assert answers == [c["id"] for c in assistant["tool_calls"]] == [c.call_id for c in calls]

    first, last = ModelCall.objects.filter(
        agent_run__step=step, agent_run__purpose="step"
    ).order_by("pk")
    assert first.response["reasoning_content"] == "Three files, one call each."
    assert first.tool_calls == ["write_file"] * 3
    assert (first.usage_estimated, last.usage_estimated) == (False, True)
    assert last.output_tokens > 0
    event = run.events.filter(kind="model.called", data__model_call=last.pk).get()
    assert event.data["usage_estimated"] is True


def test_a_context_window_too_small_fails_the_step_with_the_numbers(endpoint, demo, owner):
    # The planner's request fits the window; the step's, with its long brief, does not.
    long_plan = json.loads(json.dumps(PLAN))
    long_plan["steps"][0]["brief"]["objective"] = "Write the notes. " + "Notes. " * 1000
    long_plan["steps"][0]["brief"]["context"] = "Context. " * 850

    def respond(body):
        if "submit_plan" in {t["function"]["name"] for t in body.get("tools") or []}:
            return reply(None, [("submit_plan", long_plan)])
        raise AssertionError("the step's request should have been refused")

    server = endpoint(context_window=3000)
    server.responder = respond
    run = start_run(owner, demo, "Too long")
    run.refresh_from_db()
    step = run.steps.get(key="notes")
    assert run.status == Run.Status.FAILED
    assert "too long for gpt-4o-mini" in step.error, step.error
    assert "its context window takes 3000 tokens" in step.error
    asked = int(step.error.split(" tokens sent")[0].rsplit(" ", 1)[1])
    assert asked > 3000, step.error
    failed = ModelCall.objects.filter(agent_run__step=step)
    assert failed and all("tokens sent" in call.error for call in failed)
