"""Which queue each task goes to, and which queues a worker consumes."""

import pytest

from orchestra.celery import app
from orchestra.cli import main
from orchestra.cli.serve import worker_queues
from orchestra.models import Plan, Run, Step, Task
from orchestra.queues import queue_for

CENTRAL_TASKS = [
    "orchestra.plan_run",
    "orchestra.merge_step",
    "orchestra.report_run",
    "orchestra.dispatch",
    "orchestra.sweep",
    "approvals.expire_due",
    "orchestra.export_trace",
    "orchestra.apply_retention",
    "approvals.deliver",
    "approvals.deliver_due",
]
STEP_TASKS = [
    "orchestra.execute_step",
    "orchestra.resume_step",
    "orchestra.take_over_step",
    "orchestra.review_step",
]


def routed(name: str, *args) -> str:
    """The queue Celery itself picks when the task is sent (its router, our routes)."""
    return app.amqp.router.route({}, name, args, {})["queue"].name


@pytest.fixture
def steps(demo):
    run = Run.objects.create(task=Task.objects.create(project=demo, title="t"), project=demo)
    plan = Plan.objects.create(run=run, version=1)
    return {
        role: Step.objects.create(run=run, plan=plan, key=role, title=role, agent_role=role)
        for role in ("coder", "researcher")
    }


def test_engine_work_goes_to_orchestra_and_step_work_to_steps(db, django_assert_num_queries):
    assert {task: routed(task, 1) for task in CENTRAL_TASKS} == dict.fromkeys(
        CENTRAL_TASKS, "orchestra"
    )
    with django_assert_num_queries(0):  # no role queues: nothing is read
        assert {task: routed(task, 1) for task in STEP_TASKS} == dict.fromkeys(STEP_TASKS, "steps")


def test_a_listed_role_has_its_own_queue_and_the_review_goes_by_the_reviewer(settings, steps):
    settings.ORCHESTRA_ROLE_QUEUES = ["coder", "reviewer"]
    coder, researcher = steps["coder"].pk, steps["researcher"].pk
    assert routed("orchestra.execute_step", coder) == "coder"
    assert routed("orchestra.resume_step", coder) == "coder"
    assert routed("orchestra.take_over_step", coder) == "coder"
    assert routed("orchestra.execute_step", researcher) == "steps"
    assert routed("orchestra.review_step", researcher) == "reviewer"
    assert queue_for("orchestra.merge_step", (coder,)) == "orchestra"
    settings.ORCHESTRA_ROLE_QUEUES = ["coder"]
    assert routed("orchestra.review_step", coder) == "steps"


def test_a_worker_consumes_every_queue_unless_told(settings):
    settings.ORCHESTRA_ROLE_QUEUES = ["coder", "reviewer"]
    assert worker_queues(None) == ["orchestra", "steps", "coder", "reviewer", "celery"]
    assert worker_queues("coder, reviewer") == ["coder", "reviewer"]
    settings.ORCHESTRA_GIT_REMOTE = "http://central:8000/git"
    assert worker_queues(None) == ["steps", "coder", "reviewer"]


def test_a_remote_worker_refuses_the_central_queue(settings, capsys):
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    settings.ORCHESTRA_GIT_REMOTE = "http://central:8000/git"
    assert main(["worker", "--queues", "steps,orchestra"]) == 2
    error = capsys.readouterr().err
    assert "cannot consume the 'orchestra' queue" in error
    assert "ORCHESTRA_GIT_REMOTE" in error
    assert main(["worker", "--queues", " , "]) == 2
    assert "names no queue" in capsys.readouterr().err


@pytest.mark.parametrize(("pool", "carried"), [("threads", {"steps", "coder"}), ("prefork", set())])
def test_a_thread_pool_worker_carries_on_what_it_consumes(settings, monkeypatch, pool, carried):
    """What `queue.carrying_on` may keep: the queues the worker consumes, in a thread pool;
    nothing in a pool that enforces task time limits. (Celery itself is not started.)"""
    from orchestra import queue

    started: list[list[str]] = []
    monkeypatch.setattr(app, "start", lambda argv: started.append(argv))
    monkeypatch.setattr(queue, "consumed", frozenset())
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    argv = ["worker", "--processes", "1", "--queues", "steps,coder", "--pool", pool]
    assert main(argv) == 0
    assert started[0][started[0].index("--pool") + 1] == pool
    assert queue.consumed == carried
