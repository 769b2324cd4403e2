"""Runs exported as OpenTelemetry traces, following the GenAI semantic conventions.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the
SDK reads the rest of the standard variables itself (`OTEL_SERVICE_NAME`, headers, timeout,
`OTEL_BSP_MAX_QUEUE_SIZE`...). Nothing is measured on the hot path: when a run ends, the
engine calls `run_ended` in its transaction, which enqueues `export_run` after commit, and
that builds the whole trace from the stored records (each span with the start and end times
that were recorded). Spans go through a `BatchSpanProcessor`: ending a span only appends it
to a bounded queue that a background thread sends over OTLP/HTTP, so a slow or absent
collector drops spans, never slows or fails a run.

The tree: `run <id>` at the root; `step <key>` per step and `invoke_agent <role>` per agent
attempt (under its step, or the root for planning and the report); `chat <model>` per model
call under its attempt; `execute_tool <tool>` under the model call that asked for it; and
`checkpoint <kind>` for each human wait, under its tool call, step or the root, with the
decision as a span event. Every span carries the run, project and (where there is one) step.
Message contents (conversations, tool arguments and results, briefs, the task's text,
approvers' comments) are exported only when
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is true.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agents.models import AgentRun, ModelCall, ToolCall
from approvals.models import Checkpoint
from orchestra import queue
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Everything the exporter and the resource read at start-up: a change builds a new provider.
_CONFIG_VARIABLES = (
    *ENDPOINT_VARIABLES,
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
)
SCOPE = "orchestra"
DEMO_ENDPOINT = "demo"

_lock = threading.Lock()
_provider: TracerProvider | None = None
_provider_config: tuple | None = None


# --- configuration -------------------------------------------------------------------------
def configured() -> bool:
    """Whether an OTLP endpoint is set: without one, nothing is exported or even built."""
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def captures_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT, "").strip().lower() == "true"


def _tracer_provider() -> TracerProvider:
    """The process's provider for the current configuration; a changed configuration (tests,
    a reloaded environment) flushes and replaces the old one."""
    global _provider, _provider_config
    config = tuple(os.environ.get(name, "") for name in _CONFIG_VARIABLES)
    with _lock:
        if _provider is not None and config == _provider_config:
            return _provider
        old, _provider = _provider, None
        if old is not None:
            old.shutdown()
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SCOPE})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider, _provider_config = provider, config
        return provider


def flush(timeout_millis: int = 30_000) -> bool:
    """Send what is queued now (tests, and a process about to stop); False if it timed out."""
    with _lock:
        provider = _provider
    return provider.force_flush(timeout_millis) if provider is not None else True


def shutdown() -> None:
    """Flush and stop the exporter thread; the next export starts a new provider."""
    global _provider, _provider_config
    with _lock:
        provider, _provider, _provider_config = _provider, None, None
    if provider is not None:
        provider.shutdown()


# --- the hook and the export ------------------------------------------------------------------
def run_ended(run: Run) -> None:
    """The engine's hook, called in the transaction that ends `run`: exports its trace on a
    worker after commit, when an endpoint is configured; otherwise does nothing."""
    if configured():
        queue.enqueue("orchestra.export_trace", run.pk)


def export_run(run_id: int) -> int:
    """Build `run_id`'s trace from its stored records and hand the spans to the batch
    processor; returns how many spans were queued (0 when not configured or the run is
    gone). Never raises: telemetry is not worth a failed task."""
    if not configured():
        return 0
    try:
        run = Run.objects.select_related("project", "task").get(pk=run_id)
        return _Trace(run, _tracer_provider().get_tracer(SCOPE), captures_content()).build()
    except Run.DoesNotExist:
        return 0
    except Exception:
        logger.warning("could not export the trace of run %s", run_id, exc_info=True)
        return 0


class _Trace:
    """One run's spans, built parent first from the stored records."""

    def __init__(self, run: Run, tracer: trace.Tracer, content: bool) -> None:
        self.run, self.tracer, self.content = run, tracer, content
        self.end = run.finished_at or _latest(run)
        # Every span with its recorded end, in the order started; ended together at the end.
        self.spans: list[tuple[Span, int]] = []

    def build(self) -> int:
        run = self.run
        root = self._span(
            f"run {run.pk}",
            None,
            run.created_at,
            self.end,
            {
                "orchestra.run.status": run.status,
                "orchestra.task.id": run.task_id,
                "orchestra.run.demo_model": run.uses_demo_model,
                "orchestra.run.input_tokens": run.input_tokens,
                "orchestra.run.output_tokens": run.output_tokens,
                "orchestra.run.cost_usd": str(run.cost_usd),
                **self._when_content({"orchestra.task.title": run.task.title}),
            },
            error=run.error if run.status == Run.Status.FAILED else "",
        )
        steps = {step.pk: step for step in run.steps.order_by("position")}
        step_spans = {pk: self._step_span(root, step) for pk, step in steps.items()}
        agent_spans: dict[int, Span] = {}
        # The model call that asked for a tool call, found by the call id in its reply.
        asked: dict[tuple[int, str], Span] = {}
        agent_runs = AgentRun.objects.filter(run=run).order_by("started_at", "pk")
        if not self.content:
            agent_runs = agent_runs.defer("messages")  # only read for the content
        calls = _by(ModelCall.objects.filter(run=run).order_by("started_at", "pk"), "agent_run_id")
        for agent_run in agent_runs:
            step = steps.get(agent_run.step_id)
            parent = step_spans.get(agent_run.step_id, root)
            agent_spans[agent_run.pk] = self._agent_span(parent, agent_run, step)
            for call in calls.get(agent_run.pk, []):
                chat = self._chat_span(agent_spans[agent_run.pk], agent_run, call, step)
                for request in call.response.get("tool_calls") or []:
                    asked[agent_run.pk, request.get("id")] = chat
        tool_spans = {}
        for tool_call in ToolCall.objects.filter(run=run).order_by("started_at", "pk"):
            parent = asked.get((tool_call.agent_run_id, tool_call.call_id)) or agent_spans.get(
                tool_call.agent_run_id, root
            )
            tool_spans[tool_call.pk] = self._tool_span(
                parent, tool_call, steps.get(tool_call.step_id)
            )
        for checkpoint in Checkpoint.objects.filter(run=run).select_related("decided_by"):
            parent = (
                tool_spans.get(checkpoint.tool_call_id)
                or step_spans.get(checkpoint.step_id)
                or root
            )
            self._checkpoint_span(parent, checkpoint, steps.get(checkpoint.step_id))
        # Children first, so a processor sees each parent after everything under it.
        for span, end in reversed(self.spans):
            span.end(end)
        return len(self.spans)

    # --- spans ---------------------------------------------------------------------------
    def _span(
        self,
        name: str,
        parent: Span | None,
        start: datetime,
        end: datetime | None,
        attributes: dict,
        *,
        step: Step | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        error: str = "",
    ) -> Span:
        """A started span with the run's, project's and step's attributes, ended by `build`
        at `end` (the run's end when the record has none: it was cut short)."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        common = {"orchestra.run.id": self.run.pk, "orchestra.project": self.run.project.slug}
        if step is not None:
            common |= {"orchestra.step.key": step.key, "orchestra.step.id": step.pk}
        span = self.tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes={**common, **_clean(attributes)},
            start_time=_ns(start),
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        self.spans.append((span, _ns(max(end or self.end, start))))
        return span

    def _step_span(self, root: Span, step: Step) -> Span:
        start = step.dispatched_at or step.started_at or self.run.created_at
        return self._span(
            f"step {step.key}",
            root,
            start,
            step.finished_at,
            {
                "orchestra.step.agent": step.agent_role,
                "orchestra.step.status": step.status,
                "orchestra.step.attempts": step.attempts,
                "orchestra.step.revisions": step.revisions,
                **self._when_content({"orchestra.step.brief": _json(step.brief)}),
            },
            step=step,
            error=step.error if step.status == Step.Status.FAILED else "",
        )

    def _agent_span(self, parent: Span, agent_run: AgentRun, step: Step | None) -> Span:
        return self._span(
            f"invoke_agent {agent_run.role}",
            parent,
            agent_run.started_at,
            agent_run.finished_at,
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent_run.role,
                "gen_ai.agent.id": str(agent_run.pk),
                "gen_ai.request.model": agent_run.model,
                "orchestra.agent_run.purpose": agent_run.purpose,
                "orchestra.agent_run.attempt": agent_run.attempt,
                "orchestra.agent_run.status": agent_run.status,
                "orchestra.agent_run.turns": agent_run.turns,
                **self._when_content({"orchestra.agent_run.brief": _json(agent_run.brief)}),
            },
            step=step,
            error=agent_run.error if agent_run.status == AgentRun.Status.FAILED else "",
        )

    def _chat_span(
        self, parent: Span, agent_run: AgentRun, call: ModelCall, step: Step | None
    ) -> Span:
        finished = call.started_at + timedelta(milliseconds=call.latency_ms)
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _provider_name(call.endpoint),
            "gen_ai.request.model": call.model,
            "gen_ai.response.model": call.model,
            "gen_ai.conversation.id": str(agent_run.pk),
            "gen_ai.agent.name": agent_run.role,
            "gen_ai.usage.input_tokens": call.input_tokens,
            "gen_ai.usage.output_tokens": call.output_tokens,
            "orchestra.model_call.id": call.pk,
            "orchestra.model_call.cost_usd": str(call.cost_usd),
            **_server(call.endpoint),
        }
        if call.error:
            attributes["error.type"] = "model_error"
        else:
            attributes["gen_ai.response.finish_reasons"] = [_finish_reason(call)]
        if self.content:
            sent = agent_run.messages[: call.message_count]
            attributes["gen_ai.input.messages"] = _json([_message(m) for m in sent])
            if call.response:
                output = {**_message(call.response), "finish_reason": _finish_reason(call)}
                attributes["gen_ai.output.messages"] = _json([output])
        return self._span(
            f"chat {call.model}",
            parent,
            call.started_at,
            finished,
            attributes,
            step=step,
            kind=SpanKind.CLIENT,
            error=call.error,
        )

    def _tool_span(self, parent: Span, tool_call: ToolCall, step: Step | None) -> Span:
        failed = tool_call.status in (ToolCall.Status.FAILED, ToolCall.Status.INVALID)
        return self._span(
            f"execute_tool {tool_call.tool}",
            parent,
            tool_call.started_at,
            tool_call.finished_at,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool_call.tool,
                "gen_ai.tool.call.id": tool_call.call_id,
                "gen_ai.tool.type": "function",
                "orchestra.tool.risk": tool_call.risk,
                "orchestra.tool.status": tool_call.status,
                **self._when_content(
                    {
                        "gen_ai.tool.call.arguments": tool_call.raw_arguments
                        or _json(tool_call.arguments),
                        "gen_ai.tool.call.result": tool_call.result,
                    }
                ),
            },
            step=step,
            error=(tool_call.error or tool_call.status) if failed else "",
        )

    def _checkpoint_span(self, parent: Span, checkpoint: Checkpoint, step: Step | None) -> None:
        decided_by = checkpoint.decided_by.get_username() if checkpoint.decided_by else ""
        span = self._span(
            f"checkpoint {checkpoint.kind}",
            parent,
            checkpoint.requested_at,
            checkpoint.decided_at,
            {
                "orchestra.checkpoint.id": checkpoint.pk,
                "orchestra.checkpoint.kind": checkpoint.kind,
                "orchestra.checkpoint.status": checkpoint.status,
                "orchestra.checkpoint.decision": checkpoint.decision,
                "orchestra.checkpoint.decided_by": decided_by,
            },
            step=step,
        )
        if checkpoint.decided_at:
            span.add_event(
                "decision",
                _clean(
                    {
                        "orchestra.checkpoint.status": checkpoint.status,
                        "orchestra.checkpoint.decision": checkpoint.decision,
                        "orchestra.checkpoint.decided_by": decided_by,
                        **self._when_content({"orchestra.checkpoint.comment": checkpoint.comment}),
                    }
                ),
                timestamp=_ns(checkpoint.decided_at),
            )

    def _when_content(self, attributes: dict) -> dict:
        return attributes if self.content else {}


# --- record -> attribute helpers ------------------------------------------------------------
def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding of the microseconds)."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _latest(run: Run) -> datetime:
    """When an unfinished run was last seen doing something: its newest event."""
    last = run.events.order_by("-seq").values_list("at", flat=True).first()
    return last or run.created_at


def _by(rows, field: str) -> dict[int, list]:
    grouped: dict[int, list] = {}
    for row in rows:
        grouped.setdefault(getattr(row, field), []).append(row)
    return grouped


def _clean(attributes: dict) -> dict:
    """OpenTelemetry takes no None values: such attributes are left out."""
    return {key: value for key, value in attributes.items() if value is not None}


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _finish_reason(call: ModelCall) -> str:
    """Not stored as such: a reply that asked for tools stopped for them, any other stopped."""
    return "tool_calls" if (call.tool_calls or call.response.get("tool_calls")) else "stop"


def _provider_name(endpoint: str) -> str:
    # Every real endpoint speaks the OpenAI protocol through the official SDK.
    return "orchestra.demo" if endpoint == DEMO_ENDPOINT else "openai"


def _server(endpoint: str) -> dict:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname, "server.port": port}


def _message(message: dict) -> dict:
    """A Chat Completions message in the GenAI conventions' shape: a role and its parts."""
    parts: list[dict] = []
    if message.get("role") == "tool":
        parts.append(
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": message.get("content"),
            }
        )
    elif message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return {"role": message.get("role", "user"), "parts": parts}
