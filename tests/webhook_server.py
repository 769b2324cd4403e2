"""A loopback HTTP server that receives webhooks, for tests.

It records every request (method, path, headers, body) and answers from a script of status
codes; once the script runs out, its last answer repeats. A test waits for the nth request on
a condition variable instead of sleeping::

    with WebhookServer([500, 200]) as server:
        ...  # something POSTs to server.url twice
        first, second = server.wait_for(2)

Standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Received", "WebhookServer"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    #: Case-insensitive: `headers["x-orchestra-signature"]` works.
    headers: Message
    body: bytes


class WebhookServer:
    def __init__(self, statuses: Iterable[int | tuple[int, str]] = (200,)) -> None:
        """`statuses`: one answer per request, a status code or (status code, body)."""
        self._script = [s if isinstance(s, tuple) else (s, f"status {s}") for s in statuses]
        if not self._script:
            raise ValueError("the script needs at least one status")
        self.requests: list[Received] = []
        self._changed = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/hooks/orchestra"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, once that many arrived; AssertionError after `timeout`."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            assert arrived, f"expected {count} request(s), got {len(self.requests)}"
            return self.requests[:count]

    def __enter__(self) -> WebhookServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, text = server._record(Received(self.command, self.path, self.headers, body))
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="webhook-server", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _record(self, received: Received) -> tuple[int, str]:
        """Store the request (before answering, so a client that got its answer finds it
        recorded) and pick the scripted answer."""
        with self._changed:
            index = min(len(self.requests), len(self._script) - 1)
            self.requests.append(received)
            self._changed.notify_all()
            return self._script[index]
