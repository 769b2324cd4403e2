"""A `recording` block (a model or tool call's records) opens its transaction at its first
statement: on PostgreSQL one whose only statement is its last sends no BEGIN or COMMIT, and
one that writes earlier stays one transaction."""

import pytest
from django.db import connection

from orchestra.events import emit, recording
from orchestra.models import Event, Task
from orchestra.writes import update_later

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def commits(monkeypatch):
    """How many transactions committed (the driver's COMMIT, not through a cursor)."""
    counted = []
    original = connection.commit

    def commit(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(connection, "commit", commit)
    return counted


def test_a_recording_of_one_statement_on_postgresql_sends_it_alone(demo_run, commits):
    before = demo_run.event_seq
    with recording(demo_run.pk) as block:
        update_later(block, Task, demo_run.task_id, title="Renamed by the block")
        emit(block, "note.added", data={"n": 1})
    demo_run.refresh_from_db()
    assert Task.objects.get(pk=demo_run.task_id).title == "Renamed by the block"
    assert demo_run.event_seq == before + 1
    assert Event.objects.get(run=demo_run, seq=before + 1).kind == "note.added"
    assert len(commits) == (0 if connection.vendor == "postgresql" else 1)


def test_a_recording_that_writes_before_its_end_is_one_transaction(demo_run, commits):
    before = demo_run.event_seq
    with recording(demo_run.pk) as block:
        Task.objects.filter(pk=demo_run.task_id).update(title="Written at once")
        emit(block, "note.added")
    demo_run.refresh_from_db()
    assert Task.objects.get(pk=demo_run.task_id).title == "Written at once"
    assert demo_run.event_seq == before + 1
    assert len(commits) == 1


def test_a_recording_that_fails_after_a_write_leaves_nothing(demo_run):
    before = (demo_run.task.title, demo_run.event_seq)
    with pytest.raises(RuntimeError), recording(demo_run.pk) as block:
        Task.objects.filter(pk=demo_run.task_id).update(title="Never committed")
        emit(block, "note.added")
        raise RuntimeError("the tool crashed")
    demo_run.refresh_from_db()
    assert (Task.objects.get(pk=demo_run.task_id).title, demo_run.event_seq) == before
    assert not connection.in_atomic_block
    assert connection.execute_wrappers == []
