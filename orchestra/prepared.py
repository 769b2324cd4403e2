"""Reads the engine sends at every transition, compiled once per process.

The ORM compiles a queryset's SQL each time it runs. For the reads every step makes several
times (the locked run with its project and task), compiling took more interpreter time than
the database took to answer. A `PreparedRead` is compiled by the ORM once per process and
database (not per thread: a worker's 64 threads compiled each read 64 times, 6% of a
benchmark's interpreter time) and then sent as it is, by each thread on its own connection;
its rows become model instances through the ORM's own parts (the columns' converters,
`select_related`'s populators, annotations), as the ORM makes them. A read can go with the
one before it, in its round trip (`get`'s `then`), and is then kept for the next read of it.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.query import get_related_populators
from psycopg import ClientCursor

# Stand for the values that change between sends (the first, the second, ...); never real
# primary keys.
_PLACEHOLDERS = tuple(-7_654_321 - n for n in range(4))


@dataclass
class _Compiled:
    sql: str
    params: list
    at: list[int]  # where each value's placeholder sits in `params`
    model: type[models.Model]
    columns: slice
    names: list[str]
    converters: dict
    populators: list
    annotations: dict  # name -> its column
    after: dict = field(default_factory=dict)  # statement -> it and this read (`after`)


class PreparedRead:
    """`build(*values)`, a queryset, compiled once per connection; `get(*values)` reads its
    one row (its model's DoesNotExist when there is none), `all(*values)` every row, and
    `tuples(*values)` the rows of a `values_list`."""

    def __init__(self, name: str, build: Callable[..., models.QuerySet], values: int = 1) -> None:
        self._name = name
        self._build = build
        self._values = values
        self._by_database: dict[tuple[str, str], _Compiled] = {}
        self._kept = threading.local()  # rows read `ahead`, for this thread's next read

    def ahead(self, *values) -> "Ahead":
        """This read, to be sent with the statement before it (see `get`'s `then`)."""
        return Ahead(self, values)

    def get(self, *values, then: "Ahead | None" = None) -> models.Model:
        """With `then`: that read is sent in the same round trip, right behind this one, and
        its rows are kept for its next read on this connection, if no other statement comes
        first (PostgreSQL). What a locked block reads first is then read as the lock is
        granted, not one round trip (and, for a busy worker, a wait for the interpreter)
        after it."""
        if then is not None and _together(connections[DEFAULT_DB_ALIAS]):
            compiled, rows = self._read_then(values, then)
        else:
            compiled, rows = self._read(values, one=True)
        if not rows:
            raise compiled.model.DoesNotExist(f"no {compiled.model.__name__} for {values}")
        return self._instance(compiled, rows[0])

    def all(self, *values: int) -> list[models.Model]:
        compiled, rows = self._read(values, one=False)
        return [self._instance(compiled, row) for row in rows]

    def tuples(self, *values: int) -> list:
        """Every row of a `values_list` queryset, its columns as that names them."""
        return self._read(values, one=False)[1]

    def after(
        self, statement: str, params: list, returned: int, *values: int
    ) -> tuple[tuple, models.Model] | None:
        """A data-modifying `statement` (`params`, RETURNING `returned` columns) and then this
        read's one row, in one statement: PostgreSQL only (the statement as a CTE, the read
        joined to the row it returned). The returned row and the instance; None when either
        found nothing. The read sees the database as the statement found it."""
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = self._compiled(connection, values)
        composed = compiled.after.get(statement)
        if composed is None:
            select, tables = compiled.sql.split(" FROM ", 1)
            columns = select.removeprefix("SELECT ")
            composed = compiled.after[statement] = (  # SQL and compiled SQL; values are params
                f'WITH "done" AS ({statement}) SELECT "done".*, {columns} FROM "done", {tables}'  # noqa: S608
            )
        with connection.cursor() as cursor:
            cursor.execute(composed, [*params, *self._params(compiled, values)])
            rows = cursor.fetchmany(1)
        if not rows:
            return None
        done, read = rows[0][:returned], [rows[0][returned:]]
        return done, self._instance(compiled, _converted(compiled, read, connection)[0])

    def _compiled(self, connection, values: tuple) -> "_Compiled":
        if len(values) != self._values:
            raise TypeError(f"{self._name} reads by {self._values} values, not {len(values)}")
        database = (connection.alias, connection.vendor)
        compiled = self._by_database.get(database)
        if compiled is None:  # two threads may both compile it first: the same, either kept
            compiled = self._by_database[database] = self._compile(connection)
        return compiled

    def _params(self, compiled: "_Compiled", values: tuple) -> list:
        params = list(compiled.params)
        for at, value in zip(compiled.at, values, strict=True):
            params[at] = value
        return params

    def _read(self, values: tuple, *, one: bool) -> tuple["_Compiled", list]:
        connection = connections[DEFAULT_DB_ALIAS]  # this thread's
        compiled = self._compiled(connection, values)
        kept = getattr(self._kept, "rows", None)
        if kept is not None and kept.connection is connection and kept.values == values:
            self.discard()
            return compiled, kept.rows[:1] if one else kept.rows
        params = self._params(compiled, values)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchmany(1) if one else cursor.fetchall()
        return compiled, _converted(compiled, rows, connection)

    def _read_then(self, values: tuple, then: "Ahead") -> tuple["_Compiled", list]:
        """This read's rows, and `then`'s kept (see `get`)."""
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = self._compiled(connection, values)
        later = then.read._compiled(connection, then.values)
        # Two statements in one query string (client-side binding: the simple protocol), sent
        # at once. The second begins once the first is done (the lock granted) and takes its
        # own snapshot then, so it reads what the lock's last holder committed; one statement
        # that took the lock and read would read the database as it was before the wait.
        with several_statements(connection) as cursor:
            cursor.execute(
                f"{compiled.sql}; {later.sql}",
                [*self._params(compiled, values), *then.read._params(later, then.values)],
            )
            rows = cursor.fetchmany(1)
            cursor.nextset()
            kept = cursor.fetchall()
        then.read._keep(connection, then.values, _converted(later, kept, connection))
        return compiled, _converted(compiled, rows, connection)

    def _keep(self, connection, values: tuple, rows: list) -> None:
        """Keep `rows` for this thread's next read of `values`, until any statement runs."""
        self.discard()

        def dropped_by_any_statement(execute, sql, params, many, context):
            self.discard()
            return execute(sql, params, many, context)

        self._kept.rows = _Kept(connection, values, rows, dropped_by_any_statement)
        connection.execute_wrappers.append(dropped_by_any_statement)

    def discard(self) -> None:
        """Forget rows kept by `ahead` that were not read."""
        kept = getattr(self._kept, "rows", None)
        if kept is None:
            return
        self._kept.rows = None
        if kept.dropper in kept.connection.execute_wrappers:
            kept.connection.execute_wrappers.remove(kept.dropper)

    @staticmethod
    def _instance(compiled: "_Compiled", row) -> models.Model:
        obj = compiled.model.from_db(DEFAULT_DB_ALIAS, compiled.names, row[compiled.columns])
        for populator in compiled.populators:
            populator.populate(row, obj)
        for name, at in compiled.annotations.items():
            setattr(obj, name, row[at])
        return obj

    def _compile(self, connection) -> _Compiled:
        placeholders = _PLACEHOLDERS[: self._values]
        queryset = self._build(*placeholders)
        compiler = queryset.query.get_compiler(connection.alias)
        sql, params = compiler.as_sql()
        params = list(params)
        at = [_place(params, placeholder, self._name) for placeholder in placeholders]
        select, klass_info = compiler.select, compiler.klass_info
        if klass_info is None:  # a `values_list`: its rows as they are (`tuples`)
            return _Compiled(
                sql=sql,
                params=params,
                at=at,
                model=queryset.model,
                columns=slice(None),
                names=[],
                converters=compiler.get_converters([column[0] for column in select]),
                populators=[],
                annotations={},
            )
        fields = klass_info["select_fields"]
        columns = slice(fields[0], fields[-1] + 1)
        return _Compiled(
            sql=sql,
            params=params,
            at=at,
            model=klass_info["model"],
            columns=columns,
            names=[column[0].target.attname for column in select[columns]],
            converters=compiler.get_converters([column[0] for column in select]),
            populators=get_related_populators(klass_info, select, connection.alias),
            annotations=dict(compiler.annotation_col_map or {}),
        )


def _place(params: list, placeholder: int, name: str) -> int:
    """Where `placeholder` sits in a compiled read's `params`: as it is, or as its text where
    a text column is compared with it (an API token's digest)."""
    places = [at for at, param in enumerate(params) if param in (placeholder, str(placeholder))]
    if len(places) != 1:
        raise ValueError(f"{name}: each value must appear once in {params}")
    return places[0]


class _Kept(NamedTuple):
    connection: BaseDatabaseWrapper
    values: tuple
    rows: list
    dropper: Callable  # the execute wrapper that forgets them at the next statement


@dataclass(frozen=True)
class Ahead:
    """A read sent in the round trip of the statement before it (`PreparedRead.get`)."""

    read: PreparedRead
    values: tuple

    def discard(self) -> None:
        self.read.discard()


def several_statements(connection):
    """A cursor whose query string may hold several statements, sent at once: its values are
    bound on the client (PostgreSQL's simple protocol). Ensures the connection."""
    connection.ensure_connection()
    return connection._prepare_cursor(ClientCursor(connection.connection))


def _together(connection) -> bool:
    """Whether two reads can go in one query string: PostgreSQL's simple protocol."""
    return connection.vendor == "postgresql"


def _converted(compiled: _Compiled, rows: list, connection) -> list:
    """`rows` with each column's converters applied, as the ORM's compiler applies them
    (`SQLCompiler.apply_converters`), given the reading thread's connection rather than the
    one the read was compiled on."""
    if not (compiled.converters and rows):
        return rows
    converters = list(compiled.converters.items())
    converted = []
    for row in map(list, rows):
        for at, (functions, expression) in converters:
            value = row[at]
            for function in functions:
                value = function(value, expression, connection)
            row[at] = value
        converted.append(row)
    return converted
