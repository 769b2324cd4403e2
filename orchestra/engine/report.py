"""Report: the orchestrator integrates the reviewed outputs, once, and the run ends."""

import logging

from django.db import transaction
from django.utils import timezone

from agents.loop import FinalOutput
from agents.models import AgentRun
from agents.workspace import GitError
from orchestra.engine import workspaces
from orchestra.engine.host import new_agent_run, session_for
from orchestra.engine.runs import close_agent_run, fail_run, usage
from orchestra.events import emit, locked_run
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)


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
