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

from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from tests.loopback import LoopbackServer, QuietHandler

__all__ = ["Received", "WebhookServer"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    #: Case-insensitive: `headers["x-orchestra-signature"]` works.
    headers: Message
    body: bytes


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        received = Received(self.command, self.path, self.headers, self.read_body())
        status, text = self.server.owner._record(received)
        self.answer(status, text.encode(), "text/plain; charset=utf-8")


class WebhookServer(LoopbackServer):
    Handler = _Handler
    thread_name = "webhook-server"

    def __init__(self, statuses: Iterable[int | tuple[int, str]] = (200,)) -> None:
        """`statuses`: one answer per request, a status code or (status code, body)."""
        super().__init__()
        self._script = [s if isinstance(s, tuple) else (s, f"status {s}") for s in statuses]
        if not self._script:
            raise ValueError("the script needs at least one status")
        self.requests: list[Received] = []

    @property
    def url(self) -> str:
        return f"{self.origin}/hooks/orchestra"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, once that many arrived; AssertionError after `timeout`."""
        self.wait_until(
            lambda: len(self.requests) >= count,
            timeout,
            lambda: f"expected {count} request(s), got {len(self.requests)}",
        )
        return self.requests[:count]

    def _record(self, received: Received) -> tuple[int, str]:
        """Store the request (before answering, so a client that got its answer finds it
        recorded) and pick the scripted answer."""

        def store() -> tuple[int, str]:
            index = min(len(self.requests), len(self._script) - 1)
            self.requests.append(received)
            return self._script[index]

        return self.notify(store)
