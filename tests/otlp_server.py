"""A loopback OTLP/HTTP trace receiver, for tests: what a collector does with the exporter's
requests, in process.

It accepts `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` (the only encoding
the exporter sends), decodes it with the OpenTelemetry protocol's own generated classes, keeps
each request's raw bytes and its spans (as plain `Received` records), and answers with an
empty `ExportTraceServiceResponse`. A test waits on a condition instead of sleeping::

    with OtlpReceiver() as receiver:
        ...  # something exports to receiver.endpoint
        spans = receiver.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.loopback import LoopbackServer, QuietHandler

__all__ = ["OtlpReceiver", "ReceivedSpan"]


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict
    resource: dict
    status_code: int
    status_message: str
    events: list[tuple[str, int, dict]] = field(default_factory=list)


def _value(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs) -> dict:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        events=[
                            (event.name, event.time_unix_nano, _attributes(event.attributes))
                            for event in span.events
                        ],
                    )
                )
    return spans


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        body = self.read_body()
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.answer(415, b"protobuf only", "application/x-protobuf")
            return
        self.server.owner._record(self.path, body)
        response = ExportTraceServiceResponse().SerializeToString()
        self.answer(200, response, "application/x-protobuf")


class OtlpReceiver(LoopbackServer):
    Handler = _Handler
    thread_name = "otlp-receiver"

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter adds the path)."""
        return self.origin

    def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans received so far, once `condition(spans)` holds; AssertionError after
        `timeout`."""
        self.wait_until(
            lambda: condition(self.spans),
            timeout,
            lambda: f"condition not met; {len(self.spans)} span(s) received",
        )
        return list(self.spans)

    def _record(self, path: str, body: bytes) -> None:
        spans = decode(body)

        def store() -> None:
            self.paths.append(path)
            self.bodies.append(body)
            self.spans.extend(spans)

        self.notify(store)
