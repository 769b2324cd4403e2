"""A project's approval policy: everyone in the project reads it, admins edit it.

Every change is a real form post that works without JavaScript (redirect back to the page,
or the page again with the errors, status 400); with htmx the forms post the same fields and
get the `rules` partial back, which replaces the rules table and the rule form in place.
htmx leaves 4xx responses unswapped, so an htmx post with errors gets the partial with 200.
"""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from approvals import rules as policy
from approvals.models import PolicyRule
from approvals.rules import InvalidRule
from orchestra.access import get_project_for_user
from orchestra.dashboard import present
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.forms import RuleForm
from orchestra.models import Project

TEMPLATE = "dashboard/policy.html"


@login_required
def policy_page(request, slug: str):
    project = get_project_for_user(request.user, slug)
    return _render(request, project, RuleForm())


@login_required
@require_POST
def add_rule(request, slug: str):
    project = get_project_for_user(request.user, slug)
    form = RuleForm(request.POST)

    def add() -> str:
        rule = policy.create_rule(request.user, project, **form.rule_fields())
        return f"Rule “{rule}” added at the end."

    return _change(request, project, add, form)


@login_required
@require_http_methods(["GET", "POST"])
def edit_rule(request, slug: str, rule_id: int):
    """GET: the page with the rule's values in the form; POST: save them."""
    project = get_project_for_user(request.user, slug)
    rule = _rule(project, rule_id)
    if request.method == "GET":
        policy.require_admin(request.user, project)
        return _render(request, project, RuleForm.for_rule(rule), editing=rule)
    form = RuleForm(request.POST)

    def save() -> str:
        saved = policy.update_rule(request.user, rule, **form.rule_fields())
        return f"Rule “{saved}” saved."

    return _change(request, project, save, form, editing=rule)


@login_required
@require_POST
def delete_rule(request, slug: str, rule_id: int):
    project = get_project_for_user(request.user, slug)
    rule = _rule(project, rule_id)

    def delete() -> str:
        policy.delete_rule(request.user, rule)
        return f"Rule “{rule}” deleted."

    return _change(request, project, delete)


@login_required
@require_POST
def move_rule(request, slug: str, rule_id: int):
    project = get_project_for_user(request.user, slug)
    rule = _rule(project, rule_id)
    direction = request.POST.get("direction", "")

    def move() -> str:
        policy.move_rule(request.user, rule, direction)
        return f"Rule “{rule}” moved {direction}."

    return _change(request, project, move)


@login_required
@require_POST
def reset_policy(request, slug: str):
    project = get_project_for_user(request.user, slug)

    def reset() -> str:
        policy.reset_to_default(request.user, project)
        return "The policy is back to Orchestra's default rules."

    return _change(request, project, reset)


# --- helpers --------------------------------------------------------------------------------
def _rule(project: Project, rule_id: int) -> PolicyRule:
    return get_object_or_404(
        PolicyRule, pk=rule_id, project=project, run__isnull=True, revoked_at__isnull=True
    )


def _change(request, project: Project, change, form=None, editing=None):
    """Run `change` (a rules service call returning what to tell the person) if `form` is
    valid, and answer the post: the page again, the partial, or a redirect."""
    policy.require_admin(request.user, project)
    if form is not None and not form.is_valid():
        return _answer_error(request, project, form, editing)
    try:
        notice = change()
    except InvalidRule as exc:
        message = str(exc)[:1].upper() + str(exc)[1:] + "."
        if form is None:
            return _answer_error(request, project, RuleForm(), editing, problem=message)
        form.add_error(exc.field if exc.field in form.fields else None, message)
        return _answer_error(request, project, form, editing)
    url = reverse("dashboard:policy", args=[project.slug])
    if request.htmx:
        response = _render(request, project, RuleForm(), notice=notice)
        response["HX-Push-Url"] = url
        return response
    messages.success(request, notice)
    return redirect(url)


def _answer_error(request, project, form, editing, problem=""):
    status = 200 if request.htmx else 400
    return _render(request, project, form, editing=editing, problem=problem, status=status)


def _render(request, project: Project, form, *, editing=None, notice="", problem="", status=200):
    may_edit = policy.may_edit_policy(request.user, project)
    rules = [
        {
            "rule": rule,
            "conditions": present.rule_conditions(rule),
            "outcome": present.rule_outcome(rule),
        }
        for rule in policy.project_rules(project)
    ]
    template = f"{TEMPLATE}#rules" if request.htmx else TEMPLATE
    return render(
        request,
        template,
        {
            "project": project,
            "rules": rules,
            "may_edit": may_edit,
            "form": form if may_edit else None,
            "editing": editing,
            "notice": notice,
            "problem": problem,
        },
        status=status,
    )
