"""The tamper-evident audit trail: one hash chain per project.

Each `AuditRecord` stores the SHA-256 of its own content together with the hash of the record
before it (`GENESIS` for the first), so changing, deleting or reordering a stored record
breaks the chain at that record and `verify` names it. The chain proves integrity, not
completeness at the end: dropping the newest records, or rewriting the whole tail with fresh
hashes, needs an outside anchor (an exported copy, or a remembered last hash) to notice.

A retention purge removes the oldest records (a prefix of the chain) and first appends its own
anchor, a "retention.purged" record that names the last seq it removed and that record's hash:
`verify` then starts at the first remaining record and checks its link against the anchor, so
the chain stays verifiable, and removing records without an anchor still shows as a gap.

Kinds recorded across the code: "checkpoint.decided", "checkpoint.expired",
"policy.created", "policy.changed", "policy.deleted", "policy.revoked", "plan.edited",
"membership.changed", "budget.changed", "retention.purged".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TextIO

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from approvals.models import AuditRecord
from orchestra.access import get_project_for_user, role_in
from orchestra.models import Membership, Project

if TYPE_CHECKING:
    from orchestra.models import Run

GENESIS = "0" * 64
# The record a purge appends before removing the start of the chain: its data names the last
# removed seq (`removed_through_seq`) and that record's hash (`last_removed_hash`).
PURGE_KIND = "retention.purged"
# Who may read a project's audit trail: the people who decide and administer in it.
AUDIT_ROLES = (Membership.Role.ADMIN, Membership.Role.APPROVER)


def get_audit_project_for_user(user, slug: str) -> Project:
    """The project whose audit trail `user` may read: 404 if they cannot see the project,
    403 if they can but are neither an admin nor an approver in it."""
    project = get_project_for_user(user, slug)
    if role_in(user, project) not in AUDIT_ROLES:
        raise PermissionDenied("Only the project's admins and approvers may read its audit trail.")
    return project


# --- appending ------------------------------------------------------------------------------
def record(
    project: Project,
    kind: str,
    actor: str,
    data: dict,
    *,
    run: Run | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append a record to `project`'s chain and return it.

    Locks: the Project row (SELECT ... FOR UPDATE), which serialises appends per project, in
    this transaction or in one of its own. Callers may already hold a Run row lock; the
    project lock always comes after it, so never lock a run after calling this in the same
    transaction. `data` must be JSON-safe (`TypeError`/`ValueError` otherwise); `at` must be
    timezone-aware and defaults to now.
    """
    moment = _utc(at if at is not None else timezone.now())
    payload = _json_safe(data)
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        last = (
            AuditRecord.objects.filter(project=locked)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        entry = AuditRecord(
            project=locked,
            seq=seq,
            kind=kind,
            actor=actor,
            run=run,
            data=payload,
            at=moment,
            prev_hash=prev_hash,
        )
        entry.hash = record_hash(entry)
        entry.save(force_insert=True)
    return entry


def purge_prefix(project: Project, before: datetime, actor: str, data: dict) -> int:
    """Remove the records at the start of `project`'s chain that are older than `before` (up
    to the first record that is not), after appending the anchor `verify` starts from: a
    PURGE_KIND record with `data` plus the last removed seq and hash. Returns how many were
    removed; with none to remove, appends `data` as a plain PURGE_KIND record.

    Locks: the Project row for the whole transaction (as `record` does), so no record is
    appended between reading the prefix and anchoring it.
    """
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        through = prefix_before(project, before)
        if through is None:
            record(project, PURGE_KIND, actor, {**data, "audit_records_removed": 0})
            return 0
        seq, last_hash, count = through
        anchor = {
            **data,
            "audit_records_removed": count,
            "removed_through_seq": seq,
            "last_removed_hash": last_hash,
        }
        record(project, PURGE_KIND, actor, anchor)
        project.audit_records.filter(seq__lte=seq).delete()
    return count


def prefix_before(project: Project, before: datetime) -> tuple[int, str, int] | None:
    """(last seq, its hash, how many) of the chain's leading records older than `before`, or
    None when the first record is not older."""
    records = project.audit_records.order_by("seq")
    first_kept = records.filter(at__gte=before).values_list("seq", flat=True).first()
    prefix = records.filter(seq__lt=first_kept) if first_kept is not None else records
    last = prefix.order_by("-seq").values_list("seq", "hash").first()
    if last is None:
        return None
    return last[0], last[1], prefix.count()


def _utc(moment: datetime) -> datetime:
    if timezone.is_naive(moment):
        raise ValueError("Audit timestamps must be timezone-aware.")
    # Databases keep microseconds (what a datetime holds), so this is exactly what is stored.
    return moment.astimezone(UTC)


def _json_safe(data: dict) -> dict:
    """`data` as it will read back from any database, so the hash covers the stored value.

    A JSON round trip turns tuples into lists and non-string keys into strings. Floats with an
    integral value become ints: PostgreSQL's jsonb stores numbers as decimals and would hand
    `1e16` back as the integer 10000000000000000, which would no longer hash the same.
    """
    if not isinstance(data, dict):
        raise TypeError(f"Audit data must be a dict, not {type(data).__name__}.")
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return json.loads(text, parse_float=_parse_float)


def _parse_float(text: str) -> float | int:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(text)


# --- hashing and verifying ------------------------------------------------------------------
def record_hash(entry: AuditRecord) -> str:
    """The SHA-256 (hex) of the record's canonical JSON, recomputed from its stored fields."""
    canonical = json.dumps(
        _hashed_content(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _hashed_content(entry: AuditRecord) -> dict:
    """Every field the hash covers (all stored fields but the id and the hash itself)."""
    return {
        "project": entry.project.slug,
        "seq": entry.seq,
        "kind": entry.kind,
        "actor": entry.actor,
        "run": entry.run_id,
        "data": entry.data,
        "at": _iso(entry.at),
        "prev_hash": entry.prev_hash,
    }


def _iso(moment: datetime) -> str:
    # Always with microseconds, so a timestamp that happens to fall on a whole second hashes
    # the same way as any other.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class Verification:
    ok: bool
    # With `ok`, every record; otherwise how many records before `first_bad` are intact.
    count: int
    first_bad: AuditRecord | None
    # Empty when `ok`; otherwise what is wrong with `first_bad`.
    reason: str


def verify(project: Project) -> Verification:
    """Walk the chain in seq order and report the first record that breaks it.

    A changed record fails its own hash; a changed `prev_hash` breaks the link to the record
    before; a deleted record shows as a gap at the record after it (or, for the newest
    record, not at all: see the module docstring). A chain whose start was purged starts
    from the purge's anchor (see `chain_start`). Reads only; takes no locks.
    """
    (expected_seq, prev_hash), count = chain_start(project), 0
    for entry in project.audit_records.order_by("seq").iterator(chunk_size=500):
        reason = _broken(entry, expected_seq, prev_hash)
        if reason:
            return Verification(ok=False, count=count, first_bad=entry, reason=reason)
        expected_seq, prev_hash, count = entry.seq + 1, entry.hash, count + 1
    return Verification(ok=True, count=count, first_bad=None, reason="")


def chain_start(project: Project) -> tuple[int, str]:
    """The seq and previous hash the stored chain must start with: (1, GENESIS), or after a
    purge, the first remaining seq and the hash its anchor recorded for the record before it.
    A start with no anchor naming it is checked from seq 1, and so shows as a gap."""
    first = project.audit_records.order_by("seq").values_list("seq", flat=True).first()
    if first is None or first == 1:
        return 1, GENESIS
    anchor = (
        project.audit_records.filter(kind=PURGE_KIND, data__removed_through_seq=first - 1)
        .order_by("-seq")
        .values_list("data", flat=True)
        .first()
    )
    if not anchor or not isinstance(anchor.get("last_removed_hash"), str):
        return 1, GENESIS
    return first, anchor["last_removed_hash"]


def _broken(entry: AuditRecord, expected_seq: int, prev_hash: str) -> str:
    if entry.seq > expected_seq:
        return f"seq {expected_seq} missing (gap)"
    if entry.seq != expected_seq:
        return f"seq {entry.seq} out of order (expected {expected_seq})"
    if entry.prev_hash != prev_hash:
        if entry.seq == 1:
            return "prev_hash does not match the genesis hash"
        return f"prev_hash does not match record #{entry.seq - 1}"
    if entry.hash != record_hash(entry):
        return "hash does not match its content"
    return ""


# --- exporting ------------------------------------------------------------------------------
def as_json(entry: AuditRecord) -> dict:
    """Every stored field, hashes included: enough to re-verify the chain elsewhere."""
    return {"id": entry.pk, **_hashed_content(entry), "hash": entry.hash}


def export_jsonl(project: Project, stream: TextIO) -> int:
    """Write the chain to `stream`, one JSON object per line in seq order; return the count."""
    count = 0
    for entry in project.audit_records.order_by("seq").iterator(chunk_size=500):
        stream.write(json.dumps(as_json(entry), ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count
