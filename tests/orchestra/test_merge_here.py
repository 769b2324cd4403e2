"""A step that passes review is merged by the worker that reviewed it when that worker has
the central repository, before the verdict is recorded: the verdict, the merge and the
dispatch of what follows are one transaction, and no merge task goes through the queue. A
remote worker (its repositories are clones) leaves the merge to the central queue."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.llm import override_client
from orchestra import queue
from orchestra.engine import start_run, sweep_active_runs, workspaces
from orchestra.engine.merge import accept_step
from orchestra.events import locked_run
from orchestra.models import Activity, Run, Step
from tests.costs import _answer, run_chain
from tests.scripted import ScriptedModel

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
    # Each merge was an activity while it ran, ended by its verdict's transaction.
    merges = Activity.objects.filter(run=run, kind=Activity.Kind.MERGE)
    assert sorted(merges.values_list("status", "attempt", "task")) == [
        (Activity.Status.DONE, 1, "orchestra.merge_step")
    ] * len(steps)
    for step, following in zip(steps, [*steps[1:], None], strict=True):
        kinds = ["review.verdict", "merge.queued", "step.merged", "step.completed"]
        recorded = run.events.filter(step=step, kind__in=kinds).order_by("seq")
        assert list(recorded.values_list("kind", flat=True)) == [
            "review.verdict",
            "step.merged",
            "step.completed",
        ]
        if following is not None:  # dispatched by the same transaction, right after
            dispatched = run.events.get(step=following, kind="step.dispatched")
            assert dispatched.seq == recorded.last().seq + 1


class _Stopped(BaseException):
    """The worker stops where this is raised: nothing of its work after that point runs."""


def test_a_worker_that_stops_in_a_merge_made_ahead_leaves_it_to_the_sweep(demo, owner, monkeypatch):
    merging, original = [], workspaces.merge_step

    def stops_in_the_first(run, step):
        merge = Activity.objects.get(step=step, kind=Activity.Kind.MERGE)
        merging.append((step.key, merge.status))  # seen as a merge while it runs
        if len(merging) == 1:
            raise _Stopped
        return original(run, step)

    monkeypatch.setattr(workspaces, "merge_step", stops_in_the_first)
    with override_client(ScriptedModel(_answer(2))):
        with pytest.raises(_Stopped):
            start_run(owner, demo, "Stop in a merge")
        assert not queue._sync_queue  # nothing else was due
        run = Run.objects.get(task__title="Stop in a merge")
        first = run.steps.get(key="k000")
        assert (first.status, first.merged_commit) == (Step.Status.IN_REVIEW, "")
        held = Activity.objects.filter(run=run, status=Activity.Status.RUNNING)
        assert sorted(held.values_list("kind", flat=True)) == ["merge", "review"]
        # The worker is gone: its leases run out, and the sweep hands its work on.
        held.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        sweep_active_runs()
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert merging == [
        ("k000", Activity.Status.RUNNING),
        ("k000", Activity.Status.RUNNING),
        ("k001", Activity.Status.RUNNING),
    ]
    assert "review" in {e.data["activity"] for e in run.events.filter(kind="activity.reclaimed")}
    assert run.events.filter(kind="step.merged", step=first).count() == 1
    assert not Activity.objects.filter(run=run).exclude(status=Activity.Status.DONE).exists()


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
