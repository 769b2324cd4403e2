"""The audit chain: appending, verifying (and naming the first tampered record), exporting,
and the `orchestra audit` command and API endpoints on top of them.

Tampering is done the way an attacker with database access would: a queryset `update` or
`delete` that bypasses `record`.
"""

import io
import json
import os
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test import Client

from approvals import audit
from approvals.models import AuditRecord
from orchestra import cli
from orchestra.models import Project, Run, Task

KINDS = ["policy.created", "checkpoint.decided", "plan.edited", "policy.changed"]


def chain(project: Project, length: int = 4) -> list[AuditRecord]:
    return [
        audit.record(project, KINDS[i % len(KINDS)], f"user{i}", {"n": i, "note": "ünïcode"})
        for i in range(length)
    ]


def make_run(project: Project) -> Run:
    task = Task.objects.create(project=project, title="Audited")
    return Run.objects.create(task=task, project=project)


@pytest.fixture
def other(db) -> Project:
    return Project.objects.create(slug="other", name="Other")


# --- record and verify ----------------------------------------------------------------------
def test_a_chain_of_records_links_and_verifies(demo):
    run = make_run(demo)
    records = chain(demo, 3)
    records.append(audit.record(demo, "checkpoint.expired", "system", {"id": 7}, run=run))

    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev_hash == audit.GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
    stored = AuditRecord.objects.get(pk=records[-1].pk)
    assert stored.run_id == run.pk
    assert audit.record_hash(stored) == stored.hash
    assert audit.verify(demo) == audit.Verification(ok=True, count=4, first_bad=None, reason="")


def test_an_empty_chain_verifies(demo):
    assert audit.verify(demo).ok and audit.verify(demo).count == 0


def test_the_stored_values_are_the_hashed_values(demo):
    """Timestamps normalise to UTC with microseconds; data goes through a JSON round trip and
    integral floats become ints, as PostgreSQL's jsonb would hand them back."""
    at = datetime(2025, 3, 1, 12, 0, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    entry = audit.record(demo, "policy.changed", "ada", {"t": (1, 2), "big": 1e16, "x": 0.5}, at=at)
    stored = AuditRecord.objects.get(pk=entry.pk)
    assert stored.at == at and stored.at.utcoffset() == timedelta(0)
    assert stored.data == {"t": [1, 2], "big": 10**16, "x": 0.5}
    assert isinstance(stored.data["big"], int)
    assert audit.record_hash(stored) == stored.hash == entry.hash
    assert audit.verify(demo).ok


@pytest.mark.parametrize(
    ("data", "error"),
    [({"when": datetime.now(UTC)}, TypeError), ({"x": float("nan")}, ValueError)],
)
def test_data_that_is_not_json_is_refused(demo, data, error):
    with pytest.raises(error):
        audit.record(demo, "plan.edited", "ada", data)
    assert not AuditRecord.objects.exists()


def test_a_naive_timestamp_is_refused(demo):
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.record(demo, "plan.edited", "ada", {}, at=datetime(2025, 1, 1))  # noqa: DTZ001


def test_altered_data_names_that_record(demo):
    records = chain(demo, 5)
    AuditRecord.objects.filter(pk=records[2].pk).update(data={"n": 999})

    result = audit.verify(demo)
    assert not result.ok
    assert result.first_bad.pk == records[2].pk
    assert result.reason == "hash does not match its content"
    assert result.count == 2


@pytest.mark.parametrize("field", ["kind", "actor", "at"])
def test_altered_fields_name_that_record(demo, field):
    records = chain(demo, 4)
    value = records[1].at + timedelta(microseconds=1) if field == "at" else "someone else"
    AuditRecord.objects.filter(pk=records[1].pk).update(**{field: value})

    result = audit.verify(demo)
    assert result.first_bad.pk == records[1].pk
    assert result.reason == "hash does not match its content"


def test_an_altered_hash_names_that_record(demo):
    records = chain(demo, 4)
    AuditRecord.objects.filter(pk=records[1].pk).update(hash="f" * 64)

    result = audit.verify(demo)
    assert result.first_bad.pk == records[1].pk
    assert result.reason == "hash does not match its content"


def test_an_altered_prev_hash_names_that_record(demo):
    records = chain(demo, 4)
    AuditRecord.objects.filter(pk=records[2].pk).update(prev_hash="e" * 64)

    result = audit.verify(demo)
    assert result.first_bad.pk == records[2].pk
    assert result.reason == "prev_hash does not match record #2"


def test_a_rewritten_first_record_breaks_the_genesis_link(demo):
    records = chain(demo, 2)
    AuditRecord.objects.filter(pk=records[0].pk).update(prev_hash="1" * 64)

    result = audit.verify(demo)
    assert result.first_bad.pk == records[0].pk
    assert result.reason == "prev_hash does not match the genesis hash"


def test_a_deleted_middle_record_names_the_one_after_the_gap(demo):
    records = chain(demo, 5)
    AuditRecord.objects.filter(pk=records[2].pk).delete()

    result = audit.verify(demo)
    assert (result.first_bad.pk, result.first_bad.seq) == (records[3].pk, 4)
    assert result.reason == "seq 3 missing (gap)"


def test_a_deleted_first_record_is_a_gap(demo):
    records = chain(demo, 3)
    AuditRecord.objects.filter(pk=records[0].pk).delete()

    result = audit.verify(demo)
    assert (result.first_bad.pk, result.reason) == (records[1].pk, "seq 1 missing (gap)")


def test_a_renumbered_record_to_hide_a_deletion_still_breaks_the_link(demo):
    records = chain(demo, 4)
    AuditRecord.objects.filter(pk=records[2].pk).delete()
    AuditRecord.objects.filter(pk=records[3].pk).update(seq=3)

    result = audit.verify(demo)
    assert result.first_bad.pk == records[3].pk
    assert result.reason == "prev_hash does not match record #2"


def test_projects_have_independent_chains(demo, other):
    ours = chain(demo, 3)
    theirs = chain(other, 2)
    assert [r.seq for r in theirs] == [1, 2]
    assert theirs[0].prev_hash == audit.GENESIS

    AuditRecord.objects.filter(pk=theirs[1].pk).update(actor="mallory")
    assert audit.verify(demo).ok and audit.verify(demo).count == len(ours)
    assert audit.verify(other).first_bad.pk == theirs[1].pk
    assert audit.record(demo, "policy.deleted", "ada", {}).seq == 4


def test_a_record_moved_to_another_chain_does_not_fit_there(demo, other):
    ours = chain(demo, 2)
    theirs = chain(other, 1)
    # Relinked perfectly, but the project's slug is part of the hash.
    AuditRecord.objects.filter(pk=theirs[0].pk).update(project=demo, seq=3, prev_hash=ours[-1].hash)

    result = audit.verify(demo)
    assert result.first_bad.pk == theirs[0].pk
    assert result.reason == "hash does not match its content"


# --- export ---------------------------------------------------------------------------------
def test_export_writes_one_json_object_per_record_in_seq_order(demo, other):
    records = chain(demo, 3)
    chain(other, 2)
    stream = io.StringIO()

    assert audit.export_jsonl(demo, stream) == 3
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert lines[0] == {
        "id": records[0].pk,
        "project": "demo",
        "seq": 1,
        "kind": records[0].kind,
        "actor": "user0",
        "run": None,
        "data": {"n": 0, "note": "ünïcode"},
        "at": records[0].at.isoformat(timespec="microseconds"),
        "prev_hash": audit.GENESIS,
        "hash": records[0].hash,
    }
    assert [line["hash"] for line in lines] == [r.hash for r in records]


# --- CLI ------------------------------------------------------------------------------------
def test_cli_verify_reports_an_intact_chain(demo, capsys):
    chain(demo, 3)
    assert cli.main(["audit", "verify", "demo"]) == 0
    assert capsys.readouterr().out.strip() == "ok: 3 records, chain intact"


def test_cli_verify_names_the_tampered_record(demo, capsys):
    records = chain(demo, 3)
    AuditRecord.objects.filter(pk=records[1].pk).update(data={"n": "forged"})

    assert cli.main(["audit", "verify", "demo"]) == 1
    assert capsys.readouterr().out.strip() == (
        f"TAMPERED: record seq 2 (id {records[1].pk}, kind {records[1].kind}): "
        "hash does not match its content"
    )


def test_cli_for_an_unknown_project_fails_clearly(db, capsys):
    assert cli.main(["audit", "verify", "nope"]) == 2
    assert cli.main(["audit", "export", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("orchestra: error: no project 'nope'") == 2


def test_cli_export_to_stdout_and_to_a_file(demo, capsys, tmp_path):
    chain(demo, 3)
    assert cli.main(["audit", "export", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]

    target = tmp_path / "audit.jsonl"
    assert cli.main(["audit", "export", "demo", "-o", str(target)]) == 0
    assert "Exported 3 audit records" in capsys.readouterr().out
    assert target.read_text(encoding="utf-8").splitlines() == lines


def test_cli_export_to_an_unwritable_file_fails_clearly(demo, capsys, tmp_path):
    target = tmp_path / "missing" / "audit.jsonl"
    assert cli.main(["audit", "export", "demo", "-o", str(target)]) == 2
    assert f"cannot write {target}" in capsys.readouterr().err


# --- API ------------------------------------------------------------------------------------
EXPORT = "/api/projects/demo/audit.jsonl"
VERIFY = "/api/projects/demo/audit/verify"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("persona", ["owner", "approver"])
def test_admins_and_approvers_export_and_verify(demo, persona, request):
    records = chain(demo, 2)
    client = logged_in(request.getfixturevalue(persona))

    response = client.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [line["hash"] for line in lines] == [r.hash for r in records]

    response = client.get(VERIFY)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "count": 2, "first_bad": None, "reason": ""}


def test_api_verify_names_the_tampered_record(demo, approver):
    records = chain(demo, 3)
    AuditRecord.objects.filter(pk=records[1].pk).delete()

    body = logged_in(approver).get(VERIFY).json()
    assert body == {
        "ok": False,
        "count": 1,
        "first_bad": {"seq": 3, "id": records[2].pk, "kind": records[2].kind},
        "reason": "seq 2 missing (gap)",
    }


@pytest.mark.parametrize("path", [EXPORT, VERIFY])
def test_api_refuses_viewers_outsiders_and_anonymous(demo, viewer, outsider, path):
    chain(demo, 1)
    assert logged_in(viewer).get(path).status_code == 403
    assert logged_in(outsider).get(path).status_code == 404
    assert Client().get(path).status_code == 401


def test_the_endpoints_are_in_the_api_schema(demo, approver):
    paths = logged_in(approver).get("/api/openapi.json").json()["paths"]
    assert "/api/projects/{slug}/audit.jsonl" in paths
    assert "/api/projects/{slug}/audit/verify" in paths


@pytest.mark.parametrize("path", [EXPORT, VERIFY])
def test_api_unknown_project_is_404(demo, approver, path):
    response = logged_in(approver).get(path.replace("/demo/", "/nope/"))
    assert response.status_code == 404


# --- concurrency (PostgreSQL) ---------------------------------------------------------------
on_postgresql = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


@pytest.mark.integration
@pytest.mark.skipif(
    not on_postgresql, reason="needs row locks: DATABASE_URL is not a PostgreSQL URL"
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_form_one_gapless_chain(demo):
    assert connection.vendor == "postgresql"
    threads_count, per_thread = 8, 5
    barrier = threading.Barrier(threads_count)
    errors: list[Exception] = []

    def append(index: int) -> None:
        try:
            barrier.wait()
            for n in range(per_thread):
                audit.record(demo, "policy.changed", f"thread{index}", {"n": n})
        except Exception as exc:  # collected for the assertion
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    total = threads_count * per_thread
    seqs = list(demo.audit_records.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    assert audit.verify(demo) == audit.Verification(ok=True, count=total, first_bad=None, reason="")
