"""The merge queue: a reviewed step's branch joins the run branch, one merge at a time."""

import logging
from dataclasses import dataclass

from agents.workspace import GitError, MergeOutcome
from orchestra import activities
from orchestra.engine import workspaces
from orchestra.engine.dispatch import dispatch_locked
from orchestra.engine.report import report_run
from orchestra.engine.runs import run_activity, sync_run_status
from orchestra.engine.transitions import complete_step, escalate, send_back
from orchestra.events import emit, locked_run
from orchestra.models import Activity, Run, Step
from orchestra.writes import save_later

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeHere:
    """A merge begun as the activity of the worker that accepted the step, to be carried on
    by it at once (`merge_here`)."""

    step: Step
    activity: Activity


@dataclass(frozen=True)
class MergedAhead:
    """A step's merge made by its reviewer's worker just before the verdict's transaction
    (`merge_ahead`), for that transaction to record; `activity`, the merge's, ends with it."""

    outcome: MergeOutcome
    head: str
    activity: Activity


@dataclass(frozen=True)
class Merged:
    """A pass whose merge was recorded with its verdict: the worktree to release after the
    commit, and whether the report is due."""

    run: Run
    step: Step
    report: bool


def merge_ahead(run: Run, step: Step) -> MergedAhead | None:
    """A step its reviewer passes is merged before the verdict is recorded, by the reviewer's
    worker, so the verdict, the merge and the dispatch of what follows are one transaction.
    The merge is an activity of its own while it runs (one statement: it may wait long for
    the repository, and a worker that stops in it is seen stopping in a merge); the verdict's
    transaction ends it (`end_ahead`). None where the merge is left to the queue: a remote
    worker, or git failing (the queue's merge tries again and says why). A worker that stops
    before the verdict commits leaves the step in review: the sweep takes the review over
    (and the merge, which finds nothing to merge until the review passes again), and merging
    a merged branch changes nothing."""
    if not step.branch or workspaces.remote():
        return None
    activity = activities.begin(Activity.Kind.MERGE, run_id=run.pk, step_id=step.pk)
    activities.keep(activity)
    try:
        outcome = workspaces.merge_step(run, step)
        return MergedAhead(outcome, workspaces.run_head(run) if outcome.ok else "", activity)
    except GitError:
        logger.warning("merging step %s ahead of its verdict failed", step.pk, exc_info=True)
        activities.let_go(activity)
        activities.finish(activity)
        return None
    except BaseException:
        activities.let_go(activity)  # due for the sweep when its lease runs out
        raise


def end_ahead(run: Run, ahead: MergedAhead | None) -> None:
    """The merge made ahead ends when `run`'s block (the verdict's) commits, whatever the
    verdict finds; no statement of its own."""
    if ahead is not None:
        activities.finish_in(run, ahead.activity)


def accept_step(
    run: Run,
    step: Step,
    *,
    here: bool = False,
    ahead: MergedAhead | None = None,
    rows: list[dict] | None = None,
) -> bool | MergeHere | Merged:
    """A step that passed review (or a human's approval) enters the merge queue; a step
    without a worktree is done at once. Caller holds the run lock. Returns True when the
    report is due. With `ahead`, the merge is already made: recorded here (`Merged` when it
    went in). With `here` (the reviewer's worker), on a worker that has the central
    repository, the merge is begun as this worker's own work instead of a task through the
    queue: a hop less for every step, and the step and its run need no reading again.
    `rows`: what dispatch reads, read by this block already."""
    if not step.branch:
        complete_step(run, step)
        return dispatch_locked(run, done=step.pk, rows=rows)
    if ahead is not None:
        report, merged = _record(run, step, ahead.outcome, ahead.head, rows)
        return Merged(run, step, report) if merged else report
    step.status = Step.Status.MERGING
    if here and not workspaces.remote():
        activity = activities.begin(Activity.Kind.MERGE, run_id=run.pk, step_id=step.pk)
        step.run, step.task_id = run, ""
        merging = MergeHere(step, activity)
        save_later(run, step, ["status", "task_id"])  # the verdict's block reads no step after
    else:
        merging = None
        step.task_id = activities.schedule(
            Activity.Kind.MERGE, "orchestra.merge_step", run_id=run.pk, step_id=step.pk
        )
        step.save(update_fields=["status", "task_id"])
    emit(run, "merge.queued", step=step, data={"branch": step.branch, "commit": step.head_commit})
    sync_run_status(run, step=step)
    return merging or False


MAX_MERGE_ROUNDS = 2


def merge_step(step_id: int) -> None:
    """The merge queue: integrate the step's reviewed branch into the run branch, one merge
    at a time per repository. A conflict goes back to the step's agent with the conflict as
    feedback (bounded rounds, then a human decides); nothing is overwritten. Its activity
    makes a merge whose worker stopped run again: merging an already merged branch changes
    nothing."""
    step = Step.objects.select_related("run__project").filter(pk=step_id).first()
    if step is None:
        return
    report = run_activity(
        Activity.Kind.MERGE,
        lambda: _merge(step),
        run_id=step.run_id,
        step_id=step_id,
        what=f"the merge of step {step.key!r}",
    )
    if report:
        report_run(step.run_id)


def merge_here(merging: MergeHere) -> bool:
    """Carry on a merge this worker began (`accept_step` with `here`). Returns True when the
    report is due."""
    step = merging.step
    return run_activity(
        Activity.Kind.MERGE,
        lambda: _merge(step),
        run_id=step.run_id,
        step_id=step.pk,
        what=f"the merge of step {step.key!r}",
        begun=merging.activity,
    )


def _merge(step: Step) -> bool:
    """Returns True when the report is due."""
    if step.status != Step.Status.MERGING or step.run.is_terminal:
        return False
    try:
        outcome = workspaces.merge_step(step.run, step)
        head = workspaces.run_head(step.run) if outcome.ok else ""
    except GitError as exc:
        # Not a conflict: git itself failed. A human looks; the branch is intact.
        with locked_run(step.run_id) as run:
            step.refresh_from_db()
            if not run.is_terminal and step.status == Step.Status.MERGING:
                emit(run, "merge.failed", step=step, data={"error": str(exc)[:2000]})
                escalate(run, step, f"Merging the step's branch failed: {exc}")
        return False
    with locked_run(step.run_id) as run:
        step.refresh_from_db()
        if run.is_terminal or step.status != Step.Status.MERGING:
            return False
        activities.finish_with(run)  # the merge ends with this transaction
        report, merged = _record(run, step, outcome, head)
    if merged:
        release_merged(run, step)
    return report


def _record(
    run: Run, step: Step, outcome: MergeOutcome, head: str, rows: list[dict] | None = None
) -> tuple[bool, bool]:
    """The merge's outcome recorded: the step done and what follows it dispatched, or, on a
    conflict, sent back with the conflict (or to a person, past the rounds). Caller holds the
    run lock. Returns whether the report is due and whether the step was merged."""
    if outcome.ok:
        step.merged_commit = outcome.commit
        run.head_commit = head  # written with the run's state when the block ends
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
        complete_step(run, step, also=["merged_commit"])
        return dispatch_locked(run, done=step.pk, rows=rows), True
    emit(
        run,
        "merge.conflict",
        step=step,
        data={"files": outcome.conflicts, "round": step.merge_rounds + 1},
    )
    # Preparing the step's next round merges the run head into its worktree, on whichever
    # worker runs it (`workspaces.prepare_worktree`).
    feedback = (
        f"{workspaces.CONFLICT_FEEDBACK} with work another step "
        f"merged first, in: {', '.join(outcome.conflicts)}. Those files in your "
        "worktree now hold conflict markers (<<<<<<< ======= >>>>>>>): resolve them so "
        "that both changes are kept, then finish.\n\n" + outcome.detail
    )
    if step.merge_rounds >= MAX_MERGE_ROUNDS:
        escalate(run, step, f"Still conflicting after {step.merge_rounds} rounds.\n{feedback}")
    else:
        conflicts = {"merge_conflict": outcome.conflicts}
        send_back(run, step, feedback, event_data=conflicts, merge_conflict=True)
    return False, False


def release_merged(run: Run, step: Step) -> None:
    """After the merge's transaction: the step's checkout goes back to the shelf. A failure
    only costs the next step a fresh checkout; the run's end removes what is left."""
    try:
        workspaces.release_worktree(run, step)
    except (GitError, OSError):
        logger.warning("could not release the worktree of step %s", step.pk, exc_info=True)
