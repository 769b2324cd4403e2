"""What every command shares: the refusal it prints, Django set up on demand, output, lookups.

Django is imported inside the functions: `orchestra --help` must not pay for it.
"""

from __future__ import annotations

import os


class CliError(Exception):
    """A refusal the person at the terminal can act on; printed without a traceback."""


# --- Django ---------------------------------------------------------------------------------
def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def say(*parts: object) -> None:
    # Flushed: `up` and `run --wait` usually write to a log file or a pipe.
    print(*parts, flush=True)


def get_project(slug: str):
    from orchestra.models import Project

    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CliError(f"no project {slug!r}")
    return project


def get_user(username: str):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise CliError(f"no active user {username!r}")
    return user
