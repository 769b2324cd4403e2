"""Rows an engine block writes "later": in the statement that writes the block's events.

Inside a `locked_run` or `recording` block (see `orchestra.events`), on PostgreSQL, an
UPDATE (`update_later`) or INSERT (`insert_later`) that nothing in the block reads back
rides as a CTE in the block's last statement, the one that writes its events and the run's
row: a model call, its usage and its conversation cost one statement, not four. An
inserted row's id reaches the event that names it inside that statement. Elsewhere (SQLite,
outside a block) the write runs at once.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.models import DecimalField, F, FloatField, IntegerField, Value
from django.db.models.constants import OnConflict
from django.db.models.expressions import CombinedExpression
from django.db.models.sql import InsertQuery, UpdateQuery

from orchestra.models import Event, Run

# The runs of the `locked_run` and `recording` blocks this thread is in, innermost last.
_blocks = threading.local()


@contextmanager
def opened(run: Run) -> Iterator[None]:
    """`run`'s block is open while inside (`open_block` returns it)."""
    stack = _blocks.__dict__.setdefault("runs", [])
    stack.append(run)
    try:
        yield
    finally:
        stack.pop()


def open_block() -> Run | None:
    """The run of the innermost `locked_run` or `recording` block this thread is in, for
    writes that may ride in its last statement (`insert_later`)."""
    stack = getattr(_blocks, "runs", None)
    return stack[-1] if stack else None


# The event at ordinal %s names the row the CTE w{n} inserted by its id in data[%s]; the id
# comes back too.
_NAMED = " WHEN %s THEN jsonb_set(e.data, %s::text[], (SELECT to_jsonb(id) FROM w{n}))"
_INSERTED_ID = "(SELECT id FROM w{n})"


@dataclass
class Write:
    """A row written by the statement that writes a block's events."""

    sql: str = ""
    params: list = dataclass_field(default_factory=list)
    # An UPDATE: its model, its row's primary key and the values, compiled when sent.
    model: type[models.Model] | None = None
    pk: int | None = None
    values: dict = dataclass_field(default_factory=dict)
    obj: models.Model | None = None  # an INSERT's object, which gets its id after
    event: Event | None = None  # the event whose data names the inserted row
    field: str = ""

    def statement(self) -> tuple[str, list]:
        if self.model is None:
            return self.sql, self.params
        return _row_update(self.model, self.pk, self.values) or _update_statement(
            self.model.objects.filter(pk=self.pk), self.values
        )

    def merge(self, values: dict) -> bool:
        """Take `values` into this UPDATE of the same row: a field set once, or appended to
        twice (an expression with `then`, e.g. a conversation's messages). False when they
        cannot be."""
        merged = dict(self.values)
        for name, value in values.items():
            if name not in merged:
                merged[name] = value
                continue
            then = getattr(merged[name], "then", None)
            combined = then(value) if then is not None else None
            if combined is None:
                return False
            merged[name] = combined
        self.values = merged
        return True


def _deferring(run: Run) -> list[Write] | None:
    writes = getattr(run, "_pending_writes", None)
    return writes if writes is not None and connection.vendor == "postgresql" else None


def update_later(run: Run, model: type[models.Model], pk: int, **values) -> None:
    """Update one row inside `run`'s `locked_run` or `recording` block: on PostgreSQL the
    UPDATE rides in the statement that writes the block's events at its end, elsewhere it
    runs now. Only for writes nothing in the block reads back (usage added with F(), a
    message appended, a counter set)."""
    writes = _deferring(run)
    if writes is None:
        _update_now(model, pk, values)
        return
    # One statement updates a row only once: a second update of it joins the first, or
    # sends it now.
    same = next((w for w in writes if w.model is model and w.pk == pk), None)
    if same is not None and same.merge(values):
        return
    if same is not None:
        write_now(writes, updates_only=True)
    writes.append(Write(model=model, pk=pk, values=values))


def save_later(run: Run, obj: models.Model, fields: list[str]) -> None:
    """`obj.save(update_fields=fields)`, written like `update_later`: for an object whose new
    state the rest of the block uses from memory, never reads back from the database."""
    update_later(run, type(obj), obj.pk, **{name: getattr(obj, name) for name in fields})


def execute_later(run: Run, sql: str, params: list) -> None:
    """An UPDATE the caller wrote (names constant, values as `params`), e.g. an activity
    marked done only while its owner still holds it, written like `update_later`: no query
    built for a statement sent at every transition."""
    writes = _deferring(run)
    if writes is None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    writes.append(Write(sql, list(params)))


_AMOUNT_FIELDS = {int: IntegerField(), Decimal: DecimalField(), float: FloatField()}


class Added(CombinedExpression):
    """`F(field) + amount`, an increment (a usage counter), which two updates of one row add
    up (`then`) and a deferred UPDATE writes without the ORM's compiler (`set_sql`)."""

    def __init__(self, field: str, amount) -> None:
        # The field the ORM would make for the amount, made once: a field made per value was
        # a third of writing the statement.
        output = _AMOUNT_FIELDS.get(type(amount))
        super().__init__(F(field), self.ADD, Value(amount, output_field=output))
        self.name, self.amount = field, amount

    def then(self, later) -> "Added | None":
        if not isinstance(later, Added) or later.name != self.name:
            return None
        return Added(self.name, self.amount + later.amount)

    def set_sql(self, column: str, connection) -> tuple[str, list]:
        """The new value of `column`, as the ORM writes it."""
        # The amount prepared as the ORM prepares it (on SQLite a decimal is cast, and so is
        # the sum).
        write = getattr(self.rhs, f"as_{connection.vendor}", self.rhs.as_sql)
        amount, params = write(None, connection)
        sql = f"({column} + {amount})"
        if connection.vendor == "sqlite" and isinstance(self.rhs.output_field, DecimalField):
            sql = f"(CAST({sql} AS NUMERIC))"
        return sql, params


def _this_threads():
    """This thread's connection itself. `connection` finds it again at each attribute read
    (asgiref's context-local lookup, 4.4 us here): the fields preparing a row's values read
    it several times a value, some 460 lookups a step of an in-process chain."""
    return connections[DEFAULT_DB_ALIAS]


def _update_now(model: type[models.Model], pk: int, values: dict) -> None:
    statement = _row_update(model, pk, values)
    if statement is None:
        model.objects.filter(pk=pk).update(**values)
        return
    with transaction.mark_for_rollback_on_error(), connection.cursor() as cursor:
        cursor.execute(*statement)


def _row_update(model: type[models.Model], pk: int, values: dict) -> tuple[str, list] | None:
    """The UPDATE of one row by its primary key, written as the ORM writes it (each value
    prepared by its field, `Added` and `Appended` by their `set_sql`) without building,
    cloning and compiling a query for it: the ORM's compiling was a tenth of a step's
    interpreter time on PostgreSQL, more on SQLite. None for a value only the ORM's compiler
    writes, and on other databases."""
    db = _this_threads()
    if db.vendor not in ("postgresql", "sqlite"):
        return None
    quote, meta = db.ops.quote_name, model._meta
    table = quote(meta.db_table)
    sets, params = [], []
    for name, value in values.items():
        field = meta.get_field(name)
        column = quote(field.column)
        if hasattr(value, "set_sql"):
            sql, value_params = value.set_sql(f"{table}.{column}", db)
        elif (
            hasattr(value, "resolve_expression")
            or hasattr(value, "prepare_database_save")
            or hasattr(field, "get_placeholder")
        ):
            return None
        else:
            sql, value_params = "%s", [field.get_db_prep_save(value, connection=db)]
        sets.append(f"{column} = {sql}")
        params += value_params
    params.append(meta.pk.get_db_prep_value(pk, db))
    # Only quoted names of the model's own table and columns are written in; values are params.
    sql = f"UPDATE {table} SET {', '.join(sets)} WHERE {table}.{quote(meta.pk.column)} = %s"  # noqa: S608
    return sql, params


def _update_statement(rows: models.QuerySet, values: dict) -> tuple[str, list]:
    query = rows.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(connection.alias).as_sql()
    return sql, list(params)


def insert_later(
    run: Run | None,
    obj: models.Model,
    event: Event | None = None,
    field: str = "",
    *,
    upsert: tuple[list[str], list[str]] | None = None,
) -> None:
    """Insert `obj` inside `run`'s block, like `update_later`; `event`, emitted in the same
    block, names it by its id in `data[field]`. `obj` has its id when the block ends. With
    `upsert` (unique fields, fields to update), a row with the same unique fields is
    updated instead (INSERT ... ON CONFLICT)."""
    writes = _deferring(run) if run is not None else None
    if writes is not None:
        writes.append(Write(*_insert_statement(obj, upsert), obj=obj, event=event, field=field))
        return
    if not connection.features.can_return_columns_from_insert:  # SQLite before 3.35
        if upsert is None:
            obj.save(force_insert=True)
        else:
            type(obj).objects.bulk_create(
                [obj], update_conflicts=True, unique_fields=upsert[0], update_fields=upsert[1]
            )
        if event is not None:
            event.data[field] = obj.pk
        return
    with transaction.mark_for_rollback_on_error(), connection.cursor() as cursor:
        cursor.execute(*_insert_statement(obj, upsert))
        _inserted(Write(obj=obj, event=event, field=field), cursor.fetchone()[0])


def _insert_statement(
    obj: models.Model, upsert: tuple[list[str], list[str]] | None
) -> tuple[str, list]:
    """The INSERT of `obj` returning its id, as `save(force_insert=True)` (or, with `upsert`,
    `bulk_create` with `update_conflicts`) writes it."""
    if upsert is None and (written := _row_insert(obj)) is not None:
        return written
    if upsert is not None and (written := _row_upsert(obj, upsert)) is not None:
        return written
    return _compiled_insert(obj, upsert)


def _compiled_insert(
    obj: models.Model, upsert: tuple[list[str], list[str]] | None
) -> tuple[str, list]:
    meta = obj._meta
    if upsert is None:
        query = InsertQuery(type(obj))
    else:
        query = InsertQuery(
            type(obj),
            on_conflict=OnConflict.UPDATE,
            unique_fields=[meta.get_field(name) for name in upsert[0]],
            update_fields=[meta.get_field(name) for name in upsert[1]],
        )
    query.insert_values([f for f in meta.local_concrete_fields if f is not meta.auto_field], [obj])
    compiler = query.get_compiler(connection.alias)
    compiler.returning_fields = [meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


# An upsert's SQL by model, fields and database, as the ORM compiled it once; only its values
# change from one row to the next (an activity's upsert was compiled three times a step).
_UPSERTS: dict[tuple, str] = {}


def _row_upsert(obj: models.Model, upsert: tuple[list[str], list[str]]) -> tuple[str, list] | None:
    """The upsert of one row, its SQL compiled once (see `_UPSERTS`) and its values as
    `_row_values` has them; None where only the ORM writes it."""
    params = _row_values(obj)
    if params is None:
        return None
    key = (type(obj), tuple(upsert[0]), tuple(upsert[1]), connection.alias, connection.vendor)
    sql = _UPSERTS.get(key)
    if sql is None:  # compiled now, with the values as the ORM lays them out
        sql, compiled = _compiled_insert(obj, upsert)
        if len(compiled) == len(params):  # one value a column, as `_row_values` has them
            _UPSERTS[key] = sql
        return sql, compiled
    return sql, params


def _row_insert(obj: models.Model) -> tuple[str, list] | None:
    """The INSERT of one row, written as the ORM writes it (each value as the field saves it,
    `auto_now_add` set) without building and compiling a query for it, like `_row_update`;
    None where only the ORM writes it."""
    db = _this_threads()
    if db.vendor not in ("postgresql", "sqlite"):
        return None
    params = _row_values(obj)
    if params is None:
        return None
    quote, meta = db.ops.quote_name, obj._meta
    table, columns = quote(meta.db_table), _insert_columns(meta)
    values = ", ".join(["%s"] * len(params))
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "  # noqa: S608 - names only
        f"RETURNING {table}.{quote(meta.pk.column)}"
    )
    return sql, params


def _inserted_fields(meta) -> list:
    return [field for field in meta.local_concrete_fields if field is not meta.auto_field]


def _insert_columns(meta) -> str:
    quote = _this_threads().ops.quote_name
    return ", ".join(quote(field.column) for field in _inserted_fields(meta))


def _row_values(obj: models.Model) -> list | None:
    """The values of `obj`'s row as the ORM saves them; None where only the ORM writes it (an
    expression, a field with its own placeholder, a generated field)."""
    params, db = [], _this_threads()
    for field in _inserted_fields(obj._meta):
        value = field.pre_save(obj, add=True)
        if (
            hasattr(value, "resolve_expression")
            or hasattr(field, "get_placeholder")
            or getattr(field, "generated", False)
        ):
            return None
        params.append(field.get_db_prep_save(value, connection=db))
    return params


_MAX_PARAMETERS = 32_000  # SQLite's limit on a statement's parameters is 32,766


def insert_now(objs: list[models.Model]) -> None:
    """Insert `objs` (one model) in one statement, each value as the ORM saves it, without
    building a query for them (`_row_values`); their ids are not read back. Where only the
    ORM writes them, `bulk_create`."""
    rows = [_row_values(obj) for obj in objs] if connection.vendor == "sqlite" else [None]
    if any(row is None for row in rows):
        type(objs[0]).objects.bulk_create(objs)
        return
    meta, width = objs[0]._meta, len(rows[0])
    row = "(" + ", ".join(["%s"] * width) + ")"
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({_insert_columns(meta)}) VALUES "  # noqa: S608 - names only
    )
    chunk = max(1, _MAX_PARAMETERS // width)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            some = rows[start : start + chunk]
            cursor.execute(sql + ", ".join([row] * len(some)), [v for r in some for v in r])


def write_now(writes: list[Write], *, updates_only: bool = False) -> None:
    for write in list(writes):
        if updates_only and write.model is None:
            continue
        with connection.cursor() as cursor:
            cursor.execute(*write.statement())
            if write.obj is not None:
                _inserted(write, cursor.fetchone()[0])
        writes.remove(write)


def _inserted(write: Write, pk: int) -> None:
    write.obj.pk = pk
    write.obj._state.adding = False
    write.obj._state.db = connection.alias
    if write.event is not None:
        write.event.data[write.field] = pk


def with_writes(template: str, writes: list[Write], events: list[Event]) -> tuple[str, list, list]:
    """`template` with the writes' CTEs, the event data that names inserted rows and the ids
    returned; the params of the CTEs and of the data column."""
    ctes, cte_params, cases, case_params, ids = [], [], [], [], []
    for n, write in enumerate(writes):
        sql, params = write.statement()
        ctes.append(f"w{n} AS ({sql}), ")
        cte_params += params
        if write.obj is None:
            continue
        assert write.obj._meta.pk.column == "id", write.obj._meta.pk
        ids.append(_INSERTED_ID.format(n=n))
        if write.event is not None:
            ordinal = next(i for i, event in enumerate(events, 1) if event is write.event)
            cases.append(_NAMED.format(n=n))
            case_params += [ordinal, [write.field]]
    data = f"CASE e.ord{''.join(cases)} ELSE e.data END" if cases else "e.data"
    returned = ", ".join(ids)
    if returned and "RETURNING" not in template:
        returned = " RETURNING " + returned
    elif returned:
        returned = ", " + returned
    sql = template.format(writes="".join(ctes), data=data, ids=returned)
    return sql, cte_params, case_params


def returned_ids(writes: list[Write], row) -> None:
    inserts = [write for write in writes if write.obj is not None]
    for write, pk in zip(inserts, row[len(row) - len(inserts) :], strict=True):
        _inserted(write, pk)
