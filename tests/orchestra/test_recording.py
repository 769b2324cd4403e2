"""A `recording` block (a model or tool call's records) opens its transaction at its first
statement: on PostgreSQL one whose only statement is its last sends no BEGIN or COMMIT, and
one that writes earlier stays one transaction."""

import pytest
from django.db import connection

from orchestra.engine import start_run
from orchestra.events import emit, recording
from orchestra.models import Event, Task
from orchestra.writes import update_later

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(demo, owner):
    run = start_run(owner, demo, "Recordings")
    run.refresh_from_db()
    return run


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


def test_a_recording_of_one_statement_on_postgresql_sends_it_alone(run, commits):
    before = run.event_seq
    with recording(run.pk) as block:
        update_later(block, Task, run.task_id, title="Renamed by the block")
        emit(block, "note.added", data={"n": 1})
    run.refresh_from_db()
    assert Task.objects.get(pk=run.task_id).title == "Renamed by the block"
    assert run.event_seq == before + 1
    assert Event.objects.get(run=run, seq=before + 1).kind == "note.added"
    assert len(commits) == (0 if connection.vendor == "postgresql" else 1)


def test_a_recording_that_writes_before_its_end_is_one_transaction(run, commits):
    before = run.event_seq
    with recording(run.pk) as block:
        Task.objects.filter(pk=run.task_id).update(title="Written at once")
        emit(block, "note.added")
    run.refresh_from_db()
    assert Task.objects.get(pk=run.task_id).title == "Written at once"
    assert run.event_seq == before + 1
    assert len(commits) == 1


def test_a_recording_that_fails_after_a_write_leaves_nothing(run):
    before = (run.task.title, run.event_seq)
    with pytest.raises(RuntimeError), recording(run.pk) as block:
        Task.objects.filter(pk=run.task_id).update(title="Never committed")
        emit(block, "note.added")
        raise RuntimeError("the tool crashed")
    run.refresh_from_db()
    assert (Task.objects.get(pk=run.task_id).title, run.event_seq) == before
    assert not connection.in_atomic_block
    assert connection.execute_wrappers == []
