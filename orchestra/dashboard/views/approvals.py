import logging

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agents.workspace import GitError
from approvals.errors import AlreadyDecided, AlreadyVoted, InvalidDecision
from approvals.models import Checkpoint
from approvals.notify import failures_for
from approvals.services import current_arguments, get_checkpoint_for_user
from orchestra.access import DECIDE_ROLES, decide_refusal, role_in
from orchestra.dashboard import present, queries
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.forms import DecisionForm, PlanReviewForm
from orchestra.engine import decide_checkpoint, shipping

INBOX_LIMIT = 200
logger = logging.getLogger(__name__)


@login_required
def inbox(request):
    return render(
        request,
        "dashboard/approvals.html",
        {
            "pending": list(queries.pending_checkpoints(request.user)[:INBOX_LIMIT]),
            "decided": queries.recently_decided(request.user),
        },
    )


@login_required
def badge(request):
    return render(request, "base.html#approvals-badge")


@login_required
@require_http_methods(["GET", "POST"])
def approval(request, checkpoint_id: int):
    """What is asked, exactly as recorded for the approver, what the policy asks of the
    decision, and the decision controls for those who may decide (the refusal otherwise).

    A decision that closes the checkpoint returns to the run; an approval that still needs
    other approvers comes back here. Refusals from the service are shown on the page: beside
    the field they concern, or as a message (403 not allowed, 409 already decided/voted)."""
    checkpoint = get_checkpoint_for_user(request.user, checkpoint_id)
    refusal = decide_refusal(request.user, checkpoint.run.project, checkpoint)
    pending = checkpoint.status == Checkpoint.Status.PENDING
    form = _form(checkpoint, request.POST if request.method == "POST" else None)
    problem, status = None, 200
    if request.method == "POST":
        if refusal:
            problem, status = refusal, 403
        elif not pending:
            problem, status = str(AlreadyDecided(checkpoint)), 409
        elif not form.is_valid():
            status = 400
        else:
            try:
                decided = _decide(request.user, checkpoint, form)
            except InvalidDecision as exc:
                form.add_error(_error_field(form), f"Not accepted: {exc}.")
                status = 400
            except AlreadyDecided as exc:
                problem, status, checkpoint = str(exc), 409, exc.checkpoint
            except AlreadyVoted as exc:
                problem, status = str(exc), 409
            except PermissionDenied as exc:
                problem, status = str(exc) or "You may not decide this checkpoint.", 403
            else:
                return _after_decision(request, decided, form)
        pending = checkpoint.status == Checkpoint.Status.PENDING
    if refusal or not pending:
        form = None
    return render(
        request,
        "dashboard/approval.html",
        _context(request.user, checkpoint, form, refusal, problem),
        status=status,
    )


def _form(checkpoint: Checkpoint, data):
    """The decision form (bound to `data` when posted). Fields a post leaves out keep their
    prefilled value, so a refused pattern approval does not blank the arguments."""
    if checkpoint.kind == Checkpoint.Kind.PLAN:
        return PlanReviewForm(data, plan=checkpoint.shown.get("plan") or {})
    initial = {}
    call = checkpoint.tool_call.arguments if checkpoint.tool_call_id else None
    if call is not None:
        # What approving runs now: an earlier approver's edit (several approvers) or the call.
        initial["arguments"] = present.pretty_json(current_arguments(checkpoint))
        text_arguments = [name for name, value in call.items() if isinstance(value, str)]
        if text_arguments:
            initial["pattern_argument"] = text_arguments[0]
            initial["pattern_glob"] = call[text_arguments[0]]
    if data is not None:
        data = data.copy()
        for name, value in initial.items():
            data.setdefault(name, value)
    return DecisionForm(data, checkpoint=checkpoint, initial=initial)


def _decide(user, checkpoint: Checkpoint, form) -> Checkpoint:
    data = form.cleaned_data
    if isinstance(form, PlanReviewForm):
        return decide_checkpoint(
            user, checkpoint, data["action"], data["comment"], plan_edits=data["edits"]
        )
    return decide_checkpoint(
        user,
        checkpoint,
        form.decision,
        data["comment"],
        data["parsed_arguments"],
        pattern=data["pattern"],
    )


def _error_field(form) -> str | None:
    if isinstance(form, PlanReviewForm):
        return None
    return form.error_field()


def _after_decision(request, checkpoint: Checkpoint, form):
    if checkpoint.status == Checkpoint.Status.PENDING:
        votes = checkpoint.votes.count()
        messages.success(
            request,
            f"Your approval is counted: {votes} of {checkpoint.approvals_required}. "
            "The checkpoint waits for the others.",
        )
        return redirect("dashboard:approval", checkpoint.pk)
    if isinstance(form, PlanReviewForm):
        done = "Plan approved" if checkpoint.status == Checkpoint.Status.APPROVED else "Rejected"
        if form.cleaned_data.get("edits"):
            done += " with your edits"
    elif checkpoint.decision == "approve":
        done = DecisionForm.DONE["approve"]  # "edited" into the arguments it had
    else:
        done = DecisionForm.DONE[form.cleaned_data["action"]]
    messages.success(request, f"{done}.")
    return redirect("dashboard:run", checkpoint.run_id)


def _context(user, checkpoint: Checkpoint, form, refusal: str | None, problem) -> dict:
    run = checkpoint.run
    context = {
        "checkpoint": checkpoint,
        "run": run,
        "shown": checkpoint.shown,
        "form": form,
        "refusal": refusal,
        "is_approver": role_in(user, run.project) in DECIDE_ROLES,
        "problem": problem,
        "votes": queries.checkpoint_votes(checkpoint),
        "excluded": queries.excluded_approvers(checkpoint),
        "failures": failures_for(checkpoint),
        "decision_label": present.decision_label(checkpoint),
    }
    if checkpoint.kind == Checkpoint.Kind.DEPLOY:
        context["ships"], context["ships_problem"] = deploy_ships(checkpoint)
    if checkpoint.kind == Checkpoint.Kind.PLAN:
        steps = queries.planned_steps(checkpoint.shown.get("plan") or {})
        edited = queries.edited_plan(checkpoint)
        context |= {
            "graph": queries.plan_graph(steps, "lr") if steps else None,
            "graph_tb": queries.plan_graph(steps, "tb") if steps else None,
            "edited_plan": edited,
            "plan_changes": [
                (present.describe_plan_change(change), change) for change in edited.diff
            ]
            if edited
            else [],
        }
    return context


def deploy_ships(checkpoint: Checkpoint) -> tuple[dict | None, str | None]:
    """What a deploy checkpoint ships, and why it cannot be said if it cannot: as recorded
    when the checkpoint opened (`shown["ships"]`), else, while it is pending, read from git
    now (checkpoints opened before the preview was recorded)."""
    if ships := checkpoint.shown.get("ships"):
        return ships, None
    if checkpoint.status != Checkpoint.Status.PENDING or checkpoint.tool_call_id is None:
        return None, None
    run = checkpoint.run
    if not run.branch:
        return None, "The run has no branch: there is nothing to ship yet."
    environment = str(current_arguments(checkpoint).get("environment", ""))
    try:
        return shipping.deploy_preview(run, environment), None
    except GitError:
        logger.exception("deploy preview of run %s failed", run.pk)
        return None, "What the deploy would ship could not be read from the repository."
