"""The loopback HTTP servers' common part, for tests: a threading HTTP server on 127.0.0.1
(a free port unless given) served from a daemon thread, started and stopped as a context
manager, with a condition to wait on instead of sleeping.

A server names its handler class; the handler reaches the server object that owns it as
`self.server.owner`::

    class Echo(LoopbackServer):
        class Handler(QuietHandler):
            def do_POST(self):
                self.server.owner.record(self.read_body())
                self.answer(200, b"ok", "text/plain")

Standard library only (tests/llm_server.py also runs as a script on any interpreter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

__all__ = ["LoopbackHTTPServer", "LoopbackServer", "QuietHandler"]


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that keeps test output clean, with the two helpers every one needs."""

    server: LoopbackHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class LoopbackServer:
    Handler: ClassVar[type[BaseHTTPRequestHandler]]
    server_class: ClassVar[type[LoopbackHTTPServer]] = LoopbackHTTPServer
    thread_name: ClassVar[str] = "loopback-server"
    poll_interval: ClassVar[float] = 0.5

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.changed = threading.Condition()
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """http://127.0.0.1:PORT, once started (and still after, for a test's assertions)."""
        assert self.port, f"the {self.thread_name} has not started"
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; the port is known when this returns."""
        if self._httpd is not None:
            return self
        httpd = self.server_class((self.host, self.port), self.Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=f"{self.thread_name}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and serving; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until(self, condition: Callable[[], bool], timeout: float, failure: Callable[[], str]):
        """Block until `condition()` holds (checked each time a handler calls `notify`);
        AssertionError with `failure()` after `timeout` seconds."""
        with self.changed:
            assert self.changed.wait_for(condition, timeout), failure()

    def notify(self, change: Callable[[], Any]) -> Any:
        """Apply `change()` to the recorded state under the condition and wake the waiters;
        returns what `change` returns."""
        with self.changed:
            result = change()
            self.changed.notify_all()
            return result
