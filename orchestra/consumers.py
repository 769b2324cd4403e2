"""The live event stream of one run over a WebSocket: `/ws/runs/<id>/?after=SEQ`.

The database is the source of truth and the channel layer only a doorbell. A client gets
every event with `seq > after` exactly once and in order: the consumer joins the run's group
*before* it replays from the database, so nothing committed during the replay is missed;
live messages it already replayed are dropped by seq; a jump in seq (a message the layer
dropped, e.g. over capacity) is filled from the database before the live event is sent.
Each WebSocket text frame is one event: `Event.as_json()` plus `html`, the event's feed line
as the run page renders it (the same partial and presenter, `present.render_event_line`), so
the browser inserts it as is; the broadcast itself stays data, and other clients read the
event's fields as before.

Close codes: 4403 when the client is anonymous, its token is unknown, or it may not see the
run (the same code for a run that does not exist, so existence does not leak); 4400 when
`after` is not a non-negative integer. The consumer accepts and then closes with the code:
closing before the handshake completes makes daphne answer a bare HTTP 403, and the client
would never see why.

Access is not only checked at the handshake: at most every `ORCHESTRA_SOCKET_RECHECK` seconds
(before forwarding, and on a timer so an idle socket is checked too) the consumer asks again,
from the database, whether the credential still stands (the token still exists, the session
is still signed in, the user is still active) and whether the user may still see the run.
When not, it closes with 4403 and forwards nothing more (1011 if the check itself failed:
access that cannot be confirmed is not assumed).
"""

import asyncio
import contextlib
import logging
import time
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.http import Http404
from django.utils import timezone

from orchestra.access import get_run_for_user, visible_projects
from orchestra.dashboard.inbox import render_inbox
from orchestra.dashboard.present import render_event_line
from orchestra.events import project_group, register_embedded_loop, run_group
from orchestra.models import ApiToken, Event

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_INTERNAL_ERROR = 1011
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
    return _may_see_run(user, run_id)


def _may_see_run(user, run_id: int) -> bool:
    try:
        get_run_for_user(user, run_id)
    except Http404:
        return False
    return True


@database_sync_to_async
def still_allowed(credential: tuple[str, str], run_id: int) -> bool:
    """Whether the credential a socket opened with still stands and its user may still see
    the run, read afresh from the database.

    `credential` is ("token", digest) or ("session", session key): a deleted token, a session
    that was signed out (or whose password hash changed), and a deactivated user all fail.
    """
    kind, value = credential
    if kind == "token":
        token = ApiToken.objects.select_related("user").filter(digest=value).first()
        user = token.user if token is not None and token.user.is_active else None
    else:
        store = import_module(settings.SESSION_ENGINE).SessionStore(value)
        # The same check Django makes on each request: session, backend, password hash,
        # and the backend refusing inactive users.
        user = get_user(SimpleNamespace(session=store))
        if not (user.is_authenticated and user.is_active):
            user = None
    return user is not None and _may_see_run(user, run_id)


def with_line(event: dict) -> dict:
    """The event as a frame: its data plus `html`, its feed line. A line that fails to
    render is left out (and logged) rather than dropping the event."""
    try:
        return {**event, "html": render_event_line(event)}
    except Exception:
        logger.warning("event %s: feed line failed to render", event.get("seq"), exc_info=True)
        return event


@database_sync_to_async
def events_between(run_id: int, after: int, upto: int | None = None) -> list[dict]:
    """At most BATCH events of the run with `after < seq [<= upto]`, in seq order, as
    frames (`with_line`)."""
    events = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    return [with_line(event) for event in Event.json_rows(events.order_by("seq")[:BATCH])]


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
        self._recheck_task: asyncio.Task | None = None
        self._credential: tuple[str, str] | None = None
        self._checked_at = time.monotonic()
        self._revoked = False
        self.recheck_interval = float(settings.ORCHESTRA_SOCKET_RECHECK)
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
        self._checked_at = time.monotonic()
        self._recheck_task = asyncio.get_running_loop().create_task(self._recheck_forever())
        async with self._lock:
            await self._send_stored()
        self._arm_settle()

    async def run_event(self, message: dict) -> None:
        """Live events from the group (those one transaction committed): drop duplicates,
        fill gaps from the DB, forward."""
        async with self._lock:
            if not await self._access_holds():
                return
            for event in message["events"]:
                seq = event["seq"]
                if seq > self.last_seq:
                    if seq > self.last_seq + 1:
                        await self._send_stored(upto=seq - 1)
                    await self._send_event(event)
        self._arm_settle()

    async def run_text(self, message: dict) -> None:
        """A model's text so far, while it streams: not an event (no seq of its own, never
        stored), so it carries the seq it follows; the frame says `live`."""
        async with self._lock:
            if not await self._access_holds():
                return
            await self.send_json({"live": message["live"], "after": self.last_seq})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The stream is read-only; client frames are ignored (and never parsed, so a
        malformed one cannot kill the connection)."""

    async def disconnect(self, code: int) -> None:
        self._revoked = True
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        for task in (self._settle_task, self._recheck_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

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
            self._credential = ("token", ApiToken.digest_of(raw))
            return await user_for_token(raw)
        user = self.scope.get("user") or AnonymousUser()
        if not (user.is_authenticated and user.is_active):
            return None
        session_key = getattr(self.scope.get("session"), "session_key", None)
        if not session_key:
            return None
        self._credential = ("session", session_key)
        return user

    async def _access_holds(self) -> bool:
        """False once access is gone (the socket is then closing). Asks the database again
        when the last check is `recheck_interval` old. Hold the lock."""
        if self._revoked:
            return False
        if time.monotonic() - self._checked_at < self.recheck_interval:
            return True
        try:
            allowed = self._credential is not None and await still_allowed(
                self._credential, self.run_id
            )
        except Exception:
            # Fail closed: a stream whose access cannot be confirmed stops; the client may
            # reconnect, and is checked again at the handshake.
            logger.warning("run %s: access re-check failed", self.run_id, exc_info=True)
            await self._revoke(CLOSE_INTERNAL_ERROR)
            return False
        self._checked_at = time.monotonic()
        if not allowed:
            logger.info("run %s: access withdrawn, closing the socket", self.run_id)
            await self._revoke(CLOSE_FORBIDDEN)
        return allowed

    async def _revoke(self, code: int) -> None:
        """Stop forwarding for good: leave the group, then close with `code`."""
        self._revoked = True
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.close(code=code)

    async def _recheck_forever(self) -> None:
        """Check an idle socket too: nothing forwarded must not mean nothing checked."""
        while not self._revoked:
            due = self._checked_at + self.recheck_interval - time.monotonic()
            await asyncio.sleep(max(due, 0.01))
            async with self._lock:
                await self._access_holds()

    async def _refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)

    async def _send_stored(self, upto: int | None = None) -> None:
        """Send stored events after `last_seq` (up to `upto`), in batches. Hold the lock."""
        while batch := await events_between(self.run_id, self.last_seq, upto):
            for event in batch:
                await self._send_event(event)

    async def _send_event(self, event: dict) -> None:
        """Send one event as a frame; a live one (from the group) gets its line here: the
        line reads no database, only the event."""
        await self.send_json(event if "html" in event else with_line(event))
        self.last_seq = event["seq"]

    def _arm_settle(self) -> None:
        """(Re)start the quiet-period timer after which `_settle` re-reads the database."""
        if self._revoked:
            return
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
                if await self._access_holds():
                    await self._send_stored()
        except Exception:
            logger.warning("run %s: settle read failed", self.run_id, exc_info=True)


# --- the inbox: what waits for one user, on every page ------------------------------------------
@database_sync_to_async
def project_ids(user) -> list[int]:
    return list(visible_projects(user).values_list("pk", flat=True))


@database_sync_to_async
def inbox_frame(user) -> dict:
    return render_inbox(user)


class InboxConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/inbox/`: the signed-in user's approvals badge and the home page's live part
    (active runs, waiting checkpoints), rendered from one read and pushed: once at connect,
    then after the events that change them in any project the user can see.

    It joins the doorbell group of each such project (`events.project_group`); a burst of
    rings becomes one frame at most every `gap` seconds. Session users only (4403 else), and
    the session is re-checked every `ORCHESTRA_SOCKET_RECHECK` seconds like the run stream.
    """

    gap: float = 0.3
    RINGS = ("run.", "approval.", "phase.", "plan.", "step.", "report.")

    async def connect(self) -> None:
        self._pending: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._last = 0.0
        self.recheck_interval = float(settings.ORCHESTRA_SOCKET_RECHECK)
        self._checked_at = time.monotonic()
        user = self.scope.get("user") or AnonymousUser()
        session_key = getattr(self.scope.get("session"), "session_key", None)
        if not (user.is_authenticated and user.is_active and session_key):
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user, self.session_key = user, session_key
        register_embedded_loop(asyncio.get_running_loop())
        self.groups = [project_group(pk) for pk in await project_ids(user)]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self._push()

    async def inbox_ring(self, message: dict) -> None:
        if any(kind.startswith(self.RINGS) for kind in message.get("kinds", ())):
            self._schedule()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read-only, as the run stream."""

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_pending", None) is not None:
            self._pending.cancel()

    def _schedule(self) -> None:
        if self._pending is not None or (self._task is not None and not self._task.done()):
            if self._pending is None:
                self._pending = asyncio.get_running_loop().call_later(self.gap, self._fire)
            return
        delay = max(0.0, self._last + self.gap - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._task = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        self._last = time.monotonic()
        try:
            if time.monotonic() - self._checked_at >= self.recheck_interval:
                credential = ("session", self.session_key)
                if not await still_signed_in(credential):
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                self._checked_at = time.monotonic()
            await self.send_json(await inbox_frame(self.user))
        except Exception:
            logger.warning("inbox of %s: push failed", self.user, exc_info=True)


@database_sync_to_async
def still_signed_in(credential: tuple[str, str]) -> bool:
    store = import_module(settings.SESSION_ENGINE).SessionStore(credential[1])
    user = get_user(SimpleNamespace(session=store))
    return bool(user.is_authenticated and user.is_active)
