"""Forking a finished or failed run at a step: a new run linked to its parent.

The step forked at (its brief or agent edited) and every step downstream of it run again; every
other step the parent completed is reused as it was, with its output and merged work, and no
model is called for it. The fork's branch starts where the parent's held only reused work
(see `workspaces.fork_point`), so reused steps keep their merged commits; one merged after a
re-run step is merged again. Like time travel in a graph of checkpoints: the parent is left
untouched, and both runs stay in the history.
"""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.llm import uses_demo_model
from agents.models import RunBudget
from agents.teams import known_roles
from agents.workspace import GitError
from orchestra.engine import budgets, workspaces
from orchestra.engine.dispatch import dispatch_locked
from orchestra.engine.planning import emit_accepted, step_of
from orchestra.engine.runs import EngineError, actor_of, fail_run
from orchestra.events import emit, locked_run
from orchestra.models import Plan, Run, Step
from orchestra.plans import ancestors, check_plan

FORKABLE = (Run.Status.COMPLETED, Run.Status.FAILED, Run.Status.STOPPED)


class InvalidFork(EngineError):
    """The edit asked for cannot run: bad input, not a conflict with the run's state."""


def fork_run(
    user, parent: Run, key: str, brief=None, agent: str | None = None, model: str | None = None
) -> Run:
    """Fork `parent` at step `key`, with `brief` (a dict of brief fields, or the new
    objective as text), `agent` and `model` replacing the step's; returns the new run,
    already dispatching. Refused for a run still under way, an unknown step, or an edit that
    makes the plan invalid."""
    steps = list(parent.steps.order_by("position"))
    forked = next((s for s in steps if s.key == key), None)
    _refusal(parent, forked, key)
    edited = _edited(forked, brief, agent)
    models = {s.key: s.model for s in steps}
    if model is not None:
        models[key] = _model(model)
    specs = [edited if s.key == key else _spec(s) for s in steps]
    check = check_plan(
        {"steps": specs},
        known_agents=known_roles(parent.project),
        max_steps=settings.ORCHESTRA_MAX_PLAN_STEPS,
        known_checks=parent.project.check_commands(),
    )
    if not check.ok:
        raise InvalidFork("The edited step is refused: " + "; ".join(check.errors))
    downstream = {s.key for s, above in _with_ancestors(steps) if s.key == key or key in above}
    reused = {s.key for s in steps if s.key not in downstream and s.status == Step.Status.DONE}
    fork = _create(user, parent, key, reused)
    done = [s for s in steps if s.status == Step.Status.DONE]
    try:
        base, remerge = workspaces.fork_point(parent, done, reused)
        branch, remerged = workspaces.start_fork_branch(fork, base, remerge)
    except GitError as exc:
        with locked_run(fork.pk) as run:
            fail_run(run, f"The fork could not start its branch: {exc}")
        return fork
    with locked_run(fork.pk) as run:
        run.branch, run.base_commit = branch, parent.base_commit
        run.head_commit = workspaces.run_head(run)
        run.status, run.phase = Run.Status.RUNNING, Run.Phase.DISPATCH
        run.save(update_fields=["branch", "base_commit", "head_commit", "status", "phase"])
        plan = _plan(run, parent, user, specs, forked, edited, models[key])
        _steps(run, plan, steps, specs, models, reused, remerged)
        dispatch_locked(run)
    fork.refresh_from_db()
    return fork


def _refusal(parent: Run, forked: Step | None, key: str) -> None:
    if parent.status not in FORKABLE:
        raise EngineError(
            f"Only a completed, failed or stopped run can be forked; this run is {parent.status}."
        )
    if not parent.branch:
        raise EngineError("This run never got a plan: there is nothing to fork.")
    if forked is None:
        raise InvalidFork(f"Run {parent.pk} has no step {key!r}.")


def _spec(step: Step) -> dict:
    return {
        "key": step.key,
        "title": step.title,
        "agent": step.agent_role,
        "brief": step.brief,
        "depends_on": list(step.depends_on),
        "claims": list(step.claims),
    }


def _edited(step: Step, brief, agent: str | None) -> dict:
    spec = _spec(step)
    if isinstance(brief, str):
        if not brief.strip():
            raise InvalidFork("The edited brief is empty.")
        spec["brief"] = {**step.brief, "objective": brief.strip()}
    elif isinstance(brief, dict):
        spec["brief"] = {**step.brief, **brief}
    elif brief is not None:
        raise InvalidFork("The brief must be an object of brief fields or the objective as text.")
    if agent:
        spec["agent"] = agent
    return spec


def _model(model: str) -> str:
    model = model.strip()
    if not model or len(model) > 100 or any(c.isspace() for c in model):
        raise InvalidFork("The model must be a model name: no spaces, at most 100 characters.")
    return model


def _with_ancestors(steps: list[Step]):
    above = ancestors({s.key: list(s.depends_on) for s in steps})
    return [(s, above.get(s.key, set())) for s in steps]


def _create(user, parent: Run, key: str, reused: set[str]) -> Run:
    """The fork's run, recorded before its branch is cut (the branch is named after it),
    within the project's budget like any new run, with the project's run limits."""
    who = actor_of(user)
    refusal = budgets.refusal_for_new_run(parent.project)
    if refusal:
        raise EngineError(refusal)
    limits = budgets.run_limits(parent.project, None)
    with transaction.atomic():
        created = Run.objects.create(
            task=parent.task,
            project=parent.project,
            parent=parent,
            forked_at_step=key,
            uses_demo_model=uses_demo_model(),
        )
        if any(value is not None for value in limits.values()):
            RunBudget.objects.create(run=created, **limits)
    with locked_run(parent.pk) as locked_parent:
        emit(locked_parent, "run.forked", actor=who, data={"fork": created.pk, "step": key})
    with locked_run(created.pk) as run:
        emit(
            run,
            "run.created",
            actor=who,
            data={
                "task": parent.task_id,
                "title": parent.task.title,
                "demo_model": run.uses_demo_model,
                "forked_from": parent.pk,
                "step": key,
                "reused": sorted(reused),
            },
        )
    return run


def _plan(
    run: Run, parent: Run, user, specs: list[dict], forked: Step, edited: dict, model: str
) -> Plan:
    before = {**_spec(forked), "model": forked.model}
    after = {**edited, "model": model}
    diff = [
        {"step": forked.key, "field": field, "before": before[field], "after": after[field]}
        for field in ("agent", "brief", "model")
        if before[field] != after[field]
    ]
    return Plan.objects.create(
        run=run,
        version=1,
        status=Plan.Status.ACCEPTED,
        data={"summary": f"Fork of run {parent.pk} at step {forked.key}.", "steps": specs},
        based_on=parent.plans.filter(status=Plan.Status.ACCEPTED).order_by("-version").first(),
        edited_by=user if user and user.is_authenticated else None,
        diff=diff,
    )


def _steps(
    run, plan, parents: list[Step], specs, models: dict, reused: set[str], remerged: dict
) -> None:
    """The fork's steps: reused ones done as they were, the others pending. Caller holds the
    fork's lock."""
    now = timezone.now()
    for position, (parent_step, spec) in enumerate(zip(parents, specs, strict=True)):
        step = step_of(run, plan, position, spec, model=models[spec["key"]])
        if spec["key"] in reused:
            step.status = Step.Status.DONE
            step.reused_from = parent_step
            step.output = parent_step.output
            step.checks = parent_step.checks
            step.touched = parent_step.touched
            step.branch = parent_step.branch
            step.base_commit = parent_step.base_commit
            step.head_commit = parent_step.head_commit
            step.merged_commit = remerged.get(step.key, parent_step.merged_commit)
            step.started_at = step.finished_at = now
        step.save()
    emit_accepted(run, plan, specs, reused=sorted(reused), edited=plan.diff)
    for step in run.steps.filter(status=Step.Status.DONE):
        emit(
            run,
            "step.reused",
            step=step,
            data={"from_run": step.reused_from.run_id, "commit": step.merged_commit},
        )
    emit(run, "phase.changed", data={"phase": Run.Phase.DISPATCH})
