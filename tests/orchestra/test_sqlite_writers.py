"""The embedded default's SQLite backend queues the process's writers on a lock of its own
(orchestra.sqlite): every transaction and every write outside one takes a turn, and every
way a turn ends gives it back. Run on a database file of the test's own, whatever the
suite's database is."""

import threading

import pytest
from django.db import OperationalError, connections, transaction

from orchestra.sqlite import base
from orchestra.sqlite.base import _writers_lock

ALIAS = "writers"


@pytest.fixture
def writers(tmp_path, django_db_blocker):
    path = tmp_path / "writers.sqlite3"
    settings = {
        "ENGINE": "orchestra.sqlite",
        "NAME": str(path),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 10,
        },
    }
    default = connections.settings["default"]
    connections.settings[ALIAS] = connections.configure_settings(
        {"default": default, ALIAS: settings}
    )[ALIAS]
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT UNIQUE)")
        yield _writers_lock(str(path))
        connections[ALIAS].close()
    del connections[ALIAS]
    del connections.settings[ALIAS]


def _in_thread(work):
    """Run `work` on a thread of its own (its own connection); returns its outcome."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connections[ALIAS].close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return outcome


def _count() -> int:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM note")
        return cursor.fetchone()[0]


def test_a_transaction_holds_the_turn_until_it_commits(writers):
    with transaction.atomic(using=ALIAS):
        connections[ALIAS].cursor().execute("INSERT INTO note (body) VALUES ('a')")
        assert writers.locked()
    assert not writers.locked()
    assert _count() == 1


def test_a_rolled_back_transaction_gives_the_turn_back(writers):
    with pytest.raises(RuntimeError), transaction.atomic(using=ALIAS):
        connections[ALIAS].cursor().execute("INSERT INTO note (body) VALUES ('a')")
        raise RuntimeError("the block failed")
    assert not writers.locked()
    assert _count() == 0


def test_a_failed_write_outside_a_transaction_gives_the_turn_back(writers):
    cursor = connections[ALIAS].cursor()
    cursor.execute("INSERT INTO note (body) VALUES ('a')")
    with pytest.raises(Exception, match="UNIQUE"):
        cursor.execute("INSERT INTO note (body) VALUES ('a')")
    assert not writers.locked()


def test_reads_do_not_wait_for_a_writer(writers):
    with transaction.atomic(using=ALIAS):
        connections[ALIAS].cursor().execute("INSERT INTO note (body) VALUES ('a')")
        # Another thread reads (WAL: what was committed) while this one holds the turn.
        assert _in_thread(_count) == {"value": 0}
    assert _count() == 1


def test_a_writer_that_waits_past_the_timeout_gets_sqlites_error(writers):
    connections.settings[ALIAS]["OPTIONS"]["timeout"] = 0.2

    def write():
        connections[ALIAS].cursor().execute("INSERT INTO note (body) VALUES ('b')")

    with transaction.atomic(using=ALIAS):
        connections[ALIAS].cursor().execute("INSERT INTO note (body) VALUES ('a')")
        outcome = _in_thread(write)
    assert isinstance(outcome["error"], OperationalError)
    assert "database is locked" in str(outcome["error"])
    assert _count() == 1  # the holder's work is intact


def test_many_threads_writing_at_once_all_get_in(writers):
    def work(worker: int):
        for n in range(15):
            with transaction.atomic(using=ALIAS), connections[ALIAS].cursor() as cursor:
                cursor.execute("INSERT INTO note (body) VALUES (%s)", [f"{worker}-{n}"])
                cursor.execute("SELECT count(*) FROM note")
                assert cursor.fetchone()[0] >= n + 1
            with connections[ALIAS].cursor() as cursor:
                cursor.execute(
                    "UPDATE note SET body = body || '.' WHERE body = %s", [f"{worker}-{n}"]
                )
        connections[ALIAS].close()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert _count() == 8 * 15
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM note WHERE body LIKE '%.'")
        assert cursor.fetchone()[0] == 8 * 15
    assert not writers.locked()


def test_statements_are_converted_for_sqlite_once_and_the_same_way(writers, monkeypatch):
    monkeypatch.setattr(base, "_CONVERTED", {})
    monkeypatch.setattr(base, "_CONVERTED_AT_MOST", 2)
    statement = "SELECT %s, '100%%', %s"
    with connections[ALIAS].cursor() as cursor:
        for _ in range(2):
            cursor.execute(statement, [1, "two"])
            assert cursor.fetchone() == (1, "100%", "two")
        assert dict(base._CONVERTED) == {statement: "SELECT ?, '100%', ?"}
        cursor.execute("SELECT %(a)s, %(b)s", {"a": 1, "b": 2})  # named: not kept
        assert cursor.fetchone() == (1, 2)
        for number in range(3):
            cursor.execute(f"SELECT %s + {number}", [1])
            assert cursor.fetchone() == (1 + number,)
    assert len(base._CONVERTED) == 2  # bounded
