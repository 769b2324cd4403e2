"""Access that stays true: an open run-event WebSocket stops once its user may no longer see
the run (membership removed, token deleted, account deactivated, session signed out).

The consumer re-checks at most every ORCHESTRA_SOCKET_RECHECK seconds, before forwarding and
on a timer; the tests set it small and await the close frame instead of sleeping.
"""

from functools import partial

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from orchestra.consumers import CLOSE_FORBIDDEN, RunConsumer
from orchestra.models import ApiToken, Membership, Run, Task
from tests.orchestra.test_run_socket import (
    aemit,
    communicator,
    memory_layer,  # noqa: F401 - autouse fixture: a fresh in-memory layer per test
    open_socket,
    run_async,
    session_cookie,
)

pytestmark = pytest.mark.django_db(transaction=True)

RECHECK = 0.2


@pytest.fixture(autouse=True)
def quick_recheck(settings):
    settings.ORCHESTRA_SOCKET_RECHECK = RECHECK


@pytest.fixture
def run(demo, owner) -> Run:
    task = Task.objects.create(project=demo, title="Socket access", created_by=owner)
    return Run.objects.create(task=task, project=demo)


def bearer(user) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {ApiToken.issue(user)}".encode())


@database_sync_to_async
def remove_membership(user) -> None:
    assert Membership.objects.filter(user=user).delete()[0] == 1


@database_sync_to_async
def deactivate(user) -> None:
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)


@database_sync_to_async
def delete_tokens(user) -> None:
    assert ApiToken.objects.filter(user=user).delete()[0] == 1


@database_sync_to_async
def sign_out_everywhere() -> None:
    assert Session.objects.all().delete()[0] >= 1


async def stream_then_lose_access(comm, run_id: int, lose) -> None:
    """Open, receive one live event, lose access, then: the socket closes with 4403 within a
    few recheck intervals, and events emitted afterwards never arrive."""
    await open_socket(comm)
    try:
        await aemit(run_id, 1)
        first = await comm.receive_json_from(timeout=5)
        assert first["seq"] == 1
        await lose()
        # Idle after the loss: the timer alone must close it.
        closed = await comm.receive_output(timeout=RECHECK * 10)
        assert closed == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
        await aemit(run_id, 2)
        assert await comm.receive_nothing(timeout=RECHECK * 3)
    finally:
        await comm.disconnect()


def test_socket_closes_when_membership_is_removed(run, viewer):
    comm = communicator(run.pk, "", [session_cookie(viewer)])
    run_async(partial(stream_then_lose_access, comm, run.pk, partial(remove_membership, viewer)))


def test_socket_closes_when_the_user_is_deactivated(run, operator):
    comm = communicator(run.pk, "", [bearer(operator)])
    run_async(partial(stream_then_lose_access, comm, run.pk, partial(deactivate, operator)))


def test_session_socket_closes_when_the_user_is_deactivated(run, viewer):
    comm = communicator(run.pk, "", [session_cookie(viewer)])
    run_async(partial(stream_then_lose_access, comm, run.pk, partial(deactivate, viewer)))


def test_socket_closes_when_its_token_is_revoked(run, viewer):
    comm = communicator(run.pk, "", [bearer(viewer)])
    run_async(partial(stream_then_lose_access, comm, run.pk, partial(delete_tokens, viewer)))


def test_socket_closes_when_the_session_is_signed_out(run, viewer):
    comm = communicator(run.pk, "", [session_cookie(viewer)])
    run_async(partial(stream_then_lose_access, comm, run.pk, sign_out_everywhere))


def test_forwarding_checks_access_before_sending(run, viewer, monkeypatch):
    """Without the timer, a live event after the interval is not forwarded to someone who
    lost access: the check before forwarding closes the socket instead."""

    async def no_timer(self) -> None:
        return None

    monkeypatch.setattr(RunConsumer, "_recheck_forever", no_timer)
    comm = communicator(run.pk, "", [session_cookie(viewer)])

    async def body():
        await open_socket(comm)
        try:
            await remove_membership(viewer)
            # Let the last check grow older than the interval (nothing can be awaited:
            # the point is that nothing happens).
            assert await comm.receive_nothing(timeout=RECHECK * 2)
            await aemit(run.pk, 1)
            closed = await comm.receive_output(timeout=5)
            assert closed == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
            assert await comm.receive_nothing(timeout=RECHECK * 2)
        finally:
            await comm.disconnect()

    run_async(body)


def test_socket_keeps_streaming_while_access_holds(run, viewer, outsider):
    """Several intervals pass and other people lose access: this viewer's socket stays open
    and still gets every event."""
    comm = communicator(run.pk, "", [bearer(viewer)])

    async def body():
        await open_socket(comm)
        try:
            await deactivate(outsider)
            assert await comm.receive_nothing(timeout=RECHECK * 4)
            await aemit(run.pk, 2)
            received = [await comm.receive_json_from(timeout=5) for _ in range(2)]
            assert [e["seq"] for e in received] == [1, 2]
        finally:
            await comm.disconnect()

    run_async(body)
