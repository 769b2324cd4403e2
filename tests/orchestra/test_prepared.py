"""A prepared read gives what the ORM gives (fields converted, related rows in place, the
rows of a read by several values, deferred fields), sends one statement and compiles once
per process, for every thread. A locked block's first read goes in the lock's round trip and
reads the database as the lock found it."""

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.forms.models import model_to_dict

from approvals.models import PolicyRule
from approvals.policies import _in_order, rules_for
from orchestra import activities
from orchestra.engine import start_run
from orchestra.engine.dispatch import _AS_TEXT, _DECIDES, _UNFINISHED
from orchestra.engine.runs import _SIBLING_GROUPS, step_with_siblings, step_with_siblings_ahead
from orchestra.engine.steps import _STEP_TO_START
from orchestra.events import locked_run
from orchestra.models import Activity, Run, Step
from orchestra.prepared import PreparedRead, _together

pytestmark = pytest.mark.django_db(transaction=True)

LOCKED = PreparedRead(
    "test_locked_run",
    lambda pk: Run.objects.select_for_update().select_related("project", "task").filter(pk=pk),
)


@pytest.fixture
def run(demo, owner):
    return start_run(owner, demo, "Prepared reads")


def _statements(into: list):
    def count(execute, sql, params, many, context):
        into.append(sql)
        return execute(sql, params, many, context)

    return connection.execute_wrapper(count)


def test_a_prepared_read_is_what_the_orm_reads(run):
    with transaction.atomic():
        expected = Run.objects.select_related("project", "task").get(pk=run.pk)
        sent = []
        with _statements(sent):
            read = LOCKED.get(run.pk)
            project, task = read.project, read.task  # in place: no statement for them
    assert len(sent) == 1
    assert model_to_dict(read) == model_to_dict(expected)
    assert model_to_dict(project) == model_to_dict(expected.project)
    assert model_to_dict(task) == model_to_dict(expected.task)
    assert read.created_at == expected.created_at and read.created_at.tzinfo is not None
    assert not read._state.adding and read._state.db == "default"


def test_a_missing_row_is_the_models_does_not_exist(run):
    with pytest.raises(Run.DoesNotExist), transaction.atomic():
        LOCKED.get(run.pk + 1000)


def test_a_read_is_compiled_once_for_every_thread(run, monkeypatch):
    compiled = []
    compile_once = LOCKED._compile
    monkeypatch.setattr(LOCKED, "_by_database", {})  # as in a new process
    monkeypatch.setattr(LOCKED, "_compile", lambda c: compiled.append(c) or compile_once(c))
    with transaction.atomic():
        mine = LOCKED.get(run.pk)
    main_thread = connections["default"]
    seen = []

    def other_thread():
        theirs = connections["default"]
        try:
            with transaction.atomic():
                read = LOCKED.get(run.pk)
            # Converted on this thread's own connection, which sent it.
            seen.append((read.pk, read.created_at, read.project.slug, theirs is not main_thread))
        finally:
            theirs.close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == [(run.pk, mine.created_at, run.project.slug, True)]
    assert compiled == [main_thread]  # by the first thread only


def test_a_read_of_many_rows_by_two_values_is_what_the_orm_reads(run):
    PolicyRule.objects.create(project=run.project, run=run, tool="write_file", outcome="allow")
    scope = Q(project=run.project, run__isnull=True) | Q(run=run)
    expected = [model_to_dict(rule) for rule in _in_order(scope)]
    sent = []
    with _statements(sent):
        read = rules_for(run.project, run.pk)
    assert len(sent) == 1
    assert [model_to_dict(rule) for rule in read] == expected
    assert len(expected) > 1 and read[0].run_id == run.pk  # the run's own rule comes first
    assert rules_for(run.project, run.pk + 1000) == read[1:]


def test_a_read_of_some_fields_defers_the_rest(run):
    run.refresh_from_db()
    step = run.steps.first()
    only = PreparedRead(
        "test_step_status",
        lambda pk: Step.objects.filter(pk=pk).select_related("run").only("status", "run__status"),
    )
    read = only.get(step.pk)
    assert (read.status, read.run.status) == (step.status, run.status)
    assert read.get_deferred_fields() >= {"title", "output"}


def test_the_values_given_must_be_the_values_it_reads_by(run):
    with pytest.raises(TypeError, match="reads by 1 values, not 2"):
        LOCKED.get(run.pk, run.pk)


def test_a_claim_and_the_read_of_its_step_are_one_statement(run):
    if connection.vendor != "postgresql":
        pytest.skip("one statement on PostgreSQL only (a data-modifying CTE)")
    step = run.steps.order_by("position").first()
    Activity.objects.filter(key=f"step:{step.pk}").update(status=Activity.Status.QUEUED, owner="")
    expected = Step.objects.select_related("run__project").get(pk=step.pk)
    sent = []
    with _statements(sent):
        activity, read = activities.claim_reading(Activity.Kind.STEP, step.pk, _STEP_TO_START)
    assert len(sent) == 1
    assert model_to_dict(read) == model_to_dict(expected)
    assert model_to_dict(read.run) == model_to_dict(expected.run)
    assert model_to_dict(read.run.project) == model_to_dict(expected.run.project)
    stored = Activity.objects.get(pk=activity.pk)
    assert (stored.status, stored.owner, stored.attempt) == (
        Activity.Status.RUNNING,
        activities.owner_name(),
        activity.attempt,
    )
    # Held by this worker's lease: another worker claims nothing, and reads nothing.
    Activity.objects.filter(pk=activity.pk).update(owner="another:1:worker")
    assert activities.claim_reading(Activity.Kind.STEP, step.pk, _STEP_TO_START) is None


def test_a_read_of_values_gives_the_rows_the_orm_gives(run):
    Step.objects.filter(run=run, key="research").update(status=Step.Status.PENDING)
    rows = Step.objects.filter(run=run).exclude(status=Step.Status.DONE).order_by("position", "pk")
    expected = list(rows.annotate(**_AS_TEXT).values_list(*_DECIDES))
    sent = []
    with _statements(sent):
        read = _UNFINISHED.tuples(run.pk)
    assert len(sent) == 1
    assert [tuple(row) for row in read] == expected and expected


def _fields(step: Step) -> dict:
    siblings = {name: getattr(step, name) for name in _SIBLING_GROUPS}
    return {**model_to_dict(step), **siblings}


def test_a_read_sent_with_the_lock_is_the_blocks_first_read(run):
    step = run.steps.order_by("position").first()
    expected = _fields(step_with_siblings(step.pk))
    with locked_run(run.pk, then=step_with_siblings_ahead(step.pk)):
        sent = []
        with _statements(sent):
            read = step_with_siblings(step.pk)
    # Sent with the lock where reads can share its round trip; else read here, as before.
    assert len(sent) == (0 if _together(connection) else 1)
    assert _fields(read) == expected


def test_a_statement_before_it_drops_the_read_sent_with_the_lock(run):
    step = run.steps.order_by("position").first()
    wrappers = list(connection.execute_wrappers)
    with locked_run(run.pk, then=step_with_siblings_ahead(step.pk)):
        Step.objects.filter(pk=step.pk).update(title="Changed under the lock")
        sent = []
        with _statements(sent):
            read = step_with_siblings(step.pk)
    assert len(sent) == 1 and read.title == "Changed under the lock"
    assert connection.execute_wrappers == wrappers


def test_a_read_sent_with_the_lock_and_not_read_is_forgotten_with_the_block(run):
    step = run.steps.order_by("position").first()
    wrappers = list(connection.execute_wrappers)
    with locked_run(run.pk, then=step_with_siblings_ahead(step.pk)):
        pass
    assert connection.execute_wrappers == wrappers
    Step.objects.filter(pk=step.pk).update(title="Changed after the block")
    assert step_with_siblings(step.pk).title == "Changed after the block"


def test_a_read_sent_with_the_lock_sees_what_the_locks_last_holder_committed(run):
    """The read sent behind the lock is a statement of its own, begun once the lock is
    granted: it sees what the transaction it waited for committed (one statement taking
    the lock and reading would read the database as it was before the wait)."""
    if not _together(connection):
        pytest.skip("reads share the lock's round trip on PostgreSQL only")
    step = run.steps.order_by("position").first()
    read = []

    def waiter():
        try:
            with locked_run(run.pk, then=step_with_siblings_ahead(step.pk)):
                read.append(step_with_siblings(step.pk).title)
        finally:
            connections["default"].close()

    with locked_run(run.pk):
        Step.objects.filter(pk=step.pk).update(title="Written by the holder")
        thread = threading.Thread(target=waiter)
        thread.start()
        _wait_for_a_lock_wait()
    thread.join(10)
    assert read == ["Written by the holder"]


def _wait_for_a_lock_wait() -> None:
    """Until another session waits on a lock (read on a connection of its own)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with connections["default"].connection.__class__.connect(
        **connections["default"].get_connection_params(), autocommit=True
    ) as watcher:
        while not watcher.execute(query).fetchone()[0]:
            pass


def test_a_read_sent_with_the_lock_that_fails_rolls_the_block_back(run):
    """A database error in either read is Django's own, the block writes nothing and the
    connection goes on (here the read ahead fails: a value its column cannot hold)."""
    if not _together(connection):
        pytest.skip("reads share the lock's round trip on PostgreSQL only")
    step = run.steps.order_by("position").first()
    wrappers = list(connection.execute_wrappers)
    ahead = step_with_siblings_ahead("not a key")
    with pytest.raises(DatabaseError), locked_run(run.pk, then=ahead):
        Step.objects.filter(pk=step.pk).update(title="Never stored")
    assert connection.execute_wrappers == wrappers
    assert Step.objects.get(pk=step.pk).title != "Never stored"
    with locked_run(run.pk, then=step_with_siblings_ahead(step.pk)):
        assert step_with_siblings(step.pk).pk == step.pk


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (a server that prepares)"
)
def test_a_statement_sent_again_and_again_is_prepared_by_the_server(run):
    """Django leaves psycopg's preparing off unless told: the settings tell it, so a statement
    the engine sends at every step is parsed and planned once per connection."""
    for _ in range(6):
        assert Run.objects.filter(pk=run.pk, task_id__gte=0).count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('"task_id" >= $' in statement for statement in prepared), prepared


def test_a_read_by_a_text_column_is_what_the_orm_reads(owner):
    """An API token by its digest: the value stands in the compiled read as text."""
    from orchestra.api.auth import _TOKEN
    from orchestra.models import ApiToken

    digest = ApiToken.digest_of(ApiToken.issue(owner))
    sent = []
    with _statements(sent):
        token = _TOKEN.get(digest)
        user = token.user  # in place: no statement for it
    assert len(sent) == 1
    assert model_to_dict(token) == model_to_dict(ApiToken.objects.get(digest=digest))
    assert user == owner
    with pytest.raises(ApiToken.DoesNotExist):
        _TOKEN.get(ApiToken.digest_of("orc_another"))
