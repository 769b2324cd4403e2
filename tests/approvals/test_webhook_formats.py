"""Webhooks as other tools expect them: the Standard Webhooks signature headers beside
Orchestra's own, checked by a receiver written from the standard (standardwebhooks.com), and a
Slack-compatible message body as a per-webhook option."""

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import notify
from approvals.messages import standard_signature
from approvals.models import Checkpoint, Delivery
from orchestra.models import Run, Task
from tests.webhook_server import WebhookServer

pytestmark = pytest.mark.django_db(transaction=True)

PLAIN_SECRET = "whsec-test-4f1a"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"thirty-two bytes of shared key!!").decode()


@pytest.fixture
def checkpoint(demo, owner) -> Checkpoint:
    task = Task.objects.create(project=demo, title="Release <2.4> & more", created_by=owner)
    run = Run.objects.create(task=task, project=demo, status=Run.Status.AWAITING_APPROVAL)
    return Checkpoint.objects.create(
        run=run,
        kind=Checkpoint.Kind.TOOL_CALL,
        shown={
            "tool": "run_command",
            "arguments": {"command": "make deploy"},
            "reason": "Ship it <!channel> <https://evil.example|click>",
        },
        expires_at=timezone.now() + timedelta(hours=1),
    )


def hook_to(project, url: str, secret: str, fmt: str = "orchestra") -> None:
    project.webhook_url, project.webhook_secret, project.webhook_format = url, secret, fmt
    project.save(update_fields=["webhook_url", "webhook_secret", "webhook_format"])


def webhook_of(deliveries: list[Delivery]) -> Delivery:
    (webhook,) = [d for d in deliveries if d.channel == Delivery.Channel.WEBHOOK]
    webhook.refresh_from_db()
    return webhook


def standard_verifies(key: bytes, headers, body: bytes, tolerance: int = 300) -> bool:
    """A Standard Webhooks receiver, from the specification: sign "<id>.<timestamp>.<body>"
    with HMAC-SHA256, base64, and accept any "v1," signature in the space-separated list that
    matches, within the timestamp tolerance."""
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = headers["webhook-signature"].split(" ")
    return any(
        version == "v1" and hmac.compare_digest(expected, signature)
        for version, _, signature in (candidate.partition(",") for candidate in candidates)
    )


def orchestra_verifies(secret: str, headers, body: bytes) -> bool:
    signed = headers["X-Orchestra-Timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Orchestra-Signature"])


def test_the_signature_matches_the_standards_published_example():
    # The example in the Standard Webhooks reference libraries' tests.
    signature = standard_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_headers_sit_beside_orchestras_and_verify(demo, checkpoint):
    with WebhookServer([500, 200]) as server:
        hook_to(demo, server.url, PLAIN_SECRET)
        webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))
        assert notify.deliver_due(now=webhook.next_attempt_at + timedelta(seconds=1)) == 1
        first, second = server.wait_for(2)

    for received in (first, second):
        headers, body = received.headers, received.body
        assert headers["webhook-id"] == f"msg_orchestra_{webhook.pk}"
        assert headers["webhook-timestamp"] == headers["X-Orchestra-Timestamp"]
        assert standard_verifies(PLAIN_SECRET.encode(), headers, body)
        assert orchestra_verifies(PLAIN_SECRET, headers, body)
        assert not standard_verifies(b"another key", headers, body)
        assert not standard_verifies(PLAIN_SECRET.encode(), headers, body + b" ")
        assert json.loads(body)["checkpoint"]["id"] == checkpoint.pk
    # A retry is the same message: a receiver drops it by its id.
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_a_standard_form_secret_signs_with_the_key_it_encodes(demo, checkpoint):
    with WebhookServer([200]) as server:
        hook_to(demo, server.url, STANDARD_SECRET)
        notify.notify_checkpoint(checkpoint, "opened")
        (received,) = server.wait_for(1)

    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    assert standard_verifies(key, received.headers, received.body)
    assert not standard_verifies(STANDARD_SECRET.encode(), received.headers, received.body)


def test_without_a_secret_there_is_an_id_and_a_timestamp_but_no_signature(demo, checkpoint):
    with WebhookServer([200]) as server:
        hook_to(demo, server.url, "")
        notify.notify_checkpoint(checkpoint, "opened")
        (received,) = server.wait_for(1)

    assert received.headers["webhook-id"].startswith("msg_orchestra_")
    assert received.headers["webhook-timestamp"]
    assert received.headers["webhook-signature"] is None
    assert received.headers["X-Orchestra-Signature"] is None


def test_a_slack_webhook_gets_a_slack_message_signed_the_same_way(demo, checkpoint, settings):
    settings.ORCHESTRA_BASE_URL = "https://orchestra.example.test"
    with WebhookServer([200]) as server:
        hook_to(demo, server.url, PLAIN_SECRET, fmt="slack")
        webhook = webhook_of(notify.notify_checkpoint(checkpoint, "opened"))
        (received,) = server.wait_for(1)

    message = json.loads(received.body)
    assert set(message) == {"text", "blocks"}
    url = notify.approval_url(checkpoint.pk)
    assert message["text"] == f"Approval needed: run_command in run {checkpoint.run_id}: {url}"
    header, facts, link = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f"Approval needed: run_command in run {checkpoint.run_id}",
        },
    }
    assert facts["text"]["type"] == "mrkdwn"
    lines = facts["text"]["text"].split("\n")
    assert lines[0] == "*Project:* demo"
    assert lines[1] == f"*Run {checkpoint.run_id}:* Release &lt;2.4&gt; &amp; more"
    # What an agent wrote can neither ping the channel nor forge a link.
    assert lines[3] == "*Reason:* Ship it &lt;!channel&gt; &lt;https://evil.example|click&gt;"
    assert "<!channel>" not in received.body.decode()
    assert link["text"]["text"] == f"<{url}|Open the approval>"
    assert standard_verifies(PLAIN_SECRET.encode(), received.headers, received.body)
    assert orchestra_verifies(PLAIN_SECRET, received.headers, received.body)
    webhook.refresh_from_db()
    assert webhook.status == Delivery.Status.DELIVERED
    assert webhook.payload["event"] == "opened"  # the record keeps Orchestra's payload
