"""Checkpoint notifications: signed webhooks over real HTTP, emails to the people who may
decide, retries with backoff driven by an explicit clock, permanent failures in the trace."""

import hashlib
import hmac
import json
import socket
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from approvals import notify
from approvals.models import Checkpoint, Delivery
from orchestra.models import Run, Task
from tests.webhook_server import WebhookServer

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec-test-4f1a"


@pytest.fixture
def checkpoint(demo, owner) -> Checkpoint:
    task = Task.objects.create(project=demo, title="Release 2.4", created_by=owner)
    run = Run.objects.create(task=task, project=demo, status=Run.Status.AWAITING_APPROVAL)
    return Checkpoint.objects.create(
        run=run,
        kind=Checkpoint.Kind.TOOL_CALL,
        shown={
            "tool": "run_command",
            "arguments": {"command": "make deploy"},
            "reason": "Ship the release",
        },
        expires_at=timezone.now() + timedelta(hours=1),
    )


@pytest.fixture
def server():
    with WebhookServer([200]) as running:
        yield running


def hook_to(project, url: str, secret: str = SECRET) -> None:
    project.webhook_url, project.webhook_secret = url, secret
    project.save(update_fields=["webhook_url", "webhook_secret"])


def webhook_of(deliveries: list[Delivery]) -> Delivery:
    (webhook,) = [d for d in deliveries if d.channel == Delivery.Channel.WEBHOOK]
    webhook.refresh_from_db()
    return webhook


def verifies(secret: str, headers, body: bytes) -> bool:
    """What a receiver does, written from the documented scheme, not with `notify.sign`."""
    signed = headers["X-Orchestra-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Orchestra-Signature"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_webhook_is_signed_and_carries_the_checkpoint(demo, checkpoint, server):
    hook_to(demo, server.url)

    webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))

    (received,) = server.wait_for(1)
    assert received.method == "POST"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Orchestra-Event"] == "opened"
    assert received.headers["X-Orchestra-Delivery"] == str(webhook.pk)
    assert verifies(SECRET, received.headers, received.body)
    assert not verifies("not-the-secret", received.headers, received.body)
    assert not verifies(SECRET, received.headers, received.body + b" ")
    body = json.loads(received.body)
    assert received.body == json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    assert body["event"] == "opened"
    assert body["project"] == "demo"
    assert body["run"] == {
        "id": checkpoint.run_id,
        "status": "awaiting_approval",
        "title": "Release 2.4",
    }
    assert body["checkpoint"]["id"] == checkpoint.pk
    assert body["checkpoint"]["status"] == "pending"
    assert body["checkpoint"]["shown"]["tool"] == "run_command"
    assert (webhook.status, webhook.attempts, webhook.last_status) == ("delivered", 1, 200)
    assert webhook.delivered_at is not None


def test_the_link_is_absolute_and_opens_the_approval_page(
    demo, checkpoint, approver, settings, client
):
    settings.ORCHESTRA_BASE_URL = "https://orchestra.example.test/"
    Checkpoint.objects.filter(pk=checkpoint.pk).update(
        status=Checkpoint.Status.APPROVED, decided_by=approver, decision="approve", comment="ok"
    )
    checkpoint.refresh_from_db()

    payload = notify.checkpoint_payload(checkpoint, "decided")

    path = reverse("dashboard:approval", args=[checkpoint.pk])
    assert payload["url"] == "https://orchestra.example.test" + path
    assert payload["checkpoint"]["decided_by"] == "ada"
    assert payload["checkpoint"]["decision"] == "approve"
    assert json.loads(json.dumps(payload)) == payload
    client.force_login(approver)
    assert client.get(urlsplit(payload["url"]).path).status_code == 200


def test_nothing_is_sent_before_the_transaction_commits(demo, checkpoint, server):
    hook_to(demo, server.url)

    with transaction.atomic():
        notify.notify_checkpoint(checkpoint, "opened")
        assert server.requests == []

    server.wait_for(1)


def test_a_500_then_a_200_is_retried_on_the_clock_and_delivered(demo, checkpoint):
    with WebhookServer([(500, "upstream exploded"), 200]) as server:
        hook_to(demo, server.url)

        webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))

        assert webhook.status == "pending"
        assert (webhook.attempts, webhook.last_status) == (1, 500)
        assert webhook.last_error == "HTTP 500: upstream exploded"
        assert webhook.next_attempt_at > timezone.now()
        assert notify.deliver_due(now=timezone.now()) == 0
        assert notify.deliver_due(now=webhook.next_attempt_at + timedelta(seconds=1)) == 1
        first, second = server.wait_for(2)
    webhook.refresh_from_db()
    assert (webhook.status, webhook.attempts, webhook.last_status) == ("delivered", 2, 200)
    assert webhook.last_error == "" and webhook.next_attempt_at is None
    assert len(server.requests) == 2
    assert first.headers["X-Orchestra-Delivery"] == second.headers["X-Orchestra-Delivery"]
    assert verifies(SECRET, second.headers, second.body)
    assert not checkpoint.run.events.filter(kind="notification.failed").exists()


def test_always_500_fails_after_the_last_attempt_and_shows_in_the_trace(demo, checkpoint, settings):
    settings.ORCHESTRA_WEBHOOK_MAX_ATTEMPTS = 3
    with WebhookServer([500]) as server:
        hook_to(demo, server.url)
        webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))
        delays = []
        for _ in range(2):
            clock = webhook.next_attempt_at + timedelta(seconds=1)
            assert notify.deliver_due(now=clock) == 1
            webhook.refresh_from_db()
            if webhook.next_attempt_at:
                delays.append(webhook.next_attempt_at - clock)
        server.wait_for(3)
        assert notify.deliver_due(now=clock + timedelta(days=1)) == 0
    assert delays == [notify.RETRY_DELAYS[1]]
    assert (webhook.status, webhook.attempts, webhook.last_status) == ("failed", 3, 500)
    assert "500" in webhook.last_error and webhook.next_attempt_at is None
    assert len(server.requests) == 3
    event = checkpoint.run.events.get(kind="notification.failed")
    assert event.data["delivery"] == webhook.pk
    assert event.data["channel"] == "webhook"
    assert event.data["target"] == server.url
    assert event.data["attempts"] == 3
    assert "500" in event.data["error"]
    assert notify.failures_for(checkpoint) == [webhook]


def test_a_refused_connection_is_a_failed_attempt_with_a_clear_error(demo, checkpoint):
    port = closed_port()
    hook_to(demo, f"http://127.0.0.1:{port}/hooks")

    webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))

    assert (webhook.status, webhook.attempts, webhook.last_status) == ("pending", 1, None)
    assert webhook.last_error == f"connection refused by 127.0.0.1:{port}"
    assert webhook.next_attempt_at > timezone.now()


def test_email_goes_to_the_notify_list_and_approvers_not_viewers(
    demo, checkpoint, approver, viewer, operator, mailoutbox
):
    demo.notify_emails = ["ops@example.test", "  ", "Ada@Example.test"]
    demo.save(update_fields=["notify_emails"])

    deliveries = notify.notify_checkpoint(checkpoint, "opened")

    recipients = sorted(address for message in mailoutbox for address in message.to)
    # olivia is the project admin, admin@localhost the seeded superuser's membership.
    assert recipients == sorted(
        ["ops@example.test", "Ada@Example.test", "olivia@example.test", "admin@localhost"]
    )
    assert {d.channel for d in deliveries} == {"email"}
    assert Delivery.objects.filter(status="delivered").count() == 4
    message = mailoutbox[0]
    run_id = checkpoint.run_id
    assert message.subject == f"[Orchestra] Approval needed: run_command in run {run_id}"
    assert notify.approval_url(checkpoint.pk) in message.body
    assert notify.approval_url(checkpoint.pk).startswith("http")


def test_an_approver_group_limits_the_emails_to_its_members(
    demo, checkpoint, approver, second_approver, viewer, mailoutbox
):
    managers = Group.objects.create(name="release-managers")
    managers.user_set.add(approver, viewer)
    checkpoint.approver_group = "release-managers"
    checkpoint.save(update_fields=["approver_group"])

    notify.notify_checkpoint(checkpoint, "opened")

    assert [message.to for message in mailoutbox] == [["ada@example.test"]]


def test_a_reminder_goes_to_the_escalation_group(
    demo, checkpoint, approver, second_approver, mailoutbox
):
    Group.objects.create(name="release-managers").user_set.add(approver)
    Group.objects.create(name="leads").user_set.add(second_approver)
    checkpoint.approver_group, checkpoint.escalate_group = "release-managers", "leads"
    checkpoint.save(update_fields=["approver_group", "escalate_group"])

    notify.notify_checkpoint(checkpoint, "reminder")
    notify.notify_checkpoint(checkpoint, "opened")

    reminder, opened = mailoutbox
    assert reminder.to == ["grace@example.test"]
    assert reminder.subject.startswith("[Orchestra] Reminder")
    assert opened.to == ["ada@example.test"]


def test_deliver_is_idempotent(demo, checkpoint, server, mailoutbox):
    hook_to(demo, server.url)
    deliveries = notify.notify_checkpoint(checkpoint, "opened")
    server.wait_for(1)
    emails = len(mailoutbox)

    for delivery in deliveries:
        again = notify.deliver(delivery.pk)
        assert (again.status, again.attempts) == ("delivered", 1)

    assert len(server.requests) == 1
    assert emails == len(deliveries) - 1 == len(mailoutbox)


def test_an_attempt_that_is_not_due_is_not_sent(demo, checkpoint, mailoutbox):
    later = timezone.now() + timedelta(minutes=5)
    delivery = Delivery.objects.create(
        checkpoint=checkpoint,
        event="opened",
        channel=Delivery.Channel.EMAIL,
        target="ops@example.test",
        payload=notify.checkpoint_payload(checkpoint, "opened"),
        attempts=1,
        next_attempt_at=later,
    )

    assert notify.deliver(delivery.pk).attempts == 1
    assert mailoutbox == []
    assert notify.deliver(delivery.pk, now=later).status == "delivered"
    assert len(mailoutbox) == 1


def test_a_lost_first_attempt_is_picked_up_after_a_minute(demo, checkpoint, mailoutbox):
    # Created without enqueueing, as if the first attempt's task message was lost.
    delivery = Delivery.objects.create(
        checkpoint=checkpoint,
        event="opened",
        channel=Delivery.Channel.EMAIL,
        target="ops@example.test",
        payload=notify.checkpoint_payload(checkpoint, "opened"),
    )

    assert notify.deliver_due(now=delivery.created_at + timedelta(seconds=30)) == 0
    assert notify.deliver_due(now=delivery.created_at + timedelta(minutes=2)) == 1
    assert [message.to for message in mailoutbox] == [["ops@example.test"]]


def test_an_unknown_event_is_refused(checkpoint):
    with pytest.raises(ValueError, match="event must be one of"):
        notify.notify_checkpoint(checkpoint, "exploded")


def test_without_a_secret_the_webhook_is_sent_unsigned(demo, checkpoint, server):
    hook_to(demo, server.url, secret="")

    notify.notify_checkpoint(checkpoint, "expired")

    (received,) = server.wait_for(1)
    assert received.headers["X-Orchestra-Event"] == "expired"
    assert "X-Orchestra-Signature" not in received.headers
