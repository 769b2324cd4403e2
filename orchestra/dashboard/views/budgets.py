"""A project's budget page (everyone in the project reads it, admins set the limits), and the
budget checkpoint's own control: continue with a new limit. (Approve and Reject are the
approval page's.)"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from approvals.errors import AlreadyDecided
from approvals.services import get_checkpoint_for_user
from orchestra.access import get_project_for_user
from orchestra.dashboard import present
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.budget_forms import ProjectBudgetForm
from orchestra.engine import EngineError, raise_budget
from orchestra.engine.budgets import InvalidBudget
from orchestra.engine.project_budgets import (
    may_edit_budget,
    project_limits,
    project_spending,
    set_project_budget,
)


@login_required
@require_http_methods(["GET", "POST"])
def project_budget(request, slug: str):
    """GET: the limits and this period's spend; POST (admins): save the form's limits, an
    empty field removing its limit. Errors come back beside their fields, with status 400."""
    project = get_project_for_user(request.user, slug)
    limits = project_limits(project)
    status = 200
    if request.method == "POST":
        if not may_edit_budget(request.user, project):
            raise PermissionDenied("Only the project's admins may change its budget.")
        form = ProjectBudgetForm(request.POST)
        if form.is_valid():
            try:
                set_project_budget(request.user, project, **form.cleaned_data)
            except InvalidBudget as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            else:
                messages.success(request, "Budget saved.")
                return redirect("dashboard:budget", project.slug)
        status = 400
    else:
        form = ProjectBudgetForm(initial=limits)
    spending = project_spending(project)
    return render(
        request,
        "dashboard/budget.html",
        {
            "project": project,
            "form": form if may_edit_budget(request.user, project) else None,
            "limits": [
                (form_field.label, present.limit_text(form_field.name, limits[form_field.name]))
                for form_field in ProjectBudgetForm()
            ],
            "spent": [
                (period, spending[period].usd_text(), spending[period].tokens)
                for period in ("daily", "monthly")
            ],
        },
        status=status,
    )


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
