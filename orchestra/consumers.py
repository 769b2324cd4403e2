"""The live event stream of one run over a WebSocket: `/ws/runs/<id>/?after=SEQ`.

The database is the source of truth and the channel layer only a doorbell. A client gets
every event with `seq > after` exactly once and in order: the consumer joins the run's group
*before* it replays from the database, so nothing committed during the replay is missed;
live messages it already replayed are dropped by seq; a jump in seq (a message the layer
dropped, e.g. over capacity) is filled from the database before the live event is sent.
Each WebSocket text frame is one event, exactly `Event.as_json()`.

Close codes: 4403 when the client is anonymous, its token is unknown, or it may not see the
run (the same code for a run that does not exist, so existence does not leak); 4400 when
`after` is not a non-negative integer. The consumer accepts and then closes with the code:
closing before the handshake completes makes daphne answer a bare HTTP 403, and the client
would never see why.
"""

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth.models import AnonymousUser
from django.http import Http404
from django.utils import timezone

from orchestra.access import get_run_for_user
from orchestra.events import register_embedded_loop, run_group
from orchestra.models import ApiToken, Event

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
# Events read from the database per query, for replays and gap fills.
BATCH = 500


@database_sync_to_async
def user_for_token(raw: str):
    """The active user owning bearer token `raw`, or None."""
    token = ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(raw)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


@database_sync_to_async
def may_see_run(user, run_id: int) -> bool:
    try:
        get_run_for_user(user, run_id)
    except Http404:
        return False
    return True


@database_sync_to_async
def events_between(run_id: int, after: int, upto: int | None = None) -> list[dict]:
    """At most BATCH events of the run with `after < seq [<= upto]`, in seq order."""
    events = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    return [event.as_json() for event in events.select_related("step").order_by("seq")[:BATCH]]


class RunConsumer(AsyncJsonWebsocketConsumer):
    """Replays a run's stored events after `?after=SEQ`, then forwards live ones.

    Authentication, in this order: an `Authorization: Bearer <token>` header, a `?token=`
    query parameter (browsers cannot set headers on a WebSocket), then the session user from
    `AuthMiddlewareStack`. A token that is given but unknown is refused rather than falling
    back to the session, so a client never streams as someone it did not mean to be.
    """

    # After live messages stop for this long, the database is read once more: a message
    # dropped at the tail of a burst has no successor whose seq would reveal the gap.
    settle_delay: float = 2.0

    run_id: int
    last_seq: int

    async def connect(self) -> None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.last_seq = 0
        self._lock = asyncio.Lock()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._settle_task: asyncio.Task | None = None
        query = parse_qs(
            self.scope.get("query_string", b"").decode("latin1"), keep_blank_values=True
        )

        user = await self._user(query)
        if user is None or not await may_see_run(user, self.run_id):
            await self._refuse(CLOSE_FORBIDDEN)
            return
        try:
            after = int(query.get("after", ["0"])[-1])
        except ValueError:
            after = -1
        if after < 0:
            await self._refuse(CLOSE_BAD_REQUEST)
            return

        # Embedded mode: worker threads broadcast through the in-memory layer on this loop.
        register_embedded_loop(asyncio.get_running_loop())
        # Subscribe before reading the database: an event committed during the replay is
        # then either in the replay or queued for run_event, never in neither.
        group = run_group(self.run_id)
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups = [group]  # discarded by websocket_disconnect
        await self.accept()
        self.last_seq = after
        async with self._lock:
            await self._send_stored()
        self._arm_settle()

    async def run_event(self, message: dict) -> None:
        """Live events from the group (those one transaction committed): drop duplicates,
        fill gaps from the DB, forward."""
        async with self._lock:
            for event in message["events"]:
                seq = event["seq"]
                if seq > self.last_seq:
                    if seq > self.last_seq + 1:
                        await self._send_stored(upto=seq - 1)
                    await self._send_event(event)
        self._arm_settle()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The stream is read-only; client frames are ignored (and never parsed, so a
        malformed one cannot kill the connection)."""

    async def disconnect(self, code: int) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        if self._settle_task is not None:
            self._settle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settle_task

    async def _user(self, query: dict[str, list[str]]):
        """The authenticated user, or None."""
        raw = None
        for name, value in self.scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    raw = credentials.strip()
        if raw is None and "token" in query:
            raw = query["token"][-1]
        if raw is not None:
            return await user_for_token(raw)
        user = self.scope.get("user") or AnonymousUser()
        return user if user.is_authenticated and user.is_active else None

    async def _refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)

    async def _send_stored(self, upto: int | None = None) -> None:
        """Send stored events after `last_seq` (up to `upto`), in batches. Hold the lock."""
        while batch := await events_between(self.run_id, self.last_seq, upto):
            for event in batch:
                await self._send_event(event)

    async def _send_event(self, event: dict) -> None:
        await self.send_json(event)
        self.last_seq = event["seq"]

    def _arm_settle(self) -> None:
        """(Re)start the quiet-period timer after which `_settle` re-reads the database."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = asyncio.get_running_loop().call_later(
            self.settle_delay, self._start_settle
        )

    def _start_settle(self) -> None:
        if self._settle_task is not None and not self._settle_task.done():
            self._arm_settle()  # the previous read is still going; look again later
            return
        self._settle_task = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        try:
            async with self._lock:
                await self._send_stored()
        except Exception:
            logger.warning("run %s: settle read failed", self.run_id, exc_info=True)
