"""Plan: the orchestrator proposes, the engine validates (sending reasons back a bounded
number of times), and an accepted plan becomes steps."""

import logging

from django.conf import settings

from agents.loop import Failed, FinalOutput, OutputTool
from agents.models import AgentRun
from agents.teams import UnknownAgent, known_roles
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from orchestra.engine import workspaces
from orchestra.engine.dispatch import dispatch_ready_steps
from orchestra.engine.host import new_agent_run, session_for, take_over_agent_run
from orchestra.engine.prompts import planning_message
from orchestra.engine.runs import close_agent_run, fail_run, run_activity
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Plan, Run, Step
from orchestra.plans import PLAN_SCHEMA, check_plan

logger = logging.getLogger(__name__)


def plan_run(run_id: int) -> None:
    """Ask the orchestrator for a plan, validate it (sending reasons back a bounded number
    of times), and accept it or fail the run naming the problem. Planning is an activity:
    a planner whose worker stopped is taken over from its stored conversation."""
    run_activity(Activity.Kind.PLAN, lambda: _plan(run_id), run_id=run_id, what="planning")


def _plan(run_id: int) -> None:
    with locked_run(run_id) as run:
        if run.status != Run.Status.PLANNING:
            return
        agent_run = (
            AgentRun.objects.filter(
                run=run, purpose=AgentRun.Purpose.PLAN, status=AgentRun.Status.RUNNING
            )
            .order_by("-pk")
            .first()
        )
        if agent_run is not None:
            take_over_agent_run(run, agent_run, actor="orchestrator")
        else:
            agent_run = _new_planner(run)
            if agent_run is None:
                return
    roles, checks = known_roles(run.project), run.project.check_commands()

    def check(plan: dict) -> list[str]:
        return _record_proposal(run_id, plan, roles, checks)

    output = OutputTool(
        name="submit_plan",
        description="Submit the plan: steps with briefs, dependencies and claimed resources.",
        parameters=PLAN_SCHEMA,
        check=check,
        max_invalid=settings.ORCHESTRA_MAX_PLAN_ATTEMPTS,
    )
    outcome = session_for(agent_run, step=None, output_tool=output).run()
    close_agent_run(agent_run, outcome)
    if isinstance(outcome, FinalOutput):
        accept_plan(run_id)
    elif isinstance(outcome, Failed) and not outcome.cancelled:
        with locked_run(run_id) as run:
            if run.status == Run.Status.PLANNING:
                fail_run(run, f"Planning failed: {outcome.error}")


def _new_planner(run: Run) -> AgentRun | None:
    """The orchestrator's planning attempt; None (and the run failed) when the team has no
    orchestrator. Caller holds the run lock."""
    try:
        agent_run = new_agent_run(
            run,
            step=None,
            purpose=AgentRun.Purpose.PLAN,
            role="orchestrator",
            brief={"task": run.task.title, "description": run.task.description},
            user_message=planning_message(run),
            attempt=run.plans.count() + 1,
        )
    except UnknownAgent as exc:
        fail_run(run, f"Cannot plan: {exc}.")
        return None
    emit(run, "phase.changed", data={"phase": Run.Phase.PLAN})
    return agent_run


def _record_proposal(run_id: int, plan: dict, roles: set[str], checks: dict[str, str]) -> list[str]:
    """Store one proposed plan version; returns the reasons it is refused (empty if valid)."""
    result = check_plan(
        plan,
        known_agents=roles,
        max_steps=settings.ORCHESTRA_MAX_PLAN_STEPS,
        known_checks=checks,
    )
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
    """Turn the latest valid proposal into steps; then wait for plan approval or dispatch.
    The run's git branch is cut first, outside the transaction that records it."""
    run = Run.objects.select_related("project").get(pk=run_id)
    cut = workspaces.cut_run_branch(run) if run.status == Run.Status.PLANNING else None
    with locked_run(run_id) as run:
        if run.status != Run.Status.PLANNING:
            return
        plan = run.plans.filter(status=Plan.Status.PROPOSED).order_by("-version").first()
        if plan is None:
            fail_run(run, "Planning ended without a valid plan.")
            return
        if cut and not run.branch:
            run.branch, run.base_commit = cut
            run.head_commit = run.base_commit
            run.save(update_fields=["branch", "base_commit", "head_commit"])
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
        materialise_plan(run, plan)
    dispatch_ready_steps(run_id)


def step_of(run: Run, plan: Plan, position: int, spec: dict, **fields) -> Step:
    """A step of `plan` as the row to write (not saved); `fields` set the rest."""
    return Step(
        run=run,
        plan=plan,
        key=spec["key"],
        position=position,
        title=spec["title"],
        agent_role=spec["agent"],
        brief=spec["brief"],
        depends_on=list(spec.get("depends_on", [])),
        claims=list(spec.get("claims", [])),
        **fields,
    )


def emit_accepted(run: Run, plan: Plan, specs: list[dict], **data) -> None:
    """`plan.accepted`: the plan, the run branch and each step's agent and dependencies;
    `data` adds what this acceptance has to say. Caller holds the run lock."""
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
                for s in specs
            ],
            **data,
        },
    )


def materialise_plan(run: Run, plan: Plan) -> None:
    """Create the steps of an accepted plan (its run branch was cut when the plan was
    accepted). Caller holds the run lock."""
    plan.status = Plan.Status.ACCEPTED
    plan.save(update_fields=["status"])
    # Orderings added for shared claims are already in the stored step dependencies.
    specs = plan.data["steps"]
    Step.objects.bulk_create(
        [step_of(run, plan, position, spec) for position, spec in enumerate(specs)]
    )
    run.status = Run.Status.RUNNING
    run.phase = Run.Phase.DISPATCH
    run.save(update_fields=["status", "phase"])
    emit_accepted(run, plan, specs, added_orderings=plan.added_orderings)
    emit(run, "phase.changed", data={"phase": Run.Phase.DISPATCH})
