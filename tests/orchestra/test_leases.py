"""The process's lease keeper: one thread renews the lease of every activity the process
holds, stops renewing one whose work ended, and never pushes back the lease of work that
failed (it must be due for the sweep at once). Work whose last transaction marks it done
(`finish_with`) costs no statement after it, and only when that transaction commits."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from orchestra import activities
from orchestra.engine import start_run
from orchestra.events import emit, locked_run
from orchestra.models import Activity

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_run(demo, owner):
    return start_run(owner, demo, "Leases")


@pytest.fixture
def keeping(settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"  # only `sync` runs without the keeper
    settings.ORCHESTRA_LEASE = 0.3  # renewed every 0.1 s


def _running(run, step, owner: str) -> Activity:
    return Activity.objects.create(
        key=f"test:{step.pk}",
        run=run,
        step=step,
        kind=Activity.Kind.STEP,
        status=Activity.Status.RUNNING,
        task="orchestra.take_over_step",
        args=[step.pk],
        owner=owner,
        attempt=1,
        lease_expires_at=timezone.now() + timedelta(seconds=0.3),
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )


def _wait_renewed(activity: Activity, after, timeout: float = 10.0) -> Activity:
    """Poll the row (the keeper's renewal is the event) until renewed after `after`."""
    poll = threading.Event()
    deadline = timezone.now() + timedelta(seconds=timeout)
    while timezone.now() < deadline:
        activity.refresh_from_db()
        if activity.heartbeat_at > after:
            return activity
        poll.wait(0.02)
    raise AssertionError(f"activity {activity.pk} was not renewed within {timeout} s")


def test_one_keeper_renews_every_held_lease_and_stops_with_the_work(finished_run, keeping):
    first, second = finished_run.steps.all()[:2]
    a, b = _running(finished_run, first, "host:1:a"), _running(finished_run, second, "host:1:b")
    began = timezone.now()
    with activities.held(a), activities.held(b):
        assert set(activities._keeper.holding()) == {a.pk, b.pk}
        a, b = _wait_renewed(a, began), _wait_renewed(b, began)
        assert a.lease_expires_at > began + timedelta(seconds=0.25)
        # Renewed together, in one statement: read together, their beats are one instant.
        beats = Activity.objects.filter(pk__in=[a.pk, b.pk]).values_list("heartbeat_at")
        assert len(set(beats)) == 1
    assert activities._keeper.holding() == {}
    a.refresh_from_db()
    assert a.status == Activity.Status.DONE


def test_a_lease_taken_over_by_another_worker_is_not_renewed(finished_run, keeping):
    first, second = finished_run.steps.all()[:2]
    mine, theirs = _running(finished_run, first, "host:1:a"), _running(finished_run, second, "x")
    began = timezone.now()
    with activities.held(mine):
        Activity.objects.filter(pk=mine.pk).update(owner="another:2:b")  # taken over
        with activities.held(theirs):
            theirs = _wait_renewed(theirs, began)
        assert Activity.objects.get(pk=mine.pk).heartbeat_at < began
    # Still theirs: not marked done by this worker either.
    assert Activity.objects.get(pk=mine.pk).status == Activity.Status.RUNNING


def test_failed_work_is_due_at_once_whatever_the_keeper_was_doing(finished_run, keeping):
    step = finished_run.steps.first()
    activity = _running(finished_run, step, "host:1:a")
    began = timezone.now()
    with pytest.raises(RuntimeError), activities.held(activity):
        _wait_renewed(activity, began)
        raise RuntimeError("the work failed")
    activity.refresh_from_db()
    assert activity.status == Activity.Status.RUNNING
    assert activity.lease_expires_at <= timezone.now()
    assert activity.pk not in activities._keeper.holding()


def test_work_ended_by_its_last_transaction_costs_no_statement_after_it(finished_run):
    step = finished_run.steps.first()
    activity = _running(finished_run, step, "host:1:a")
    statements = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count), activities.held(activity):
        with locked_run(finished_run.pk) as run:
            emit(run, "note.added")
            activities.finish_with(run)
        after_block = len(statements)
    assert statements[after_block:] == []  # `held` wrote nothing more
    activity.refresh_from_db()
    assert activity.status == Activity.Status.DONE


def test_a_last_transaction_that_fails_leaves_the_work_due(finished_run):
    step = finished_run.steps.first()
    activity = _running(finished_run, step, "host:1:a")
    with (
        pytest.raises(RuntimeError),
        activities.held(activity),
        locked_run(finished_run.pk) as run,
    ):
        activities.finish_with(run)
        raise RuntimeError("the transition failed")
    activity.refresh_from_db()
    assert activity.status == Activity.Status.RUNNING
    assert activity.lease_expires_at <= timezone.now()


def test_a_last_transaction_does_not_end_work_another_worker_took_over(finished_run):
    step = finished_run.steps.first()
    activity = _running(finished_run, step, "host:1:a")
    with activities.held(activity):
        Activity.objects.filter(pk=activity.pk).update(owner="another:2:b")  # taken over
        with locked_run(finished_run.pk) as run:
            emit(run, "note.added")
            activities.finish_with(run)
    assert Activity.objects.get(pk=activity.pk).status == Activity.Status.RUNNING
