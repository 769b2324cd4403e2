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

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

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


class OtlpReceiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self._changed = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter adds the path)."""
        assert self._httpd is not None, "the receiver is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans received so far, once `condition(spans)` holds; AssertionError after
        `timeout`."""
        with self._changed:
            met = self._changed.wait_for(lambda: condition(self.spans), timeout)
            assert met, f"condition not met; {len(self.spans)} span(s) received"
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self._answer(415, b"protobuf only")
                    return
                receiver._record(self.path, body)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _record(self, path: str, body: bytes) -> None:
        spans = decode(body)
        with self._changed:
            self.paths.append(path)
            self.bodies.append(body)
            self.spans.extend(spans)
            self._changed.notify_all()
