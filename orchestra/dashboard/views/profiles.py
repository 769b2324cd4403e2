"""A project's agent profiles: everyone in the project reads them, its admins edit them.

Each save is a new version (`agents.profiles`); the history page lists the versions and
shows what changed between two of them. The forms are real posts that work without
JavaScript: a redirect back on success, the page again with its errors (status 400) if not.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agents import profiles as profile_services
from agents.models import AgentProfile, ProfileVersion
from agents.profiles import InvalidProfile
from agents.teams import UnknownAgent, profile_for_project
from orchestra.access import get_project_for_user
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.profile_forms import ProfileForm
from orchestra.models import Project


@login_required
def profiles(request, slug: str):
    project = get_project_for_user(request.user, slug)
    rows = [
        {"profile": profile, "version": profile.versions.order_by("-number").first()}
        for profile in profile_services.project_profiles(project)
    ]
    return render(
        request,
        "dashboard/profiles.html",
        {
            "project": project,
            "rows": rows,
            "may_edit": profile_services.may_edit_profiles(request.user, project),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def profile(request, slug: str, role: str):
    """GET: the profile (in the form, for admins); POST: save it as a new version."""
    project = get_project_for_user(request.user, slug)
    current = _profile(project, role)
    if request.method == "GET":
        return _render(request, project, current, ProfileForm.for_profile(current))
    profile_services.require_admin(request.user, project)
    form = ProfileForm(request.POST)
    if form.is_valid():
        try:
            version = profile_services.save_profile(
                request.user, project, role, **form.profile_fields()
            )
        except InvalidProfile as exc:
            message = str(exc)[:1].upper() + str(exc)[1:] + "."
            form.add_error(exc.field if exc.field in form.fields else None, message)
        else:
            messages.success(request, f"Saved the {role} profile as version {version.number}.")
            return redirect("dashboard:profile", project.slug, role)
    return _render(request, project, current, form, status=400)


@login_required
def versions(request, slug: str, role: str):
    """Every version of the profile the project's runs use for `role`, newest first, and the
    diff between two of them (`?from=N&to=M`; by default the latest and the one before)."""
    project = get_project_for_user(request.user, slug)
    current = _profile(project, role)
    history = list(current.versions.select_related("created_by").order_by("-number"))
    by_number = {v.number: v for v in history}
    problem = ""
    newer = _pick(request.GET.get("to"), by_number, history[0] if history else None)
    older = _pick(request.GET.get("from"), by_number, history[1] if len(history) > 1 else None)
    if (request.GET.get("to") and newer is None) or (request.GET.get("from") and older is None):
        problem = "There is no such version of this profile."
    diff = profile_services.version_diff(older, newer) if newer is not None else ""
    return render(
        request,
        "dashboard/profile_versions.html",
        {
            "project": project,
            "profile": current,
            "history": history,
            "older": older,
            "newer": newer,
            "diff": diff,
            "problem": problem,
        },
        status=400 if problem else 200,
    )


# --- helpers --------------------------------------------------------------------------------
def _profile(project: Project, role: str) -> AgentProfile:
    try:
        return profile_for_project(project, role)
    except UnknownAgent:
        raise Http404("No such agent in this project.") from None


def _pick(number: str | None, by_number: dict, default: ProfileVersion | None):
    if not number:
        return default
    try:
        return by_number.get(int(number))
    except ValueError:
        return None


def _render(request, project: Project, current: AgentProfile, form, status: int = 200):
    may_edit = profile_services.may_edit_profiles(request.user, project)
    return render(
        request,
        "dashboard/profile.html",
        {
            "project": project,
            "profile": current,
            "own": current.project_id == project.pk,
            "version": current.versions.order_by("-number").first(),
            "form": form if may_edit else None,
            "may_edit": may_edit,
        },
        status=status,
    )
