"""Hands engine work to a worker after the current transaction commits.

Configured deployments enqueue Celery tasks on Redis. The embedded default runs the same task
functions on a thread pool inside the web process; tests may drain them in the calling thread
("sync"), which keeps engine tests deterministic without a broker.
"""

import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from django.conf import settings
from django.db import close_old_connections, connections, transaction

from orchestra.celery import app

logger = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_sync_queue: deque = deque()
_sync_state = threading.local()
_beat: threading.Thread | None = None
_beat_stop = threading.Event()
_stop = threading.Event()  # `stop_carrying`
# The tasks handed to the embedded pool and not finished (`stop_embedded` waits for them).
_unfinished = 0
_idle = threading.Condition()
# The task bodies running on this thread (`carrying_on`): how deep, and the step task the
# outermost one carries on after it ends.
_carried = threading.local()
# The queues this process's Celery worker consumes (`orchestra worker` says, before it starts).
consumed: frozenset[str] = frozenset()
# What a worker's thread carries on itself rather than hands over: a step's next attempt.
CARRIED_TASKS = frozenset({"orchestra.execute_step", "orchestra.resume_step"})


def enqueue(name: str, *args, task_id: str | None = None, on_failure=None) -> str:
    """Run the task registered as `name` (e.g. "orchestra.execute_step") with `args` on a
    worker once the surrounding transaction commits. Tasks are named, not imported: the
    layers that enqueue work sit below the task modules that call them.

    Returns the task id, which `cancel_run` can revoke. Outside a transaction the task is
    sent at once. A broker that refuses the task is logged, never raised: the request that
    recorded the work has committed, and the sweep sends due work again (`on_failure` is
    called to say so).
    """
    task_id = task_id or uuid.uuid4().hex
    task = app.tasks[name]
    mode = settings.ORCHESTRA_EMBEDDED_WORKER
    if mode == "sync":
        transaction.on_commit(lambda: _run_sync(task, args))
        return task_id
    if mode == "thread":
        hand_over = functools.partial(_submit, task, args)
    else:
        hand_over = functools.partial(_send, task, args, task_id, on_failure)
    if name in CARRIED_TASKS and getattr(_carried, "depth", 0):  # in a task body: maybe kept
        transaction.on_commit(functools.partial(_carry, task, args, hand_over, mode == "thread"))
    else:
        transaction.on_commit(hand_over)
    return task_id


@contextmanager
def carrying_on() -> Iterator[None]:
    """A task's body on a worker thread (a Celery worker's, or the embedded pool's). The first
    step task it makes due (`CARRIED_TASKS`; on a Celery worker, for a queue it consumes) is
    not handed over: this thread runs it once the body ends, and the one that task makes due
    after it, down a chain of steps. So a step that follows another starts without the
    broker's round trip or the hand-over to another thread. The others are handed over as
    ever (a fan-out's other steps run in parallel).

    Durable as a task sent: the step's activity was made due by the transaction that
    enqueued it, so if this worker stops before the step is claimed, its lease runs out and
    the sweep sends it again. A worker that is stopping hands what it holds over instead of
    running it (`_stopping`): a shutdown waits for the running task, not for a chain."""
    depth = getattr(_carried, "depth", 0)
    _carried.depth = depth + 1
    try:
        yield
    finally:
        _carried.depth = depth
        if not depth:
            _carry_on()


def _carry(task, args, hand_over: Callable[[], object], embedded: bool) -> None:
    """After the enqueuing commit: the thread's first carried task is kept, if this thread
    may run it (the embedded pool runs every queue; a Celery worker, those it consumes: with
    role queues that reads the step's role, here rather than under the run's lock); others
    are handed over."""
    if getattr(_carried, "next", None) is None and (embedded or _consumed(task.name, args)):
        _carried.next = (task, args, hand_over)
    else:
        hand_over()


def _consumed(name: str, args) -> bool:
    from orchestra.queues import queue_for  # reads the steps' roles, which import models

    return queue_for(name, args) in consumed


def _carry_on() -> None:
    """Run what this thread kept (`_carry`), and what each of those kept in turn."""
    while (kept := getattr(_carried, "next", None)) is not None:
        _carried.next = None
        task, args, hand_over = kept
        if _stopping():
            hand_over()
            continue
        _carried.depth = 1  # what its body keeps is run by this loop, not by a nested one
        try:
            _broken_closed()
            task.run(*args)
        except Exception:
            logger.exception("task %s%r, carried on after the one before, failed", task.name, args)
        finally:
            _carried.depth = 0


def _broken_closed() -> None:
    """Before a carried task: a connection on which an error occurred is closed if it is no
    longer usable (a database restart broke it), as before any task. A sound one is kept: a
    connection handed back to its pool and borrowed again for each step of a chain cost the
    split chain 4 to 13 ms a step, measured."""
    for conn in connections.all(initialized_only=True):
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()


def stop_carrying() -> None:
    """The process is stopping (the embedded server stopped serving; its pool's threads are
    joined next): what a thread keeps from now on is handed over, not run."""
    _stop.set()


def unfinished() -> int:
    """How many tasks the embedded pool holds: running, or queued for a free thread."""
    with _idle:
        return _unfinished


def stop_embedded(grace: float) -> int:
    """The embedded server stopped serving: its pool takes no more work, the tasks queued and
    not started are dropped, and the ones running get up to `grace` seconds to end. Returns how
    many still run then. Nothing is lost either way: each task's work is due in the database
    (an activity), and the next start takes it over (`recover_embedded_work`); a step's agent
    carries on from its stored conversation."""
    stop_carrying()
    _beat_stop.set()
    with _pool_lock:
        pool = _pool
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    with _idle:
        _idle.wait_for(lambda: _unfinished == 0, grace)
        return _unfinished


def _stopping() -> bool:
    """A Celery worker asked to stop (a warm or cold shutdown), or `stop_carrying`: a thread
    runs nothing it kept, so the process waits for the task running, not for a chain."""
    from celery.worker import state

    return _stop.is_set() or _asked(state.should_stop) or _asked(state.should_terminate)


def _asked(flag) -> bool:
    """Celery's stop flags: None or False when not asked, else the exit code (0 too)."""
    return flag is not None and flag is not False


def _send(task, args, task_id: str, on_failure) -> None:
    try:
        task.apply_async(args=args, task_id=task_id, retry=False)
    except Exception:
        logger.warning("the broker refused %s%r; the sweep will send it again", task.name, args)
        if on_failure is not None:
            on_failure()


def revoke(task_ids: list[str]) -> None:
    """Drop queued work that has not started; running tasks re-check state and stop."""
    ids = [tid for tid in task_ids if tid]
    if ids and not settings.ORCHESTRA_EMBEDDED_WORKER:
        try:
            app.control.revoke(ids)
        except Exception:  # the run is cancelled in the database either way
            logger.warning("could not revoke tasks %s", ids, exc_info=True)


def start_embedded_beat() -> None:
    """The embedded server's beat: what Celery beat runs in a deployment, on the in-process
    pool. Every ORCHESTRA_SWEEP_INTERVAL seconds the sweep, so work a failed in-process task
    left behind (a task that raised, SQLite "database is locked" under load) is taken over
    while the server runs; every other entry of CELERY_BEAT_SCHEDULE (checkpoint expiry,
    webhook deliveries, retention) at its own interval. Idempotent."""
    global _beat
    with _pool_lock:
        if _beat is not None:
            return
        _beat = threading.Thread(target=_beat_forever, name="orchestra-beat", daemon=True)
    _beat.start()


def _beat_forever() -> None:
    every = {"orchestra.sweep": settings.ORCHESTRA_SWEEP_INTERVAL}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        every.setdefault(entry["task"], float(entry["schedule"]))
    tick = min(every.values())
    due = {task: time.monotonic() + interval for task, interval in every.items()}
    while not _beat_stop.wait(tick):
        now = time.monotonic()
        for task, at in due.items():
            if now >= at and task in app.tasks:
                due[task] = now + every[task]
                _submit(app.tasks[task], ())


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.ORCHESTRA_EMBEDDED_THREADS, thread_name_prefix="orchestra"
            )
        return _pool


def _submit(task, args) -> None:
    _count(1)
    try:
        future = _thread_pool().submit(_run_here, task, args)
    except RuntimeError:  # the pool takes nothing once the process stops
        _count(-1)
        # Its activity is due in the database: the next start queues it again.
        logger.info("%s%r stays due: the server is stopping", task.name, args)
    else:
        future.add_done_callback(lambda _future: _count(-1))  # run, or dropped at the stop


def _count(change: int) -> None:
    global _unfinished
    with _idle:
        _unfinished += change
        _idle.notify_all()


def _run_here(task, args) -> None:
    close_old_connections()
    try:
        task.run(*args)
    except Exception:
        logger.exception("embedded task %s%r failed", task.name, args)
    finally:
        # As at the end of a request: an unusable connection is closed, a pooled one goes
        # back to its pool, a persistent one (SQLite) stays with the thread for its next task.
        close_old_connections()


def _run_sync(task, args) -> None:
    _sync_queue.append((task, args))
    if getattr(_sync_state, "draining", False):
        return
    _sync_state.draining = True
    try:
        while _sync_queue:
            next_task, next_args = _sync_queue.popleft()
            next_task.run(*next_args)
    finally:
        _sync_state.draining = False
