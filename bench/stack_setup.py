"""Prepare a stack's database, run in the stack's own environment (so Django is set up for
that database and nothing else): migrate, seed, create the benchmark's projects on the
given repository, issue the admin an API token and print it (last line).

Usage: python bench/stack_setup.py REPOSITORY PROJECT [PROJECT ...]
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(repository: str, slugs: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from orchestra.engine.projects import create_project
    from orchestra.models import ApiToken
    from orchestra.seed import seed_demo

    call_command("migrate", interactive=False, verbosity=0)
    seed_demo()
    admin = get_user_model().objects.get(username="admin")
    for slug in slugs:
        project = create_project(admin, slug, slug.title(), "software")
        project.repository = repository
        project.save(update_fields=["repository"])
    print(ApiToken.issue(admin, "bench"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
