"""Human decisions on checkpoints. A decision is recorded exactly once.

`decide_checkpoint` locks the run row (the engine's lock, taken first as everywhere) and
moves the checkpoint out of `pending` with a conditional UPDATE; a second or concurrent
decision finds no pending row and gets `AlreadyDecided`.
"""

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents.tools import REGISTRY
from approvals.models import Checkpoint
from orchestra import queue
from orchestra.access import can_decide
from orchestra.models import Plan, Run, Step
from orchestra.services import engine
from orchestra.services.events import emit, locked_run

DECISIONS = ("approve", "reject")
MAX_COMMENT = 5000


class AlreadyDecided(Exception):
    def __init__(self, checkpoint: Checkpoint):
        who = checkpoint.decided_by.get_username() if checkpoint.decided_by else "the system"
        super().__init__(f"This checkpoint was already {checkpoint.status} by {who}.")
        self.checkpoint = checkpoint


class InvalidDecision(Exception):
    """Bad input: the message says what to fix."""


def get_checkpoint_for_user(user, checkpoint_id: int) -> Checkpoint:
    """The checkpoint if `user` may see its run (404 otherwise, via get_run_for_user)."""
    from django.http import Http404

    from orchestra.access import get_run_for_user

    checkpoint = (
        Checkpoint.objects.select_related("run", "step", "tool_call", "decided_by")
        .filter(pk=checkpoint_id)
        .first()
    )
    if checkpoint is None:
        raise Http404("No such checkpoint.")
    get_run_for_user(user, checkpoint.run_id)
    return checkpoint


def decide_checkpoint(
    user,
    checkpoint: Checkpoint,
    decision: str,
    comment: str = "",
    arguments: dict | None = None,
) -> Checkpoint:
    """Record `user`'s decision and resume what waited on it, after commit.

    Approving a tool call runs the tool (with `arguments`, if the approver edited them, after
    validation against the tool's schema) and resumes the agent from the database; rejecting
    hands the comment to the agent as the tool's result.
    """
    if not can_decide(user, checkpoint.run.project):
        raise PermissionDenied("You may not decide checkpoints in this project.")
    if decision not in DECISIONS:
        raise InvalidDecision(f"decision must be one of {', '.join(DECISIONS)}")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidDecision(f"the comment is longer than {MAX_COMMENT} characters")
    if arguments is not None:
        _check_edited_arguments(checkpoint, decision, arguments)
    status = Checkpoint.Status.APPROVED if decision == "approve" else Checkpoint.Status.REJECTED
    with locked_run(checkpoint.run_id) as run:
        now = timezone.now()
        updated = Checkpoint.objects.filter(
            pk=checkpoint.pk, status=Checkpoint.Status.PENDING
        ).update(
            status=status, decided_by=user, decided_at=now, comment=comment, arguments=arguments
        )
        checkpoint.refresh_from_db()
        if not updated:
            raise AlreadyDecided(checkpoint)
        emit(
            run,
            "approval.decided",
            step=checkpoint.step,
            actor=user.get_username(),
            data={
                "checkpoint": checkpoint.pk,
                "kind": checkpoint.kind,
                "decision": decision,
                "comment": comment,
                "edited_arguments": arguments,
            },
        )
        _follow_up(run, checkpoint, decision, comment)
    if checkpoint.kind == Checkpoint.Kind.PLAN and decision == "approve":
        engine.dispatch_ready_steps(run.pk)
    return checkpoint


def _check_edited_arguments(checkpoint: Checkpoint, decision: str, arguments: object) -> None:
    if decision != "approve":
        raise InvalidDecision("edited arguments only go with an approval")
    if checkpoint.tool_call is None:
        raise InvalidDecision("only tool-call checkpoints take edited arguments")
    tool = REGISTRY.get(checkpoint.tool_call.tool)
    if tool is None:
        raise InvalidDecision(f"unknown tool {checkpoint.tool_call.tool!r}")
    errors = tool.schema_errors(arguments)
    if errors:
        raise InvalidDecision("the edited arguments do not fit the tool: " + "; ".join(errors))


def _follow_up(run: Run, checkpoint: Checkpoint, decision: str, comment: str) -> None:
    """What the decision sets in motion. Caller holds the run lock."""
    if checkpoint.kind in (Checkpoint.Kind.TOOL_CALL, Checkpoint.Kind.DEPLOY):
        queue.enqueue(_tasks().resume_step_task, checkpoint.step_id)
    elif checkpoint.kind == Checkpoint.Kind.PLAN:
        plan = Plan.objects.get(pk=checkpoint.plan_id)
        if decision == "approve":
            engine._materialise_plan(run, plan)
        else:
            engine._fail_run(run, f"The plan was rejected: {comment or 'no comment given'}")
    elif checkpoint.kind == Checkpoint.Kind.ESCALATION:
        step = Step.objects.get(pk=checkpoint.step_id)
        if decision == "approve":
            engine._complete_step(run, step)
            queue.enqueue(_tasks().dispatch_task, run.pk)
        else:
            engine.revise_with_human_feedback(run, step, comment or "Rejected by a human.")


def _tasks():
    from orchestra import tasks

    return tasks
