"""The inbox WebSocket (/ws/inbox/) through the whole ASGI stack on the in-memory layer: the
badge and the home page's live part pushed together, always agreeing, after the events of the
user's projects only, a burst coalesced into few frames; anonymous sockets refused."""

import asyncio
import re

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from approvals.models import Checkpoint
from orchestra import events
from orchestra.asgi import application
from orchestra.consumers import InboxConsumer
from orchestra.engine import decide_checkpoint, start_run
from orchestra.events import emit, locked_run
from orchestra.models import Run

from .test_run_socket import ORIGIN, close_code, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def memory_layer(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr(events, "_embedded_loop", None)
    monkeypatch.setattr(InboxConsumer, "gap", 0.2)


def inbox(headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/inbox/", headers=[ORIGIN, *headers])


def agree(frame: dict) -> int:
    """The badge's count equals the frame's and the number of checkpoints the home part
    lists (fewer than ten here); returns the count."""
    badge = re.search(r'data-count="(\d+)"', frame["badge"])[1]
    listed = len(re.findall(r'<li data-checkpoint="\d+"', frame["home"]))
    assert int(badge) == frame["count"] == listed, frame
    return frame["count"]


async def frames_until(comm, predicate, timeout: float = 10) -> list[dict]:
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await comm.receive_json_from(timeout=timeout)
            seen.append(frame)
            if predicate(frame):
                return seen


def test_anonymous_sockets_are_refused(db):
    async def body():
        assert await close_code(inbox([])) == 4403

    async_to_sync(body)()


def test_the_badge_and_home_arrive_together_and_agree_as_a_run_waits_and_moves_on(
    demo, owner, approver, outsider
):
    async def body():
        mine = inbox([await database_sync_to_async(session_cookie)(approver)])
        theirs = inbox([await database_sync_to_async(session_cookie)(outsider)])
        for comm in (mine, theirs):
            connected, _ = await comm.connect(timeout=5)
            assert connected
        first = await mine.receive_json_from(timeout=5)
        assert agree(first) == 0 and "No checkpoint is waiting." in first["home"]
        assert agree(await theirs.receive_json_from(timeout=5)) == 0

        run = await database_sync_to_async(start_run)(owner, demo, "Greet live")
        waiting = await frames_until(mine, lambda f: f["count"] == 1)
        for frame in waiting:
            agree(frame)
        checkpoint = await database_sync_to_async(
            lambda: Checkpoint.objects.get(run=run, status="pending")
        )()
        assert f'href="/approvals/{checkpoint.pk}/"' in waiting[-1]["home"]
        assert "Greet live" in waiting[-1]["home"]  # the active run is listed too

        await database_sync_to_async(decide_checkpoint)(approver, checkpoint, "approve")
        moved = await frames_until(
            mine, lambda f: f'href="/approvals/{checkpoint.pk}/"' not in f["home"]
        )
        for frame in moved:
            agree(frame)
        # The outsider sees nothing of a project they are not in.
        assert await theirs.receive_nothing(timeout=0.5)
        for comm in (mine, theirs):
            await comm.disconnect()

    async_to_sync(body)()


def test_a_burst_of_events_becomes_few_frames(demo, owner):
    run = Run.objects.create(task=demo.tasks.create(title="Burst"), project=demo)

    def burst():
        for i in range(30):
            with locked_run(run.pk) as locked:
                emit(locked, "step.test", data={"i": i})

    async def body():
        comm = inbox([await database_sync_to_async(session_cookie)(owner)])
        connected, _ = await comm.connect(timeout=5)
        assert connected
        await comm.receive_json_from(timeout=5)
        await database_sync_to_async(burst)()
        frames = [await comm.receive_json_from(timeout=5)]
        while not await comm.receive_nothing(timeout=0.6):
            frames.append(await comm.receive_json_from(timeout=5))
        # 30 rings in a burst; one frame per 0.2 s gap at most, so a handful, not 30.
        assert 1 <= len(frames) <= 5, len(frames)
        assert "Burst" in frames[-1]["home"]
        await comm.disconnect()

    async_to_sync(body)()
