"""Checkpoints: list the ones in runs a user can see, decide one."""

from django.http import HttpRequest
from ninja.errors import HttpError

from approvals.models import Checkpoint
from approvals.services import get_checkpoint_for_user
from orchestra.access import get_run_for_user, visible_projects
from orchestra.api.app import api, request_user
from orchestra.api.pages import DEFAULT_LIMIT, paginate
from orchestra.api.schemas import ApprovalListOut, DecisionIn, DecisionOut, ErrorOut, iso
from orchestra.engine import decide_checkpoint
from orchestra.text import CleanText


def approval_json(checkpoint: Checkpoint) -> dict:
    call = checkpoint.tool_call
    return {
        "id": checkpoint.pk,
        "kind": checkpoint.kind,
        "run": checkpoint.run_id,
        "step": checkpoint.step.key if checkpoint.step else None,
        "tool": call.tool if call else None,
        "arguments": call.arguments if call else None,
        "status": checkpoint.status,
        "requested_at": iso(checkpoint.requested_at),
        "expires_at": iso(checkpoint.expires_at),
        "approvals_required": checkpoint.approvals_required,
        "shown": checkpoint.shown,
    }


def decision_json(checkpoint: Checkpoint) -> dict:
    return {
        "id": checkpoint.pk,
        "status": checkpoint.status,
        "decision": checkpoint.decision,
        "decided_by": checkpoint.decided_by.get_username() if checkpoint.decided_by else None,
        "decided_at": iso(checkpoint.decided_at),
        "approvals": list(checkpoint.votes.values_list("user__username", flat=True)),
        "approvals_required": checkpoint.approvals_required,
        "arguments_diff": checkpoint.arguments_diff,
    }


@api.get(
    "/approvals",
    response={200: ApprovalListOut, 400: ErrorOut, 404: ErrorOut},
    summary="Checkpoints in runs you can see",
)
def list_approvals(
    request: HttpRequest,
    status: CleanText | None = None,
    run: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
):
    """Newest first, `limit` at a time (at most 500); `next` links the following page."""
    user = request_user(request)
    checkpoints = Checkpoint.objects.filter(run__project__in=visible_projects(user))
    if run is not None:
        checkpoints = checkpoints.filter(run=get_run_for_user(user, run))
    if status:
        if status not in Checkpoint.Status.values:
            raise HttpError(400, f"status must be one of {', '.join(Checkpoint.Status.values)}.")
        checkpoints = checkpoints.filter(status=status)
    checkpoints = checkpoints.select_related("step", "tool_call")
    page, next_url = paginate(request, checkpoints, by="requested_at", cursor=cursor, limit=limit)
    return {"approvals": [approval_json(c) for c in page], "next": next_url}


@api.post(
    "/approvals/{checkpoint_id}/decision",
    response={200: DecisionOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Approve or reject a checkpoint",
)
def decide(request: HttpRequest, checkpoint_id: int, payload: DecisionIn):
    user = request_user(request)
    checkpoint = get_checkpoint_for_user(user, checkpoint_id)
    checkpoint = decide_checkpoint(
        user,
        checkpoint,
        payload.decision,
        payload.comment,
        payload.arguments,
        pattern=payload.pattern.dict() if payload.pattern else None,
        plan_edits=payload.plan_edits,
    )
    return decision_json(checkpoint)
