"""Report: the orchestrator integrates the reviewed outputs, once, and the run ends."""

import logging

from django.db import transaction
from django.utils import timezone

from agents.loop import FinalOutput
from agents.models import AgentRun
from agents.workspace import GitError
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
    without a report. Caller holds the run lock and the report's activity."""
    agent_run = (
        AgentRun.objects.filter(run=run, purpose=AgentRun.Purpose.REPORT).order_by("-pk").first()
    )
    if agent_run is None:
        return None
    return take_over_agent_run(run, agent_run, actor="orchestrator")


def _write(run_id: int, agent_run: AgentRun) -> None:
    outcome = session_for(agent_run, step=None).run()
    close_agent_run(agent_run, outcome)
    with locked_run(run_id) as run:
        if run.status != Run.Status.REPORTING:
            return
        if isinstance(outcome, FinalOutput):
            run.report = outcome.content
            run.status = Run.Status.COMPLETED
            run.finished_at = timezone.now()
            run.save(update_fields=["report", "status", "finished_at"])
            emit(run, "report.published", actor="orchestrator", data={"chars": len(run.report)})
            emit(run, "run.completed", data={**usage(run), "branch": run.branch})
            telemetry.run_ended(run)
            transaction.on_commit(lambda: _remove_worktrees(run))
        else:
            fail_run(run, f"Writing the report failed: {outcome.error}")


def _remove_worktrees(run: Run) -> None:
    """A completed run's work lives on its branches; its worktrees go. (A failed or
    cancelled run keeps them for inspection.)"""
    try:
        workspaces.remove_worktrees(run)
    except GitError:
        logger.exception("could not remove the worktrees of run %s", run.pk)
