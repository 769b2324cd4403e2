"""An UPDATE of one row (`update_later`, deferred or not) is written without the ORM's
compiler (`writes._row_update`): the same statement the ORM writes, the same row after it,
and the ORM's compiler for what only it can write. Increments of one row in one block add
up into one UPDATE (on PostgreSQL, where writes are deferred)."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.db.models.sql import InsertQuery
from django.utils import timezone

from agents.loop.session import Appended
from agents.models import AgentRun, ModelCall
from orchestra import writes
from orchestra.events import recording
from orchestra.models import Activity, Event, Step
from orchestra.writes import (
    Added,
    _row_insert,
    _row_update,
    _update_statement,
    insert_later,
    insert_now,
    update_later,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _step_values() -> dict:
    return {
        "status": Step.Status.REVISING,
        "output": 'it\'s done; "quoted" and 100%',
        "touched": ["a.py", "b/c.md"],
        "attempts": 3,
        "started_at": timezone.now().replace(microsecond=0),
        "input_tokens": Added("input_tokens", 120),
        "output_tokens": Added("output_tokens", 7),
        "cost_usd": Added("cost_usd", Decimal("0.000125")),
    }


def _composed(sql: str, params: list) -> str:
    if connection.vendor == "postgresql":
        return connection.ops.compose_sql(sql, params)
    return f"{sql} {params!r}"


def test_the_statement_is_the_one_the_orm_writes(demo_run):
    step = Step.objects.filter(run=demo_run).first()
    agent_run = AgentRun.objects.filter(run=demo_run).first()
    for model, pk, values in (
        (Step, step.pk, _step_values()),
        (AgentRun, agent_run.pk, {"messages": Appended("messages", [{"role": "user"}])}),
    ):
        ours = _row_update(model, pk, values)
        theirs = _update_statement(model.objects.filter(pk=pk), values)
        assert ours is not None
        assert _composed(*ours) == _composed(*theirs)


def test_the_row_after_it_is_the_one_the_orm_leaves(demo_run):
    first, second = Step.objects.filter(run=demo_run)[:2]
    Step.objects.filter(pk__in=[first.pk, second.pk]).update(
        input_tokens=40, output_tokens=2, cost_usd=Decimal("0.5")
    )
    with connection.cursor() as cursor:
        cursor.execute(*_row_update(Step, first.pk, _step_values()))
    Step.objects.filter(pk=second.pk).update(**_step_values())
    first.refresh_from_db()
    second.refresh_from_db()
    for field in _step_values():
        assert getattr(first, field) == getattr(second, field), field
    assert (first.input_tokens, first.cost_usd) == (160, Decimal("0.500125"))


def test_a_value_only_the_orm_writes_goes_through_its_compiler(demo_run):
    step = Step.objects.filter(run=demo_run).first()
    assert _row_update(Step, step.pk, {"input_tokens": F("output_tokens") * 2}) is None
    assert _row_update(Step, step.pk, {"run": demo_run}) is None
    with recording(demo_run.pk) as block:
        update_later(block, Step, step.pk, input_tokens=F("output_tokens") * 2, output="x")
    step.refresh_from_db()
    assert (step.input_tokens, step.output) == (step.output_tokens * 2, "x")


def test_increments_of_one_row_in_a_block_add_up_in_one_update(demo_run):
    step = Step.objects.filter(run=demo_run).first()
    sent = []

    def count(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count), recording(demo_run.pk) as block:
        update_later(block, Step, step.pk, input_tokens=Added("input_tokens", 5))
        update_later(block, Step, step.pk, input_tokens=Added("input_tokens", 7), output="y")
    before = step.input_tokens
    step.refresh_from_db()
    assert (step.input_tokens, step.output) == (before + 12, "y")
    updates = [sql for sql in sent if 'UPDATE "orchestra_step"' in sql]
    assert len(updates) == 1 if connection.vendor == "postgresql" else 2


def _model_call(demo_run) -> ModelCall:
    return ModelCall(
        agent_run=AgentRun.objects.filter(run=demo_run).first(),
        run_id=demo_run.pk,
        model="demo",
        message_count=3,
        response={"content": 'it\'s "done"'},
        tool_calls=["write_file"],
        input_tokens=11,
        output_tokens=4,
        latency_ms=12.5,
        cost_usd=Decimal("0.000031"),
        started_at=timezone.now(),
    )


def test_an_insert_is_the_one_the_orm_writes(demo_run):
    ours = _row_insert(_model_call(demo_run))
    query = InsertQuery(ModelCall)
    call = _model_call(demo_run)
    meta = ModelCall._meta
    query.insert_values([f for f in meta.local_concrete_fields if f is not meta.auto_field], [call])
    compiler = query.get_compiler(connection.alias)
    compiler.returning_fields = [meta.pk]
    [theirs] = compiler.as_sql()
    # The two differ only by the moment `auto_now_add` stamped.
    ours_sql, theirs_sql = (_composed(sql, list(params)) for sql, params in (ours, theirs))
    assert ours_sql.split("VALUES")[0] == theirs_sql.split("VALUES")[0]
    assert len(ours[1]) == len(theirs[1])


def test_an_insert_outside_a_block_gives_the_object_its_id(demo_run):
    call = _model_call(demo_run)
    event = Event(run=demo_run, kind="model.called", data={})
    insert_later(None, call, event, "model_call")
    assert call.pk is not None and not call._state.adding
    assert event.data == {"model_call": call.pk}
    stored = ModelCall.objects.get(pk=call.pk)
    assert (stored.response, stored.cost_usd) == (call.response, Decimal("0.000031"))
    assert stored.started_at == call.started_at
    agent_run = AgentRun(run=demo_run, role="coder", purpose=AgentRun.Purpose.STEP, messages=[])
    insert_later(None, agent_run)
    assert agent_run.started_at is not None  # auto_now_add, stamped as the ORM stamps it
    assert AgentRun.objects.get(pk=agent_run.pk).started_at == agent_run.started_at


def test_an_upsert_is_compiled_once_and_each_writes_its_own_values(demo_run, monkeypatch):
    compiled = []
    compile_insert = writes._compiled_insert
    monkeypatch.setattr(writes, "_UPSERTS", {})  # as in a new process
    monkeypatch.setattr(
        writes, "_compiled_insert", lambda o, u: compiled.append(o) or compile_insert(o, u)
    )
    upsert = (["key"], ["status", "args", "owner", "lease_expires_at", "updated_at"])

    def activity(status: str, args: list, owner: str) -> Activity:
        return Activity(
            key=f"plan:{demo_run.pk}",
            run=demo_run,
            kind=Activity.Kind.PLAN,
            status=status,
            task="orchestra.plan_run",
            args=args,
            owner=owner,
            lease_expires_at=timezone.now(),
        )

    first = activity(Activity.Status.QUEUED, [1], "")
    insert_later(None, first, upsert=upsert)
    second = activity(Activity.Status.RUNNING, [2, {"to": "it's"}], "host:1:worker")
    insert_later(None, second, upsert=upsert)

    assert compiled == [first]  # the second sent the first's statement with its own values
    assert second.pk == first.pk
    stored = Activity.objects.get(key=f"plan:{demo_run.pk}")
    assert (stored.status, stored.args, stored.owner) == (
        Activity.Status.RUNNING,
        [2, {"to": "it's"}],
        "host:1:worker",
    )
    assert stored.updated_at == second.updated_at  # auto_now, stamped for the second


def test_rows_inserted_at_once_are_the_rows_the_orm_inserts(demo_run):
    at = timezone.now()
    data = {"quote": 'it\'s "x"', "n": 1, "list": [1, "two"], "when": at.isoformat()}
    step = demo_run.steps.first()
    ours = [
        Event(run=demo_run, seq=1000 + n, kind="k", actor="a", step=step, data=data, at=at)
        for n in range(3)
    ]
    theirs = [
        Event(run=demo_run, seq=2000 + n, kind="k", actor="a", step=step, data=data, at=at)
        for n in range(3)
    ]
    sent = []
    with connection.execute_wrapper(lambda execute, *args: sent.append(1) or execute(*args)):
        insert_now(ours)
    Event.objects.bulk_create(theirs)
    assert len(sent) == 1

    def stored(seqs):
        rows = Event.objects.filter(run=demo_run, seq__in=seqs).order_by("seq")
        return list(rows.values_list("kind", "actor", "step_id", "data", "at"))

    assert stored([1000, 1001, 1002]) == stored([2000, 2001, 2002])
    assert stored([1000])[0] == ("k", "a", step.pk, data, at)
