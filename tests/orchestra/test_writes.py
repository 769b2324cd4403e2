"""A deferred UPDATE of one row (PostgreSQL) is written without the ORM's compiler
(`writes._row_update`): the same statement the ORM writes, the same row after it, and the
ORM's compiler for what only it can write. Increments of one row in one block add up into
one UPDATE."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from agents.loop.session import Appended
from agents.models import AgentRun
from orchestra.engine import start_run
from orchestra.events import recording
from orchestra.models import Step
from orchestra.writes import Added, _row_update, _update_statement, update_later

pytestmark = pytest.mark.django_db(transaction=True)
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="writes are deferred on PostgreSQL alone"
)


@pytest.fixture
def run(demo, owner):
    run = start_run(owner, demo, "Writes")
    run.refresh_from_db()
    return run


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
    return connection.ops.compose_sql(sql, params)


@on_postgresql
def test_the_statement_is_the_one_the_orm_writes(run):
    step = Step.objects.filter(run=run).first()
    agent_run = AgentRun.objects.filter(run=run).first()
    for model, pk, values in (
        (Step, step.pk, _step_values()),
        (AgentRun, agent_run.pk, {"messages": Appended("messages", [{"role": "user"}])}),
    ):
        ours = _row_update(model, pk, values)
        theirs = _update_statement(model.objects.filter(pk=pk), values)
        assert ours is not None
        assert _composed(*ours) == _composed(*theirs)


@on_postgresql
def test_the_row_after_it_is_the_one_the_orm_leaves(run):
    first, second = Step.objects.filter(run=run)[:2]
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


def test_a_value_only_the_orm_writes_goes_through_its_compiler(run):
    step = Step.objects.filter(run=run).first()
    assert _row_update(Step, step.pk, {"input_tokens": F("output_tokens") * 2}) is None
    assert _row_update(Step, step.pk, {"run": run}) is None
    with recording(run.pk) as block:
        update_later(block, Step, step.pk, input_tokens=F("output_tokens") * 2, output="x")
    step.refresh_from_db()
    assert (step.input_tokens, step.output) == (step.output_tokens * 2, "x")


def test_increments_of_one_row_in_a_block_add_up_in_one_update(run):
    step = Step.objects.filter(run=run).first()
    sent = []

    def count(execute, sql, params, many, context):
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count), recording(run.pk) as block:
        update_later(block, Step, step.pk, input_tokens=Added("input_tokens", 5))
        update_later(block, Step, step.pk, input_tokens=Added("input_tokens", 7), output="y")
    before = step.input_tokens
    step.refresh_from_db()
    assert (step.input_tokens, step.output) == (before + 12, "y")
    updates = [sql for sql in sent if 'UPDATE "orchestra_step"' in sql]
    assert len(updates) == 1 if connection.vendor == "postgresql" else 2
