"""A model's text while it streams, to the run's open pages: throttled, and never stored.

The client hands each piece of streamed text to `text`; whoever is about to call the model
(the engine's host) said where it goes with `listen`. The sink sends the whole text so far at
most every `interval` seconds (10 a second by default), so a page that missed a frame loses
nothing and a fast model does not flood the sockets; the final message is stored once, by
the model call's record.
"""

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

from orchestra.events import broadcast_text

_sink: ContextVar[Callable[[str], None] | None] = ContextVar("live_text_sink", default=None)


def listen(sink: Callable[[str], None] | None) -> None:
    """Send this thread's streamed text to `sink` from now on (None: nowhere)."""
    _sink.set(sink)


def text(piece: str) -> None:
    sink = _sink.get()
    if sink is not None and piece:
        sink(piece)


class Throttled:
    """Collects the pieces of one agent's replies and sends the text so far at most every
    `interval` seconds through `send(text)`."""

    def __init__(self, send: Callable[[str], None], interval: float = 0.1):
        self.send = send
        self.interval = interval
        self.parts: list[str] = []
        self.sent_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, piece: str) -> None:
        with self._lock:
            self.parts.append(piece)
            now = time.monotonic()
            if now - self.sent_at < self.interval:
                return
            self.sent_at = now
            so_far = "".join(self.parts)
        self.send(so_far)


def to_run_pages(run_id: int, agent_run_id: int, step_key: str, role: str) -> Throttled:
    """A sink for one model call of an agent: its text goes to the run's WebSocket group."""

    def send(so_far: str) -> None:
        broadcast_text(
            run_id,
            {"agent_run": agent_run_id, "step": step_key, "role": role, "text": so_far[-4000:]},
        )

    return Throttled(send)
