"""Exactly-once transitions under real concurrency on PostgreSQL (threads, one connection
each)."""

import threading

import pytest
from django.db import connection

from agents.models import AgentRun
from approvals.errors import AlreadyDecided
from approvals.models import Checkpoint
from orchestra import engine
from orchestra.engine import decide_checkpoint
from orchestra.models import Activity, Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def race(*callables):
    """Run the callables at the same instant in threads; return their results or errors."""
    barrier = threading.Barrier(len(callables))
    results: list = [None] * len(callables)

    def runner(index, func):
        try:
            barrier.wait()
            results[index] = func()
        except Exception as exc:  # collected for the assertions
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i, f)) for i, f in enumerate(callables)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_concurrent_decisions_exactly_one_wins(demo, owner, approver, second_approver):
    assert connection.vendor == "postgresql"
    run = engine.start_run(owner, demo, "Race the approvers")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    results = race(
        lambda: decide_checkpoint(approver, Checkpoint.objects.get(pk=checkpoint.pk), "approve"),
        lambda: decide_checkpoint(
            second_approver, Checkpoint.objects.get(pk=checkpoint.pk), "reject", "no"
        ),
    )
    wins = [r for r in results if isinstance(r, Checkpoint)]
    refusals = [r for r in results if isinstance(r, AlreadyDecided)]
    assert len(wins) == 1 and len(refusals) == 1, results
    checkpoint.refresh_from_db()
    assert checkpoint.decided_by_id in (approver.pk, second_approver.pk)
    assert run.events.filter(kind="approval.decided", data__checkpoint=checkpoint.pk).count() == 1


def test_a_step_is_claimed_once_when_two_workers_race(demo, owner, settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
    run = engine.start_run(owner, demo, "Race the workers")
    step = run.steps.get(key="research")
    # Put the step back to `ready`, its activity queued, as a duplicate delivery finds them.
    Step.objects.filter(pk=step.pk).update(status=Step.Status.READY)
    Activity.objects.filter(step=step, kind=Activity.Kind.STEP).update(
        status=Activity.Status.QUEUED, owner=""
    )
    AgentRun.objects.filter(step=step).delete()
    before = step.attempts
    # Follow-up work goes to the broker, where no worker listens during this test.
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    race(lambda: engine.execute_step(step.pk), lambda: engine.execute_step(step.pk))
    step.refresh_from_db()
    assert step.attempts == before + 1
    assert AgentRun.objects.filter(step=step, purpose=AgentRun.Purpose.STEP).count() == 1


def test_concurrent_events_get_distinct_consecutive_seqs(demo, owner):
    from orchestra.events import emit, locked_run

    run = Run.objects.create(task=demo.tasks.create(title="t"), project=demo)

    def many():
        for _ in range(25):
            with locked_run(run.pk) as locked:
                emit(locked, "test.tick")

    race(many, many, many, many)
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 101))
