"""Durable units of work: scheduled with the state change, claimed once, kept alive, taken over.

The lifecycle of an `Activity`:
- `schedule` (inside the transaction that makes the work due) upserts it `queued`, with the
  task that carries it on and a deadline to start, and enqueues that task after commit. If
  the broker refuses, the activity is marked due at once and the sweep sends it again: a
  broker outage delays work and never fails the request that recorded it.
- `claim` (first thing a task does) takes it with a conditional UPDATE: a queued activity,
  or a running one whose lease expired. A duplicate delivery finds it held and returns.
- `begin` takes it directly, for work a worker carries on inline (a review right after the
  step it reviews, the report right after the last merge).
- `held` keeps the lease alive while the work runs (the process's lease keeper renews every
  held lease in one statement) and marks it done when the block ends, unless the work's last
  transaction did (`finish_with`); an exception leaves it due for the sweep.
- `keep` and `let_go` renew the lease of work begun outside `held` whose end is recorded by
  a transaction of other work (`finish_in`: a merge made just before the verdict that
  records it).
- `expired` lists what the sweep must take over: queued work nobody started within its
  lease, running work whose owner stopped renewing.

No git, no subprocess and no model call happens inside these transactions.
"""

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from orchestra import queue
from orchestra.models import Activity, Run, Step
from orchestra.prepared import PreparedRead
from orchestra.writes import execute_later, insert_later, open_block

logger = logging.getLogger(__name__)


def owner_name() -> str:
    """This worker: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def lease_from(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.ORCHESTRA_LEASE)


def key_for(kind: str, *, run_id: int, step_id: int | None = None) -> str:
    return f"{kind}:{step_id if step_id is not None else run_id}"


def schedule(kind: str, task: str, *, run_id: int, step_id: int | None = None) -> str:
    """Make the activity due and send its task after commit; returns the task id. Inside the
    transaction that records why it is due (the caller's `locked_run`)."""
    key = key_for(kind, run_id=run_id, step_id=step_id)
    args = [step_id if step_id is not None else run_id]
    _upsert(
        Activity(
            key=key,
            run_id=run_id,
            step_id=step_id,
            kind=kind,
            status=Activity.Status.QUEUED,
            task=task,
            args=args,
            owner="",
            attempt=0,
            lease_expires_at=lease_from(timezone.now()),
        )
    )
    return queue.enqueue(task, *args, on_failure=lambda: _due_now(key))


_UPSERTED = ["run", "step", "kind", "status", "task", "args", "owner", "attempt"]


def _upsert(activity: Activity) -> Activity:
    """Write the activity whether or not its key exists: one INSERT ... ON CONFLICT. Inside
    a `locked_run` it rides in the block's last statement (it has its id once the block
    ends); nothing in the block reads it back."""
    insert_later(
        open_block(),
        activity,
        upsert=(["key"], [*_UPSERTED, "lease_expires_at", "heartbeat_at", "updated_at"]),
    )
    return activity


def _due_now(key: str) -> None:
    """The broker refused the task: the sweep sends it again on its next pass."""
    try:
        Activity.objects.filter(key=key, status=Activity.Status.QUEUED).update(
            lease_expires_at=timezone.now()
        )
    except Exception:  # the database is down too; the lease runs out on its own
        logger.warning("could not mark %s due again", key, exc_info=True)


def claim(kind: str, *, run_id: int | None, step_id: int | None = None) -> Activity | None:
    """Take the activity for this worker: queued, or running under an expired lease. None
    when another worker holds it (a duplicate delivery) or it is done. An activity that never
    was scheduled (work from before activities existed, a test's hand-made state) is made.
    A step's activity may be claimed without its run id: the claim returns it."""
    key = key_for(kind, run_id=run_id, step_id=step_id)
    claimed = _take(key, owner_name(), timezone.now())
    if claimed is not None:
        return claimed
    if Activity.objects.filter(key=key).exists():
        return None
    if run_id is None:
        run_id = Step.objects.filter(pk=step_id).values_list("run_id", flat=True).first()
        if run_id is None:
            return None  # a stale task: the step is gone
    return begin(kind, run_id=run_id, step_id=step_id)


# Column and table names are constants; every value is a parameter.
_TAKE = (
    'UPDATE "orchestra_activity" SET status = %s, owner = %s,'
    " attempt = CASE WHEN status = %s AND owner = %s THEN attempt ELSE attempt + 1 END,"
    " lease_expires_at = %s, heartbeat_at = %s, updated_at = %s"
    ' WHERE "key" = %s'
    " AND (status = %s OR (status = %s AND (owner = %s OR lease_expires_at < %s)))"
    " RETURNING id, run_id, step_id, kind, attempt"
)


def _take(key: str, owner: str, now: datetime) -> Activity | None:
    """One conditional UPDATE ... RETURNING: queued, running under an expired lease, or
    already this worker's (work it began inline, which keeps its attempt count)."""
    with connection.cursor() as cursor:
        cursor.execute(_TAKE, _take_params(key, owner, now))
        row = cursor.fetchone()
    return None if row is None else _taken(key, owner, now, row)


def _take_params(key: str, owner: str, now: datetime) -> list:
    queued, running = Activity.Status.QUEUED, Activity.Status.RUNNING
    at, lease = (connection.ops.adapt_datetimefield_value(t) for t in (now, lease_from(now)))
    return [running, owner, running, owner, lease, at, at, key, queued, running, owner, at]


def _taken(key: str, owner: str, now: datetime, row) -> Activity:
    pk, run_id, step_id, kind, attempt = row
    return Activity(
        pk=pk,
        key=key,
        run_id=run_id,
        step_id=step_id,
        kind=kind,
        status=Activity.Status.RUNNING,
        owner=owner,
        attempt=attempt,
        lease_expires_at=lease_from(now),
        heartbeat_at=now,
    )


def claim_reading(kind: str, step_id: int, read: PreparedRead) -> tuple[Activity, Step] | None:
    """`claim` of a step's activity and `read.get(step_id)` (what its work reads first) in
    one statement, on PostgreSQL. None when that did not claim it (held by another worker,
    done, never scheduled; or another database): `claim` then says which."""
    if connection.vendor != "postgresql":
        return None
    key, owner, now = key_for(kind, run_id=None, step_id=step_id), owner_name(), timezone.now()
    found = read.after(_TAKE, _take_params(key, owner, now), 5, step_id)
    if found is None:
        return None
    row, step = found
    return _taken(key, owner, now, row), step


def begin(kind: str, *, run_id: int, step_id: int | None = None, task: str = "") -> Activity:
    """Hold the activity from here on, without a queue hop: the worker that made it due
    carries it on at once."""
    now = timezone.now()
    return _upsert(
        Activity(
            key=key_for(kind, run_id=run_id, step_id=step_id),
            run_id=run_id,
            step_id=step_id,
            kind=kind,
            status=Activity.Status.RUNNING,
            task=task or TASKS[kind],
            args=[step_id if step_id is not None else run_id],
            owner=owner_name(),
            attempt=1,
            lease_expires_at=lease_from(now),
            heartbeat_at=now,
        )
    )


# The task that carries each kind on from what was stored, whatever state it was left in.
TASKS = {
    Activity.Kind.PLAN: "orchestra.plan_run",
    Activity.Kind.STEP: "orchestra.take_over_step",
    Activity.Kind.REVIEW: "orchestra.review_step",
    Activity.Kind.MERGE: "orchestra.merge_step",
    Activity.Kind.REPORT: "orchestra.report_run",
}


# The activities this thread holds (`held`), innermost last.
_holding = threading.local()


@contextmanager
def held(activity: Activity) -> Iterator[Activity]:
    """Run the activity's work: the process's lease keeper renews its lease every third of
    it, and it is marked done at the end (or by the work's last transaction, see
    `finish_with`). An exception leaves it due, so the sweep hands it on (bounded by
    ORCHESTRA_ACTIVITY_ATTEMPTS). Never inside a database transaction."""
    _keeper.hold(activity)
    stack = _holding.__dict__.setdefault("activities", [])
    stack.append(activity)
    try:
        yield activity
    except BaseException:
        _keeper.release(activity, settle=True)
        Activity.objects.filter(
            pk=activity.pk, owner=activity.owner, status=Activity.Status.RUNNING
        ).update(lease_expires_at=timezone.now())
        raise
    finally:
        stack.remove(activity)
    _keeper.release(activity)
    if activity.status != Activity.Status.DONE:
        finish(activity)


def _mine(activity: Activity) -> QuerySet[Activity]:
    """The activity, while its owner still holds it."""
    return Activity.objects.filter(
        pk=activity.pk, owner=activity.owner, status=Activity.Status.RUNNING
    )


def finish(activity: Activity) -> None:
    """Done, unless another worker took it over meanwhile (then it is theirs)."""
    _mine(activity).update(status=Activity.Status.DONE)


def finish_with(run: Run) -> None:
    """The activity this thread holds is done when `run`'s block commits: its work's last
    transaction marks it (in the block's last statement on PostgreSQL), so the state change
    and the end of the work commit together, and the work's end costs no statement of its
    own. Nothing when the thread holds none (work carried on outside an activity)."""
    stack = getattr(_holding, "activities", None)
    if not stack:
        return
    activity = stack[-1]
    finish_in(run, activity)
    transaction.on_commit(lambda: setattr(activity, "status", Activity.Status.DONE))


def keep(activity: Activity) -> None:
    """Renew the lease of an activity this worker began outside `held`, until `let_go`."""
    _keeper.hold(activity)


def let_go(activity: Activity) -> None:
    """No more renewals of an activity `keep` renewed: if nothing ends it, the sweep takes it
    over when its lease runs out."""
    _keeper.release(activity)


# `finish`, written in a block's last statement: the activity, while its owner holds it.
_FINISH = (
    'UPDATE "orchestra_activity" SET "status" = %s'
    ' WHERE "id" = %s AND "owner" = %s AND "status" = %s'
)


def finish_in(run: Run, activity: Activity) -> None:
    """`activity` is done when `run`'s block commits, in the block's last statement (see
    `finish_with`), unless another worker took it over meanwhile."""
    done, running = Activity.Status.DONE, Activity.Status.RUNNING
    execute_later(run, _FINISH, [done, activity.pk, activity.owner, running])


def finish_now(activity: Activity) -> None:
    """Done whoever holds it: the run is over or the work was given up."""
    Activity.objects.filter(pk=activity.pk).update(status=Activity.Status.DONE)


class _LeaseKeeper:
    """One thread per process renews the leases of every activity the process holds, in one
    UPDATE every third of a lease.

    A thread per activity cost a thread started and joined around each piece of work (four
    per step), the join waiting for the beat thread to be scheduled again, and a connection
    per beat; with tens of steps at once, tens of threads each writing alone.
    """

    def __init__(self) -> None:
        self._held: dict[int, str] = {}  # activity id -> its owner
        self._guard = threading.Lock()  # over `_held` and the thread
        self._renewing = threading.Lock()  # held while a renewal is written
        self._thread: threading.Thread | None = None

    def hold(self, activity: Activity) -> None:
        """Renew `activity`'s lease from now on; not when work runs inline in the caller's
        thread (ORCHESTRA_EMBEDDED_WORKER=sync: nothing runs beside it)."""
        if settings.ORCHESTRA_EMBEDDED_WORKER == "sync":
            return
        with self._guard:
            self._held[activity.pk] = activity.owner
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="orchestra-leases", daemon=True
                )
                self._thread.start()

    def release(self, activity: Activity, *, settle: bool = False) -> None:
        """No more renewals. With `settle`, also wait for a renewal being written, so the
        caller's own write of the lease lands after it (a failed piece of work marks its
        lease due at once, and a renewal in flight must not push it back out)."""
        with self._guard:
            self._held.pop(activity.pk, None)
        if settle:
            with self._renewing:
                pass

    def _run(self) -> None:
        every = max(settings.ORCHESTRA_LEASE / 3, 0.05)
        pause = threading.Event()
        while not pause.wait(every):
            with self._renewing:
                with self._guard:
                    held = dict(self._held)
                if held:
                    _renew(held)

    def holding(self) -> dict[int, str]:
        with self._guard:
            return dict(self._held)


def _renew(held: dict[int, str]) -> None:
    """Extend the leases of `held` (id -> owner) still running under their owner; a missed
    renewal only shortens a lease."""
    now = timezone.now()
    mine = Q()
    for pk, owner in held.items():
        mine |= Q(pk=pk, owner=owner)
    try:
        Activity.objects.filter(mine, status=Activity.Status.RUNNING).update(
            lease_expires_at=lease_from(now), heartbeat_at=now
        )
    except Exception:
        logger.warning("renewing the leases of %s activities failed", len(held), exc_info=True)
    finally:
        connection.close()  # back to the pool between renewals


_keeper = _LeaseKeeper()


def expired(now: datetime) -> list[Activity]:
    """Queued work nobody started within its lease, and running work whose owner stopped
    renewing it."""
    return list(
        Activity.objects.filter(
            status__in=[Activity.Status.QUEUED, Activity.Status.RUNNING],
            lease_expires_at__lt=now,
        ).order_by("pk")
    )


def resend(activity: Activity) -> str:
    """Queue an expired activity's task again (it re-checks state, so a duplicate does
    nothing). Caller holds the run lock."""
    Activity.objects.filter(pk=activity.pk).update(
        status=Activity.Status.QUEUED, owner="", lease_expires_at=lease_from(timezone.now())
    )
    return queue.enqueue(
        TASKS.get(activity.kind, activity.task),
        *activity.args,
        on_failure=lambda: _due_now(activity.key),
    )


def forget_owners() -> int:
    """At the start of an embedded server, no other process can hold anything: every
    unfinished activity is due."""
    return Activity.objects.exclude(status=Activity.Status.DONE).update(
        status=Activity.Status.QUEUED, owner="", lease_expires_at=timezone.now()
    )
