"""The run event WebSocket through the whole ASGI stack (origin check, session auth, router)
on the in-memory channel layer: replay then live with no gap and no duplicate, refusals with
their close codes, token and session authentication, gaps filled from the database, and
each frame's `html`: the event's feed line exactly as the run page renders it.

pytest-asyncio is not a dependency: each test runs its async body with `async_to_sync`.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import reverse

from orchestra import consumers, events
from orchestra.asgi import application
from orchestra.consumers import BATCH, RunConsumer
from orchestra.events import broadcast, emit, locked_run
from orchestra.models import ApiToken, Event, Plan, Run, Step, Task

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture(autouse=True)
def memory_layer(settings, monkeypatch):
    """A fresh in-memory layer per test (its queues belong to the test's event loop), and no
    embedded loop left behind for later tests to broadcast onto."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr(events, "_embedded_loop", None)
    # Tests that do not exercise the quiet-period re-read must not be rescued by it.
    monkeypatch.setattr(RunConsumer, "settle_delay", 60.0)


@pytest.fixture
def run(demo, owner) -> Run:
    task = Task.objects.create(project=demo, title="Socket", created_by=owner)
    return Run.objects.create(task=task, project=demo)


def emit_events(run_id: int, count: int, kind: str = "test.kind") -> None:
    """Emit `count` events, one engine-style transaction each (locked run, broadcast after
    commit)."""
    for i in range(count):
        with locked_run(run_id) as run:
            emit(run, kind, data={"i": i})


def emit_unbroadcast(run_id: int) -> None:
    """Store an event whose broadcast is lost, as if the channel layer had dropped it."""
    with mock.patch.object(events, "broadcast"), locked_run(run_id) as run:
        emit(run, "test.dropped")


aemit = database_sync_to_async(emit_events)
aemit_unbroadcast = database_sync_to_async(emit_unbroadcast)


def stored(run: Run) -> list[dict]:
    return [e.as_json() for e in Event.objects.filter(run=run).order_by("seq")]


def data_of(frames: list[dict]) -> list[dict]:
    """The frames without their rendered lines: the events' data, as other clients read it."""
    assert all(frame["html"].startswith("<li ") for frame in frames)
    return [{key: value for key, value in frame.items() if key != "html"} for frame in frames]


def page_lines(user, run: Run) -> dict[int, str]:
    """The run page's feed as `user` sees it: each event's `<li>` by seq, as served."""
    client = Client()
    client.force_login(user)
    response = client.get(reverse("dashboard:run", args=[run.pk]))
    assert response.status_code == 200
    feed = response.content.decode().split('id="feed"', 1)[1]
    return {int(m[1]): m[0] for m in re.finditer(r'<li data-seq="(\d+)".*?</li>', feed, re.S)}


def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode())


def communicator(
    run_id: int, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    path = f"/ws/runs/{run_id}/" + (f"?{query}" if query else "")
    return WebsocketCommunicator(application, path, headers=[ORIGIN, *(headers or [])])


def run_async(body: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(body)()


async def open_socket(comm: WebsocketCommunicator) -> None:
    connected, _ = await comm.connect(timeout=5)
    assert connected


async def receive_seqs(comm: WebsocketCommunicator, count: int) -> list[dict]:
    return [await comm.receive_json_from(timeout=5) for _ in range(count)]


async def close_code(comm: WebsocketCommunicator) -> int:
    """The code the server closed with; refusals accept first so clients can see it."""
    connected, _ = await comm.connect(timeout=5)
    assert connected
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message["code"]


def test_replay_after_seq_then_live_without_gap_or_duplicate(run, viewer):
    emit_events(run.pk, 5)
    comm = communicator(run.pk, "after=2", [session_cookie(viewer)])

    async def body():
        await open_socket(comm)
        try:
            replayed = await receive_seqs(comm, 3)
            await aemit(run.pk, 3)
            live = await receive_seqs(comm, 3)
            # A duplicate broadcast of something already sent is dropped.
            await database_sync_to_async(broadcast)(run.pk, [live[-1]])
            await aemit(run.pk, 1)
            [last] = await receive_seqs(comm, 1)
            await comm.receive_nothing(timeout=0.2)
        finally:
            await comm.disconnect()
        received = [*replayed, *live, last]
        assert [e["seq"] for e in received] == [3, 4, 5, 6, 7, 8, 9]
        assert data_of(received) == (await database_sync_to_async(stored)(run))[2:]

    run_async(body)


def test_replay_in_batches_while_events_are_emitted_concurrently(run, owner):
    """Events committed during a multi-batch replay arrive exactly once, in order."""
    emit_events(run.pk, BATCH * 2 + 50)
    token = ApiToken.issue(owner)
    comm = communicator(run.pk, "after=0", [(b"authorization", f"Bearer {token}".encode())])

    async def emit_one_by_one():
        # One call per event, so the emits interleave with the replay's batch reads.
        for _ in range(60):
            await aemit(run.pk, 1)

    async def body():
        await open_socket(comm)
        try:
            emitter = asyncio.ensure_future(emit_one_by_one())
            received = []
            while len(received) < BATCH * 2 + 50 + 60:
                received.append(await comm.receive_json_from(timeout=5))
            await emitter
            await comm.receive_nothing(timeout=0.2)
        finally:
            await comm.disconnect()
        assert [e["seq"] for e in received] == list(range(1, BATCH * 2 + 50 + 60 + 1))

    run_async(body)


def test_event_committed_right_after_the_last_replay_read_is_not_lost(run, owner, monkeypatch):
    """The consumer joins the group before it replays, so an event committed after its last
    database read still arrives live."""
    emit_events(run.pk, 3)
    read = consumers.events_between
    emitted = False

    async def read_then_emit(run_id: int, after: int, upto: int | None = None) -> list[dict]:
        nonlocal emitted
        batch = await read(run_id, after, upto)
        if not batch and not emitted:
            emitted = True
            await aemit(run_id, 1)
        return batch

    monkeypatch.setattr(consumers, "events_between", read_then_emit)
    comm = communicator(run.pk, "", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            received = await receive_seqs(comm, 4)
            await comm.receive_nothing(timeout=0.2)
        finally:
            await comm.disconnect()
        assert [e["seq"] for e in received] == [1, 2, 3, 4]

    run_async(body)


def test_gap_from_a_dropped_message_is_filled_from_the_database(run, owner):
    emit_events(run.pk, 2)
    comm = communicator(run.pk, "after=2", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            await comm.receive_nothing(timeout=0.1)
            await aemit_unbroadcast(run.pk)  # seq 3: stored, never broadcast
            await aemit(run.pk, 1)  # seq 4: broadcast, reveals the gap
            received = await receive_seqs(comm, 2)
            await comm.receive_nothing(timeout=0.2)
        finally:
            await comm.disconnect()
        assert [(e["seq"], e["kind"]) for e in received] == [(3, "test.dropped"), (4, "test.kind")]

    run_async(body)


def test_dropped_last_message_is_sent_once_the_stream_goes_quiet(run, owner, monkeypatch):
    monkeypatch.setattr(RunConsumer, "settle_delay", 0.2)
    comm = communicator(run.pk, "", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            await aemit(run.pk, 1)
            await aemit_unbroadcast(run.pk)  # the tail of the burst: nothing follows it
            received = await receive_seqs(comm, 2)
            await comm.receive_nothing(timeout=0.5)
        finally:
            await comm.disconnect()
        assert [e["seq"] for e in received] == [1, 2]

    run_async(body)


def test_client_frames_are_ignored(run, owner):
    comm = communicator(run.pk, "", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            await comm.send_to(text_data="not json")
            await aemit(run.pk, 1)
            [event] = await receive_seqs(comm, 1)
        finally:
            await comm.disconnect()
        assert event["seq"] == 1

    run_async(body)


def test_token_in_query_is_accepted(run, viewer):
    emit_events(run.pk, 1)
    token = ApiToken.issue(viewer)
    comm = communicator(run.pk, f"token={token}")

    async def body():
        await open_socket(comm)
        try:
            [event] = await receive_seqs(comm, 1)
        finally:
            await comm.disconnect()
        assert event["seq"] == 1

    run_async(body)
    assert ApiToken.objects.get(user=viewer).last_used_at is not None


@pytest.mark.parametrize(
    "credentials",
    ["anonymous", "outsider-session", "outsider-token", "unknown-token", "inactive-token"],
)
def test_refused_with_4403(run, viewer, outsider, credentials):
    headers: list[tuple[bytes, bytes]] = []
    query = ""
    if credentials == "outsider-session":
        headers = [session_cookie(outsider)]
    elif credentials == "outsider-token":
        query = f"token={ApiToken.issue(outsider)}"
    elif credentials == "unknown-token":
        # A given but unknown token does not fall back to the (valid) session.
        headers = [session_cookie(viewer), (b"authorization", b"Bearer orc_nope")]
    elif credentials == "inactive-token":
        query = f"token={ApiToken.issue(viewer)}"
        viewer.is_active = False
        viewer.save()
    comm = communicator(run.pk, query, headers)

    async def body():
        assert await close_code(comm) == 4403

    run_async(body)


def test_after_beyond_any_seq_is_accepted_and_streams_nothing_older(run, owner):
    comm = communicator(run.pk, f"after={10**30}", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            await aemit(run.pk, 1)
            await comm.receive_nothing(timeout=0.3)
        finally:
            await comm.disconnect()

    run_async(body)


def test_unknown_run_is_refused_like_a_hidden_one(run, owner):
    comm = communicator(run.pk + 1000, "", [session_cookie(owner)])

    async def body():
        assert await close_code(comm) == 4403

    run_async(body)


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", ""])
def test_invalid_after_is_refused_with_4400(run, owner, after):
    comm = communicator(run.pk, f"after={after}", [session_cookie(owner)])

    async def body():
        assert await close_code(comm) == 4400

    run_async(body)


def emit_in_one_transaction(run_id: int, count: int) -> None:
    with locked_run(run_id) as run:
        for i in range(count):
            emit(run, "test.batched", data={"i": i})


def test_events_of_one_transaction_arrive_as_one_batch_in_order(run, viewer):
    emit_events(run.pk, 1)
    comm = communicator(run.pk, "after=1", [session_cookie(viewer)])
    sent = []
    real = events.broadcast

    def spy(run_id, payloads, project_id=None):
        sent.append({"events": payloads})
        real(run_id, payloads, project_id)

    async def body():
        await open_socket(comm)
        with mock.patch.object(events, "broadcast", spy):
            await database_sync_to_async(emit_in_one_transaction)(run.pk, 4)
        received = await receive_seqs(comm, 4)
        assert [e["seq"] for e in received] == [2, 3, 4, 5]
        assert [e["data"]["i"] for e in received] == [0, 1, 2, 3]
        assert len(sent) == 1 and len(sent[0]["events"]) == 4
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()

    run_async(body)


def emit_worded_events(run_id: int) -> None:
    """Events whose lines name a step, a decision and a reclaimed activity, with text that
    must be escaped; one transaction, so they are broadcast as one message."""
    run = Run.objects.get(pk=run_id)
    plan = Plan.objects.create(run=run, version=1)
    step = Step.objects.create(run=run, plan=plan, key="tests", title="Tests", agent_role="coder")
    with locked_run(run_id) as locked:
        emit(locked, "review.taken_over", step=step, data={"from": "w1", "to": "w2"})
        emit(
            locked,
            "activity.reclaimed",
            step=step,
            data={"activity": "step", "owner": "w2", "was": "running", "attempt": 2},
        )
        emit(
            locked,
            "approval.decided",
            step=step,
            actor="ada <admin>",
            data={"checkpoint": 4, "decision": "edit", "edited_arguments": {"a": 1}},
        )
        emit(locked, "plan.taken_over", actor="orchestrator", data={"from": "", "to": "w3"})


def test_each_frame_carries_the_line_the_page_renders(run, owner):
    """Replayed and live events alike carry `html`: the run page's own feed line for the
    event, character for character, so the browser shows what a reload would."""
    emit_events(run.pk, 1)
    comm = communicator(run.pk, "", [session_cookie(owner)])

    async def body():
        await open_socket(comm)
        try:
            [replayed] = await receive_seqs(comm, 1)
            await database_sync_to_async(emit_worded_events)(run.pk)
            live = await receive_seqs(comm, 4)
        finally:
            await comm.disconnect()
        frames = [replayed, *live]
        lines = await database_sync_to_async(page_lines)(owner, run)
        assert sorted(lines) == [1, 2, 3, 4, 5]
        assert [frame["html"] for frame in frames] == [lines[seq] for seq in range(1, 6)]
        # The data stays data: the line is an addition, not a replacement.
        assert data_of(frames) == await database_sync_to_async(stored)(run)
        assert "the review of step tests was taken over from w1 by w2" in lines[2]
        assert "step tests was sent to another worker: w2 stopped during attempt 2" in lines[3]
        assert "checkpoint #4 approved with edited arguments</span>" in lines[4]
        assert "tests · ada &lt;admin&gt;" in lines[4]
        assert "the plan was taken over from a lost worker by w3" in lines[5]

    run_async(body)


def test_broadcasts_queued_meanwhile_go_as_fewer_messages_in_each_groups_order():
    from orchestra.events import coalesced

    layer = object()

    def events(*seqs):
        return {"type": "run.event", "events": [{"seq": seq} for seq in seqs]}

    def text(agent_run, so_far):
        return {"type": "run.text", "live": {"agent_run": agent_run, "text": so_far}}

    ring = {"type": "inbox.ring", "run": 7, "kinds": ["step.completed"]}
    batch = [
        (layer, "run-7", events(1, 2)),
        (layer, "project-1", ring),
        (layer, "run-7", events(3)),
        (layer, "run-8", events(1)),
        (layer, "project-1", {**ring, "kinds": ["merge.queued", "step.completed"]}),
        (layer, "run-7", text(4, "Hel")),
        (layer, "run-7", text(4, "Hello")),
        (layer, "run-7", text(5, "Other")),
        (layer, "run-7", events(4)),
        (layer, "project-1", {**ring, "run": 8}),
    ]
    sent = [(group, message) for _layer, group, message in coalesced(batch)]
    assert sent == [
        ("run-7", events(1, 2, 3)),
        ("project-1", {**ring, "kinds": ["merge.queued", "step.completed"]}),
        ("run-8", events(1)),
        ("run-7", text(4, "Hello")),
        ("run-7", text(5, "Other")),
        ("run-7", events(4)),  # after the text that preceded it, never before
        ("project-1", {**ring, "run": 8}),
    ]
    assert coalesced([]) == []


def test_the_sender_loses_nothing_and_keeps_each_groups_order_from_many_threads():
    import threading

    class Recording:  # a channel layer that keeps what it is given
        def __init__(self):
            self.got: dict[str, list[int]] = {}

        async def group_send(self, group, message):
            if len(self.got) == 0:
                await asyncio.sleep(0.01)  # a slow first send: the rest queue meanwhile
            self.got.setdefault(group, []).extend(e["seq"] for e in message["events"])

    layer, sender = Recording(), events._Sender()

    def send(group):
        for seq in range(1, 501):
            sender.send(layer, group, {"type": "run.event", "events": [{"seq": seq}]})

    threads = [threading.Thread(target=send, args=(f"run-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sender.flush(timeout=10)
    assert layer.got == {f"run-{n}": list(range(1, 501)) for n in range(4)}
