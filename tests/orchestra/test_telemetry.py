"""OpenTelemetry export: a demo run, configured by the standard OTEL_* variables, reaches an
in-process OTLP/HTTP receiver as one trace with the GenAI conventions' spans and attributes;
message contents only when asked for; nothing at all without an endpoint; an unreachable
collector costs the run nothing."""

import json
import socket
import time

import pytest

from agents.models import AgentRun, ModelCall, ToolCall
from approvals.models import Checkpoint
from orchestra import telemetry
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run
from tests.otlp_server import OtlpReceiver

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = "zebra-marker-5e1d"
CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "orchestra.task.title",
    "orchestra.step.brief",
    "orchestra.agent_run.brief",
    "orchestra.checkpoint.comment",
}
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2


@pytest.fixture(autouse=True)
def otel_environment(monkeypatch):
    for name in (*telemetry.ENDPOINT_VARIABLES, telemetry.CAPTURE_CONTENT, "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    telemetry.shutdown()


@pytest.fixture
def receiver(otel_environment):
    with OtlpReceiver() as running:
        otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.endpoint)
        otel_environment.setenv("OTEL_SERVICE_NAME", "orchestra-under-test")
        yield running


def finished_demo_run(owner, approver, project) -> Run:
    """A demo run through its two approvals (a command, then the deploy), to completion."""
    run = start_run(owner, project, f"Add a greeting module {MARKER}", f"Say hello. {MARKER}")
    for _ in range(2):
        checkpoint = Checkpoint.objects.get(run=run, status=Checkpoint.Status.PENDING)
        decide_checkpoint(approver, checkpoint, "approve", f"looks right {MARKER}")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    return run


def expected_span_count(run: Run) -> int:
    return (
        1
        + run.steps.count()
        + AgentRun.objects.filter(run=run).count()
        + ModelCall.objects.filter(run=run).count()
        + ToolCall.objects.filter(run=run).count()
        + Checkpoint.objects.filter(run=run).count()
    )


def received_trace(receiver: OtlpReceiver, run: Run) -> dict:
    """The run's spans by id, once all of them arrived."""
    assert telemetry.flush()
    count = expected_span_count(run)
    spans = receiver.wait_for(lambda spans: len(spans) >= count)
    assert len(spans) == count
    return {span.span_id: span for span in spans}


def named(spans: dict, prefix: str) -> list:
    return [span for span in spans.values() if span.name.startswith(prefix)]


def test_a_demo_run_is_one_trace_with_genai_spans(demo, owner, approver, receiver):
    run = finished_demo_run(owner, approver, demo)

    spans = received_trace(receiver, run)

    assert set(receiver.paths) == {"/v1/traces"}
    assert len({span.trace_id for span in spans.values()}) == 1
    (root,) = [span for span in spans.values() if not span.parent_span_id]
    assert root.name == f"run {run.pk}"
    assert root.resource["service.name"] == "orchestra-under-test"
    assert root.attributes["orchestra.run.status"] == "completed"
    assert root.start_ns == telemetry._ns(run.created_at)
    assert root.end_ns == telemetry._ns(run.finished_at)
    for span in spans.values():
        assert span.attributes["orchestra.run.id"] == run.pk
        assert span.attributes["orchestra.project"] == "demo"
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns, span.name
        assert span.status_code != STATUS_ERROR, span.name

    steps = {span.attributes["orchestra.step.key"]: span for span in named(spans, "step ")}
    assert set(steps) == set(run.steps.values_list("key", flat=True))
    assert all(span.parent_span_id == root.span_id for span in steps.values())
    assert steps["implement"].name == "step implement"

    agents = named(spans, "invoke_agent ")
    assert len(agents) == AgentRun.objects.filter(run=run).count()
    for span in agents:
        assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert span.name == f"invoke_agent {span.attributes['gen_ai.agent.name']}"
        agent_run = AgentRun.objects.get(pk=int(span.attributes["gen_ai.agent.id"]))
        if agent_run.step_id:
            assert spans[span.parent_span_id] == steps[agent_run.step.key]
            assert span.attributes["orchestra.step.key"] == agent_run.step.key
        else:  # planning and the report hang from the run
            assert span.parent_span_id == root.span_id
            assert agent_run.purpose in ("plan", "report")
    orchestrator = [s for s in agents if s.attributes["gen_ai.agent.name"] == "orchestrator"]
    assert {s.attributes["orchestra.agent_run.purpose"] for s in orchestrator} == {
        "plan",
        "report",
    }

    chats = named(spans, "chat ")
    assert len(chats) == ModelCall.objects.filter(run=run).count() > 0
    finish_reasons = set()
    for span in chats:
        call = ModelCall.objects.get(pk=span.attributes["orchestra.model_call.id"])
        assert span.name == f"chat {call.model}"
        assert span.kind == SPAN_KIND_CLIENT
        assert spans[span.parent_span_id].name.startswith("invoke_agent ")
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == call.model
        assert span.attributes["gen_ai.usage.input_tokens"] == call.input_tokens
        assert span.attributes["gen_ai.usage.output_tokens"] == call.output_tokens
        assert span.start_ns == telemetry._ns(call.started_at)
        finish_reasons.add(tuple(span.attributes["gen_ai.response.finish_reasons"]))
    assert finish_reasons == {("stop",), ("tool_calls",)}
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == run.input_tokens

    tools = named(spans, "execute_tool ")
    assert len(tools) == ToolCall.objects.filter(run=run).count()
    for span in tools:
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.name == f"execute_tool {span.attributes['gen_ai.tool.name']}"
        assert spans[span.parent_span_id].name.startswith("chat ")
        assert span.attributes["gen_ai.tool.call.id"]
    assert "execute_tool run_command" in {span.name for span in tools}

    checkpoints = named(spans, "checkpoint ")
    assert {span.name for span in checkpoints} == {"checkpoint tool_call", "checkpoint deploy"}
    for span in checkpoints:
        assert spans[span.parent_span_id].name.startswith("execute_tool ")
        assert span.attributes["orchestra.checkpoint.status"] == "approved"
        ((event_name, event_ns, event),) = span.events
        assert event_name == "decision"
        assert event["orchestra.checkpoint.decided_by"] == "ada"
        assert event["orchestra.checkpoint.decision"] == "approve"
        assert span.start_ns <= event_ns == span.end_ns

    # No message content without OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    for span in spans.values():
        assert not CONTENT_KEYS & set(span.attributes), span.name
        assert all(not CONTENT_KEYS & set(event[2]) for event in span.events)
    assert all(MARKER.encode() not in body for body in receiver.bodies)


def test_message_contents_are_exported_when_enabled(
    demo, owner, approver, receiver, otel_environment
):
    otel_environment.setenv(telemetry.CAPTURE_CONTENT, "true")
    run = finished_demo_run(owner, approver, demo)

    spans = received_trace(receiver, run)

    assert any(MARKER.encode() in body for body in receiver.bodies)
    plan_chat = next(
        span
        for span in named(spans, "chat ")
        if spans[span.parent_span_id].attributes.get("orchestra.agent_run.purpose") == "plan"
    )
    sent = json.loads(plan_chat.attributes["gen_ai.input.messages"])
    assert [message["role"] for message in sent[:2]] == ["system", "user"]
    assert any(MARKER in part.get("content", "") for part in sent[1]["parts"])
    (answer,) = json.loads(plan_chat.attributes["gen_ai.output.messages"])
    assert answer["role"] == "assistant"
    assert answer["finish_reason"] == "tool_calls"
    assert answer["parts"][-1]["type"] == "tool_call"
    assert answer["parts"][-1]["name"] == "submit_plan"
    command = next(s for s in named(spans, "execute_tool ") if s.name.endswith("run_command"))
    assert "command" in json.loads(command.attributes["gen_ai.tool.call.arguments"])
    comments = {
        event["orchestra.checkpoint.comment"]
        for span in named(spans, "checkpoint ")
        for (_, _, event) in span.events
    }
    assert comments == {f"looks right {MARKER}"}


def test_without_an_endpoint_nothing_is_built_or_sent(demo, owner, approver):
    run = finished_demo_run(owner, approver, demo)

    assert not telemetry.configured()
    assert telemetry.export_run(run.pk) == 0
    assert telemetry._provider is None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_collector_neither_fails_nor_slows_the_export(
    demo, owner, approver, otel_environment
):
    otel_environment.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{closed_port()}"
    )
    otel_environment.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    run = finished_demo_run(owner, approver, demo)  # exported once already, on completion

    started = time.perf_counter()
    queued = telemetry.export_run(run.pk)
    elapsed = time.perf_counter() - started

    assert queued == expected_span_count(run)
    # Building the spans reads the records; sending is the batch processor's thread's job.
    assert elapsed < 1.0, f"export_run took {elapsed:.3f} s"
