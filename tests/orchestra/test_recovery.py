"""An embedded server that stopped with work in flight picks it up again on start."""

import pytest

from agents.sandbox import sandbox_status
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, recover_embedded_work, start_run
from orchestra.models import Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def demo_checks_run_confined() -> None:
    """The demo's `verify` step runs its check alone only inside a sandbox; without one a
    person is asked first, and these tests' checkpoints would be another kind."""
    status = sandbox_status()
    if not status["confined"]:
        pytest.skip(f"needs the sandbox the demo's check runs in: {status.get('reason')}")


def test_lost_queued_work_is_recovered(demo, owner, approver, settings):
    demo_checks_run_confined()
    run = start_run(owner, demo, "Survive a restart")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    # The decision's follow-up goes to a broker nobody reads: the process "stopped".
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    settings.CELERY_BROKER_URL = "memory://"
    decide_checkpoint(approver, checkpoint, "approve")
    verify = run.steps.get(key="verify")
    assert verify.status == Step.Status.AWAITING_APPROVAL  # resume never ran

    settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
    assert recover_embedded_work() == 1
    run.refresh_from_db()
    deploy = Checkpoint.objects.get(run=run, status="pending")
    assert deploy.kind == Checkpoint.Kind.DEPLOY
    decide_checkpoint(approver, deploy, "approve")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert run.events.filter(kind="run.recovered").count() == 1


def test_a_step_caught_mid_attempt_starts_a_new_attempt(demo, owner, settings):
    run = start_run(owner, demo, "Crash mid-step")
    research = run.steps.get(key="research")
    # As if the process died while `research` was running, before anything after it.
    Step.objects.filter(run=run).update(status=Step.Status.PENDING)
    Step.objects.filter(pk=research.pk).update(status=Step.Status.RUNNING)
    Checkpoint.objects.filter(run=run).delete()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    recover_embedded_work()
    research.refresh_from_db()
    assert research.status == Step.Status.DONE
    assert research.attempts == 2
    assert Checkpoint.objects.filter(run=run, status="pending").count() == 1


def test_the_sweep_requeues_work_whose_task_was_lost(demo, owner, approver, settings):
    demo_checks_run_confined()
    from datetime import timedelta

    from django.utils import timezone

    from orchestra.engine import sweep_active_runs
    from orchestra.models import Activity

    run = start_run(owner, demo, "Lost in the broker")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    settings.ORCHESTRA_EMBEDDED_WORKER = ""  # the resume goes to a broker nobody reads
    settings.CELERY_BROKER_URL = "memory://"
    decide_checkpoint(approver, checkpoint, "approve")
    settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
    verify = run.steps.get(key="verify")
    resume = Activity.objects.get(step=verify, kind=Activity.Kind.STEP)
    assert resume.status == Activity.Status.QUEUED

    sweep_active_runs()  # queued within its lease: not lost yet
    assert run.steps.get(key="verify").status == Step.Status.AWAITING_APPROVAL

    Activity.objects.filter(pk=resume.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    sweep_active_runs()
    reclaimed = run.events.get(kind="activity.reclaimed")
    assert reclaimed.step == verify
    assert reclaimed.data["activity"] == "step" and reclaimed.data["was"] == "queued"
    deploy = Checkpoint.objects.get(run=run, status="pending")
    assert deploy.kind == Checkpoint.Kind.DEPLOY
    sweep_active_runs()  # waiting for a human: nothing to take over
    assert run.events.filter(kind="activity.reclaimed").count() == 1


def test_work_whose_task_crashed_is_taken_over_by_the_sweep(demo, owner, approver):
    """A task that raises (a bug, "database is locked") leaves its activity due, not lost:
    the sweep sends it again and the run carries on."""
    from agents.llm import override_client
    from orchestra.engine import sweep_active_runs
    from orchestra.models import Activity
    from tests.scripted import ScriptedModel, role_of

    crashes = []

    def answer(messages, tools):
        if role_of(messages) == "orchestrator" and "submit_plan" in tools and not crashes:
            crashes.append(1)
            raise RuntimeError("the worker broke mid-planning")
        return None

    with override_client(ScriptedModel(answer)):
        with pytest.raises(RuntimeError, match="mid-planning"):
            start_run(owner, demo, "Crash once")
        run = Run.objects.get(task__title="Crash once")
        planning = Activity.objects.get(run=run, kind=Activity.Kind.PLAN)
        assert planning.status == Activity.Status.RUNNING  # held by nobody alive, and due
        assert run.status == Run.Status.PLANNING

        sweep_active_runs()
        run.refresh_from_db()
        assert run.events.get(kind="activity.reclaimed").data["activity"] == "plan"
        assert run.events.filter(kind="plan.taken_over").count() == 1
        checkpoint = Checkpoint.objects.get(run=run, status="pending")
        assert checkpoint.kind == Checkpoint.Kind.TOOL_CALL
