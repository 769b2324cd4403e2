"""What a notification says and how a webhook proves who sent it: the email's subject and
body, the webhook's body (Orchestra's JSON payload or a Slack-compatible message), and its two
signatures (Orchestra's own and Standard Webhooks'). Pure functions of the payload."""

import base64
import binascii
import hashlib
import hmac
import json


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Orchestra-Signature of a webhook body: HMAC-SHA256 over "<timestamp>.<body>"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value: "v1," and the base64 HMAC-SHA256 of
    "<id>.<timestamp>.<body>". The key is the secret's bytes, or for a secret in the standard's
    own form ("whsec_" and base64) the bytes it encodes."""
    digest = hmac.new(
        standard_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            pass  # not base64 after all: the whole string is the key
    return secret.encode()


def webhook_body(payload: dict, fmt: str) -> bytes:
    """The bytes POSTed for `payload`: compact sorted JSON, or a Slack message."""
    document = slack_message(payload) if fmt == "slack" else payload
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def slack_message(payload: dict) -> dict:
    """A Slack-compatible message about `payload`: a plain `text` (notifications, clients
    without blocks) and `blocks` with the same facts and a link to the approval page. Text the
    agents or people wrote is escaped, so it cannot mention @channel or forge a link."""
    subject, _ = email_message(payload)
    checkpoint, run = payload["checkpoint"], payload["run"]
    shown = checkpoint.get("shown") or {}
    title = _slack_escape(subject.removeprefix("[Orchestra] "))
    facts = [
        f"*Project:* {_slack_escape(payload['project'])}",
        f"*Run {run['id']}:* {_slack_escape(run['title'])}",
        f"*Checkpoint #{checkpoint['id']}* ({checkpoint['kind']}): {checkpoint['status']}",
    ]
    if shown.get("reason"):
        facts.append(f"*Reason:* {_slack_escape(str(shown['reason']))}")
    if checkpoint.get("decided_by"):
        facts.append(f"*Decided by:* {_slack_escape(checkpoint['decided_by'])}")
    if checkpoint.get("comment"):
        facts.append(f"*Comment:* {_slack_escape(checkpoint['comment'])}")
    link = f"<{payload['url']}|Open the approval>"
    return {
        "text": f"{title}: {payload['url']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)[:3000]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": link}},
        ],
    }


def _slack_escape(text: str) -> str:
    # Slack's message formatting reads only these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_message(payload: dict) -> tuple[str, str]:
    """Subject and plain-text body of the email about `payload`."""
    checkpoint, run = payload["checkpoint"], payload["run"]
    shown = checkpoint.get("shown") or {}
    what = shown.get("tool") or checkpoint["kind"].replace("_", " ")
    where = f"{what} in run {run['id']}"
    match payload["event"]:
        case "opened":
            subject = f"Approval needed: {where}"
        case "reminder":
            subject = f"Reminder, approval still needed: {where}"
        case "expired":
            subject = f"Expired: {where}"
        case _:
            subject = f"{checkpoint['status'].capitalize()}: {where}"
    lines = [
        f"Project: {payload['project']}",
        f"Run {run['id']}: {run['title']}",
        f"Checkpoint #{checkpoint['id']} ({checkpoint['kind']}): {checkpoint['status']}",
    ]
    if shown.get("reason"):
        lines.append(f"Reason: {shown['reason']}")
    if checkpoint.get("expires_at"):
        lines.append(f"Expires at: {checkpoint['expires_at']}")
    if checkpoint.get("decided_by"):
        lines.append(f"Decided by: {checkpoint['decided_by']}")
    if checkpoint.get("comment"):
        lines.append(f"Comment: {checkpoint['comment']}")
    lines += ["", f"Open it: {payload['url']}"]
    return f"[Orchestra] {subject}", "\n".join(lines) + "\n"
