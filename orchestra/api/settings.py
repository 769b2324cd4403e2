"""A project's settings as the dashboard shows them: agent profiles (read, and saved as a new
version by admins), members (read; added, changed and removed by admins) and the budget (read;
set by admins). The approval policy has its own module, `policy`."""

from decimal import Decimal

from django.http import HttpRequest
from ninja.errors import HttpError

from agents import profiles as profile_services
from agents.models import AgentProfile, ProfileVersion
from agents.profiles import InvalidProfile
from agents.teams import UnknownAgent, profile_for_project
from orchestra.access import get_project_for_user
from orchestra.api.app import Status, api, request_user
from orchestra.api.pages import DEFAULT_LIMIT, MAX_LIMIT, paginate_in_order
from orchestra.api.schemas import (
    ErrorOut,
    MemberIn,
    MemberListOut,
    MemberOut,
    ProfileDetailOut,
    ProfileIn,
    ProfileListOut,
    ProjectBudgetIn,
    ProjectBudgetOut,
    iso,
)
from orchestra.engine import members as member_services
from orchestra.engine import project_budgets
from orchestra.engine.budgets import InvalidBudget
from orchestra.models import Membership, Project


def profile_json(profile: AgentProfile, project: Project) -> dict:
    latest = profile.versions.order_by("-number").values_list("number", flat=True).first()
    return {
        "role": profile.role,
        "description": profile.description,
        "owner": "project" if profile.project_id == project.pk else "team",
        **_settings(profile),
        "version": latest,
    }


def version_json(version: ProfileVersion) -> dict:
    return {
        "number": version.number,
        **_settings(version),
        "created_by": version.created_by.get_username() if version.created_by else None,
        "created_at": iso(version.created_at),
    }


def _settings(source) -> dict:
    return {
        "system_prompt": source.system_prompt,
        "provider": source.provider.name if source.provider else None,
        "model": source.model,
        "fallback_provider": source.fallback_provider.name if source.fallback_provider else None,
        "fallback_model": source.fallback_model,
        "temperature": source.temperature,
        "allowed_tools": source.allowed_tools,
        "turn_limit": source.turn_limit,
    }


@api.get(
    "/projects/{slug}/profiles",
    response={200: ProfileListOut, 400: ErrorOut, 404: ErrorOut},
    summary="The agent profiles a project's runs use",
)
def list_profiles(request: HttpRequest, slug: str, cursor: str | None = None, limit: int = 100):
    """By role; the project's own copy where its admins saved one, the team's otherwise."""
    project = get_project_for_user(request_user(request), slug)
    profiles = profile_services.project_profiles(project)
    if cursor:  # a handful of roles: the cursor is the last role seen
        profiles = [p for p in profiles if p.role > cursor]
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}.")
    page = profiles[:limit]
    next_url = None
    if len(profiles) > limit:
        query = request.GET.copy()
        query["cursor"] = page[-1].role
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"profiles": [profile_json(p, project) for p in page], "next": next_url}


@api.get(
    "/projects/{slug}/profiles/{role}",
    response={200: ProfileDetailOut, 404: ErrorOut},
    summary="One agent profile with its versions, newest first",
)
def get_profile(request: HttpRequest, slug: str, role: str):
    project = get_project_for_user(request_user(request), slug)
    profile = _profile(project, role)
    versions = profile.versions.select_related("provider", "fallback_provider", "created_by")
    return {
        **profile_json(profile, project),
        "versions": [version_json(v) for v in versions.order_by("-number")],
    }


@api.put(
    "/projects/{slug}/profiles/{role}",
    response={200: ProfileDetailOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Save an agent profile for the project (admins): a new version",
)
def update_profile(request: HttpRequest, slug: str, role: str, payload: ProfileIn):
    user = request_user(request)
    project = get_project_for_user(user, slug)
    _profile(project, role)
    fields = payload.dict(exclude_none=True)
    if not fields:
        raise HttpError(400, "Send at least one field to change.")
    try:
        profile_services.save_profile(user, project, role, **fields)
    except InvalidProfile as exc:
        raise HttpError(400, f"{exc.field}: {exc}" if exc.field else str(exc)) from None
    return get_profile(request, slug, role)


@api.get(
    "/projects/{slug}/members",
    response={200: MemberListOut, 400: ErrorOut, 404: ErrorOut},
    summary="A project's members and their roles",
)
def list_members(
    request: HttpRequest, slug: str, cursor: str | None = None, limit: int = DEFAULT_LIMIT
):
    project = get_project_for_user(request_user(request), slug)
    members = Membership.objects.filter(project=project).select_related("user")
    page, next_url = paginate_in_order(request, members, by="pk", cursor=cursor, limit=limit)
    return {"members": [_member_json(m) for m in page], "next": next_url}


@api.put(
    "/projects/{slug}/members",
    response={200: MemberOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Add a member or change their role (admins)",
)
def set_member(request: HttpRequest, slug: str, payload: MemberIn):
    user = request_user(request)
    project = get_project_for_user(user, slug)
    try:
        membership = member_services.set_member(user, project, payload.username, payload.role)
    except member_services.InvalidMember as exc:
        raise HttpError(400, str(exc)) from None
    return _member_json(membership)


@api.delete(
    "/projects/{slug}/members/{username}",
    response={204: None, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Remove a member (admins); the last admin stays",
)
def remove_member(request: HttpRequest, slug: str, username: str):
    user = request_user(request)
    project = get_project_for_user(user, slug)
    try:
        member_services.remove_member(user, project, username)
    except member_services.InvalidMember as exc:
        raise HttpError(400, str(exc)) from None
    return Status(204, None)


@api.get(
    "/projects/{slug}/budget",
    response={200: ProjectBudgetOut, 404: ErrorOut},
    summary="A project's spending limits and what it has spent today and this month",
)
def get_budget(request: HttpRequest, slug: str):
    return _budget_json(get_project_for_user(request_user(request), slug))


@api.put(
    "/projects/{slug}/budget",
    response={200: ProjectBudgetOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Set a project's spending limits (admins); null removes a limit",
)
def set_budget(request: HttpRequest, slug: str, payload: ProjectBudgetIn):
    user = request_user(request)
    project = get_project_for_user(user, slug)
    try:
        project_budgets.set_project_budget(user, project, **payload.dict(exclude_unset=True))
    except InvalidBudget as exc:
        raise HttpError(400, f"{exc.field}: {exc}") from None
    return _budget_json(project)


# --- helpers --------------------------------------------------------------------------------
def _profile(project: Project, role: str) -> AgentProfile:
    try:
        return profile_for_project(project, role)
    except UnknownAgent:
        raise HttpError(404, f"This project has no {role!r} agent.") from None


def _budget_json(project: Project) -> dict:
    limits = project_budgets.project_limits(project)
    spent = project_budgets.project_spending(project)
    return {
        **{
            name: str(value) if isinstance(value, Decimal) else value
            for name, value in limits.items()
        },
        "spent": {
            period: {"usd": str(s.usd), "tokens": s.tokens, "unpriced_calls": s.unpriced_calls}
            for period, s in spent.items()
        },
    }


def _member_json(membership: Membership) -> dict:
    return {"username": membership.user.get_username(), "role": membership.role}
