"""Seeding the embedded default: team templates, the `demo` project and an admin user."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from agents.teams import TEAM_COMMANDS, TEAMS, seed_team
from approvals.policies import DEMO_RULES, install_default_policy
from orchestra.models import Membership, Project


@transaction.atomic
def seed_demo() -> str | None:
    """Idempotent. Returns the admin password when it was generated now (first start)."""
    for team in TEAMS:
        seed_team(team)
    project, _ = Project.objects.get_or_create(
        slug="demo",
        defaults={
            "name": "Demo",
            "team": Project.Team.SOFTWARE,
            "description": "A small Python workspace the demo team edits, tests and deploys.",
            **TEAM_COMMANDS[Project.Team.SOFTWARE],
        },
    )
    install_default_policy(project, DEMO_RULES)
    User = get_user_model()
    generated = None
    admin = User.objects.filter(username="admin").first()
    if admin is None:
        password = settings.ORCHESTRA_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        generated = None if settings.ORCHESTRA_ADMIN_PASSWORD else password
        admin = User.objects.create_superuser("admin", "admin@localhost", password)
    Membership.objects.get_or_create(
        project=project, user=admin, defaults={"role": Membership.Role.ADMIN}
    )
    return generated
