"""Hands engine work to a worker after the current transaction commits.

Configured deployments enqueue Celery tasks on Redis. The embedded default runs the same task
functions on a thread pool inside the web process; tests may drain them in the calling thread
("sync"), which keeps engine tests deterministic without a broker.
"""

import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, transaction

from orchestra.celery import app

logger = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_sync_queue: deque = deque()
_sync_state = threading.local()
_beat: threading.Thread | None = None
_beat_stop = threading.Event()


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
    if mode == "thread":
        transaction.on_commit(lambda: _thread_pool().submit(_run_here, task, args))
    elif mode == "sync":
        transaction.on_commit(lambda: _run_sync(task, args))
    else:
        transaction.on_commit(lambda: _send(task, args, task_id, on_failure))
    return task_id


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
                _thread_pool().submit(_run_here, app.tasks[task], ())


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.ORCHESTRA_EMBEDDED_THREADS, thread_name_prefix="orchestra"
            )
        return _pool


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
