from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals.models import Checkpoint
from approvals.services import (
    AlreadyDecided,
    InvalidDecision,
    decide_checkpoint,
    get_checkpoint_for_user,
)
from orchestra.access import can_decide
from orchestra.dashboard import present, queries
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.forms import DecisionForm

INBOX_LIMIT = 200
VERBS = {"approve": "Approved", "edit": "Approved with edited arguments", "reject": "Rejected"}


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
    """What is asked, exactly as recorded for the approver, and the decision controls."""
    checkpoint = get_checkpoint_for_user(request.user, checkpoint_id)
    may_decide = can_decide(request.user, checkpoint.run.project)
    already = None
    status = 200
    form = None
    if request.method == "POST":
        if not may_decide:
            raise PermissionDenied("You may not decide checkpoints in this project.")
        form = DecisionForm(request.POST, checkpoint=checkpoint)
        if form.is_valid():
            try:
                decide_checkpoint(
                    request.user,
                    checkpoint,
                    form.decision,
                    form.cleaned_data["comment"],
                    form.cleaned_data["parsed_arguments"],
                )
            except InvalidDecision as exc:
                field = "arguments" if form.cleaned_data["action"] == "edit" else None
                form.add_error(field, f"Not accepted: {exc}.")
            except AlreadyDecided as exc:
                already, checkpoint, form = str(exc), exc.checkpoint, None
            else:
                messages.success(request, f"{VERBS[form.cleaned_data['action']]}.")
                return redirect("dashboard:run", checkpoint.run_id)
        status = 409 if already else 400
    elif may_decide and checkpoint.status == Checkpoint.Status.PENDING:
        initial = {}
        if checkpoint.tool_call_id:
            initial["arguments"] = present.pretty_json(checkpoint.shown.get("arguments", {}))
        form = DecisionForm(checkpoint=checkpoint, initial=initial)
    return render(
        request,
        "dashboard/approval.html",
        {
            "checkpoint": checkpoint,
            "run": checkpoint.run,
            "shown": checkpoint.shown,
            "form": form,
            "may_decide": may_decide,
            "already": already,
        },
        status=status,
    )
