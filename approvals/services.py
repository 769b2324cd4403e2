"""Human decisions on checkpoints: check a decision, count the votes, close the checkpoint.

Every decision goes through `record_decision` (called by the engine's `decide_checkpoint`,
which then sets in motion what the decision means for the run, in the same transaction): it
checks the approve permission in the one
access function (`orchestra.access.decide_refusal`), locks the run row (the engine's lock,
taken first as everywhere) and moves the checkpoint out of `pending` with a conditional
UPDATE, so a second or concurrent decision gets `AlreadyDecided`. Only a person (a signed-in
user of a view, the API, the CLI) reaches it: nothing an agent, a tool or a model produces is
ever read as a decision.

What the clock decides when no person does is in `approvals.expiry`; an approval for the rest
of the run becomes a run rule in `approvals.run_rules`. Refusals raise the exceptions of
`approvals.errors`.
"""

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from agents.teams import known_roles
from agents.tools import REGISTRY
from approvals import audit
from approvals.errors import AlreadyDecided, AlreadyVoted, InvalidDecision
from approvals.models import Checkpoint, Vote
from approvals.notify import notify_checkpoint
from approvals.policies import Call, evaluate
from approvals.run_rules import Pattern, allow_for_run, check_pattern
from orchestra.access import decide_refusal, get_run_for_user
from orchestra.events import emit, locked_run
from orchestra.models import Plan, Run
from orchestra.plan_edits import InvalidEdit, apply_plan_edits

# "edit" is the one approval that changes the call's arguments: approving with arguments that
# differ from the proposal under any other decision is refused, so no edit is ever dropped.
APPROVALS = ("approve", "edit", "approve_run", "approve_pattern")
DECISIONS = (*APPROVALS, "reject", "reject_stop", "respond")
MAX_COMMENT = 5000


@dataclass(frozen=True)
class Decided:
    """A decision as recorded: what the engine acts on. `closed` is False while a checkpoint
    that needs several approvers waits for more; `plan` is the edited plan version, if any."""

    checkpoint: Checkpoint
    decision: str
    comment: str
    plan: Plan | None = None
    closed: bool = True


def get_checkpoint_for_user(user, checkpoint_id: int) -> Checkpoint:
    """The checkpoint if `user` may see its run (404 otherwise, via get_run_for_user)."""
    checkpoint = (
        Checkpoint.objects.select_related("run", "step", "tool_call", "decided_by")
        .filter(pk=checkpoint_id)
        .first()
    )
    if checkpoint is None:
        raise Http404("No such checkpoint.")
    get_run_for_user(user, checkpoint.run_id)
    return checkpoint


def record_decision(
    user,
    checkpoint: Checkpoint,
    decision: str,
    comment: str = "",
    arguments: dict | None = None,
    *,
    pattern: Pattern | dict | None = None,
    plan_edits: list | None = None,
) -> Decided:
    """Check and record `user`'s decision; the engine's `decide_checkpoint` acts on it.

    - approve: runs the tool as proposed (`arguments`, if given, must be the proposed ones).
      A checkpoint that needs several approvers stays pending until that many distinct
      eligible people approved.
    - edit: approve with edited `arguments`: validated against the tool's schema and the
      project's policy (see `_check_policy`), the difference stored.
    - approve_run / approve_pattern: approve, and allow this tool for the rest of the run
      (for arguments matching `pattern`), recorded as a revocable run-scoped policy rule.
    - reject: the comment goes to the agent as the tool's result; reject_stop: the step
      stops and the run fails; respond: the comment answers the agent, the tool never runs.
    - On a plan checkpoint, approve may carry `plan_edits`: the edited plan is checked and
      stored as a new version with its diff, and that version runs.
    """
    refusal = decide_refusal(user, checkpoint.run.project, checkpoint)
    if refusal:
        raise PermissionDenied(refusal)
    decision, comment, arguments, pattern = _check_input(
        checkpoint, decision, comment, arguments, pattern, plan_edits
    )
    with locked_run(checkpoint.run_id) as run:
        checkpoint = Checkpoint.objects.select_related("tool_call", "decided_by").get(
            pk=checkpoint.pk
        )
        if checkpoint.status != Checkpoint.Status.PENDING:
            raise AlreadyDecided(checkpoint)
        plan = _edited_plan(run, checkpoint, user, plan_edits) if plan_edits else None
        if decision in APPROVALS and not _enough_votes(run, checkpoint, user, comment, arguments):
            return Decided(checkpoint, decision, comment, plan, closed=False)
        status = {
            "respond": Checkpoint.Status.RESPONDED,
            "reject": Checkpoint.Status.REJECTED,
            "reject_stop": Checkpoint.Status.REJECTED,
        }.get(decision, Checkpoint.Status.APPROVED)
        close_checkpoint(run, checkpoint, status, decision, comment, user=user, arguments=arguments)
        if decision in ("approve_run", "approve_pattern"):
            allow_for_run(run, checkpoint, user, pattern)
    return Decided(checkpoint, decision, comment, plan)


def _check_input(checkpoint, decision, comment, arguments, pattern, plan_edits):
    if decision not in DECISIONS:
        raise InvalidDecision(f"decision must be one of {', '.join(DECISIONS)}")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidDecision(f"the comment is longer than {MAX_COMMENT} characters")
    is_tool = checkpoint.tool_call_id is not None
    given = arguments is not None
    if given:
        arguments = _check_edited_arguments(checkpoint, decision, arguments)
    if decision == "edit":
        if not given:
            raise InvalidDecision("edit needs the edited arguments")
        if arguments is None:
            decision = "approve"  # "edited" into the arguments it already has
    if decision in APPROVALS and is_tool:
        _check_policy(checkpoint, arguments)
    if decision == "respond":
        if not is_tool:
            raise InvalidDecision("only a tool call can be answered with a response")
        if not comment:
            raise InvalidDecision("a response needs text: the answer the agent gets")
    if decision in ("approve_run", "approve_pattern") and checkpoint.kind != "tool_call":
        raise InvalidDecision(
            "only tool calls (not deploys, plans or escalations) can be approved for the "
            "rest of the run"
        )
    if decision == "approve_pattern":
        pattern = check_pattern(checkpoint, pattern)
    elif pattern is not None:
        raise InvalidDecision("a pattern only goes with approve_pattern")
    if plan_edits is not None and (
        checkpoint.kind != Checkpoint.Kind.PLAN or decision != "approve"
    ):
        raise InvalidDecision("plan edits only go with approving a plan checkpoint")
    if checkpoint.kind == Checkpoint.Kind.REPORT and decision == "reject" and not comment:
        raise InvalidDecision(
            "sending the report back needs a comment: what the orchestrator should change"
        )
    if decision == "reject_stop" and checkpoint.step_id is None:
        raise InvalidDecision("reject_stop stops a step; reject a plan with reject")
    return decision, comment, arguments, pattern


def _check_edited_arguments(
    checkpoint: Checkpoint, decision: str, arguments: object
) -> dict | None:
    """The arguments an approval carries, checked: None when they are the ones the call has
    now (as proposed, or as an earlier approver of a several-approver checkpoint edited them),
    the edit otherwise, which only the "edit" decision may make."""
    if decision not in APPROVALS:
        raise InvalidDecision("edited arguments only go with an approval")
    if checkpoint.tool_call is None:
        raise InvalidDecision("only tool-call checkpoints take edited arguments")
    tool = REGISTRY.get(checkpoint.tool_call.tool)
    if tool is None:
        raise InvalidDecision(f"unknown tool {checkpoint.tool_call.tool!r}")
    errors = tool.schema_errors(arguments)
    if errors:
        raise InvalidDecision("the edited arguments do not fit the tool: " + "; ".join(errors))
    if arguments == current_arguments(checkpoint):
        return None
    if decision != "edit":
        raise InvalidDecision(
            f"these arguments differ from the proposed ones, and {decision} runs the call as "
            "proposed: to run your edit, decide edit (Edit and approve); to approve the call "
            "as proposed, leave the arguments out"
        )
    return arguments


def current_arguments(checkpoint: Checkpoint) -> dict:
    """The arguments the call runs with if approved now: as proposed, or as an earlier
    approver of a checkpoint that needs several edited them."""
    if checkpoint.arguments is not None:
        return checkpoint.arguments
    return checkpoint.tool_call.arguments


def _check_policy(checkpoint: Checkpoint, edited: dict | None) -> None:
    """The policy keeps the last word over an approval: what would run (the edit, or the
    call as it stands) must not be what the project's policy denies (deny always wins, also
    over an approver and over the run's own rules), and an edit must not need more than this
    checkpoint asks for.

    An edit the policy would send to a person anyway is fine: the approver is that person.
    But an edit that falls under a rule asking for more approvers, another approver group or
    excluding the task's creator is refused, not re-voted under the stricter rule: moving the
    requirement under a checkpoint already being decided would change who may decide it in
    the middle of the decision (the approver asking might not be eligible any more) and would
    leave it without the rule's deadline and reminder. Rejecting with feedback makes the agent
    propose the call again, and that checkpoint opens with everything the rule asks."""
    call = checkpoint.tool_call
    arguments = edited if edited is not None else current_arguments(checkpoint)
    agent_run = call.agent_run
    step = checkpoint.step
    verdict = evaluate(
        checkpoint.run.project,
        Call(
            call.tool,
            arguments,
            agent_run.role if agent_run else "",
            tuple(step.claims) if step else (),
        ),
        run_id=checkpoint.run_id,
    )
    if verdict.denied:
        if edited is not None:
            raise InvalidDecision(
                f"the project's policy denies the edited arguments ({verdict.reason}); the call "
                "stays pending: approve it as proposed, edit it into what the policy allows, or "
                "reject it"
            )
        raise InvalidDecision(
            f"the project's policy now denies this call ({verdict.reason}); reject it"
        )
    if edited is None or verdict.allowed:
        return
    stricter = []
    if verdict.approvals_required > checkpoint.approvals_required:
        stricter.append(
            f"{verdict.approvals_required} approvers (this checkpoint: "
            f"{checkpoint.approvals_required})"
        )
    if verdict.approver_group and verdict.approver_group != checkpoint.approver_group:
        stricter.append(f"approvers of the {verdict.approver_group!r} group")
    creator = checkpoint.run.task.created_by_id
    if (
        verdict.exclude_task_creator
        and creator
        and creator not in (checkpoint.excluded_approvers or [])
    ):
        stricter.append("approvers other than the task's creator")
    if stricter:
        raise InvalidDecision(
            f"the edited arguments fall under {verdict.reason}, which needs "
            + " and ".join(stricter)
            + "; this checkpoint cannot approve them: reject it with your edit as feedback, "
            "and the agent's next call is asked under that rule"
        )


def _enough_votes(run: Run, checkpoint: Checkpoint, user, comment: str, arguments) -> bool:
    """Count `user`'s approval; True when the checkpoint has as many distinct approvers as it
    needs. Caller holds the run lock. Editing the arguments restarts the count: earlier
    approvers approved other arguments."""
    if checkpoint.approvals_required <= 1:
        return True
    if arguments is not None:
        checkpoint.votes.all().delete()
        Checkpoint.objects.filter(pk=checkpoint.pk).update(arguments=arguments)
        checkpoint.arguments = arguments
    try:
        with transaction.atomic():
            Vote.objects.create(checkpoint=checkpoint, user=user, comment=comment)
    except IntegrityError:
        raise AlreadyVoted(
            f"You already approved this checkpoint; it needs {checkpoint.approvals_required} "
            "different approvers."
        ) from None
    votes = checkpoint.votes.count()
    if votes >= checkpoint.approvals_required:
        return True
    emit(
        run,
        "approval.voted",
        step=checkpoint.step,
        actor=user.get_username(),
        data={
            "checkpoint": checkpoint.pk,
            "approvals": votes,
            "approvals_required": checkpoint.approvals_required,
            "edited_arguments": arguments,
        },
    )
    audit.record(
        run.project,
        "checkpoint.voted",
        user.get_username(),
        {"checkpoint": checkpoint.pk, "approvals": votes, "arguments": arguments},
        run=run,
    )
    return False


def close_checkpoint(
    run: Run,
    checkpoint: Checkpoint,
    status: str,
    decision: str,
    comment: str,
    *,
    user=None,
    arguments=None,
) -> None:
    """Move the checkpoint out of pending, once; emit, audit and notify. Caller holds the
    run lock."""
    if arguments is None and checkpoint.approvals_required > 1:
        arguments = checkpoint.arguments  # edited by an earlier approver
    diff = []
    if arguments is not None and checkpoint.tool_call is not None:
        diff = arguments_diff(checkpoint.tool_call.arguments, arguments)
    now = timezone.now()
    updated = Checkpoint.objects.filter(pk=checkpoint.pk, status=Checkpoint.Status.PENDING).update(
        status=status,
        decision=decision,
        decided_by=user,
        decided_at=now,
        comment=comment,
        arguments=arguments,
        arguments_diff=diff,
    )
    checkpoint.refresh_from_db()
    if not updated:
        raise AlreadyDecided(checkpoint)
    actor = user.get_username() if user else "system"
    approvers = list(checkpoint.votes.values_list("user__username", flat=True)) or (
        [actor] if status == Checkpoint.Status.APPROVED else []
    )
    data = {
        "checkpoint": checkpoint.pk,
        "kind": checkpoint.kind,
        "status": status,
        "decision": decision,
        "comment": comment,
        "edited_arguments": arguments,
        "arguments_diff": diff,
        "approvers": approvers,
    }
    emit(run, "approval.decided", step=checkpoint.step, actor=actor, data=data)
    audit.record(
        run.project,
        "checkpoint.expired" if status == Checkpoint.Status.EXPIRED else "checkpoint.decided",
        actor,
        {**data, "shown": checkpoint.shown},
        run=run,
    )
    notify_checkpoint(checkpoint, "expired" if status == Checkpoint.Status.EXPIRED else "decided")


def arguments_diff(proposed, approved, path: str = "") -> list[dict]:
    """Where the approved arguments differ from the proposed ones: [{path, proposed,
    approved}], nested objects walked key by key."""
    if isinstance(proposed, dict) and isinstance(approved, dict):
        changes = []
        for key in sorted(set(proposed) | set(approved)):
            where = f"{path}/{key}" if path else key
            if key not in approved:
                changes.append({"path": where, "proposed": proposed[key], "approved": None})
            elif key not in proposed:
                changes.append({"path": where, "proposed": None, "approved": approved[key]})
            else:
                changes += arguments_diff(proposed[key], approved[key], where)
        return changes
    if proposed == approved:
        return []
    return [{"path": path or "/", "proposed": proposed, "approved": approved}]


def _edited_plan(run: Run, checkpoint: Checkpoint, user, edits: list) -> Plan:
    """The approver's edits as a new plan version. Caller holds the run lock."""
    based_on = Plan.objects.get(pk=checkpoint.plan_id)
    try:
        data, diff = apply_plan_edits(
            based_on.data,
            edits,
            known_agents=known_roles(run.project),
            max_steps=settings.ORCHESTRA_MAX_PLAN_STEPS,
            known_checks=run.project.check_commands(),
        )
    except InvalidEdit as exc:
        raise InvalidDecision(str(exc)) from None
    plan = Plan.objects.create(
        run=run,
        version=run.plans.count() + 1,
        data=data,
        based_on=based_on,
        edited_by=user,
        diff=diff,
        added_orderings=based_on.added_orderings,
    )
    based_on.status = Plan.Status.REJECTED
    based_on.errors = [f"superseded by version {plan.version}, edited by {user.get_username()}"]
    based_on.save(update_fields=["status", "errors"])
    data = {"plan": plan.pk, "version": plan.version, "based_on": based_on.version, "diff": diff}
    emit(run, "plan.edited", actor=user.get_username(), data=data)
    audit.record(run.project, "plan.edited", user.get_username(), data, run=run)
    return plan
