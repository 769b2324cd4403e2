"""The engine: Plan -> Dispatch -> Review -> Report, as service functions.

Locking rule: every transaction here is a `locked_run(run_id)` block: it starts with SELECT
... FOR UPDATE on the run row before touching the run's steps, checkpoints or events. That one
lock per run makes each transition happen exactly once when workers or requests race, and
keeps event sequence numbers committed in order; the block writes its events, usage and the
run's status in one go at the end. Model calls never happen inside a transaction.

Celery tasks (orchestra.tasks) take ids and call these functions; each re-reads state and
returns quietly when the transition was already made by someone else.
"""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.llm import uses_demo_model
from agents.loop import Failed, FinalOutput, NeedsApproval, Outcome, OutputTool, lease_from_now
from agents.models import AgentProfile, AgentRun
from agents.workspace import GitError
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from orchestra import queue
from orchestra.models import Plan, Project, Run, Step, Task
from orchestra.plans import PLAN_SCHEMA, check_plan
from orchestra.services import workspaces
from orchestra.services.agents import (
    UnknownAgent,
    known_roles,
    new_agent_run,
    session_for,
    worker_name,
)
from orchestra.services.events import emit, locked_run

logger = logging.getLogger(__name__)

VERDICT_SCHEMA = {
    "type": "object",
    "required": ["verdict", "feedback"],
    "additionalProperties": False,
    "properties": {
        "verdict": {"enum": ["pass", "revise", "escalate"]},
        "feedback": {"type": "string", "maxLength": 8000},
        "criteria": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["criterion", "met"],
                "properties": {"criterion": {"type": "string"}, "met": {"type": "boolean"}},
            },
        },
    },
}


class EngineError(Exception):
    """A request the engine refuses, with a message fit for the person who made it."""


# --- tasks are imported lazily: orchestra.tasks imports this module -----------------------
def _tasks():
    from orchestra import tasks

    return tasks


# --- start ---------------------------------------------------------------------------------
def start_run(user, project: Project, title: str, description: str = "") -> Run:
    """Create the task and its run, and enqueue planning after commit."""
    title = (title or "").strip()
    description = (description or "").strip()
    if not title:
        raise EngineError("A task needs a title.")
    if len(title) > 300:
        raise EngineError("The title is longer than 300 characters.")
    if len(description) > settings.ORCHESTRA_MAX_TEXT:
        raise EngineError(
            f"The description is longer than {settings.ORCHESTRA_MAX_TEXT} characters."
        )
    with transaction.atomic():
        task = Task.objects.create(
            project=project,
            title=title,
            description=description,
            created_by=user if user and user.is_authenticated else None,
        )
        created = Run.objects.create(task=task, project=project, uses_demo_model=uses_demo_model())
    with locked_run(created.pk) as run:
        emit(
            run,
            "run.created",
            actor=_actor(user),
            data={"task": task.pk, "title": title, "demo_model": run.uses_demo_model},
        )
        queue.enqueue(_tasks().plan_run_task, run.pk)
    return run


def _actor(user) -> str:
    return user.get_username() if user and user.is_authenticated else "system"


# --- plan ----------------------------------------------------------------------------------
def _planning_message(run: Run) -> str:
    catalogue = [
        {"role": p.role, "does": p.description, "tools": p.allowed_tools}
        for p in AgentProfile.objects.filter(team=run.project.team).exclude(role="orchestrator")
    ]
    return (
        f"Task: {run.task.title}\n\n"
        f"Description:\n{run.task.description or '(none)'}\n\n"
        f"Project: {run.project.name} (team: {run.project.team})\n"
        f"{run.project.description}\n\n"
        f"Available agents:\n{json.dumps(catalogue, indent=2)}\n\n"
        f"Return the plan by calling `submit_plan`. At most "
        f"{settings.ORCHESTRA_MAX_PLAN_STEPS} steps. Every step needs a brief with "
        "acceptance criteria. Steps that could run at the same time must not claim the same "
        "file or resource."
    )


def plan_run(run_id: int) -> None:
    """Ask the orchestrator for a plan, validate it (sending reasons back a bounded number
    of times), and accept it or fail the run naming the problem."""
    with locked_run(run_id) as run:
        if run.status != Run.Status.PLANNING:
            return
        if AgentRun.objects.filter(
            run=run, purpose=AgentRun.Purpose.PLAN, status=AgentRun.Status.RUNNING
        ).exists():
            return  # another worker is planning
        try:
            agent_run = new_agent_run(
                run,
                step=None,
                purpose=AgentRun.Purpose.PLAN,
                role="orchestrator",
                brief={"task": run.task.title, "description": run.task.description},
                user_message=_planning_message(run),
                attempt=run.plans.count() + 1,
            )
        except UnknownAgent as exc:
            _fail_run(run, f"Cannot plan: {exc}.")
            return
        emit(run, "phase.changed", data={"phase": Run.Phase.PLAN})
    roles = known_roles(run.project)

    def check(plan: dict) -> list[str]:
        return _record_proposal(run_id, plan, roles)

    output = OutputTool(
        name="submit_plan",
        description="Submit the plan: steps with briefs, dependencies and claimed resources.",
        parameters=PLAN_SCHEMA,
        check=check,
        max_invalid=settings.ORCHESTRA_MAX_PLAN_ATTEMPTS,
    )
    outcome = session_for(agent_run, step=None, output_tool=output).run()
    _close_agent_run(agent_run, outcome)
    if isinstance(outcome, FinalOutput):
        accept_plan(run_id)
    elif isinstance(outcome, Failed) and not outcome.cancelled:
        with locked_run(run_id) as run:
            if run.status == Run.Status.PLANNING:
                _fail_run(run, f"Planning failed: {outcome.error}")


def _record_proposal(run_id: int, plan: dict, roles: set[str]) -> list[str]:
    """Store one proposed plan version; returns the reasons it is refused (empty if valid)."""
    result = check_plan(plan, known_agents=roles, max_steps=settings.ORCHESTRA_MAX_PLAN_STEPS)
    with locked_run(run_id) as run:
        version = run.plans.count() + 1
        record = Plan.objects.create(
            run=run,
            version=version,
            data=plan,
            status=Plan.Status.PROPOSED if result.ok else Plan.Status.REJECTED,
            errors=result.errors,
            added_orderings=[list(o) for o in result.orderings],
        )
        emit(
            run,
            "plan.proposed",
            actor="orchestrator",
            data={"plan": record.pk, "version": version, "steps": len(plan.get("steps", []))},
        )
        if not result.ok:
            emit(
                run,
                "plan.rejected",
                data={"plan": record.pk, "version": version, "reasons": result.errors},
            )
    return result.errors


def accept_plan(run_id: int) -> None:
    """Turn the latest valid proposal into steps; then wait for plan approval or dispatch."""
    with locked_run(run_id) as run:
        if run.status != Run.Status.PLANNING:
            return
        plan = run.plans.filter(status=Plan.Status.PROPOSED).order_by("-version").first()
        if plan is None:
            _fail_run(run, "Planning ended without a valid plan.")
            return
        if run.project.requires_plan_approval:
            open_checkpoint(
                run,
                kind=Checkpoint.Kind.PLAN,
                plan=plan,
                shown={"plan": plan.data, "version": plan.version},
            )
            run.status = Run.Status.AWAITING_APPROVAL
            run.save(update_fields=["status"])
            return
        _materialise_plan(run, plan)
    dispatch_ready_steps(run_id)


def _materialise_plan(run: Run, plan: Plan) -> None:
    """Create the steps of an accepted plan and cut the run's git branch. Caller holds the
    run lock."""
    plan.status = Plan.Status.ACCEPTED
    plan.save(update_fields=["status"])
    if not run.branch:
        workspaces.start_run_branch(run)
        run.save(update_fields=["branch", "base_commit", "head_commit"])
    # Orderings added for shared claims are already in the stored step dependencies.
    for position, spec in enumerate(plan.data["steps"]):
        Step.objects.create(
            run=run,
            plan=plan,
            key=spec["key"],
            position=position,
            title=spec["title"],
            agent_role=spec["agent"],
            brief=spec["brief"],
            depends_on=list(spec.get("depends_on", [])),
            claims=list(spec.get("claims", [])),
        )
    run.status = Run.Status.RUNNING
    run.phase = Run.Phase.DISPATCH
    run.save(update_fields=["status", "phase"])
    emit(
        run,
        "plan.accepted",
        data={
            "plan": plan.pk,
            "version": plan.version,
            "branch": run.branch,
            "base_commit": run.base_commit,
            "steps": [
                {"key": s["key"], "agent": s["agent"], "depends_on": s.get("depends_on", [])}
                for s in plan.data["steps"]
            ],
            "added_orderings": plan.added_orderings,
        },
    )
    emit(run, "phase.changed", data={"phase": Run.Phase.DISPATCH})


# --- dispatch ------------------------------------------------------------------------------
def dispatch_ready_steps(run_id: int) -> None:
    """Enqueue every step whose dependencies are done and whose claims are free, within the
    project's concurrency cap; report the run when every step is done. Deterministic: no
    model is asked."""
    with locked_run(run_id) as run:
        report = _dispatch_locked(run)
    if report:
        report_run(run_id)


def _dispatch_locked(run: Run) -> bool:
    """The dispatch decision. Caller holds the run lock. Returns True when every step is
    done and the report is due."""
    if run.status not in (
        Run.Status.RUNNING,
        Run.Status.REVIEWING,
        Run.Status.AWAITING_APPROVAL,
    ):
        return False
    steps = list(run.steps.all())
    if not steps:
        return False
    done = {s.key for s in steps if s.status == Step.Status.DONE}
    if len(done) == len(steps):
        return True
    active = [s for s in steps if s.status in Step.ACTIVE]
    busy = sum(1 for s in active if s.status != Step.Status.AWAITING_APPROVAL)
    # Leases: what each active step claimed in the plan, widened by what it touched.
    held = {path for s in active for path in (*s.claims, *s.touched)}
    now = timezone.now()
    for step in steps:
        if step.status != Step.Status.PENDING:
            continue
        if busy >= run.project.concurrency_cap:
            break
        if not set(step.depends_on) <= done or held & set(step.claims):
            continue
        step.status = Step.Status.READY
        step.dispatched_at = now
        step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
        step.save(update_fields=["status", "dispatched_at", "task_id"])
        held |= set(step.claims)
        busy += 1
        emit(run, "step.dispatched", step=step, data={"agent": step.agent_role})
    _sync_run_status(run, steps)
    return False


def _sync_run_status(run: Run, steps: list[Step] | None = None) -> None:
    """Derive the run's status and phase from its steps. Caller holds the run lock."""
    if run.is_terminal or run.status in (Run.Status.PLANNING, Run.Status.REPORTING):
        return
    if steps is not None:
        statuses = {s.status for s in steps}
    else:
        statuses = set(run.steps.values_list("status", flat=True))
    if statuses & {Step.Status.READY, Step.Status.RUNNING, Step.Status.REVISING}:
        status, phase = Run.Status.RUNNING, Run.Phase.DISPATCH
    elif Step.Status.IN_REVIEW in statuses:
        status, phase = Run.Status.REVIEWING, Run.Phase.REVIEW
    elif Step.Status.AWAITING_APPROVAL in statuses:
        status, phase = Run.Status.AWAITING_APPROVAL, run.phase
    else:
        status, phase = Run.Status.RUNNING, Run.Phase.DISPATCH
    if (status, phase) != (run.status, run.phase):
        phase_changed = phase != run.phase
        run.status, run.phase = status, phase  # written when the locked_run transaction ends
        if phase_changed:
            emit(run, "phase.changed", data={"phase": phase})


@contextmanager
def _locked_run_of_step(step_id: int, run_id: int | None = None) -> Iterator[Run | None]:
    """`locked_run` for the run owning `step_id`; None if the step is gone (a stale task)."""
    if run_id is None:
        run_id = Step.objects.filter(pk=step_id).values_list("run_id", flat=True).first()
    if run_id is None:
        yield None
        return
    with locked_run(run_id) as run:
        yield run


# --- execute -------------------------------------------------------------------------------
def step_message(step: Step, dependency_outputs: dict[str, str]) -> str:
    """The agent's whole input: its brief, the outputs it depends on, and review feedback.
    Never the run's history."""
    parts = [
        f"Step: {step.key} — {step.title}",
        "Brief:\n" + json.dumps(step.brief, indent=2),
    ]
    if step.claims:
        parts.append("Files and resources this step may change: " + ", ".join(step.claims))
    for key, output in dependency_outputs.items():
        parts.append(f"Output of step {key}:\n{output}")
    if step.feedback:
        parts.append(f"Your previous output:\n{step.output}")
        parts.append(f"Reviewer feedback to address in this revision:\n{step.feedback}")
    parts.append("When the work is done, answer with your final output as plain text.")
    return "\n\n".join(parts)


def execute_step(step_id: int) -> None:
    """Claim a ready (or revising) step exactly once and run a new attempt of its agent."""
    with _locked_run_of_step(step_id) as run:
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
        _sync_run_status(run)
    _drive_step(step, agent_run)


def resume_step(step_id: int) -> None:
    """Continue a step whose checkpoint was decided, from the conversation in the database."""
    with _locked_run_of_step(step_id) as run:
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
        _sync_run_status(run)
    _drive_step(step, agent_run)


def _drive_step(step: Step, agent_run: AgentRun) -> None:
    session = session_for(
        agent_run,
        step=step,
        on_final=lambda run, outcome: _hand_to_review(run, step, agent_run, outcome),
    )
    outcome = session.run()
    if isinstance(outcome, NeedsApproval):
        with locked_run(step.run_id) as run:
            _sync_run_status(run)
        return
    if not isinstance(outcome, FinalOutput):
        _close_agent_run(agent_run, outcome)
        _step_attempt_failed(step, outcome)
        return
    reviewer = session.final_result
    if reviewer is not None:
        _run_review(step, reviewer)
    elif step.brief.get("checks"):
        review_step(step.pk)


def _hand_to_review(
    run: Run, step: Step, agent_run: AgentRun, outcome: FinalOutput
) -> AgentRun | None:
    """The step's final output goes to the review gate, and the review is claimed, in the
    transaction that recorded the final reply (the run is locked). Returns the reviewer's
    attempt, or None when the step moved on meanwhile (cancelled)."""
    _close_agent_run(agent_run, outcome)
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
        _apply_verdict_locked(
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
        _sync_run_status(run)
        return None
    reviewer = _claim_review(run, step, extra_fields=fields)
    _sync_run_status(run)
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
            step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
            step.save(update_fields=["status", "error", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": outcome.error})
            return
        step.status = Step.Status.FAILED
        step.error = outcome.error
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "error", "finished_at"])
        emit(run, "step.failed", step=step, data={"error": outcome.error})
        _fail_run(run, f"Step {step.key!r} failed after {step.attempts} attempts: {outcome.error}")


def _close_agent_run(agent_run: AgentRun, outcome: Outcome) -> None:
    if isinstance(outcome, NeedsApproval):
        return  # paused in the same transaction that opened the checkpoint
    if isinstance(outcome, FinalOutput):
        status, detail = AgentRun.Status.COMPLETED, {"final_output": outcome.content[:20_000]}
    elif outcome.cancelled:
        status, detail = AgentRun.Status.CANCELLED, {"error": outcome.error}
    else:
        status, detail = AgentRun.Status.FAILED, {"error": outcome.error}
    AgentRun.objects.filter(pk=agent_run.pk).update(
        status=status,
        outcome={"kind": type(outcome).__name__, **detail},
        error=detail.get("error", ""),
        finished_at=timezone.now(),
    )


# --- review --------------------------------------------------------------------------------
def review_step(step_id: int) -> None:
    """The review gate: a reviewer agent judges the step's latest output, exactly once per
    attempt. Pass completes the step and dispatches its successors at once; revise re-runs
    it with the feedback (bounded); past the bound, or on escalate, a human decides."""
    step = Step.objects.filter(pk=step_id).first()
    if step is None:
        return
    if step.brief.get("checks") and not _checks_done(step) and not _run_checks(step):
        return
    with _locked_run_of_step(step_id) as run:
        if run is None:
            return
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.IN_REVIEW:
            return
        reviewer = _claim_review(run, step)
    if reviewer is not None:
        _run_review(step, reviewer)


def _checks_done(step: Step) -> bool:
    return bool(step.checks) and step.checks[-1].get("attempt") == step.attempts


def _run_checks(step: Step) -> bool:
    """Run the brief's checks in the step's worktree; a failure goes back to the agent as
    review feedback (bounded like any revision). Returns True when review may go on."""
    run = Run.objects.select_related("project").get(pk=step.run_id)
    results = workspaces.run_checks(run, step)
    passed = all(r["passed"] for r in results)
    with locked_run(step.run_id) as run:
        step.refresh_from_db()
        if run.is_terminal or step.status != Step.Status.IN_REVIEW or _checks_done(step):
            return False
        step.checks = [*step.checks, {"attempt": step.attempts, "results": results}]
        step.save(update_fields=["checks"])
        emit(
            run,
            "step.checks",
            step=step,
            data={"attempt": step.attempts, "passed": passed, "results": results},
        )
        if not passed:
            _apply_verdict_locked(
                run,
                step.pk,
                "revise",
                "The step's checks failed in its worktree; fix them:\n"
                + workspaces.describe_checks(results),
                actor="checks",
            )
    return passed


def _claim_review(run: Run, step: Step, extra_fields: list[str] = ()) -> AgentRun | None:
    """Take the review of the step's current attempt, once (saving `extra_fields` of the step
    with it). Caller holds the run lock."""
    if step.reviewed_attempt >= step.attempts:
        if extra_fields:
            step.save(update_fields=list(extra_fields))
        return None
    step.reviewed_attempt = step.attempts
    step.save(update_fields=["reviewed_attempt", *extra_fields])
    emit(run, "review.started", step=step, actor="reviewer", data={"attempt": step.attempts})
    return new_agent_run(
        run,
        step=step,
        purpose=AgentRun.Purpose.REVIEW,
        role="reviewer",
        brief={"step": step.key, **step.brief},
        user_message=(
            f"Review the output of step {step.key} — {step.title}.\n\n"
            f"Brief:\n{json.dumps(step.brief, indent=2)}\n\n"
            f"Output (attempt {step.attempts}):\n{step.output}\n\n"
            + _review_evidence(step)
            + "Call `submit_verdict` with pass, revise or escalate."
        ),
        attempt=step.attempts,
    )


def _review_evidence(step: Step) -> str:
    """What the reviewer gets besides the output: the files the step changed and the
    results of its checks."""
    parts = []
    if step.touched:
        parts.append(
            "Files changed (commit " + step.head_commit[:10] + "): " + ", ".join(step.touched)
        )
    if _checks_done(step):
        parts.append("Checks:\n" + workspaces.describe_checks(step.checks[-1]["results"]))
    return "".join(part + "\n\n" for part in parts)


def _run_review(step: Step, agent_run: AgentRun) -> None:
    output = OutputTool(
        name="submit_verdict",
        description="Submit the review verdict for this step's output.",
        parameters=VERDICT_SCHEMA,
    )

    def on_verdict(run: Run, outcome: FinalOutput) -> bool:
        _close_agent_run(agent_run, outcome)
        data = outcome.data or {}
        return _apply_verdict_locked(
            run, step.pk, data["verdict"], data.get("feedback", ""), actor="reviewer"
        )

    session = session_for(agent_run, step=step, output_tool=output, on_final=on_verdict)
    outcome = session.run()
    if isinstance(outcome, FinalOutput):
        if session.final_result:  # every step is done: the report is due
            report_run(step.run_id)
        return
    if outcome.cancelled:
        _close_agent_run(agent_run, outcome)
        return
    apply_verdict(
        step.pk,
        "escalate",
        f"The reviewer could not decide: {outcome.error}",
        reviewer=(agent_run, outcome),
        run_id=step.run_id,
    )


def apply_verdict(
    step_id: int,
    verdict: str,
    feedback: str,
    *,
    actor: str = "reviewer",
    reviewer: tuple[AgentRun, Outcome] | None = None,
    run_id: int | None = None,
) -> None:
    """Act on a verdict in its own transaction (see `_apply_verdict_locked`)."""
    report = False
    with _locked_run_of_step(step_id, run_id) as run:
        if run is None:
            return
        if reviewer is not None:
            _close_agent_run(*reviewer)
        report = _apply_verdict_locked(run, step_id, verdict, feedback, actor=actor)
    if report:
        report_run(run.pk)


def _apply_verdict_locked(
    run: Run, step_id: int, verdict: str, feedback: str, *, actor: str
) -> bool:
    """Pass completes the step and dispatches its successors in this same transaction, so
    they start the moment their last dependency is done; revise re-runs it (bounded); past the
    bound, or on escalate, a human decides. Caller holds the run lock. Returns True when the
    report is due."""
    step = Step.objects.get(pk=step_id)
    if run.is_terminal or step.status != Step.Status.IN_REVIEW:
        return False
    emit(
        run,
        "review.verdict",
        step=step,
        actor=actor,
        data={"verdict": verdict, "feedback": feedback, "attempt": step.attempts},
    )
    if verdict == "revise" and step.revisions >= run.project.max_revisions:
        verdict = "escalate"
        feedback = (
            f"Still not accepted after {step.revisions} revision rounds. Last feedback: {feedback}"
        )
    if verdict == "pass":
        return accept_step(run, step)
    if verdict == "revise":
        step.revisions += 1
        step.feedback = feedback
        step.status = Step.Status.REVISING
        step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
        step.save(update_fields=["revisions", "feedback", "status", "task_id"])
        emit(run, "step.revising", step=step, data={"round": step.revisions})
        _sync_run_status(run)
        return False
    escalate(run, step, feedback)
    return False


def escalate(run: Run, step: Step, reason: str) -> None:
    """A human decides about the step. Caller holds the run lock."""
    open_checkpoint(
        run,
        kind=Checkpoint.Kind.ESCALATION,
        step=step,
        shown={
            "step": step.key,
            "title": step.title,
            "brief": step.brief,
            "output": step.output,
            "reason": reason,
        },
    )
    step.status = Step.Status.AWAITING_APPROVAL
    step.save(update_fields=["status"])
    _sync_run_status(run)


def accept_step(run: Run, step: Step) -> bool:
    """A step that passed review (or a human's approval) enters the merge queue; a step
    without a worktree is done at once. Caller holds the run lock. Returns True when the
    report is due."""
    if not step.branch:
        _complete_step(run, step)
        return _dispatch_locked(run)
    step.status = Step.Status.MERGING
    step.task_id = queue.enqueue(_tasks().merge_step_task, step.pk)
    step.save(update_fields=["status", "task_id"])
    emit(run, "merge.queued", step=step, data={"branch": step.branch, "commit": step.head_commit})
    _sync_run_status(run)
    return False


MAX_MERGE_ROUNDS = 2


def merge_step(step_id: int) -> None:
    """The merge queue: integrate the step's reviewed branch into the run branch, one merge
    at a time per repository. A conflict goes back to the step's agent with the conflict as
    feedback (bounded rounds, then a human decides); nothing is overwritten."""
    step = Step.objects.select_related("run__project").filter(pk=step_id).first()
    if step is None or step.status != Step.Status.MERGING or step.run.is_terminal:
        return
    try:
        outcome = workspaces.merge_step(step.run, step)
        conflicts = [] if outcome.ok else workspaces.bring_run_head_into(step.run, step)
    except GitError as exc:
        # Not a conflict: git itself failed. A human looks; the branch is intact.
        with locked_run(step.run_id) as run:
            step.refresh_from_db()
            if not run.is_terminal and step.status == Step.Status.MERGING:
                emit(run, "merge.failed", step=step, data={"error": str(exc)[:2000]})
                escalate(run, step, f"Merging the step's branch failed: {exc}")
        return
    report = False
    with locked_run(step.run_id) as run:
        step.refresh_from_db()
        if run.is_terminal or step.status != Step.Status.MERGING:
            return
        if outcome.ok:
            step.merged_commit = outcome.commit
            run.head_commit = workspaces.run_head(run)
            run.save(update_fields=["head_commit"])
            step.save(update_fields=["merged_commit"])
            emit(
                run,
                "step.merged",
                step=step,
                data={
                    "branch": step.branch,
                    "commit": outcome.commit,
                    "run_branch": run.branch,
                    "files": step.touched,
                },
            )
            _complete_step(run, step)
            report = _dispatch_locked(run)
        else:
            emit(
                run,
                "merge.conflict",
                step=step,
                data={"files": outcome.conflicts, "round": step.merge_rounds + 1},
            )
            feedback = (
                "Merging your branch into the run branch conflicted with work another step "
                f"merged first, in: {', '.join(outcome.conflicts)}. Those files in your "
                "worktree now hold conflict markers (<<<<<<< ======= >>>>>>>): resolve them so "
                "that both changes are kept, then finish.\n\n" + outcome.detail
            )
            if step.merge_rounds >= MAX_MERGE_ROUNDS:
                escalate(
                    run, step, f"Still conflicting after {step.merge_rounds} rounds.\n{feedback}"
                )
            else:
                step.merge_rounds += 1
                step.feedback = feedback
                step.status = Step.Status.REVISING
                step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
                step.save(update_fields=["merge_rounds", "feedback", "status", "task_id"])
                emit(
                    run,
                    "step.revising",
                    step=step,
                    data={
                        "round": step.revisions,
                        "merge_conflict": conflicts or outcome.conflicts,
                    },
                )
                _sync_run_status(run)
    if report:
        report_run(step.run_id)


def stop_step(run: Run, step: Step, reason: str) -> None:
    """A human stopped the step at a checkpoint: it fails without another attempt, and the
    run fails with it (completed outputs are kept). Caller holds the run lock."""
    from agents.models import ToolCall

    step.status = Step.Status.FAILED
    step.error = reason
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "error", "finished_at"])
    ToolCall.objects.filter(step=step, status=ToolCall.Status.AWAITING_APPROVAL).update(
        status=ToolCall.Status.REJECTED, result=reason, finished_at=step.finished_at
    )
    step.agent_runs.filter(status=AgentRun.Status.PAUSED).update(
        status=AgentRun.Status.CANCELLED, error=reason, finished_at=step.finished_at
    )
    emit(run, "step.failed", step=step, data={"error": reason, "stopped": True})
    _fail_run(run, f"Step {step.key!r} was {reason}")


def _complete_step(run: Run, step: Step) -> None:
    step.status = Step.Status.DONE
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "finished_at"])
    emit(run, "step.completed", step=step, data={"attempts": step.attempts})


def revise_with_human_feedback(run: Run, step: Step, feedback: str) -> None:
    """An escalation rejected with a comment: one more round with the human's feedback.
    Caller holds the run lock."""
    step.revisions += 1
    step.feedback = feedback
    step.status = Step.Status.REVISING
    step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
    step.save(update_fields=["revisions", "feedback", "status", "task_id"])
    emit(run, "step.revising", step=step, data={"round": step.revisions, "by_human": True})
    _sync_run_status(run)


# --- report --------------------------------------------------------------------------------
def report_run(run_id: int) -> None:
    """The orchestrator integrates the reviewed outputs into the final report, once."""
    with locked_run(run_id) as run:
        if run.status in (Run.Status.REPORTING, *Run.TERMINAL):
            return
        steps = list(run.steps.all())
        if not steps or any(s.status != Step.Status.DONE for s in steps):
            return
        run.status, run.phase = Run.Status.REPORTING, Run.Phase.REPORT
        run.save(update_fields=["status", "phase"])
        emit(run, "phase.changed", data={"phase": Run.Phase.REPORT})
        outputs = "\n\n".join(f"Step {s.key} — {s.title}:\n{s.output}" for s in steps)
        agent_run = new_agent_run(
            run,
            step=None,
            purpose=AgentRun.Purpose.REPORT,
            role="orchestrator",
            brief={"task": run.task.title, "steps": [s.key for s in steps]},
            user_message=(
                f"Write the final report for the task: {run.task.title}\n\n"
                f"Reviewed step outputs:\n\n{outputs}\n\n"
                "Name each step and what it produced."
            ),
        )
    outcome = session_for(agent_run, step=None).run()
    _close_agent_run(agent_run, outcome)
    with locked_run(run_id) as run:
        if run.status != Run.Status.REPORTING:
            return
        if isinstance(outcome, FinalOutput):
            run.report = outcome.content
            run.status = Run.Status.COMPLETED
            run.finished_at = timezone.now()
            run.save(update_fields=["report", "status", "finished_at"])
            emit(run, "report.published", actor="orchestrator", data={"chars": len(run.report)})
            emit(run, "run.completed", data={**_usage(run), "branch": run.branch})
            transaction.on_commit(lambda: _remove_worktrees(run))
        else:
            _fail_run(run, f"Writing the report failed: {outcome.error}")


def _remove_worktrees(run: Run) -> None:
    """A completed run's work lives on its branches; its worktrees go. (A failed or
    cancelled run keeps them for inspection.)"""
    try:
        workspaces.remove_worktrees(run)
    except GitError:
        logger.exception("could not remove the worktrees of run %s", run.pk)


def _usage(run: Run) -> dict:
    run.refresh_from_db(fields=["input_tokens", "output_tokens", "cost_usd"])
    return {
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": str(run.cost_usd),
    }


# --- stop ----------------------------------------------------------------------------------
def _fail_run(run: Run, message: str) -> None:
    """Fail the run, keeping finished steps' outputs. Caller holds the run lock."""
    run.status = Run.Status.FAILED
    run.error = message
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])
    kept = list(run.steps.filter(status=Step.Status.DONE).values_list("key", flat=True))
    run.steps.filter(status__in=[Step.Status.PENDING, Step.Status.READY]).update(
        status=Step.Status.SKIPPED
    )
    run.checkpoints.filter(status=Checkpoint.Status.PENDING).update(
        status=Checkpoint.Status.CANCELLED, decided_at=timezone.now()
    )
    emit(run, "run.failed", data={"error": message, "completed_steps": kept, **_usage(run)})


def cancel_run(user, run: Run) -> Run:
    """Stop dispatch, revoke queued work, cancel waiting checkpoints; running agents stop at
    their next turn. Refused for a run that already ended."""
    with locked_run(run.pk) as run:
        if run.is_terminal:
            raise EngineError(f"The run already ended ({run.status}).")
        run.status = Run.Status.CANCELLED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
        waiting = run.steps.exclude(status__in=[*Step.FINISHED, Step.Status.RUNNING])
        task_ids = list(waiting.values_list("task_id", flat=True))
        waiting.update(status=Step.Status.CANCELLED, finished_at=timezone.now())
        run.checkpoints.filter(status=Checkpoint.Status.PENDING).update(
            status=Checkpoint.Status.CANCELLED, decided_at=timezone.now()
        )
        emit(run, "run.cancelled", actor=_actor(user))
        transaction.on_commit(lambda: queue.revoke(task_ids))
    return run


# --- recovery ------------------------------------------------------------------------------
def recover_embedded_work() -> int:
    """Re-enqueue work that an embedded server lost when its process stopped.

    Only for the embedded default, at start-up, when no other process can be running steps:
    planning restarts, ready and revising steps are queued again, steps caught mid-attempt
    start a new attempt, outputs caught before review are reviewed, decided checkpoints whose
    resume was lost resume, and a report in progress is written again. Runs that are only
    waiting for a human are left alone. Returns the number of runs touched.
    """
    touched = 0
    for run_id in Run.objects.exclude(status__in=Run.TERMINAL).values_list("pk", flat=True):
        with locked_run(run_id) as run:
            # A step's agent carries on from its stored conversation (see take_over_step);
            # planners and reviewers start again.
            interrupted = (
                AgentRun.objects.filter(run=run, status=AgentRun.Status.RUNNING)
                .exclude(purpose=AgentRun.Purpose.STEP, step__status=Step.Status.RUNNING)
                .update(
                    status=AgentRun.Status.FAILED,
                    error="interrupted: the server stopped",
                    finished_at=timezone.now(),
                )
            )
            requeued = _requeue_lost_work(run)
            if interrupted or requeued:
                emit(run, "run.recovered", data={"status": run.status, "requeued": requeued})
                touched += 1
    return touched


def _requeue_lost_work(run: Run) -> int:
    """Queue again what `run` was doing when the process stopped. Caller holds the run lock."""
    tasks = _tasks()
    if run.status == Run.Status.PLANNING:
        queue.enqueue(tasks.plan_run_task, run.pk)
        return 1
    if run.status == Run.Status.REPORTING:
        run.status = Run.Status.RUNNING
        run.save(update_fields=["status"])
        queue.enqueue(tasks.report_run_task, run.pk)
        return 1
    requeued = 0
    for step in run.steps.filter(status__in=Step.ACTIVE):
        if step.status == Step.Status.RUNNING:  # caught mid-attempt: carry on with it
            step.lease_expires_at = None
            step.save(update_fields=["lease_expires_at"])
            queue.enqueue(tasks.take_over_step_task, step.pk)
            requeued += 1
            continue
        if step.status == Step.Status.IN_REVIEW:  # a review taken but maybe never finished
            step.reviewed_attempt = step.attempts - 1
            step.save(update_fields=["reviewed_attempt"])
        if _requeue_step(step):
            requeued += 1
    queue.enqueue(tasks.dispatch_task, run.pk)
    return requeued


def _requeue_step(step: Step) -> bool:
    """Queue again the task a dispatched step waits for: its attempt, its review, or its
    resume after a decided checkpoint. False when it waits for nothing a task does (it is
    running, its review is taken, or a human has not decided). Caller holds the run lock."""
    tasks = _tasks()
    if step.status in (Step.Status.READY, Step.Status.REVISING):
        step.task_id = queue.enqueue(tasks.execute_step_task, step.pk)
        step.save(update_fields=["task_id"])
        return True
    if step.status == Step.Status.IN_REVIEW and step.reviewed_attempt < step.attempts:
        queue.enqueue(tasks.review_step_task, step.pk)
        return True
    if step.status == Step.Status.MERGING:
        queue.enqueue(tasks.merge_step_task, step.pk)
        return True
    if (
        step.status == Step.Status.AWAITING_APPROVAL
        and not step.checkpoints.filter(status=Checkpoint.Status.PENDING).exists()
    ):
        queue.enqueue(tasks.resume_step_task, step.pk)
        return True
    return False


# Queued work older than this is assumed lost (a broker restart, a killed worker's prefetched
# messages) and queued again; every task re-checks state, so a duplicate does nothing.
STALE_QUEUED_AFTER = timedelta(seconds=120)


def sweep_active_runs() -> int:
    """Periodic safety net: re-queue work that was queued long ago and never started, then
    dispatch. Runs that are only waiting for a human are untouched. Returns the runs swept."""
    active = Run.objects.filter(
        status__in=[Run.Status.RUNNING, Run.Status.REVIEWING, Run.Status.AWAITING_APPROVAL]
    ).values_list("pk", flat=True)
    stale_before = timezone.now() - STALE_QUEUED_AFTER
    reclaim_expired_leases()
    count = 0
    for run_id in active:
        with locked_run(run_id) as run:
            requeued = _requeue_stale_work(run, stale_before)
            if requeued:
                emit(run, "run.requeued", data={"steps": requeued})
        dispatch_ready_steps(run_id)
        count += 1
    return count


def _requeue_stale_work(run: Run, stale_before) -> list[str]:
    """Queue again the steps whose queued task never ran. Caller holds the run lock."""
    steps = (
        run.steps.filter(status__in=Step.ACTIVE)
        .exclude(status=Step.Status.RUNNING)
        .annotate(last_event_at=Max("event__at"))
    )
    requeued = []
    for step in steps:
        last_move = step.dispatched_at if step.status == Step.Status.READY else step.last_event_at
        if last_move is not None and last_move <= stale_before and _requeue_step(step):
            requeued.append(step.key)
    return requeued


def reclaim_expired_leases(now=None) -> int:
    """Hand every running step whose worker stopped renewing its lease to another worker.
    Run by the sweep; tests pass `now`. Returns the steps handed over."""
    now = now or timezone.now()
    expired = (
        Step.objects.filter(status=Step.Status.RUNNING, lease_expires_at__lt=now)
        .exclude(run__status__in=Run.TERMINAL)
        .values_list("pk", flat=True)
    )
    for step_id in expired:
        queue.enqueue(_tasks().take_over_step_task, step_id, now.isoformat())
    return len(expired)


def take_over_step(step_id: int, now: str | None = None) -> None:
    """Carry on with a running step whose worker stopped: the same attempt, from the stored
    conversation. A side effect caught mid-call is not run again (see the agent loop)."""
    now_at = datetime.fromisoformat(now) if now else timezone.now()
    with _locked_run_of_step(step_id) as run:
        if run is None:
            return
        step = Step.objects.get(pk=step_id)
        if run.is_terminal or step.status != Step.Status.RUNNING:
            return
        if step.lease_expires_at is not None and step.lease_expires_at >= now_at:
            return  # renewed meanwhile: its worker is alive
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
            step.task_id = queue.enqueue(_tasks().execute_step_task, step.pk)
            step.save(update_fields=["status", "task_id"])
            emit(run, "step.retrying", step=step, data={"error": "its worker stopped"})
            return
        previous = agent_run.worker
        agent_run.status = AgentRun.Status.RUNNING
        agent_run.worker = worker_name()
        agent_run.error = ""
        agent_run.finished_at = None
        agent_run.save(update_fields=["status", "worker", "error", "finished_at"])
        step.lease_expires_at = lease_from_now()
        step.save(update_fields=["lease_expires_at"])
        emit(
            run,
            "step.taken_over",
            step=step,
            data={"agent_run": agent_run.pk, "from": previous, "to": agent_run.worker},
        )
    _drive_step(step, agent_run)
