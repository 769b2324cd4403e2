"""Engine slots: how many of a process's threads do engine work at once.

A worker runs many threads so that many steps can wait on their models at once (64 by
default), but a step's engine work (its transactions, its git, its Python) needs the
interpreter, the run's row lock and the repository lock, which only one thread holds at a
time: with every thread working at once, each lock holder waited for the interpreter between
its statements while the others queued for its lock (measured on a 200-step fan-out: 16
threads finished it sooner than 64). So a task does its engine work holding one of
ORCHESTRA_ENGINE_SLOTS slots (default four per core; 0 for no limit), and gives it back while
it only waits: on its model, or on a command it runs. A thread gives its slot back only outside
a transaction, so every lock holder holds a slot and none waits for one.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

_slots = (
    threading.BoundedSemaphore(settings.ORCHESTRA_ENGINE_SLOTS)
    if settings.ORCHESTRA_ENGINE_SLOTS
    else None
)
_held = threading.local()  # depth: tasks run inside tasks in the synchronous mode


@contextmanager
def engine_slot() -> Iterator[None]:
    """Hold a slot for a task's body (one a thread, however deep its tasks nest)."""
    depth = getattr(_held, "depth", 0)
    taking = _slots is not None and not depth
    if taking:
        _slots.acquire()
    _held.depth = depth + 1
    try:
        yield
    finally:
        _held.depth = depth
        if taking:
            _slots.release()


@contextmanager
def waiting() -> Iterator[None]:
    """Give this thread's slot back while it only waits (a model, a command), and take one
    again after; kept inside a transaction, whose locks others may be waiting for."""
    if _slots is None or not getattr(_held, "depth", 0) or connection.in_atomic_block:
        yield
        return
    _slots.release()
    try:
        yield
    finally:
        _slots.acquire()
