"""The engine end to end through the real `openai` SDK over real HTTP, against the loopback
protocol server: a demo-scripted run, a refused plan, a failing endpoint."""

import json

import pytest

from agents.llm import reset_clients
from agents.llm.demo import DemoModel
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Plan, Run
from tests.llm_server import ScriptedLLMServer, error, reply

pytestmark = pytest.mark.django_db(transaction=True)


def demo_over_http(body: dict):
    """Answer as the demo model would, but as a protocol server on the wire."""
    answer = DemoModel().complete(
        model=body["model"],
        messages=body["messages"],
        tools=body.get("tools") or [],
        temperature=body.get("temperature", 0),
    )
    return reply(
        answer.content,
        [(c.name, c.arguments, c.id) for c in answer.tool_calls],
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
    )


@pytest.fixture
def server(settings):
    with ScriptedLLMServer() as srv:
        settings.ORCHESTRA_USE_DEMO_MODEL = False
        settings.OPENAI_BASE_URL = srv.base_url
        settings.OPENAI_API_KEY = "test-key"
        settings.ORCHESTRA_MODEL = "gpt-4o-mini"
        settings.ORCHESTRA_MODEL_MAX_RETRIES = 1
        settings.ORCHESTRA_MODEL_STREAM = True
        reset_clients()
        yield srv
        reset_clients()


def test_full_cycle_over_the_wire(server, demo, owner, approver):
    server.responder = demo_over_http
    run = start_run(owner, demo, "Greeting over HTTP")
    for _ in range(2):
        checkpoint = Checkpoint.objects.get(run=run, status="pending")
        decide_checkpoint(approver, checkpoint, "approve")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert not run.uses_demo_model
    assert all(body["stream"] for body in server.requests)
    calls = run.model_calls.all()
    assert calls.count() == len(server.requests)
    assert {c.model for c in calls} == {"gpt-4o-mini"}
    assert run.input_tokens == sum(c.input_tokens for c in calls) > 0
    assert run.cost_usd > 0  # gpt-4o-mini has a price in the default table
    assert all(c.endpoint.startswith("http://127.0.0.1") for c in calls)


def test_cyclic_plan_over_the_wire_is_refused_with_the_reason(server, demo, owner, settings):
    settings.ORCHESTRA_MAX_PLAN_ATTEMPTS = 2
    step = {
        "title": "t",
        "agent": "coder",
        "brief": {"objective": "o", "expected_output": "e", "acceptance_criteria": ["a"]},
    }
    cyclic = {
        "steps": [
            {**step, "key": "a", "depends_on": ["b"]},
            {**step, "key": "b", "depends_on": ["a"]},
        ]
    }
    server.script(
        reply(tool_calls=[("submit_plan", cyclic)]),
        reply(tool_calls=[("submit_plan", json.dumps(cyclic))]),
    )
    run = start_run(owner, demo, "Cyclic")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "cycle" in run.error
    second = server.requests[1]["messages"]
    assert second[-1]["role"] == "tool" and "cycle" in second[-1]["content"]
    assert run.plans.filter(status=Plan.Status.REJECTED).count() == 2


def test_endpoint_errors_fail_cleanly_with_the_message(server, demo, owner):
    server.script(error(400, {"error": {"message": "model not found"}}))
    run = start_run(owner, demo, "Broken endpoint")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "400" in run.error
    failed_call = run.model_calls.get()
    assert "400" in failed_call.error
