"""Report: the orchestrator integrates the reviewed outputs, once, and the run ends.

A project may ask for report approval: the written report then waits at a checkpoint (kind
"report", the run still reporting). Approved, it is published and the run completes; sent
back with a comment, the orchestrator writes it once more with that comment in hand, and the
new report waits for approval in turn.
"""

import logging

from django.db import transaction
from django.utils import timezone

from agents.loop import FinalOutput
from agents.models import AgentRun
from agents.workspace import GitError
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from orchestra import activities, telemetry
from orchestra.engine import workspaces
from orchestra.engine.host import new_agent_run, session_for, take_over_agent_run
from orchestra.engine.runs import close_agent_run, fail_run, gave_up, usage
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Run, Step

REPORT = Activity.Kind.REPORT

logger = logging.getLogger(__name__)


def report_run(run_id: int) -> None:
    """The orchestrator integrates the reviewed outputs into the final report, once. The
    report is an activity: one whose worker stopped is taken over from the stored
    conversation."""
    with locked_run(run_id) as run:
        if run.is_terminal:
            return
        if run.status == Run.Status.REPORTING:
            activity = activities.claim(REPORT, run_id=run_id)
            agent_run = _abandoned_report(run) if activity else None
            if agent_run is None:
                return
        else:
            steps = list(run.steps.all())
            if not steps or any(s.status != Step.Status.DONE for s in steps):
                return
            run.status, run.phase = Run.Status.REPORTING, Run.Phase.REPORT
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
            activity = activities.begin(REPORT, run_id=run_id)
    if gave_up(activity, "the report"):
        return
    with activities.held(activity):
        _write(run_id, agent_run)


def _abandoned_report(run: Run) -> AgentRun | None:
    """The report's agent run whose worker stopped, to carry on; a new one when it ended
    without a report; the rewrite a person asked for (see `send_report_back`), not begun
    yet. None while the report waits for approval. Caller holds the run lock and the
    report's activity."""
    if _awaiting_approval(run):
        return None
    agent_run = (
        AgentRun.objects.filter(run=run, purpose=AgentRun.Purpose.REPORT).order_by("-pk").first()
    )
    if agent_run is None:
        return None
    if agent_run.status == AgentRun.Status.RUNNING and agent_run.turns == 0:
        return agent_run
    return take_over_agent_run(run, agent_run, actor="orchestrator")


def _awaiting_approval(run: Run) -> bool:
    return run.checkpoints.filter(
        kind=Checkpoint.Kind.REPORT, status=Checkpoint.Status.PENDING
    ).exists()


def _write(run_id: int, agent_run: AgentRun) -> None:
    outcome = session_for(agent_run, step=None).run()
    close_agent_run(agent_run, outcome)
    with locked_run(run_id) as run:
        if run.status != Run.Status.REPORTING:
            return
        if not isinstance(outcome, FinalOutput):
            fail_run(run, f"Writing the report failed: {outcome.error}")
        elif run.project.requires_report_approval:
            _ask_approval(run, outcome.content, agent_run)
        else:
            run.report = outcome.content
            run.save(update_fields=["report"])
            publish_report(run)


def _ask_approval(run: Run, report: str, agent_run: AgentRun) -> None:
    """The written report waits for a person; the run stays reporting. Caller holds the run
    lock."""
    run.report = report
    run.save(update_fields=["report"])
    rounds = run.checkpoints.filter(kind=Checkpoint.Kind.REPORT).count() + 1
    emit(
        run,
        "report.written",
        actor="orchestrator",
        data={"chars": len(report), "round": rounds, "agent_run": agent_run.pk},
    )
    open_checkpoint(
        run,
        kind=Checkpoint.Kind.REPORT,
        actor="orchestrator",
        shown={
            "report": report,
            "round": rounds,
            "policy": f"{run.project.name}'s reports need approval",
            "reason": "Approve to publish the report and finish the run, or reject with a "
            "comment to have the orchestrator write it again with your comment.",
        },
    )


def publish_report(run: Run) -> None:
    """The report (in `run.report`) is final and the run completes. Caller holds the run
    lock."""
    run.status = Run.Status.COMPLETED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at"])
    emit(run, "report.published", actor="orchestrator", data={"chars": len(run.report)})
    emit(run, "run.completed", data={**usage(run), "branch": run.branch})
    telemetry.run_ended(run)
    transaction.on_commit(lambda: _remove_worktrees(run))


def send_report_back(run: Run, comment: str, who: str) -> None:
    """A person sent the report back: the orchestrator writes it once more, from the same
    outputs, with the rejected report and the comment in hand. Caller holds the run lock."""
    first = AgentRun.objects.filter(run=run, purpose=AgentRun.Purpose.REPORT).order_by("pk").first()
    first_request = first.messages[1]["content"] if first else ""
    new_agent_run(
        run,
        step=None,
        purpose=AgentRun.Purpose.REPORT,
        role="orchestrator",
        brief={"task": run.task.title, "sent_back_by": who, "comment": comment},
        user_message=(
            f"{first_request}\n\nYour previous report:\n\n{run.report}\n\n"
            f"{who} sent it back with this comment:\n{comment}\n\n"
            "Write the report again, addressing the comment."
        ),
    )
    emit(run, "report.sent_back", actor=who, data={"comment": comment})
    activities.schedule(REPORT, "orchestra.report_run", run_id=run.pk)


def _remove_worktrees(run: Run) -> None:
    """A completed run's work lives on its branches; its worktrees go. (A failed or
    cancelled run keeps them for inspection.)"""
    try:
        workspaces.remove_worktrees(run)
    except GitError:
        logger.exception("could not remove the worktrees of run %s", run.pk)
