"""The run event WebSocket for real: a daphne process, the channels-redis layer, PostgreSQL,
and a `websockets` client.

Events are emitted in this process (engine-style transactions, broadcast after commit
through Redis) and must reach the socket served by the daphne process: replay then live with
no gap and no duplicate while events are committed during the replay, an idle socket that
outlives redis-py 8's default 5 s socket timeout, and refusals with close code 4403.
"""

import asyncio
import json
import os
import threading
import time
from unittest import mock

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from orchestra import events
from orchestra.events import emit, locked_run
from orchestra.models import ApiToken, Event, Run, Task

from .conftest import start_web

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STORED = 2000
LIVE = 300


def redis_channel_layers(url: str) -> dict:
    """The same layer configuration as the REDIS_URL branch of orchestra/settings.py."""
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": url, "socket_timeout": 30}],
                "capacity": 5000,
                "expiry": 60,
            },
        }
    }


@pytest.fixture
def redis_layer(live_settings):
    """Broadcasts from this process go through Redis, like those of a real worker."""
    live_settings.CHANNEL_LAYERS = redis_channel_layers(os.environ["REDIS_URL"])
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def server(processes, redis_layer) -> str:
    """`orchestra web` (daphne) serving `orchestra.asgi` on the test database; host:port."""
    return start_web(processes).removeprefix("http://")


@pytest.fixture
def run(demo, owner) -> Run:
    task = Task.objects.create(project=demo, title="Socket over Redis", created_by=owner)
    return Run.objects.create(task=task, project=demo)


def emit_events(run_id: int, count: int, kind: str = "test.live") -> None:
    """`count` engine-style transactions: lock the run, emit, broadcast after commit."""
    for i in range(count):
        with locked_run(run_id) as run:
            emit(run, kind, data={"i": i})


def store_events(run_id: int, count: int) -> None:
    """Stored history nobody listened to: one transaction, no broadcasts."""
    with mock.patch.object(events, "broadcast"), locked_run(run_id) as run:
        for i in range(count):
            emit(run, "test.stored", data={"i": i})


def open_socket(
    server: str, run_id: int, query: str = "", headers: dict | None = None
) -> ClientConnection:
    return connect(
        f"ws://{server}/ws/runs/{run_id}/" + (f"?{query}" if query else ""),
        origin=f"http://{server}",  # the origin check refuses sockets without one
        additional_headers=headers or {},
        open_timeout=10,
    )


def bearer(user) -> dict:
    return {"Authorization": f"Bearer {ApiToken.issue(user)}"}


def session(user) -> dict:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return {"Cookie": f"{name}={client.cookies[name].value}"}


def test_replay_then_live_with_events_committed_during_the_replay(server, run, owner):
    store_events(run.pk, STORED)
    live_started: list[float] = []
    errors: list[BaseException] = []

    def emit_live() -> None:
        try:
            for i in range(LIVE):
                emit_events(run.pk, 1)
                if i == 0:
                    live_started.append(time.monotonic())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    emitter = threading.Thread(target=emit_live, name="live-emitter")
    received: list[dict] = []
    replay_done = None
    with open_socket(server, run.pk, "after=0", bearer(owner)) as socket:
        emitter.start()  # the consumer starts its replay right after the handshake
        try:
            while len(received) < STORED + LIVE:
                received.append(json.loads(socket.recv(timeout=15)))
                if received[-1]["seq"] == STORED:
                    replay_done = time.monotonic()
        finally:
            emitter.join(60)
        with pytest.raises(TimeoutError):
            socket.recv(timeout=1)  # and nothing after the last one

    assert not errors, errors
    assert [e["seq"] for e in received] == list(range(1, STORED + LIVE + 1))
    stored = [e.as_json() for e in Event.objects.filter(run=run).order_by("seq")]
    # Each frame is the event's data plus `html`, its feed line as the run page renders it.
    assert all(e.pop("html").startswith("<li ") for e in received)
    assert received == stored
    # The scenario really overlapped: live events were committed before the stored history
    # had been replayed.
    assert live_started and replay_done and live_started[0] < replay_done


def test_idle_socket_still_receives_after_twelve_seconds(server, run, viewer):
    """redis-py 8 times sockets out after 5 s, as long as the layer's blocking receive; a
    host config without a longer `socket_timeout` kills idle consumers with code 1011."""
    with open_socket(server, run.pk, headers=session(viewer)) as socket:
        with pytest.raises(TimeoutError):
            socket.recv(timeout=12)  # a dead consumer raises ConnectionClosedError instead
        emit_events(run.pk, 1)
        event = json.loads(socket.recv(timeout=10))
    assert event["seq"] == 1 and event["kind"] == "test.live"


def test_anonymous_and_outsider_are_refused_with_4403(server, run, outsider, viewer):
    refused = {
        "anonymous": ("", {}),
        "outsider token": ("", bearer(outsider)),
        "outsider token in query": (f"token={ApiToken.issue(outsider)}", {}),
        "outsider session": ("", session(outsider)),
        "unknown token": ("token=orc_unknown", {}),
    }
    codes = {}
    for name, (query, headers) in refused.items():
        with open_socket(server, run.pk, query, headers) as socket:
            with pytest.raises(ConnectionClosedError) as closed:
                socket.recv(timeout=10)
            codes[name] = closed.value.rcvd.code if closed.value.rcvd else None
    assert codes == dict.fromkeys(refused, 4403)

    # The viewer's token in the query string (how a browser authenticates) is let in.
    emit_events(run.pk, 1)
    with open_socket(server, run.pk, f"token={ApiToken.issue(viewer)}") as socket:
        assert json.loads(socket.recv(timeout=10))["seq"] == 1


def test_broadcasts_go_only_to_groups_someone_is_in(redis_layer):
    """Before sending, the sender asks Redis which groups have members (one round trip): a
    group nobody joined is skipped, one with a member is sent to."""
    layer = channel_layers["default"]

    async def ask() -> tuple[set | None, set | None]:
        channel = await layer.new_channel()
        await layer.group_add("run.990001", channel)
        try:
            sends = [(layer, "run.990001", {}), (layer, "run.990002", {})]
            joined = await events._listened(sends)
        finally:
            await layer.group_discard("run.990001", channel)
        return joined, await events._listened(sends)

    joined, after = asyncio.run(ask())
    assert joined == {"run.990001"}
    assert after == set()
