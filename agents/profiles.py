"""Editing a project's agent profiles: every save is a new immutable `ProfileVersion`.

A project starts on its team's profiles; the first save of a role by one of its admins makes
the project's own copy, which its runs use from then on (`teams.profile_for_project`). The
team's profiles stay as they were for every other project.
"""

import difflib
import json

from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents.models import AgentProfile, ProfileVersion, Provider
from agents.tools import REGISTRY
from orchestra.access import role_in
from orchestra.models import Membership, Project

TEMPERATURE_RANGE = (0.0, 2.0)
TURN_LIMIT_RANGE = (1, 200)


class InvalidProfile(Exception):
    """Bad profile input: the message says what to fix; `field` names the field to blame."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def may_edit_profiles(user, project: Project) -> bool:
    return role_in(user, project) == Membership.Role.ADMIN


def require_admin(user, project: Project) -> None:
    if not may_edit_profiles(user, project):
        raise PermissionDenied("Only the project's admins may change its agent profiles.")


def project_profiles(project: Project) -> list[AgentProfile]:
    """Every role of the project's team, as its runs would use it now: the project's own
    profile where it has one, the team's otherwise."""
    own = {p.role: p for p in AgentProfile.objects.filter(project=project)}
    team = AgentProfile.objects.filter(team=project.team, project__isnull=True)
    profiles = [own.pop(p.role, p) for p in team.select_related("provider")]
    return sorted(profiles + list(own.values()), key=lambda p: p.role)


def current_version(profile: AgentProfile, user=None) -> ProfileVersion:
    """The profile's latest version, recorded first if the profile has none or was changed
    elsewhere (the admin site, a seed) since: a run always names settings it really used."""
    latest = profile.versions.order_by("-number").first()
    if latest is not None and version_fields(latest) == version_fields(profile):
        return latest
    return _record(profile, user)


def save_profile(user, project: Project, role: str, **fields) -> ProfileVersion:
    """Save `fields` (names from `AgentProfile.VERSIONED`) as the project's profile for
    `role` and record them as its next version; a save that changes none of them records
    nothing and returns the latest version. Project admins only."""
    require_admin(user, project)
    fields = _clean(fields)
    with transaction.atomic():
        profile = _own_profile(project, role)
        for name, value in fields.items():
            setattr(profile, name, value)
        profile.save()
        return current_version(profile, user)


def record_saved_profile(user, profile: AgentProfile) -> ProfileVersion:
    """After `profile` was saved as it is (the admin site's form, which checks its fields):
    record its settings as the next version by `user`, unless they are the latest's."""
    with transaction.atomic():
        # The profile row's lock: two saves at once compare against versions in turn.
        AgentProfile.objects.select_for_update().filter(pk=profile.pk).first()
        return current_version(profile, user)


def version_diff(old: ProfileVersion | None, new: ProfileVersion) -> str:
    """A unified diff of two versions' settings, one field after another, prompt in full."""
    before = _as_text(old) if old is not None else []
    return "".join(
        difflib.unified_diff(
            before,
            _as_text(new),
            fromfile=f"version {old.number}" if old else "nothing",
            tofile=f"version {new.number}",
        )
    )


def version_fields(source) -> dict:
    """The versioned settings of a profile or a version, comparable across the two."""
    values = {}
    for name in AgentProfile.VERSIONED:
        if name in ("provider", "fallback_provider"):
            values[name] = getattr(source, f"{name}_id")
        else:
            values[name] = getattr(source, name)
    return values


# --- helpers --------------------------------------------------------------------------------
def _own_profile(project: Project, role: str) -> AgentProfile:
    """The project's own profile for `role`, locked; copied from the team's the first time."""
    own = AgentProfile.objects.select_for_update().filter(project=project, role=role).first()
    if own is not None:
        return own
    team = AgentProfile.objects.filter(team=project.team, role=role, project__isnull=True).first()
    if team is None:
        raise InvalidProfile(f"the {project.team} team has no {role!r} agent", "role")
    own = AgentProfile.objects.create(
        team=project.team,
        project=project,
        role=role,
        description=team.description,
        **{name: getattr(team, name) for name in AgentProfile.VERSIONED},
    )
    own = AgentProfile.objects.select_for_update().get(pk=own.pk)
    # Version 1 is the team's settings as copied, so the history shows the first edit too.
    _record(own, None)
    return own


def _record(profile: AgentProfile, user) -> ProfileVersion:
    with transaction.atomic():
        # The profile row's lock makes version numbers one after another, never twice.
        AgentProfile.objects.select_for_update().filter(pk=profile.pk).first()
        latest = profile.versions.order_by("-number").values_list("number", flat=True).first()
        return ProfileVersion.objects.create(
            profile=profile,
            number=(latest or 0) + 1,
            created_by=user if user is not None and user.is_authenticated else None,
            **{name: getattr(profile, name) for name in AgentProfile.VERSIONED},
        )


def _clean(fields: dict) -> dict:
    unknown = set(fields) - set(AgentProfile.VERSIONED)
    if unknown:
        raise InvalidProfile(f"unknown field {sorted(unknown)[0]!r}")
    cleaned = dict(fields)
    if "system_prompt" in cleaned and not str(cleaned["system_prompt"]).strip():
        raise InvalidProfile("the system prompt may not be empty", "system_prompt")
    for name in ("provider", "fallback_provider"):
        if name in cleaned and not isinstance(cleaned[name], Provider | None):
            provider = Provider.objects.filter(name=cleaned[name]).first()
            if cleaned[name] not in ("", None) and provider is None:
                raise InvalidProfile(f"there is no provider {cleaned[name]!r}", name)
            cleaned[name] = provider
    if "temperature" in cleaned:
        low, high = TEMPERATURE_RANGE
        if not low <= float(cleaned["temperature"]) <= high:
            raise InvalidProfile(f"the temperature must be between {low} and {high}", "temperature")
    if "turn_limit" in cleaned:
        low, high = TURN_LIMIT_RANGE
        if not low <= int(cleaned["turn_limit"]) <= high:
            raise InvalidProfile(f"the turn limit must be between {low} and {high}", "turn_limit")
    if "allowed_tools" in cleaned:
        tools = list(dict.fromkeys(cleaned["allowed_tools"]))
        unknown_tools = [t for t in tools if t not in REGISTRY]
        if unknown_tools:
            raise InvalidProfile(f"there is no tool {unknown_tools[0]!r}", "allowed_tools")
        cleaned["allowed_tools"] = tools
    return cleaned


def _as_text(version: ProfileVersion) -> list[str]:
    lines = []
    for name in AgentProfile.VERSIONED:
        if name == "system_prompt":
            continue
        value = getattr(version, name)
        shown = json.dumps(value) if isinstance(value, list) else str(value or "")
        lines.append(f"{name}: {shown}\n")
    lines.append("system_prompt:\n")
    lines += [f"  {line}\n" for line in version.system_prompt.splitlines()]
    return lines
