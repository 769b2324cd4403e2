"""The budget checkpoint's own control: continue with a new limit. (Approve and Reject are
the approval page's.)"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from approvals.errors import AlreadyDecided
from approvals.services import get_checkpoint_for_user
from orchestra.dashboard.auth import login_required
from orchestra.engine import EngineError, raise_budget


@login_required
@require_POST
def raise_limit(request, checkpoint_id: int):
    checkpoint = get_checkpoint_for_user(request.user, checkpoint_id)
    soft_usd = request.POST.get("soft_usd", "").strip() or None
    soft_tokens = request.POST.get("soft_tokens", "").strip() or None
    if soft_usd is None and soft_tokens is None:
        messages.error(request, "Give a new limit in dollars or tokens, or use Approve.")
        return redirect("dashboard:approval", checkpoint.pk)
    try:
        raise_budget(request.user, checkpoint, soft_usd=soft_usd, soft_tokens=soft_tokens)
    except (EngineError, AlreadyDecided, PermissionDenied) as exc:
        messages.error(request, f"Not accepted: {exc}")
        return redirect("dashboard:approval", checkpoint.pk)
    messages.success(request, "The run continues with the new limit.")
    return redirect("dashboard:run", checkpoint.run_id)
