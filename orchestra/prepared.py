"""Reads the engine sends at every transition, compiled once per connection.

The ORM compiles a queryset's SQL each time it runs. For the reads every step makes several
times (the locked run with its project and task), compiling took more interpreter time than
the database took to answer. A `PreparedRead` is compiled by the ORM once per connection and
then sent as it is; its row becomes model instances through the ORM's own parts (the
columns' converters, `select_related`'s populators, annotations), as `QuerySet.get` makes
them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.query import get_related_populators

# Stands for the one value that changes between sends; never a real primary key.
_PLACEHOLDER = -7_654_321


@dataclass
class _Compiled:
    sql: str
    params: list
    at: int  # where the placeholder sits in `params`
    model: type[models.Model]
    columns: slice
    names: list[str]
    converters: dict
    apply_converters: Callable
    populators: list
    annotations: dict  # name -> its column


class PreparedRead:
    """`build(value)`, a queryset of one row, compiled once per connection; `get(value)`
    reads the row for `value` (its model's DoesNotExist when there is none)."""

    def __init__(self, name: str, build: Callable[[int], models.QuerySet]) -> None:
        self._key = f"_orchestra_prepared_{name}"
        self._build = build

    def get(self, value: int) -> models.Model:
        connection = connections[DEFAULT_DB_ALIAS]  # this thread's
        compiled = connection.__dict__.get(self._key)
        if compiled is None:
            compiled = connection.__dict__[self._key] = self._compile(connection)
        params = list(compiled.params)
        params[compiled.at] = value
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            raise compiled.model.DoesNotExist(f"no {compiled.model.__name__} for {value}")
        if compiled.converters:
            [row] = compiled.apply_converters([row], compiled.converters)
        obj = compiled.model.from_db(connection.alias, compiled.names, row[compiled.columns])
        for populator in compiled.populators:
            populator.populate(row, obj)
        for name, at in compiled.annotations.items():
            setattr(obj, name, row[at])
        return obj

    def _compile(self, connection) -> _Compiled:
        queryset = self._build(_PLACEHOLDER)
        compiler = queryset.query.get_compiler(connection.alias)
        sql, params = compiler.as_sql()
        params = list(params)
        if params.count(_PLACEHOLDER) != 1:
            raise ValueError(f"{self._key}: the value must appear once in {params}")
        select, klass_info = compiler.select, compiler.klass_info
        fields = klass_info["select_fields"]
        columns = slice(fields[0], fields[-1] + 1)
        return _Compiled(
            sql=sql,
            params=params,
            at=params.index(_PLACEHOLDER),
            model=klass_info["model"],
            columns=columns,
            names=[column[0].target.attname for column in select[columns]],
            converters=compiler.get_converters([column[0] for column in select]),
            apply_converters=compiler.apply_converters,
            populators=get_related_populators(klass_info, select, connection.alias),
            annotations=dict(compiler.annotation_col_map or {}),
        )
