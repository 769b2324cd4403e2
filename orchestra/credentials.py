"""Worker credentials: what a worker on another machine shows the central repository.

A token is issued once per worker name (its plain value returned to be shown once), looked up
by its SHA-256 digest, and revoked by name; a revoked credential stays listed.
"""

import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from orchestra.models import ApiToken, WorkerCredential

TOKEN_PREFIX = "orcw_"
# The last use is written at most this often: every fetch and push asks.
TOUCH_INTERVAL = timedelta(minutes=1)


class CredentialError(Exception):
    """A credential cannot be issued or revoked; the message says why."""


def issue_worker_token(name: str) -> str:
    """A new credential for the worker `name`; returns the plain token (shown once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise CredentialError("a worker name is 1 to 100 characters")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            WorkerCredential.objects.create(name=name, digest=ApiToken.digest_of(raw))
    except IntegrityError:
        raise CredentialError(
            f"a worker named {name!r} already has a credential: revoke it first, or pick "
            "another name"
        ) from None
    return raw


def revoke_worker_token(name: str) -> WorkerCredential:
    """Revoke the worker's credential (idempotent); raises CredentialError for an unknown
    name."""
    credential = WorkerCredential.objects.filter(name=name).first()
    if credential is None:
        raise CredentialError(f"no worker credential named {name!r}")
    if credential.revoked_at is None:
        credential.revoked_at = timezone.now()
        credential.save(update_fields=["revoked_at"])
    return credential


def worker_for_token(raw: str) -> WorkerCredential | None:
    """The live credential the token belongs to, its last use noted; None for an unknown or
    revoked token."""
    raw = raw.strip()
    if not raw:
        return None
    credential = WorkerCredential.objects.filter(
        digest=ApiToken.digest_of(raw), revoked_at__isnull=True
    ).first()
    if credential is None:
        return None
    now = timezone.now()
    if credential.last_used_at is None or now - credential.last_used_at >= TOUCH_INTERVAL:
        WorkerCredential.objects.filter(pk=credential.pk).update(last_used_at=now)
    return credential
