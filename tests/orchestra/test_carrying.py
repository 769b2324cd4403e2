"""A worker's thread carries on the step its task made due (`queue.carrying_on`): a chain's
next step starts on the thread that merged the one before, without a hand-over; a fan-out's
other steps are handed over as ever; on a Celery worker only what it consumes is kept; a
worker asked to stop, or a server that stopped serving, hands over what it kept; a carried
task reads on its thread's connection, replaced only when it broke."""

import threading

import pytest
from celery.worker import state
from django.db import OperationalError, connection, transaction

from agents.llm import override_client
from orchestra import queue
from orchestra.celery import app
from orchestra.engine import start_run
from orchestra.models import Run
from tests.costs import _answer
from tests.scripted import ScriptedModel

pytestmark = pytest.mark.django_db(transaction=True)

ENDED = (Run.Status.COMPLETED, Run.Status.FAILED, Run.Status.CANCELLED)


def _run_to_its_end(owner, project, length: int, *, chained: bool) -> Run:
    with override_client(ScriptedModel(_answer(length, chained=chained))):
        run = start_run(owner, project, f"Carried, {length} steps")
        poll = threading.Event()
        for _ in range(1500):  # the row's status is the event: read until it ends (30 s)
            run.refresh_from_db()
            if run.status in ENDED:
                break
            poll.wait(0.02)
    assert run.status == Run.Status.COMPLETED, (run.status, run.error)
    return run


def _started_on(run: Run) -> dict[str, str]:
    """Each step's key: the worker (host, process, thread) its attempt started on."""
    return {
        event.step.key: event.data["worker"]
        for event in run.events.filter(kind="step.started").select_related("step")
    }


def test_a_chain_runs_on_the_thread_that_merged_the_step_before(demo, owner, settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    run = _run_to_its_end(owner, demo, 4, chained=True)
    workers = _started_on(run)
    assert sorted(workers) == ["k000", "k001", "k002", "k003"]
    # Handed over, each step would start on another thread: the one before still held its.
    assert len(set(workers.values())) == 1, workers


def test_a_fan_outs_other_steps_are_handed_over(demo, owner, settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    run = _run_to_its_end(owner, demo, 3, chained=False)
    workers = _started_on(run)
    assert sorted(workers) == ["k000", "k001", "k002"]
    assert len(set(workers.values())) >= 2, workers  # not all kept for one thread


# --- a Celery worker: what it consumes, a stop, its connection -----------------------------
ran: list[tuple[int, str]] = []
# The database connection each `tests.carried` read on (the driver's connection object).
read_on: list[object] = []


@app.task(name="tests.carried")
def carried(value: int) -> None:
    Run.objects.exists()  # it reads the database, as every engine task does
    read_on.append(connection.connection)
    ran.append((value, threading.current_thread().name))


sent: list[list] = []


@pytest.fixture
def celery_worker_thread(settings, monkeypatch):
    """This thread as a Celery worker's, with `tests.carried` among what a worker carries on.
    What it hands over to the broker is noted in `sent` (the suite's broker is shared with
    the integration tests' workers, which would take it)."""
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    monkeypatch.setattr(queue, "CARRIED_TASKS", queue.CARRIED_TASKS | {"tests.carried"})
    monkeypatch.setattr(queue, "_send", lambda task, args, *_: sent.append([task.name, *args]))
    ran.clear()
    sent.clear()
    read_on.clear()


def _body_making_due(*values: int) -> object:
    """A task's body whose transaction makes `tests.carried` due once per value; the
    database connection it wrote on."""
    with queue.carrying_on():
        with transaction.atomic():
            for value in values:
                queue.enqueue("tests.carried", value)
            written_on = connection.connection
        assert ran == []  # nothing before the commit, nor before the body ends
    return written_on


def test_a_worker_runs_the_first_task_after_the_body_and_sends_the_rest(
    celery_worker_thread, monkeypatch
):
    monkeypatch.setattr(queue, "consumed", frozenset({"orchestra"}))
    written_on = _body_making_due(1, 2)
    assert ran == [(1, threading.current_thread().name)]
    # On the body's connection: not handed back to a pool and another borrowed.
    assert read_on == [written_on]
    assert sent == [["tests.carried", 2]]


def test_what_a_worker_does_not_consume_is_sent(celery_worker_thread, monkeypatch):
    monkeypatch.setattr(queue, "consumed", frozenset({"steps"}))
    _body_making_due(1)
    assert ran == []
    assert sent == [["tests.carried", 1]]


def test_a_worker_asked_to_stop_sends_what_it_kept(celery_worker_thread, monkeypatch):
    monkeypatch.setattr(queue, "consumed", frozenset({"orchestra"}))
    monkeypatch.setattr(state, "should_stop", 0)  # a warm shutdown's exit code
    _body_making_due(1)
    assert ran == []
    assert sent == [["tests.carried", 1]]


def test_a_connection_broken_before_a_carried_task_is_replaced(celery_worker_thread, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("an SQLite connection is a file: nothing can break it from outside")
    monkeypatch.setattr(queue, "consumed", frozenset({"orchestra"}))
    with queue.carrying_on():
        with transaction.atomic():
            queue.enqueue("tests.carried", 1)
        # The server ends this connection (as a restart would) and the body's last read fails.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        _terminated(pid)
        with pytest.raises(OperationalError):
            Run.objects.exists()
    assert ran == [(1, threading.current_thread().name)]  # on a new connection


def _terminated(pid: int) -> None:
    """The server ends backend `pid`, asked on a connection of its own."""
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        dbname=db["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_server_that_stopped_serving_hands_over_what_it_kept(celery_worker_thread, monkeypatch):
    """The embedded server stopping (`orchestra up` says so once it stops serving): the
    interpreter joins the pool's threads next, which must not go on down a chain."""
    monkeypatch.setattr(queue, "consumed", frozenset({"orchestra"}))
    monkeypatch.setattr(queue, "_stop", threading.Event())
    queue.stop_carrying()
    _body_making_due(1)
    assert ran == []
    assert sent == [["tests.carried", 1]]


def test_work_made_due_while_the_embedded_server_stops_stays_due(settings, monkeypatch, caplog):
    """The pool takes nothing once the process stops: the transaction that made the work due
    commits all the same (no error out of its commit hook), and says what stays due."""
    from concurrent.futures import ThreadPoolExecutor

    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    stopped = ThreadPoolExecutor(max_workers=1)
    stopped.shutdown()
    monkeypatch.setattr(queue, "_pool", stopped)
    with caplog.at_level("INFO", logger="orchestra.queue"), transaction.atomic():
        queue.enqueue("tests.carried", 7)
    assert "tests.carried(7,) stays due: the server is stopping" in caplog.text
    assert ran == []


def test_orchestra_up_stops_carrying_once_it_stops_serving(
    db, settings, monkeypatch, own_embedded_pool
):
    """(A real `orchestra up` stopped by SIGTERM mid-chain of 0.3 s steps exits in about half
    a second; without this, it waited for the chain's end: ten seconds.)"""
    from orchestra import cli

    settings.ORCHESTRA_EMBEDDED_WORKER = "sync"  # no embedded beat or recovery here
    serving: list[bool] = []
    monkeypatch.setattr(cli, "_serve", lambda *a, **k: serving.append(queue._stopping()) or 0)
    assert cli.main(["up", "--port", "8999"]) == 0
    assert serving == [False]  # carrying while it serves
    assert queue._stopping()  # not once it stopped


@app.task(name="tests.held")
def held(value: int) -> None:
    ran.append((value, threading.current_thread().name))
    began.set()
    release.wait(30)


began, release = threading.Event(), threading.Event()


def test_a_stopping_server_starts_nothing_queued_and_waits_its_grace(
    settings, monkeypatch, own_embedded_pool
):
    """`queue.stop_embedded`: the task running gets the grace and is counted as left; the one
    queued behind it never starts; the pool takes nothing more."""
    from concurrent.futures import ThreadPoolExecutor

    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    monkeypatch.setattr(queue, "_pool", ThreadPoolExecutor(max_workers=1))
    began.clear()
    release.clear()
    ran.clear()
    queue.enqueue("tests.held", 1)
    assert began.wait(10)
    queue.enqueue("tests.held", 2)  # waits for the one thread
    assert queue.unfinished() == 2
    left = queue.stop_embedded(0.3)
    assert left == 1  # the running one; the queued one was dropped
    assert [value for value, _thread in ran] == [1]
    queue.enqueue("tests.held", 3)  # refused, said to stay due
    release.set()
    queue._pool.shutdown(wait=True)
    assert [value for value, _thread in ran] == [1]
    assert queue.unfinished() == 0
    assert queue._stopping()
