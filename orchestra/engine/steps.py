"""A step's attempts: claimed once, driven through the agent loop, handed to review."""

import logging

from django.utils import timezone

from agents.loop import Failed, FinalOutput, NeedsApproval, lease_from_now
from agents.models import AgentRun
from agents.workspace import GitError
from approvals.models import Checkpoint
from orchestra import queue
from orchestra.engine import workspaces
from orchestra.engine.host import new_agent_run, session_for
from orchestra.engine.prompts import step_message
from orchestra.engine.review import apply_verdict_locked, claim_review, review_step, run_review
from orchestra.engine.runs import close_agent_run, fail_run, locked_run_of_step, sync_run_status
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)


def execute_step(step_id: int) -> None:
    """Claim a ready (or revising) step exactly once and run a new attempt of its agent."""
    with locked_run_of_step(step_id) as run:
        if run is None:
            return
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status not in (Step.Status.READY, Step.Status.REVISING):
            return
        dependency_outputs = dict(
            run.steps.filter(key__in=step.depends_on).values_list("key", "output")
        )
        step.status = Step.Status.RUNNING
        step.attempts += 1
        step.started_at = step.started_at or timezone.now()
        step.lease_expires_at = lease_from_now()
        worktree_fields = workspaces.prepare_worktree(run, step)
        step.save(
            update_fields=["status", "attempts", "started_at", "lease_expires_at", *worktree_fields]
        )
        brief = {
            **step.brief,
            "step": step.key,
            "inputs_from": dependency_outputs,
            "feedback": step.feedback,
        }
        agent_run = new_agent_run(
            run,
            step=step,
            purpose=AgentRun.Purpose.STEP,
            role=step.agent_role,
            brief=brief,
            user_message=step_message(step, dependency_outputs),
            attempt=step.attempts,
        )
        emit(
            run,
            "step.started",
            step=step,
            actor=step.agent_role,
            data={
                "attempt": step.attempts,
                "agent_run": agent_run.pk,
                "worker": agent_run.worker,
                "branch": step.branch,
                "base_commit": step.base_commit,
            },
        )
        sync_run_status(run)
    drive_step(step, agent_run)


def resume_step(step_id: int) -> None:
    """Continue a step whose checkpoint was decided, from the conversation in the database."""
    with locked_run_of_step(step_id) as run:
        if run is None:
            return
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.AWAITING_APPROVAL:
            return
        agent_run = step.agent_runs.filter(
            purpose=AgentRun.Purpose.STEP, status=AgentRun.Status.PAUSED
        ).last()
        if agent_run is None:
            return  # an escalation, decided through its own path
        if step.checkpoints.filter(
            status=Checkpoint.Status.PENDING, kind__in=[Checkpoint.Kind.TOOL_CALL, "deploy"]
        ).exists():
            return  # still waiting on a human
        step.status = Step.Status.RUNNING
        step.lease_expires_at = lease_from_now()
        step.save(update_fields=["status", "lease_expires_at"])
        agent_run.status = AgentRun.Status.RUNNING
        agent_run.save(update_fields=["status"])
        emit(run, "step.resumed", step=step, actor=step.agent_role)
        sync_run_status(run)
    drive_step(step, agent_run)


def drive_step(step: Step, agent_run: AgentRun) -> None:
    session = session_for(
        agent_run,
        step=step,
        on_final=lambda run, outcome: hand_to_review(run, step, agent_run, outcome),
    )
    outcome = session.run()
    if isinstance(outcome, NeedsApproval):
        with locked_run(step.run_id) as run:
            sync_run_status(run)
        return
    if not isinstance(outcome, FinalOutput):
        close_agent_run(agent_run, outcome)
        _step_attempt_failed(step, outcome)
        return
    reviewer = session.final_result
    if reviewer is not None:
        run_review(step, reviewer)
    elif step.brief.get("checks"):
        review_step(step.pk)


def hand_to_review(
    run: Run, step: Step, agent_run: AgentRun, outcome: FinalOutput
) -> AgentRun | None:
    """The step's final output goes to the review gate, and the review is claimed, in the
    transaction that recorded the final reply (the run is locked). Returns the reviewer's
    attempt, or None when the step moved on meanwhile (cancelled)."""
    close_agent_run(agent_run, outcome)
    step.refresh_from_db()
    if run.is_terminal or step.status != Step.Status.RUNNING:
        return None
    step.output = outcome.content
    step.status = Step.Status.IN_REVIEW
    fields = ["output", "status"]
    try:
        if step.worktree:
            fields += workspaces.commit_step(step)
    except GitError as exc:  # e.g. conflict markers left in a file
        step.save(update_fields=["output", "status"])
        apply_verdict_locked(
            run, step.pk, "revise", f"Your work cannot be committed: {exc}", actor="git"
        )
        return None
    emit(
        run,
        "step.output",
        step=step,
        actor=step.agent_role,
        data={"chars": len(step.output), "commit": step.head_commit, "touched": step.touched},
    )
    if step.brief.get("checks"):
        # Deterministic checks come before the reviewer, outside this transaction.
        step.save(update_fields=fields)
        sync_run_status(run)
        return None
    reviewer = claim_review(run, step, extra_fields=fields)
    sync_run_status(run)
    return reviewer


def _step_attempt_failed(step: Step, outcome: Failed) -> None:
    with locked_run(step.run_id) as run:
        step.refresh_from_db()
        if step.status not in (Step.Status.RUNNING,):
            return
        if outcome.cancelled or run.is_terminal:
            step.status = Step.Status.CANCELLED
            step.finished_at = timezone.now()
            step.save(update_fields=["status", "finished_at"])
            return
        if step.attempts < run.project.max_step_attempts:
            step.status = Step.Status.READY
            step.error = outcome.error
            step.task_id = queue.enqueue("orchestra.execute_step", step.pk)
            step.save(update_fields=["status", "error", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": outcome.error})
            return
        step.status = Step.Status.FAILED
        step.error = outcome.error
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
        emit(run, "step.failed", step=step, data={"error": outcome.error})
        fail_run(run, f"Step {step.key!r} failed after {step.attempts} attempts: {outcome.error}")
