"""The append-only event log and its live broadcast.

Every engine transaction that writes events holds the run row's lock from the statement
that numbers them until it commits: a `locked_run` block (state changes) locks it first, a
`recording` block (a model or tool call's records) last. So events of one run are numbered
and committed strictly in `seq` order: a reader that sees seq N committed has every event
before it. Broadcasts go out after commit and carry the whole
events; consumers re-read any gap from the database, so a dropped message never loses one.
"""

import asyncio
import atexit
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal

from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import connection, transaction
from django.utils import timezone

from orchestra.models import Event, Run, Step
from orchestra.prepared import Ahead, PreparedRead, several_statements
from orchestra.writes import Write, insert_now, opened, returned_ids, with_writes, write_now

logger = logging.getLogger(__name__)

# The event loop of the in-process server, registered by the first WebSocket consumer, so
# embedded worker threads can reach the in-memory channel layer that lives on it.
_embedded_loop: asyncio.AbstractEventLoop | None = None


def register_embedded_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _embedded_loop
    _embedded_loop = loop


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def project_group(project_id: int) -> str:
    """Where a doorbell rings for every commit of events in the project's runs: the pages
    that list runs and checkpoints (home, the approvals badge) listen here."""
    return f"project.{project_id}"


# The run row locked, with its project and task: the read every engine transaction starts with.
# FOR NO KEY UPDATE: it orders the run's transitions as FOR UPDATE would (each waits for the
# other, and for any UPDATE of the row), but an INSERT that names the run (an activity, an
# event, a model call: its foreign key check takes FOR KEY SHARE) does not wait for it; with
# FOR UPDATE, every such insert of a wide plan's steps queued behind the run's lock.
_LOCKED_RUN = PreparedRead(
    "locked_run",
    lambda run_id: (
        Run.objects.select_for_update(of=("self",), no_key=True)
        .select_related("project", "task")
        .filter(pk=run_id)
    ),
)


@contextmanager
def locked_run(run_id: int, *, then: Ahead | None = None) -> Iterator[Run]:
    """An engine transaction: lock the run row (SELECT ... FOR NO KEY UPDATE; every engine
    transaction takes this lock first, which orders all state changes of one run), yield it,
    and write the events and usage it gathered in one go at the end (one INSERT, one UPDATE),
    still inside the transaction. Broadcasts go out after commit, in seq order. An exception rolls
    everything back.

    The run's lock is what a wide plan's steps queue for, and each round trip under it costs
    the holder the database's answer and then a wait for the interpreter among the worker's
    busy threads (a 200-step fan-out held it about 14 ms a block, half of that between a
    statement sent and its answer taken). So on PostgreSQL the lock goes with the block's
    first read, `then` (see `PreparedRead.get`), and the last write with the COMMIT when the
    block's transaction ends with it (`_flush`): one round trip under the lock, not three."""
    with transaction.atomic():
        try:
            run = _LOCKED_RUN.get(run_id, then=then)
            run._locked_state = (run.status, run.phase, run.head_commit)
            with _gathering(run):
                yield run
        finally:
            if then is not None:
                then.discard()
        _flush(run, commit=_ends_here())


def _ends_here() -> bool:
    """Whether the transaction ends with this block (not nested in another), on PostgreSQL."""
    return connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1


@contextmanager
def recording(run_id: int) -> Iterator[Run]:
    """A transaction that appends records to a run (a model call, a tool call, their events
    and usage) and reads none of its state. The run row is locked only by the last
    statement before COMMIT, which adds the usage and numbers the events: parallel steps of
    one run wait on each other for that long, not for a whole transaction, and events stay
    committed in `seq` order. Yields a stand-in for the run that `emit` and `add_usage`
    accept; once that last statement ran, it holds the run's `status` and `paused_at` as the
    statement found them (`state_seen`): what an agent checks before its next turn.

    The transaction opens at the block's first statement. On PostgreSQL a block whose only
    statement is its last (the events, the run's row and the rows written "later", in one)
    sends it alone: a single statement is atomic, and BEGIN and COMMIT would be two round
    trips more for each model and tool call."""
    run = Run(pk=run_id)
    run.state_seen = False
    with ExitStack() as transaction_once_needed:

        def open_on_first(execute, sql, params, many, context):
            wrappers.remove(open_on_first)  # first: BEGIN comes through the wrappers too
            transaction_once_needed.enter_context(transaction.atomic())
            return execute(sql, params, many, context)

        wrappers = connection.execute_wrappers
        wrappers.append(open_on_first)
        try:
            with _gathering(run):
                yield run
        finally:
            if open_on_first in wrappers:
                wrappers.remove(open_on_first)
        if not (connection.in_atomic_block or _alone(run)):
            transaction_once_needed.enter_context(transaction.atomic())
        _flush_appended(run)


def _alone(run: Run) -> bool:
    """Whether `_flush_appended` writes `run`'s block in one statement."""
    return connection.vendor == "postgresql" and bool(run._pending_events)


@contextmanager
def _gathering(run: Run) -> Iterator[None]:
    """While inside, `run` gathers what its block writes at the end: events, usage, and the
    rows written "later" (`orchestra.writes`)."""
    run._pending_events = []
    run._pending_usage = [0, 0, Decimal("0")]
    run._pending_writes = []
    with opened(run):
        yield


def _gathered(run: Run) -> tuple[list[Event], list, list[Write]]:
    """What the block gathered, taken off `run`; the later writes are sent now when no
    event statement will carry them."""
    gathered = run._pending_events, run._pending_usage, run._pending_writes
    run._pending_events, run._pending_usage, run._pending_writes = None, None, None
    events, _usage, writes = gathered
    if writes and not events:
        write_now(writes)
    return gathered


# Names are constants; every value is a parameter.
_APPEND = (
    'UPDATE "orchestra_run" SET event_seq = event_seq + %s, input_tokens = input_tokens + %s,'
    " output_tokens = output_tokens + %s, cost_usd = cost_usd + %s WHERE id = %s"
    " RETURNING event_seq, status, paused_at"
)
_STATE = (
    'UPDATE "orchestra_run" SET status = %s, phase = %s, head_commit = %s, event_seq = %s,'
    " input_tokens = input_tokens + %s, output_tokens = output_tokens + %s,"
    " cost_usd = cost_usd + %s WHERE id = %s"
)
# On PostgreSQL the events and the run's row are written by one statement: the events come
# as one array per column (the same UNNEST Django's bulk_create sends), and the rows the
# block wrote "later" (`update_later`, `insert_later`) ride along as CTEs ({writes}); an
# inserted row's id goes into its event's data ({data}) and comes back ({ids}). A
# `recording`: the run's row numbers the events (its lock, taken last) and they follow.
_INSERT_EVENTS = 'INSERT INTO "orchestra_event" (run_id, seq, kind, actor, step_id, data, "at")'
_EVENT_ROWS = (
    "UNNEST(%s::varchar[], %s::varchar[], %s::bigint[], %s::jsonb[], %s::timestamptz[])"
    ' WITH ORDINALITY AS e(kind, actor, step_id, data, "at", ord)'
)
_APPEND_WITH_EVENTS = "".join(
    [
        "WITH {writes}counted AS (",
        _APPEND,
        ") ",
        _INSERT_EVENTS,
        ' SELECT %s, counted.event_seq - %s + e.ord, e.kind, e.actor, e.step_id, {data}, e."at"',
        " FROM counted, ",
        _EVENT_ROWS,
        " RETURNING seq, (SELECT status FROM counted), (SELECT paused_at FROM counted){ids}",
    ]
)
# A `locked_run`: the run is locked and its events numbered already.
_STATE_WITH_EVENTS = "".join(
    [
        "WITH {writes}appended AS (",
        _INSERT_EVENTS,
        ' SELECT %s, %s + e.ord, e.kind, e.actor, e.step_id, {data}, e."at" FROM ',
        _EVENT_ROWS,
        ") ",
        _STATE,
        "{ids}",
    ]
)


def _event_arrays(events: list[Event]) -> list[list]:
    """The events' columns as arrays, in the order the UNNEST above reads them."""
    encoder = Event._meta.get_field("data").encoder
    return [
        [event.kind for event in events],
        [event.actor for event in events],
        [event.step_id for event in events],
        [json.dumps(event.data, cls=encoder) for event in events],
        [event.at for event in events],
    ]


def _flush_appended(run: Run) -> None:
    events, (input_tokens, output_tokens, cost), writes = _gathered(run)
    if not events and not (input_tokens or output_tokens or cost):
        return
    usage = [len(events), input_tokens, output_tokens, cost, run.pk]
    with connection.cursor() as cursor:
        if events and connection.vendor == "postgresql":
            sql, cte_params, case_params = with_writes(_APPEND_WITH_EVENTS, writes, events)
            cursor.execute(
                sql,
                [
                    *cte_params,
                    *usage,
                    run.pk,
                    len(events),
                    *case_params,
                    *_event_arrays(events),
                ],
            )
            rows = cursor.fetchall()
            first = min(row[0] for row in rows) - 1
            run.status, run.paused_at = rows[0][1:3]
            returned_ids(writes, rows[0])
        else:
            cursor.execute(_APPEND, usage)
            last, run.status, run.paused_at = cursor.fetchone()
            first = last - len(events)
    run.state_seen = True
    if not events:
        return
    for event in events:  # `emit` numbered them from 1 on the stand-in
        event.seq += first
    if connection.vendor != "postgresql":
        insert_now(events)
    payloads = [event.as_json() for event in events]
    transaction.on_commit(lambda: broadcast(run.pk, payloads))


def _flush(run: Run, *, commit: bool = False) -> None:
    """Write what the block gathered. With `commit` (the block's transaction ends with it, on
    PostgreSQL), COMMIT goes in the same query string: the run's lock is released one round
    trip sooner (`transaction.atomic` then finds the transaction ended, and runs its on-commit
    hooks as ever)."""
    events, (input_tokens, output_tokens, cost), writes = _gathered(run)
    state_changed = (run.status, run.phase, run.head_commit) != run._locked_state
    if not events and not state_changed and not (input_tokens or output_tokens or cost):
        return
    # Status, phase and head commit ride along: engine code sets them on the locked run,
    # this writes them.
    state = [run.status, run.phase, run.head_commit, run.event_seq]
    state += [input_tokens, output_tokens, cost, run.pk]
    and_commit = "; COMMIT" if commit else ""
    with several_statements(connection) if commit else connection.cursor() as cursor:
        if events and connection.vendor == "postgresql":
            first = events[0].seq - 1
            sql, cte_params, case_params = with_writes(_STATE_WITH_EVENTS, writes, events)
            cursor.execute(
                sql + and_commit,
                [*cte_params, run.pk, first, *case_params, *_event_arrays(events), *state],
            )
            if any(write.obj is not None for write in writes):
                returned_ids(writes, cursor.fetchone())
        else:
            if events:
                insert_now(events)
            cursor.execute(_STATE + and_commit, state)
    if events:
        payloads = [event.as_json() for event in events]
        transaction.on_commit(lambda: broadcast(run.pk, payloads, run.project_id))


def add_usage(run: Run, input_tokens: int, output_tokens: int, cost: Decimal) -> None:
    """Add a model call's usage to the run's totals, written when `locked_run` ends."""
    pending = run._pending_usage
    pending[0] += input_tokens
    pending[1] += output_tokens
    pending[2] += cost


def emit(
    run: Run,
    kind: str,
    *,
    step: Step | None = None,
    actor: str = "engine",
    data: dict | None = None,
) -> Event:
    """Append an event to `run`, which must come from `locked_run`: the event is written when
    the block ends and broadcast after commit."""
    run.event_seq += 1
    event = Event(
        run=run,
        seq=run.event_seq,
        kind=kind,
        actor=actor,
        step=step,
        data=data or {},
        at=timezone.now(),
    )
    run._pending_events.append(event)
    return event


def broadcast(run_id: int, payloads: list[dict], project_id: int | None = None) -> None:
    """Send the events one transaction committed to the run's WebSocket group as one
    message, in seq order, and ring the project's doorbell (the run and the event kinds, no
    data); never raises, never blocks."""
    send_to_run(run_id, {"type": "run.event", "events": payloads})
    if project_id is not None:
        kinds = sorted({p["kind"] for p in payloads})
        _send(project_group(project_id), {"type": "inbox.ring", "run": run_id, "kinds": kinds})


def broadcast_text(run_id: int, live: dict) -> None:
    """A model's text as it streams (`run.text`): sent to the run's sockets only, never
    stored; the final message is stored once, with its `model.called` event."""
    send_to_run(run_id, {"type": "run.text", "live": live})


def send_to_run(run_id: int, message: dict) -> None:
    _send(run_group(run_id), message)


def _send(group: str, message: dict) -> None:
    """Hand `message` to the channel layer for `group`; never raises, never blocks."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if isinstance(layer, InMemoryChannelLayer):
            if _embedded_loop is None or _embedded_loop.is_closed():
                return  # no consumer has ever connected in this process
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _embedded_loop)
        else:
            _sender.send(layer, group, message)
    except Exception:
        logger.warning("broadcast to %s failed", group, exc_info=True)


class _Sender:
    """One event loop thread per process that sends broadcasts in order.

    `async_to_sync(layer.group_send)` from worker threads would spin up an event loop (and a
    Redis connection) per call; a single long-lived loop keeps one connection pool and sends
    the events of a process in the order they were committed, off the engine's path.

    Broadcasts wait in a list; only the one that finds it empty wakes the loop (a write to
    its wake-up pipe, then a turn of the loop's thread for the interpreter), and the loop
    takes all that are waiting when it gets to them: a step's dozen events and its model's
    streamed text woke the loop once each.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple] = []
        self._woken: asyncio.Event | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def send(self, layer, group: str, message: dict) -> None:
        with self._lock:
            if self._loop is None:
                self._start()
            self._pending += 1
            self._waiting.append((layer, group, message))
            wake = len(self._waiting) == 1
        if wake:
            assert self._loop is not None and self._woken is not None
            self._loop.call_soon_threadsafe(self._woken.set)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued broadcast was handed to the layer (used at exit)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._woken = asyncio.Event()
            loop.create_task(self._drain())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="orchestra-broadcast", daemon=True).start()
        ready.wait()
        self._loop = loop
        atexit.register(self.flush)

    async def _drain(self) -> None:
        assert self._woken is not None
        while True:
            await self._woken.wait()
            self._woken.clear()
            with self._lock:
                batch, self._waiting = self._waiting, []
            sends = coalesced(batch)
            listened = await _listened(sends)
            for layer, group, message in sends:
                if listened is not None and group not in listened:
                    continue
                try:
                    await layer.group_send(group, message)
                except Exception:
                    logger.warning("broadcast to %s failed", group, exc_info=True)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()


async def _listened(sends: list[tuple]) -> set[str] | None:
    """The groups of `sends` that someone is in, asked of Redis in one round trip per server;
    None when that cannot be asked (another layer, an error): then every group is sent to.

    A send to a Redis group costs two round trips before it finds the group empty, and most
    groups are: a run nobody has open, a project's pages nobody looks at. With many steps at
    once the broadcasts of a worker were a sixth of its interpreter's time."""
    layers = {id(layer): layer for layer, _group, _message in sends}
    if len(layers) != 1:
        return None
    [layer] = layers.values()
    if not isinstance(layer, RedisChannelLayer):
        return None
    groups = sorted({group for _layer, group, _message in sends})
    try:
        by_server: dict[int, list[str]] = {}
        for group in groups:
            by_server.setdefault(layer.consistent_hash(group), []).append(group)
        # Members joined within the expiry, as `group_send` counts them before it sends.
        since = int(time.time()) - layer.group_expiry
        listened = set()
        for index, named in by_server.items():
            pipe = layer.connection(index).pipeline(transaction=False)
            for group in named:
                pipe.zcount(layer._group_key(group), f"({since}", "+inf")
            counts = await pipe.execute()
            listened |= {group for group, count in zip(named, counts, strict=True) if count}
    except Exception:
        logger.warning("could not ask who listens; sending to every group", exc_info=True)
        return None
    return listened


def coalesced(batch: list[tuple]) -> list[tuple]:
    """The broadcasts queued while the last ones were sent, as fewer messages: a group's
    consecutive `run.event` messages become one (their events in order), a model's streamed
    text only its latest (each holds the whole text so far), a project's rings for one run
    one ring. Each group's messages keep their order; with many steps at once the sender
    keeps up with one round trip per group instead of one per transaction."""
    out: list[tuple] = []
    last: dict[str, int] = {}  # group -> index in `out` of its latest message
    for layer, group, message in batch:
        at = last.get(group)
        merged = _merged(out[at][2], message) if at is not None else None
        if merged is not None:
            out[at] = (layer, group, merged)
            continue
        last[group] = len(out)
        out.append((layer, group, message))
    return out


def _merged(first: dict, then: dict) -> dict | None:
    kind = first["type"]
    if kind != then["type"]:
        return None
    if kind == "run.event":
        return {**first, "events": [*first["events"], *then["events"]]}
    if kind == "run.text" and first["live"].get("agent_run") == then["live"].get("agent_run"):
        return then
    if kind == "inbox.ring" and first.get("run") == then.get("run"):
        return {**first, "kinds": sorted({*first["kinds"], *then["kinds"]})}
    return None


_sender = _Sender()
