"""What one step costs the engine, counted (tests/costs.py): SQL statements, git processes,
events per step, review and merge included. Printed by `make bench` beside the timings.

Runs in a process of its own (Django is set up once per process) on a database given by
DATABASE_URL, which the caller created for it: migrate, seed, then two chains run in this
thread (ORCHESTRA_EMBEDDED_WORKER=sync) with a scripted model, and their difference. Prints
one JSON object; with --statements, each statement of one step instead, with the code that
issued it (what to cut next). Without DATABASE_URL it counts on a new SQLite database.

Usage: DATABASE_URL=postgres://.../new_db python bench/step_costs.py [--statements]
"""

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--statements", action="store_true", help="list each statement of one step, by origin"
    )
    args = parser.parse_args()
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
    from tests.costs import step_cost, step_statements

    call_command("migrate", interactive=False, verbosity=0)
    seed_demo()
    owner = get_user_model().objects.get(username="admin")
    project = Project.objects.get(slug="demo")
    if args.statements:
        print_statements(step_statements(owner, project))
        return
    print(json.dumps(asdict(step_cost(owner, project))))


def print_statements(rows: list[tuple[float, str, str]]) -> None:
    total = sum(times for times, _origin, _sql in rows)
    print(f"{total:g} statements per step (BEGIN ... COMMIT counts two)")
    for times, origin, sql in rows:
        print(f"{times:5g}  {origin}\n       {sql}")


if __name__ == "__main__":
    main()
