"""A `locked_run` block that ends its transaction sends COMMIT with its last statement on
PostgreSQL (the run's lock is released a round trip sooner); inside another transaction it
leaves the commit to that one; a commit that fails leaves nothing."""

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction

from orchestra.events import emit, locked_run
from orchestra.models import Event, Run, Task
from orchestra.writes import update_later

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent():
    statements = []

    def listen(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(listen):
        yield statements


def _seen_elsewhere(run_id: int) -> tuple[str, int]:
    """The run's task title and event count, read on another thread's connection."""
    seen = []

    def read():
        try:
            run = Run.objects.select_related("task").get(pk=run_id)
            seen.append((run.task.title, Event.objects.filter(run_id=run_id).count()))
        finally:
            connections["default"].close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return seen[0]


def test_a_block_that_ends_its_transaction_commits_with_its_last_statement(demo_run, sent):
    events = Event.objects.filter(run=demo_run).count()
    after_commit = []
    with locked_run(demo_run.pk) as run:
        update_later(run, Task, run.task_id, title="Renamed under the lock")
        emit(run, "note.added")
        transaction.on_commit(lambda: after_commit.append(_seen_elsewhere(run.pk)))
    assert sent[-1].endswith("; COMMIT") == (connection.vendor == "postgresql")
    assert after_commit == [("Renamed under the lock", events + 1)]
    assert not connection.in_atomic_block


def test_a_block_inside_another_transaction_leaves_the_commit_to_it(demo_run, sent):
    before = (demo_run.task.title, Event.objects.filter(run=demo_run).count())
    with pytest.raises(RuntimeError), transaction.atomic():
        with locked_run(demo_run.pk) as run:
            update_later(run, Task, run.task_id, title="Never committed")
            emit(run, "note.added")
        raise RuntimeError("the outer transaction fails after the block")
    assert not any("COMMIT" in sql for sql in sent)
    assert _seen_elsewhere(demo_run.pk) == before


def test_a_commit_that_fails_commits_nothing(demo_run):
    """A task moved to a project that does not exist: the foreign key is checked at COMMIT
    (deferred), which fails, and nothing of the block stays."""
    before = (demo_run.task.title, Event.objects.filter(run=demo_run).count())
    with pytest.raises(DatabaseError), locked_run(demo_run.pk) as run:
        update_later(run, Task, run.task_id, title="Never committed", project_id=10**9)
        emit(run, "note.added")
    assert not connection.in_atomic_block
    assert _seen_elsewhere(demo_run.pk) == before
    with locked_run(demo_run.pk) as run:  # the connection goes on
        emit(run, "note.added")
    assert _seen_elsewhere(demo_run.pk) == (before[0], before[1] + 1)
