"""Creating projects: validated, with the team's agent profiles, the creator as admin."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from agents.teams import TEAM_COMMANDS, TEAMS, seed_team
from approvals.policies import install_default_policy
from orchestra.models import Membership, Project


class InvalidProject(Exception):
    """Bad input; the message says what to fix."""


class ProjectExists(Exception):
    pass


def create_project(user, slug: str, name: str, team: str) -> Project:
    """Create a project with its team's agent profiles, commands and the default approval
    policy; the creator becomes its admin. Only superusers may create projects. Its git
    repository is made on first use."""
    if not user.is_superuser:
        raise PermissionDenied("Only superusers may create projects.")
    slug, name = slug.strip(), name.strip()
    try:
        validate_slug(slug)
    except ValidationError:
        raise InvalidProject("slug may contain only letters, digits, '-' and '_'.") from None
    if len(slug) > Project._meta.get_field("slug").max_length:
        raise InvalidProject("slug is longer than 50 characters.")
    if not name:
        raise InvalidProject("A project needs a name.")
    if len(name) > Project._meta.get_field("name").max_length:
        raise InvalidProject("name is longer than 200 characters.")
    if team not in TEAMS:
        raise InvalidProject(f"team must be one of {', '.join(sorted(TEAMS))}.")
    try:
        with transaction.atomic():
            project = Project.objects.create(
                slug=slug, name=name, team=team, **TEAM_COMMANDS.get(team, {})
            )
            seed_team(team)
            install_default_policy(project)
            Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
    except IntegrityError:
        raise ProjectExists(f"A project with slug {slug!r} already exists.") from None
    return project
