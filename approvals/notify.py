"""Notifications about checkpoints: a signed webhook POST and emails, each a `Delivery` row
with its own attempts.

A webhook's body is Orchestra's JSON payload or, per project, a Slack-compatible message. It
is signed twice when the project has a secret: `X-Orchestra-Signature` (HMAC-SHA256 over
"<timestamp>.<body>", hex) and the Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">`,
standardwebhooks.com), so receivers built on either verify without code of their own.

`notify_checkpoint` runs inside the engine's transaction and only writes rows; the first
attempt of each delivery is enqueued after commit. `deliver` makes one attempt: it claims the
attempt with a conditional UPDATE (so two workers never send the same attempt), sends outside
any transaction, then records the outcome. Failed attempts back off and are retried by
`deliver_due` (Celery beat); a delivery that runs out of attempts becomes `failed` and says so
in its run's event log.
"""

import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from approvals.messages import email_message, sign, standard_signature, webhook_body
from approvals.models import Checkpoint, Delivery
from orchestra import queue
from orchestra.access import DECIDE_ROLES
from orchestra.events import emit, locked_run
from orchestra.models import Membership

logger = logging.getLogger(__name__)

EVENTS = ("opened", "decided", "expired", "reminder")
# Wait before the retry that follows the nth failed attempt; the last value repeats (the cap).
RETRY_DELAYS = (
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
)
# A claimed attempt that never recorded its outcome (the worker died) is due again after
# the send timeout plus this margin.
CLAIM_MARGIN = timedelta(seconds=60)
# A delivery whose first attempt has not started this long after it was created was lost
# (say, with a broker restart); `deliver_due` sends it.
LOST_FIRST_ATTEMPT = timedelta(minutes=1)
# At most this many deliveries per `deliver_due` call; the rest wait for the next beat.
DUE_BATCH = 100
ERROR_BODY_CHARS = 200


def notify_checkpoint(checkpoint: Checkpoint, event: str) -> list[Delivery]:
    """Create one delivery per channel and target for `event` on `checkpoint` and enqueue the
    first attempt of each after the surrounding transaction commits.

    Call it inside the transaction that changed the checkpoint (the engine's `locked_run`), so
    nobody is notified about a change that rolls back. Returns the rows as created.
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {', '.join(EVENTS)}")
    project = checkpoint.run.project
    payload = checkpoint_payload(checkpoint, event)
    deliveries = []
    if project.webhook_url:
        deliveries.append(
            Delivery(
                checkpoint=checkpoint,
                event=event,
                channel=Delivery.Channel.WEBHOOK,
                target=project.webhook_url,
                payload=payload,
            )
        )
    for address in recipients(checkpoint, event):
        deliveries.append(
            Delivery(
                checkpoint=checkpoint,
                event=event,
                channel=Delivery.Channel.EMAIL,
                target=address,
                payload=payload,
            )
        )
    for delivery in deliveries:
        delivery.save()
        queue.enqueue("approvals.deliver", delivery.pk)
    return deliveries


def recipients(checkpoint: Checkpoint, event: str) -> list[str]:
    """Email addresses for `event`: the project's notify list, then the members who may
    decide the checkpoint (approvers and admins; only those in its approver group if it has
    one; for a reminder, those in its escalation group if it has one). Deduplicated without
    regard to case, blanks skipped."""
    project = checkpoint.run.project
    group = checkpoint.approver_group
    if event == "reminder" and checkpoint.escalate_group:
        group = checkpoint.escalate_group
    deciders = Membership.objects.filter(
        project=project, role__in=DECIDE_ROLES, user__is_active=True
    ).exclude(user_id__in=checkpoint.excluded_approvers or [])
    if group:
        deciders = deciders.filter(user__groups__name=group)
    member_emails = deciders.order_by("user__username").values_list("user__email", flat=True)
    addresses: dict[str, str] = {}
    for address in [*(project.notify_emails or []), *member_emails]:
        if not isinstance(address, str) or not address.strip():
            continue
        addresses.setdefault(address.strip().lower(), address.strip())
    return list(addresses.values())


def checkpoint_payload(checkpoint: Checkpoint, event: str) -> dict:
    """What every channel says about `event`; JSON-safe."""
    run = checkpoint.run
    return {
        "event": event,
        "checkpoint": {
            "id": checkpoint.pk,
            "kind": checkpoint.kind,
            "status": checkpoint.status,
            "decision": checkpoint.decision,
            "requested_at": _iso(checkpoint.requested_at),
            "expires_at": _iso(checkpoint.expires_at),
            "decided_by": checkpoint.decided_by.get_username() if checkpoint.decided_by else None,
            "comment": checkpoint.comment,
            "shown": checkpoint.shown,
        },
        "run": {"id": run.pk, "status": run.status, "title": run.task.title},
        "project": run.project.slug,
        "url": approval_url(checkpoint.pk),
    }


def approval_url(checkpoint_id: int) -> str:
    base = settings.ORCHESTRA_BASE_URL.rstrip("/")
    return base + reverse("dashboard:approval", args=[checkpoint_id])


def deliver(delivery_id: int, *, now: datetime | None = None) -> Delivery:
    """Make one attempt at `delivery_id` if it is pending and due; otherwise leave it alone.

    Claims the attempt with a conditional UPDATE on (status, attempts, due), so concurrent
    callers send at most once per attempt; sends outside any transaction; records the
    outcome. The last failed attempt marks it failed under the run lock (`locked_run`) and
    emits "notification.failed" on the run.
    """
    return _attempt(delivery_id, now or timezone.now())[0]


def deliver_due(now: datetime | None = None) -> int:
    """Attempt every pending delivery whose retry is due, and every one whose first attempt
    was lost; returns how many were attempted."""
    now = now or timezone.now()
    due = Q(next_attempt_at__lte=now) | Q(
        next_attempt_at__isnull=True, created_at__lte=now - LOST_FIRST_ATTEMPT
    )
    ids = list(
        Delivery.objects.filter(due, status=Delivery.Status.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)[:DUE_BATCH]
    )
    attempted = 0
    for delivery_id in ids:
        try:
            attempted += _attempt(delivery_id, now)[1]
        except Delivery.DoesNotExist:  # its run was deleted meanwhile
            continue
    return attempted


def failures_for(checkpoint: Checkpoint) -> list[Delivery]:
    """The checkpoint's deliveries that ran out of attempts, oldest first."""
    return list(checkpoint.deliveries.filter(status=Delivery.Status.FAILED).order_by("pk"))


def backoff(attempts: int) -> timedelta:
    """How long to wait after `attempts` failed attempts (1-based)."""
    return RETRY_DELAYS[min(max(attempts, 1), len(RETRY_DELAYS)) - 1]


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    status: int | None = None
    error: str = ""


def _attempt(delivery_id: int, now: datetime) -> tuple[Delivery, bool]:
    delivery = Delivery.objects.select_related("checkpoint__run__project").get(pk=delivery_id)
    if delivery.status != Delivery.Status.PENDING:
        return delivery, False
    attempt = delivery.attempts + 1
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    claimed = Delivery.objects.filter(
        due, pk=delivery.pk, status=Delivery.Status.PENDING, attempts=delivery.attempts
    ).update(attempts=attempt, next_attempt_at=now + _claim_lease())
    if not claimed:
        delivery.refresh_from_db()
        return delivery, False
    delivery.attempts = attempt
    if delivery.channel == Delivery.Channel.WEBHOOK:
        outcome = _send_webhook(delivery)
    else:
        outcome = _send_email(delivery)
    _record(delivery, attempt, outcome, now)
    delivery.refresh_from_db()
    return delivery, True


def _claim_lease() -> timedelta:
    return timedelta(seconds=settings.ORCHESTRA_WEBHOOK_TIMEOUT) + CLAIM_MARGIN


def _record(delivery: Delivery, attempt: int, outcome: _Outcome, now: datetime) -> None:
    pending = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING)
    if outcome.delivered:
        pending.update(
            status=Delivery.Status.DELIVERED,
            last_status=outcome.status,
            last_error="",
            next_attempt_at=None,
            delivered_at=timezone.now(),
        )
        return
    # Only the attempt that still holds the claim records a failure: a later attempt (after
    # this one outlived its lease) owns the row now.
    ours = pending.filter(attempts=attempt)
    if attempt < settings.ORCHESTRA_WEBHOOK_MAX_ATTEMPTS:
        # From the end of a slow attempt on the wall clock, or from a caller's later clock.
        ours.update(
            last_status=outcome.status,
            last_error=outcome.error,
            next_attempt_at=max(now, timezone.now()) + backoff(attempt),
        )
        return
    with locked_run(delivery.checkpoint.run_id) as run:
        failed = ours.update(
            status=Delivery.Status.FAILED,
            last_status=outcome.status,
            last_error=outcome.error,
            next_attempt_at=None,
        )
        if failed:
            emit(
                run,
                "notification.failed",
                step=delivery.checkpoint.step,
                actor="notifier",
                data={
                    "delivery": delivery.pk,
                    "checkpoint": delivery.checkpoint_id,
                    "event": delivery.event,
                    "channel": delivery.channel,
                    "target": delivery.target,
                    "error": outcome.error,
                    "attempts": attempt,
                },
            )
    if failed:
        logger.warning(
            "notification %s (%s to %s) failed for good: %s",
            delivery.pk,
            delivery.channel,
            delivery.target,
            outcome.error,
        )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: the signed body is not re-sent elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _send_webhook(delivery: Delivery) -> _Outcome:
    url = delivery.target
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return _Outcome(False, error=f"not an http(s) URL: {url[:100]}")
    project = delivery.checkpoint.run.project
    body = webhook_body(delivery.payload, project.webhook_format)
    # The wall clock, not the scheduling clock: receivers compare it to theirs.
    timestamp = str(int(time.time()))
    # The same on every attempt of this delivery, so a receiver can drop a repeat.
    message_id = f"msg_orchestra_{delivery.pk}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Orchestra-Webhook/1",
        "X-Orchestra-Event": delivery.event,
        "X-Orchestra-Delivery": str(delivery.pk),
        "X-Orchestra-Timestamp": timestamp,
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
    }
    secret = project.webhook_secret
    if secret:
        headers["X-Orchestra-Signature"] = sign(secret, timestamp, body)
        headers["webhook-signature"] = standard_signature(secret, message_id, timestamp, body)
    # The scheme was checked above.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    timeout = settings.ORCHESTRA_WEBHOOK_TIMEOUT
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            status = response.status
    except urllib.error.HTTPError as exc:
        return _Outcome(False, status=exc.code, error=_http_error(exc.code, exc))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
        return _Outcome(False, error=_connection_error(url, exc, timeout))
    if 200 <= status < 300:
        return _Outcome(True, status=status)
    return _Outcome(False, status=status, error=f"HTTP {status}")


def _http_error(status: int, exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(4 * ERROR_BODY_CHARS).decode("utf-8", "replace")
    except OSError:
        text = ""
    text = " ".join(text.split())[:ERROR_BODY_CHARS]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _connection_error(url: str, exc: Exception, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, TimeoutError):
        return f"no answer from {host} within {timeout:g} s"
    return f"could not reach {host}: {reason}"[:500]


def _send_email(delivery: Delivery) -> _Outcome:
    subject, body = email_message(delivery.payload)
    try:
        send_mail(subject, body, None, [delivery.target])
    except Exception as exc:  # any backend failure is a failed attempt, recorded and retried
        return _Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return _Outcome(True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
