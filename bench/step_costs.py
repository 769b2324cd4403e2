"""What one step costs the engine, counted (tests/costs.py): SQL statements, git processes,
events per step, review and merge included. Printed by `make bench` beside the timings.

Runs in a process of its own (Django is set up once per process) on a database given by
DATABASE_URL, which the caller created for it: migrate, seed, then two chains run in this
thread (ORCHESTRA_EMBEDDED_WORKER=sync) with a scripted model, and their difference. Prints
one JSON object.

Usage: DATABASE_URL=postgres://.../new_db python bench/step_costs.py
"""

import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    os.environ |= {
        "DJANGO_SETTINGS_MODULE": "orchestra.settings",
        "ORCHESTRA_EMBEDDED_WORKER": "sync",
        "ORCHESTRA_USE_DEMO_MODEL": "1",
        "ORCHESTRA_DEMO_LATENCY": "0",
        "ORCHESTRA_DATA_DIR": tempfile.mkdtemp(prefix="orchestra-step-costs-"),
        "ORCHESTRA_LOG_LEVEL": "ERROR",
    }
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from orchestra.models import Project
    from orchestra.seed import seed_demo
    from tests.costs import step_cost

    call_command("migrate", interactive=False, verbosity=0)
    seed_demo()
    owner = get_user_model().objects.get(username="admin")
    cost = step_cost(owner, Project.objects.get(slug="demo"))
    print(json.dumps(asdict(cost)))


if __name__ == "__main__":
    main()
