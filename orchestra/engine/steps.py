"""A step's attempts: claimed once, driven through the agent loop, handed to review.

Every way into a step (a first attempt, a revision, the resume after a decision, a take-over
from a worker that stopped) is the step's one activity: `carry_on_step` claims it and does
what the stored state calls for, so any of its tasks, delivered twice or late, is safe.
"""

import json
import logging

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from agents.loop import Failed, FinalOutput, NeedsApproval, Paused
from agents.models import AgentRun
from agents.workspace import GitError
from approvals.models import Checkpoint
from orchestra import activities
from orchestra.engine import workspaces
from orchestra.engine.host import new_agent_run, session_for, take_over_agent_run
from orchestra.engine.pausing import park_step, unpark_step
from orchestra.engine.prompts import step_message
from orchestra.engine.review import (
    apply_verdict_locked,
    claim_review,
    review_step,
    run_review,
)
from orchestra.engine.runs import (
    close_agent_run,
    fail_run,
    locked_run_of_step,
    reread_step,
    run_activity,
    step_with_siblings_ahead,
    sync_run_status,
)
from orchestra.engine.transitions import schedule_step
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Run, Step
from orchestra.prepared import PreparedRead
from orchestra.writes import save_later

logger = logging.getLogger(__name__)

STEP = Activity.Kind.STEP


def carry_on_step(step_id: int) -> None:
    """Claim the step's activity and carry the step on from what is stored: a new attempt
    for a ready or revising step, the same attempt for a running one whose worker stopped,
    the resume for one whose checkpoint was decided. Nothing when another worker holds it."""
    claimed = activities.claim_reading(STEP, step_id, _STEP_TO_START)
    activity, step = claimed if claimed is not None else (None, None)
    reviewer = run_activity(
        STEP,
        lambda: _attempt(step_id, step),
        run_id=None,
        step_id=step_id,
        what=f"step #{step_id}",
        begun=activity,
    )
    if reviewer is not None:
        run_review(*reviewer)


# The three ways in share one activity and one path; their names say why they were sent.
execute_step = resume_step = take_over_step = carry_on_step


def _attempt(step_id: int, step: Step | None) -> tuple[Step, AgentRun] | None:
    """Carry the step on; the review to run next, if any. `step`: as read with its claim."""
    started = _start(step_id, step)
    return drive_step(*started) if started is not None else None


# The step with its run and project, read before any transaction (its worktree's git first),
# with the claim of its activity where the database can (`activities.claim_reading`).
_STEP_TO_START = PreparedRead(
    "step_to_start", lambda step_id: Step.objects.select_related("run__project").filter(pk=step_id)
)


def _start(step_id: int, step: Step | None = None) -> tuple[Step, AgentRun] | None:
    if step is None:
        step = _STEP_TO_START.get(step_id)
    if step.run.is_terminal:
        return None
    if step.run.is_paused and step.status in (Step.Status.READY, Step.Status.REVISING):
        return None  # started when the run is resumed (see `resume_run`)
    if step.status in (Step.Status.READY, Step.Status.REVISING):
        # Git before the transaction: only the holder of the step's activity gets here.
        fields = workspaces.prepare_worktree(step.run, step)
        worktree = {field: getattr(step, field) for field in fields}
        return _new_attempt(step_id, step.run_id, step.depends_on, worktree)
    if step.status == Step.Status.RUNNING:
        return _take_over(step_id)
    if step.status == Step.Status.AWAITING_APPROVAL:
        return _resume(step_id)
    if step.status == Step.Status.PAUSED:
        return unpark_step(step_id)
    return None


def _new_attempt(
    step_id: int, run_id: int, depends_on: list[str], worktree_fields: dict
) -> tuple[Step, AgentRun] | None:
    inputs = _WITH_INPUTS.ahead(step_id, run_id, json.dumps(depends_on))
    with locked_run(run_id, then=inputs) as run:
        step, dependency_outputs = _with_inputs(step_id, run_id, depends_on)
        if run.is_terminal or step.status not in (Step.Status.READY, Step.Status.REVISING):
            return None
        if run.is_paused:
            return None
        step.status = Step.Status.RUNNING
        step.attempts += 1
        step.started_at = step.started_at or timezone.now()
        for field, value in worktree_fields.items():
            setattr(step, field, value)
        save_later(run, step, ["status", "attempts", "started_at", *worktree_fields])
        brief = {
            **step.brief,
            "step": step.key,
            "inputs_from": dependency_outputs,
            "feedback": step.feedback,
        }
        started = emit(
            run,
            "step.started",
            step=step,
            actor=step.agent_role,
            data={
                "attempt": step.attempts,
                "worker": activities.owner_name(),
                "branch": step.branch,
                "base_commit": step.base_commit,
            },
        )
        agent_run = new_agent_run(
            run,
            step=step,
            purpose=AgentRun.Purpose.STEP,
            role=step.agent_role,
            brief=brief,
            user_message=step_message(step, dependency_outputs),
            attempt=step.attempts,
            named_in=started,  # `data["agent_run"]`
        )
        # A first attempt's worktree is as `prepare_worktree` made it: nothing written yet.
        agent_run.first_attempt = step.attempts == 1
        # Ready or revising to running: the run goes on dispatching, whatever the others do.
        sync_run_status(run, {Step.Status.RUNNING})
    return step, agent_run


def _keys_in(keys) -> RawSQL:
    """The keys of a JSON list (one parameter, whatever its length)."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", (keys,))
    return RawSQL("SELECT value FROM json_each(%s)", (keys,))


# A new attempt's read: compiled once per connection, the keys sent as one JSON list.
_WITH_INPUTS = PreparedRead(
    "with_inputs",
    lambda step_id, run_id, keys: Step.objects.filter(
        Q(pk=step_id) | Q(key__in=_keys_in(keys)), run_id=run_id
    ).order_by(),
    values=3,
)


def _with_inputs(step_id: int, run_id: int, depends_on: list[str]) -> tuple[Step, dict]:
    """The step as it is now, and the outputs of the steps it depends on (done, so they
    hold still), in one read: `depends_on` as read before the lock; read again on its own
    if it changed meanwhile. Caller holds the run lock."""
    rows = _WITH_INPUTS.all(step_id, run_id, json.dumps(depends_on))
    step = next((row for row in rows if row.pk == step_id), None)
    if step is None:
        raise Step.DoesNotExist(f"no step {step_id}")
    if step.depends_on != depends_on:
        rows = list(Step.objects.filter(run_id=run_id, key__in=step.depends_on).order_by())
    return step, {row.key: row.output for row in rows if row.key in step.depends_on}


def _resume(step_id: int) -> tuple[Step, AgentRun] | None:
    """Continue a step whose checkpoint was decided, from the conversation in the database."""
    with locked_run_of_step(step_id) as run:
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.AWAITING_APPROVAL:
            return None
        agent_run = step.agent_runs.filter(
            purpose=AgentRun.Purpose.STEP, status=AgentRun.Status.PAUSED
        ).last()
        if agent_run is None:
            return None  # an escalation, decided through its own path
        if step.checkpoints.filter(
            status=Checkpoint.Status.PENDING,
            kind__in=[Checkpoint.Kind.TOOL_CALL, Checkpoint.Kind.DEPLOY],
        ).exists():
            return None  # still waiting on a human
        step.status = Step.Status.RUNNING
        step.save(update_fields=["status"])
        agent_run.status = AgentRun.Status.RUNNING
        agent_run.save(update_fields=["status"])
        emit(run, "step.resumed", step=step, actor=step.agent_role)
        sync_run_status(run)
    return step, agent_run


def _take_over(step_id: int) -> tuple[Step, AgentRun] | None:
    """Carry on with a running step whose worker stopped: the same attempt, from the stored
    conversation. A side effect caught mid-call is not run again (see the agent loop)."""
    with locked_run_of_step(step_id) as run:
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.RUNNING:
            return None
        agent_run = (
            step.agent_runs.filter(purpose=AgentRun.Purpose.STEP, attempt=step.attempts)
            .order_by("-pk")
            .first()
        )
        if agent_run is None or agent_run.status not in (
            AgentRun.Status.RUNNING,
            AgentRun.Status.FAILED,
        ):
            # Nothing to carry on from: a new attempt.
            step.status = Step.Status.READY
            schedule_step(step)
            step.save(update_fields=["status", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": "its worker stopped"})
            return None
        take_over_agent_run(run, agent_run, actor="engine")
    return step, agent_run


def drive_step(step: Step, agent_run: AgentRun) -> tuple[Step, AgentRun] | None:
    """Run the step's agent to an outcome. Returns the review to run next (already claimed
    as its own activity), if any."""
    session = session_for(
        agent_run,
        step=step,
        on_final=lambda run, outcome: hand_to_review(
            run, step, agent_run, outcome, session.host.committed
        ),
        final_read=step_with_siblings_ahead(step.pk),  # `hand_to_review`'s first read
    )
    outcome = session.run()
    while isinstance(outcome, Paused):
        if park_step(step, agent_run):
            return None
        outcome = session.run()  # resumed (or ended) before it parked: go on
    if isinstance(outcome, NeedsApproval):
        with locked_run(step.run_id) as run:
            sync_run_status(run)
        return None
    if not isinstance(outcome, FinalOutput):
        close_agent_run(agent_run, outcome)
        _step_attempt_failed(step, outcome)
        return None
    reviewer = session.final_result
    if reviewer is not None:
        return step, reviewer
    if step.brief.get("checks"):
        review_step(step.pk)
    return None


def hand_to_review(
    run: Run,
    step: Step,
    agent_run: AgentRun,
    outcome: FinalOutput,
    committed: dict | GitError | None,
) -> AgentRun | None:
    """The step's final output goes to the review gate, and the review is claimed as its own
    activity, in the transaction that recorded the final reply (the run is locked). Returns
    the reviewer's attempt, or None when the step moved on meanwhile (cancelled) or its
    checks run first."""
    close_agent_run(agent_run, outcome)
    reread_step(step)
    if run.is_terminal or step.status != Step.Status.RUNNING:
        return None
    step.output = outcome.content
    step.status = Step.Status.IN_REVIEW
    fields = ["output", "status"]
    if isinstance(committed, dict):  # the worktree's commit, made just before this
        for field, value in committed.items():
            setattr(step, field, value)
        fields += list(committed)
    elif isinstance(committed, GitError):
        step.save(update_fields=["output", "status"])
        apply_verdict_locked(
            run, step.pk, "revise", f"Your work cannot be committed: {committed}", actor="git"
        )
        return None
    emit(
        run,
        "step.output",
        step=step,
        actor=step.agent_role,
        data={"chars": len(step.output), "commit": step.head_commit, "touched": step.touched},
    )
    review = activities.begin(Activity.Kind.REVIEW, run_id=run.pk, step_id=step.pk)
    activities.finish_with(run)  # the attempt ends with this transaction
    if step.brief.get("checks"):
        # Deterministic checks come before the reviewer, outside this transaction.
        step.save(update_fields=fields)
        sync_run_status(run, step=step)
        return None
    reviewer = claim_review(run, step, extra_fields=fields)
    sync_run_status(run, step=step)
    if reviewer is not None:
        reviewer.activity = review  # held from this commit on: `run_review` claims nothing
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
            schedule_step(step)
            step.save(update_fields=["status", "error", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": outcome.error})
            return
        step.status = Step.Status.FAILED
        step.error = outcome.error
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
        emit(run, "step.failed", step=step, data={"error": outcome.error})
        fail_run(run, f"Step {step.key!r} failed after {step.attempts} attempts: {outcome.error}")
