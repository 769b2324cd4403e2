"""Retention: `orchestra purge --older-than` removes what is older than the limit and nothing
else; the beat task applies each project's own settings; the audit chain still verifies
afterwards, anchored by the purge, and a chain cut without that anchor does not."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from agents.models import AgentRun, ModelCall
from approvals import audit
from approvals.models import AuditRecord
from orchestra import retention
from orchestra.cli import main
from orchestra.engine import cancel_run, start_run
from orchestra.engine.projects import create_project
from orchestra.models import Event, Run, Step, Task
from orchestra.tasks import apply_retention_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def blog(owner):
    owner.is_superuser = True
    owner.save(update_fields=["is_superuser"])
    return create_project(owner, "blog", "Blog", "content")


def age(run: Run, days: int) -> Run:
    """Move everything the run recorded `days` into the past."""
    delta = timedelta(days=days)
    Run.objects.filter(pk=run.pk).update(
        created_at=F("created_at") - delta, finished_at=F("finished_at") - delta
    )
    Event.objects.filter(run=run).update(at=F("at") - delta)
    AgentRun.objects.filter(run=run).update(
        started_at=F("started_at") - delta, finished_at=F("finished_at") - delta
    )
    run.refresh_from_db()
    return run


def completed(owner, project, title: str) -> Run:
    run = start_run(owner, project, title)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    return run


def cancelled_with_worktrees(owner, project, title: str) -> Run:
    """A demo run stopped at its first approval, then cancelled: it keeps its worktrees."""
    run = start_run(owner, project, title)
    run.refresh_from_db()
    assert run.status == Run.Status.AWAITING_APPROVAL, run.error
    cancel_run(owner, run)
    run.refresh_from_db()
    assert worktrees(run), "a cancelled run keeps its worktrees for inspection"
    return run


def worktrees(run: Run) -> list[Path]:
    paths = Step.objects.filter(run=run).exclude(worktree="").values_list("worktree", flat=True)
    return [Path(p) for p in paths if Path(p).exists()]


def snapshot() -> dict:
    return {
        "runs": set(Run.objects.values_list("pk", flat=True)),
        "tasks": Task.objects.count(),
        "events": Event.objects.count(),
        "audit": AuditRecord.objects.count(),
        "messages": list(AgentRun.objects.order_by("pk").values_list("messages", flat=True)),
    }


def test_purge_removes_only_what_is_older_and_the_chain_still_verifies(demo, blog, owner, capsys):
    now = timezone.now()
    old_done = age(completed(owner, blog, "Old post"), 100)
    new_done = age(completed(owner, blog, "New post"), 10)
    old_cancelled = age(cancelled_with_worktrees(owner, demo, "Old cancelled"), 100)
    old_named = age(cancelled_with_worktrees(owner, demo, "Old, named by the audit"), 100)
    old_active = start_run(owner, demo, "Old and still waiting")  # awaiting approval
    age(old_active, 100)
    cancelled_paths, named_paths = worktrees(old_cancelled), worktrees(old_named)
    active_paths = worktrees(old_active)
    assert active_paths
    audit.record(
        blog, "policy.changed", "olivia", {"n": 1}, run=old_done, at=now - timedelta(days=100)
    )
    audit.record(blog, "membership.changed", "olivia", {"n": 2}, at=now - timedelta(days=95))
    recent = audit.record(blog, "policy.changed", "olivia", {"n": 3}, run=new_done)
    audit.record(demo, "plan.edited", "olivia", {"n": 4}, run=old_named)
    kept_events = {run.pk: run.events.count() for run in (new_done, old_active)}
    named_events = old_named.events.count()
    kept_messages = list(
        AgentRun.objects.filter(run=new_done).order_by("pk").values_list("messages", flat=True)
    )
    before = snapshot()
    assert all(kept_messages)

    assert main(["purge", "--older-than", "90d", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert snapshot() == before
    assert (
        "blog: would remove 1 runs, 0 events, 0 conversations, 0 runs' worktrees, "
        "2 audit records" in dry
    )
    # The run a newer audit record names stays, without its old events and conversations.
    named_conversations = AgentRun.objects.filter(run=old_named).count()
    assert (
        f"demo: would remove 1 runs, {named_events} events, {named_conversations} conversations, "
        "2 runs' worktrees, 0 audit records" in dry
    )

    assert main(["purge", "--older-than", "90d"]) == 0
    out = capsys.readouterr().out
    assert dry.replace("would remove", "removed") in out
    assert f"demo: kept runs {old_named.pk}: a newer audit record names them" in out

    assert set(Run.objects.values_list("pk", flat=True)) == {
        new_done.pk,
        old_named.pk,
        old_active.pk,
    }
    assert not Task.objects.filter(pk__in=[old_done.task_id, old_cancelled.task_id]).exists()
    assert not Event.objects.filter(run_id__in=[old_done.pk, old_cancelled.pk]).exists()
    assert not ModelCall.objects.filter(run_id__in=[old_done.pk, old_cancelled.pk]).exists()
    assert {pk: Run.objects.get(pk=pk).events.count() for pk in kept_events} == kept_events
    assert kept_messages == list(
        AgentRun.objects.filter(run=new_done).order_by("pk").values_list("messages", flat=True)
    )
    assert not any(path.exists() for path in cancelled_paths + named_paths)
    assert all(path.exists() for path in active_paths)
    assert not Step.objects.filter(run=old_named).exclude(worktree="").exists()
    assert not old_named.events.exists()
    assert not any(AgentRun.objects.filter(run=old_named).values_list("messages", flat=True))

    # The blog's chain lost its first two records and starts from the purge's anchor.
    seqs = list(blog.audit_records.order_by("seq").values_list("seq", "kind"))
    assert seqs == [(3, "policy.changed"), (4, "retention.purged")]
    anchor = blog.audit_records.get(kind="retention.purged")
    assert anchor.data["removed_through_seq"] == 2
    assert anchor.data["removed"]["runs"] == 1
    assert AuditRecord.objects.get(pk=recent.pk).prev_hash == anchor.data["last_removed_hash"]
    for slug in ("blog", "demo"):
        assert main(["audit", "verify", slug]) == 0, capsys.readouterr().out
    assert audit.verify(blog).count == 2

    # A second purge finds nothing more, and records nothing.
    assert main(["purge", "--older-than", "90d", "--project", "blog"]) == 0
    assert "blog: removed 0 runs, 0 events" in capsys.readouterr().out
    assert blog.audit_records.count() == 2

    # Cutting the chain without the anchor is noticed.
    anchor.delete()
    assert main(["audit", "verify", "blog"]) == 1
    assert "seq 1 missing (gap)" in capsys.readouterr().out


def test_the_beat_applies_each_projects_settings(demo, blog, owner):
    blog.retention_events_days = 30
    blog.retention_messages_days = 30
    blog.save(update_fields=["retention_events_days", "retention_messages_days"])
    older = age(completed(owner, blog, "Forty days old"), 40)
    newer = age(completed(owner, blog, "Ten days old"), 10)
    active = start_run(owner, demo, "Demo run, no retention set")
    demo_events = active.events.count()
    newer_events = newer.events.count()

    assert apply_retention_task() == 1

    assert set(Run.objects.filter(project=blog).values_list("pk", flat=True)) == {
        older.pk,
        newer.pk,
    }
    assert not older.events.exists()
    assert newer.events.count() == newer_events
    assert active.events.count() == demo_events
    conversations = list(AgentRun.objects.filter(run=older).values_list("messages", flat=True))
    assert conversations == [[]] * len(conversations) and conversations
    assert not any(ModelCall.objects.filter(run=older).values_list("response", flat=True))
    assert all(AgentRun.objects.filter(run=newer).values_list("messages", flat=True))
    assert older.model_calls.exists()  # usage stays; only the conversation went
    (record,) = blog.audit_records.filter(kind="retention.purged")
    assert record.data["removed"]["events"] > 0
    assert record.data["removed"]["messages"] == AgentRun.objects.filter(run=older).count()
    assert audit.verify(blog).ok
    assert apply_retention_task() == 0  # nothing left to do


def test_ages_are_parsed_and_bad_ones_refused(demo, capsys):
    assert retention.parse_age("90d") == timedelta(days=90)
    assert retention.parse_age("12h") == timedelta(hours=12)
    assert retention.parse_age("2w") == timedelta(weeks=2)
    assert main(["purge", "--older-than", "ninety days"]) == 2
    assert "is not an age: use a number and d, h or w" in capsys.readouterr().err
    with pytest.raises(Exception, match="is not an age"):
        call_command("purge", "--older-than", "90")


def test_the_management_command_purges_like_the_cli(demo, blog, owner):
    old = age(completed(owner, blog, "Old post"), 100)
    keep = completed(owner, blog, "Today's post")

    call_command("purge", "--older-than", "90d", "--project", "blog")

    assert not Run.objects.filter(pk=old.pk).exists()
    assert Run.objects.filter(pk=keep.pk).exists()
    assert audit.verify(blog).ok
