"""Pausing a run by hand, and resuming it.

A paused run dispatches nothing new (see `dispatch_locked`); a step's agent finishes the model
call it is in and parks at its next turn boundary, its conversation stored, holding no worker
(`park_step`). Resuming sends every parked or waiting step on again: a parked agent carries
on from its conversation (`unpark_step`), not from scratch. Reviews, merges and the report
already under way finish: they are short and their results are kept.
"""

from django.utils import timezone

from agents.models import AgentRun
from orchestra import queue
from orchestra.engine.runs import EngineError, actor_of, locked_run_of_step, sync_run_status
from orchestra.engine.transitions import schedule_step
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

# Steps that wait for a worker to carry them on when the run resumes.
CARRIED_ON = (Step.Status.PAUSED, Step.Status.READY, Step.Status.REVISING)


def pause_run(user, run: Run) -> Run:
    """Stop dispatch and park running steps at their next turn. Refused for a run that ended
    or is already paused."""
    with locked_run(run.pk) as run:
        if run.is_terminal:
            raise EngineError(f"The run already ended ({run.status}).")
        if run.is_paused:
            raise EngineError(f"The run is already paused (by {run.paused_by}).")
        run.paused_at = timezone.now()
        run.paused_by = actor_of(user)
        run.save(update_fields=["paused_at", "paused_by"])
        running = list(run.steps.filter(status=Step.Status.RUNNING).values_list("key", flat=True))
        emit(run, "run.paused", actor=run.paused_by, data={"by": run.paused_by, "running": running})
    return run


def resume_run(user, run: Run) -> Run:
    """Dispatch again and carry the parked steps on from their conversations. Refused for a
    run that ended or is not paused."""
    with locked_run(run.pk) as run:
        if run.is_terminal:
            raise EngineError(f"The run already ended ({run.status}).")
        if not run.is_paused:
            raise EngineError("The run is not paused.")
        paused_for = (timezone.now() - run.paused_at).total_seconds()
        run.paused_at, run.paused_by = None, ""
        run.save(update_fields=["paused_at", "paused_by"])
        waiting = list(run.steps.filter(status__in=CARRIED_ON))
        for step in waiting:
            schedule_step(step, "orchestra.resume_step")
            step.save(update_fields=["task_id"])
        who = actor_of(user)
        emit(
            run,
            "run.resumed",
            actor=who,
            data={
                "by": who,
                "steps": [s.key for s in waiting],
                "paused_seconds": round(paused_for, 1),
            },
        )
        queue.enqueue("orchestra.dispatch", run.pk)
    return run


def park_step(step: Step, agent_run: AgentRun) -> bool:
    """The step's agent stopped at a turn boundary because its run is paused: park it (the
    agent run paused, its conversation kept). False when the run was resumed (or ended)
    meanwhile, and the agent should go on. Takes the run lock."""
    with locked_run(step.run_id) as run:
        if run.is_terminal or not run.is_paused:
            return False
        Step.objects.filter(pk=step.pk, status=Step.Status.RUNNING).update(
            status=Step.Status.PAUSED
        )
        AgentRun.objects.filter(pk=agent_run.pk).update(status=AgentRun.Status.PAUSED)
        emit(
            run,
            "step.paused",
            step=step,
            actor=step.agent_role,
            data={"agent_run": agent_run.pk, "by": run.paused_by},
        )
        sync_run_status(run)
    return True


def unpark_step(step_id: int) -> tuple[Step, AgentRun] | None:
    """A parked step whose run was resumed: its agent carries on from the stored
    conversation. None while the run is still paused, or when there is nothing to carry on
    from (the step is then tried afresh)."""
    with locked_run_of_step(step_id) as run:
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or run.is_paused or step.status != Step.Status.PAUSED:
            return None
        agent_run = (
            step.agent_runs.filter(purpose=AgentRun.Purpose.STEP, status=AgentRun.Status.PAUSED)
            .order_by("-pk")
            .first()
        )
        if agent_run is None:
            step.status = Step.Status.READY
            schedule_step(step)
            step.save(update_fields=["status", "task_id"])
            return None
        step.status = Step.Status.RUNNING
        step.save(update_fields=["status"])
        agent_run.status = AgentRun.Status.RUNNING
        agent_run.save(update_fields=["status"])
        emit(
            run,
            "step.resumed",
            step=step,
            actor=step.agent_role,
            data={"agent_run": agent_run.pk, "after": "pause"},
        )
        sync_run_status(run)
    return step, agent_run
