"""A step that passes review is merged by the worker that reviewed it when that worker has
the central repository: no merge task goes through the queue. A remote worker (its
repositories are clones) leaves the merge to the central queue."""

import pytest

from orchestra import queue
from orchestra.engine.merge import accept_step
from orchestra.events import locked_run
from orchestra.models import Activity, Run, Step
from tests.costs import run_chain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    """The names of the tasks handed to the queue (they still run)."""
    names = []
    original = queue.enqueue

    def enqueue(name, *args, **kwargs):
        names.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(queue, "enqueue", enqueue)
    return names


def test_the_reviewers_worker_merges_a_passed_step_itself(demo, owner, sent):
    run, _cost = run_chain(owner, demo, 3)
    assert run.status == Run.Status.COMPLETED, run.error
    steps = list(run.steps.order_by("position"))
    assert all(step.merged_commit for step in steps)
    assert run.head_commit == steps[-1].merged_commit
    assert "orchestra.merge_step" not in sent
    merges = Activity.objects.filter(run=run, kind=Activity.Kind.MERGE)
    assert sorted(merges.values_list("status", "attempt", "task")) == [
        (Activity.Status.DONE, 1, "orchestra.merge_step")
    ] * len(steps)


def test_a_remote_worker_leaves_the_merge_to_the_central_queue(demo, owner, settings, monkeypatch):
    run, _cost = run_chain(owner, demo, 1)
    step = run.steps.get()
    Step.objects.filter(pk=step.pk).update(status=Step.Status.IN_REVIEW)
    settings.ORCHESTRA_GIT_REMOTE = "http://central.invalid/git"
    queued = []
    monkeypatch.setattr(queue, "enqueue", lambda name, *args, **kw: queued.append(name) or "t-1")
    with locked_run(run.pk) as locked:
        step.refresh_from_db()
        assert accept_step(locked, step, here=True) is False
    step.refresh_from_db()
    assert (step.status, step.task_id) == (Step.Status.MERGING, "t-1")
    assert queued == ["orchestra.merge_step"]
    merge = Activity.objects.get(step=step, kind=Activity.Kind.MERGE)
    assert (merge.status, merge.owner) == (Activity.Status.QUEUED, "")
