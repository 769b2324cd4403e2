"""The review gate: no output is integrated unverified. A step's deterministic checks run in
its worktree first; then a reviewer agent judges the output against its brief."""

import json
import logging

from agents.loop import FinalOutput, Outcome, OutputTool
from agents.models import AgentRun
from orchestra import activities
from orchestra.engine import workspaces
from orchestra.engine.dispatch import unfinished, unfinished_ahead
from orchestra.engine.host import gate_command, new_agent_run, session_for, take_over_agent_run
from orchestra.engine.merge import (
    Merged,
    MergedAhead,
    MergeHere,
    accept_step,
    end_ahead,
    merge_ahead,
    merge_here,
    release_merged,
)
from orchestra.engine.report import report_run
from orchestra.engine.runs import (
    as_among,
    close_agent_run,
    locked_run_of_step,
    run_activity,
    step_with_siblings,
)
from orchestra.engine.transitions import escalate, send_back
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Run, Step
from orchestra.writes import save_later

REVIEW = Activity.Kind.REVIEW

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


def review_step(step_id: int) -> None:
    """The review gate: a reviewer agent judges the step's latest output, exactly once per
    attempt. Pass completes the step and dispatches its successors at once; revise re-runs
    it with the feedback (bounded); past the bound, or on escalate, a human decides. The
    review (its checks included) is an activity: a review whose worker stopped is taken over
    from the reviewer's stored conversation."""
    step = Step.objects.filter(pk=step_id).first()
    if step is None:
        return
    reviewed = run_activity(
        REVIEW,
        lambda: _review(step),
        run_id=step.run_id,
        step_id=step_id,
        what=f"the review of step {step.key!r}",
    )
    _after_review(step.run_id, reviewed)


def _after_review(run_id: int, reviewed: bool | MergeHere | Merged | None) -> None:
    """What follows a review in its worker: the merge it began (or the worktree of the merge
    it recorded), then the report if due."""
    if isinstance(reviewed, MergeHere):
        reviewed = merge_here(reviewed)
    elif isinstance(reviewed, Merged):
        release_merged(reviewed.run, reviewed.step)
        reviewed = reviewed.report
    if reviewed:
        report_run(run_id)


def _review(step: Step) -> bool | MergeHere | Merged:
    """Checks, then the reviewer. Returns True when the report is due, or the merge it
    began."""
    if step.brief.get("checks") and not checks_done(step) and not run_checks(step):
        return False
    with locked_run_of_step(step.pk) as run:
        if run is None:
            return False
        step = Step.objects.get(pk=step.pk)
        if run.is_terminal or step.status != Step.Status.IN_REVIEW:
            return False
        reviewer = claim_review(run, step) or _abandoned_review(run, step)
    if reviewer is None:
        return False
    return _judge(step, reviewer)


def _abandoned_review(run: Run, step: Step) -> AgentRun | None:
    """The reviewer of the current attempt whose worker stopped mid-review, taken over.
    Caller holds the run lock and the review's activity."""
    reviewer = (
        step.agent_runs.filter(
            purpose=AgentRun.Purpose.REVIEW,
            attempt=step.attempts,
            status__in=[AgentRun.Status.RUNNING, AgentRun.Status.FAILED],
        )
        .order_by("-pk")
        .first()
    )
    if reviewer is None:
        return None
    return take_over_agent_run(run, reviewer, actor="reviewer")


def checks_done(step: Step) -> bool:
    return bool(step.checks) and step.checks[-1].get("attempt") == step.attempts


def run_checks(step: Step) -> bool:
    """Run the brief's checks in the step's worktree; a failure goes back to the agent as
    review feedback (bounded like any revision). Returns True when review may go on."""
    run = Run.objects.select_related("project").get(pk=step.run_id)
    results = workspaces.run_checks(
        run, step, lambda command: gate_command(run.project, run.pk, command, role="checks")
    )
    passed = all(r["passed"] for r in results)
    waiting = [r for r in results if r.get("needs_person")]
    with locked_run(step.run_id) as run:
        step.refresh_from_db()
        if run.is_terminal or step.status != Step.Status.IN_REVIEW or checks_done(step):
            return False
        step.checks = [*step.checks, {"attempt": step.attempts, "results": results}]
        step.save(update_fields=["checks"])
        emit(
            run,
            "step.checks",
            step=step,
            data={"attempt": step.attempts, "passed": passed, "results": results},
        )
        if waiting:
            # Not run: a person decides whether the step passes without them.
            escalate(
                run,
                step,
                "The step's checks did not run: "
                + "; ".join(f"`{r['command']}` {r['needs_person']}" for r in waiting)
                + ". Approve to accept the step without them, or reject with feedback.",
            )
            return False
        if not passed:
            apply_verdict_locked(
                run,
                step.pk,
                "revise",
                "The step's checks failed in its worktree; fix them:\n"
                + workspaces.describe_checks(results),
                actor="checks",
            )
    return passed


def claim_review(run: Run, step: Step, extra_fields: list[str] = ()) -> AgentRun | None:
    """Take the review of the step's current attempt, once (saving `extra_fields` of the step
    with it). Caller holds the run lock."""
    if step.reviewed_attempt >= step.attempts:
        if extra_fields:
            step.save(update_fields=list(extra_fields))
        return None
    step.reviewed_attempt = step.attempts
    save_later(run, step, ["reviewed_attempt", *extra_fields])
    started = emit(
        run, "review.started", step=step, actor="reviewer", data={"attempt": step.attempts}
    )
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
        named_in=started,
    )


def _review_evidence(step: Step) -> str:
    """What the reviewer gets besides the output: the files the step changed and the
    results of its checks."""
    parts = []
    if step.touched:
        parts.append(
            "Files changed (commit " + step.head_commit[:10] + "): " + ", ".join(step.touched)
        )
    if checks_done(step):
        parts.append("Checks:\n" + workspaces.describe_checks(step.checks[-1]["results"]))
    return "".join(part + "\n\n" for part in parts)


def run_review(step: Step, agent_run: AgentRun) -> None:
    """Run a review claimed inline (right after the step's final output, in the same
    worker) under its activity, which that transaction began when it is `agent_run.activity`."""
    reviewed = run_activity(
        REVIEW,
        lambda: _judge(step, agent_run),
        run_id=step.run_id,
        step_id=step.pk,
        what=f"the review of step {step.key!r}",
        begun=getattr(agent_run, "activity", None),
    )
    _after_review(step.run_id, reviewed)


def _judge(step: Step, agent_run: AgentRun) -> bool | MergeHere | Merged:
    """The reviewer's session to its verdict. Returns True when the report is due, or the
    merge it made or began (a pass, on a worker that has the central repository)."""
    output = OutputTool(
        name="submit_verdict",
        description="Submit the review verdict for this step's output.",
        parameters=VERDICT_SCHEMA,
    )

    ahead: list[MergedAhead | None] = [None]

    def before_verdict(outcome: FinalOutput) -> None:
        passed = (outcome.data or {}).get("verdict") == "pass"
        ahead[0] = merge_ahead(agent_run.run, step) if passed else None

    def on_verdict(run: Run, outcome: FinalOutput) -> bool | MergeHere | Merged:
        close_agent_run(agent_run, outcome)
        activities.finish_with(run)  # the review ends with the verdict's transaction
        end_ahead(run, ahead[0])  # and so does a merge made ahead of it
        data = outcome.data or {}
        return apply_verdict_locked(
            run,
            step.pk,
            data["verdict"],
            data.get("feedback", ""),
            actor="reviewer",
            here=True,
            ahead=ahead[0],
            held=step,
        )

    session = session_for(
        agent_run,
        step=step,
        output_tool=output,
        on_final=on_verdict,
        final_read=unfinished_ahead(step.run_id),  # `apply_verdict_locked`'s first read
        before_final=before_verdict,
    )
    try:
        outcome = session.run()
    finally:
        if ahead[0] is not None:
            activities.let_go(ahead[0].activity)  # ended by the verdict, or due for the sweep
    if isinstance(outcome, FinalOutput):
        return session.final_result or False  # True: the report is due
    if outcome.cancelled:
        close_agent_run(agent_run, outcome)
        return False
    apply_verdict(
        step.pk,
        "escalate",
        f"The reviewer could not decide: {outcome.error}",
        reviewer=(agent_run, outcome),
        run_id=step.run_id,
    )
    return False


def apply_verdict(
    step_id: int,
    verdict: str,
    feedback: str,
    *,
    actor: str = "reviewer",
    reviewer: tuple[AgentRun, Outcome] | None = None,
    run_id: int | None = None,
) -> None:
    """Act on a verdict in its own transaction (see `apply_verdict_locked`)."""
    report = False
    with locked_run_of_step(step_id, run_id) as run:
        if run is None:
            return
        if reviewer is not None:
            close_agent_run(*reviewer)
        report = apply_verdict_locked(run, step_id, verdict, feedback, actor=actor)
    if report:
        report_run(run.pk)


def apply_verdict_locked(
    run: Run,
    step_id: int,
    verdict: str,
    feedback: str,
    *,
    actor: str,
    here: bool = False,
    ahead: MergedAhead | None = None,
    held: Step | None = None,
) -> bool | MergeHere | Merged:
    """Pass completes the step and dispatches its successors in this same transaction, so
    they start the moment their last dependency is done; revise re-runs it (bounded); past the
    bound, or on escalate, a human decides. Caller holds the run lock. Returns True when the
    report is due; with `here`, a pass's merge may be begun for this worker, or recorded
    when it was made `ahead` (`accept_step`). `held`: the step as its reviewer's worker holds
    it, whose status and siblings are then read with what dispatch reads (one read for
    both)."""
    rows = None
    if held is None:
        step = step_with_siblings(step_id)
    else:
        rows = unfinished(run)
        step = as_among(held, rows)
    if step is None or run.is_terminal or step.status != Step.Status.IN_REVIEW:
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
        return accept_step(run, step, here=here, ahead=ahead, rows=rows)
    if verdict == "revise":
        send_back(run, step, feedback, event_data={})
        return False
    escalate(run, step, feedback)
    return False
