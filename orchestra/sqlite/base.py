"""SQLite, with the process's writers taking turns on a lock of their own.

SQLite lets one writer in at a time. A writer that finds the database locked waits in
SQLite's busy handler, which polls with sleeps growing to 100 ms: with tens of steps writing
at once (the embedded worker's threads), most of the time the lock is free and every waiter
is asleep, and a 200-step plan crawled. Here a transaction (`BEGIN IMMEDIATE`, taken by every
`atomic` block) and a write outside one first take a lock shared by the process's
connections to the same file, so the next writer starts the moment the last one commits.
Reads never wait (WAL). Another process (a CLI command beside `orchestra up`) still meets
SQLite's own busy wait.

A writer that waits longer than the database's `timeout` gets SQLite's own error,
"database is locked", as it would have without the queue.
"""

import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

# What a statement outside a transaction may start with and not write.
_READS = ("SELECT", "PRAGMA", "EXPLAIN", "BEGIN", "SAVEPOINT", "RELEASE")

# Statements as SQLite takes them ("?" for "%s"), by the statement as Django wrote it: the
# engine sends the same few dozen statements over and over, and rewriting one with Django's
# regular expression took some 30 microseconds (a read of a step with its run and project),
# a few milliseconds a step in all. Bounded, since a batched insert's statement differs with
# its number of rows.
_CONVERTED: dict[str, str] = {}
_CONVERTED_AT_MOST = 1000


def _writers_lock(name: str) -> threading.Lock:
    lock = _LOCKS.get(name)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(name, threading.Lock())
    return lock


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writing: threading.Lock | None = None  # the writers' lock, while this holds it

    def _wait_for_turn(self) -> None:
        # Looked up each time: the test runner renames the database after connections exist.
        lock = _writers_lock(str(self.settings_dict["NAME"]))
        if not lock.acquire(timeout=float(self.settings_dict["OPTIONS"].get("timeout", 5))):
            raise OperationalError("database is locked")
        self._writing = lock

    def _end_turn(self) -> None:
        if self._writing is not None:
            lock, self._writing = self._writing, None
            lock.release()

    def _start_transaction_under_autocommit(self):
        self._wait_for_turn()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._end_turn()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            if self.connection is None or not self.connection.in_transaction:
                self._end_turn()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._end_turn()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._end_turn()

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=QueuedCursor)
        cursor.wrapper = self
        return cursor


class QueuedCursor(base.SQLiteCursorWrapper):
    """A write outside a transaction takes its turn like a transaction does."""

    wrapper: DatabaseWrapper

    def execute(self, query, params=None):
        return self._in_turn(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._in_turn(super().executemany, query, param_list)

    def convert_query(self, query, *, param_names=None):
        if param_names is not None:
            return super().convert_query(query, param_names=param_names)
        converted = _CONVERTED.get(query)
        if converted is None:
            converted = super().convert_query(query)
            if len(_CONVERTED) < _CONVERTED_AT_MOST:
                _CONVERTED[query] = converted
        return converted

    def _in_turn(self, send, query, params):
        if not self._takes_turn(query):
            return send(query, params)
        self.wrapper._wait_for_turn()
        try:
            return send(query, params)
        finally:
            self.wrapper._end_turn()

    def _takes_turn(self, query: str) -> bool:
        return (
            self.wrapper._writing is None
            and not self.connection.in_transaction
            and not query.lstrip()[:9].upper().startswith(_READS)
        )
