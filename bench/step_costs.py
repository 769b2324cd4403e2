"""What one step costs the engine, counted (tests/costs.py): SQL statements, git processes,
events per step, review and merge included. Printed by `make bench` beside the timings.

Runs in a process of its own (Django is set up once per process) on a database given by
DATABASE_URL, which the caller created for it: migrate, seed, then two chains run in this
thread (ORCHESTRA_EMBEDDED_WORKER=sync) with a scripted model, and their difference; the
engine's time a step is measured apart, on the embedded thread pool (`threaded_ms`). Prints
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
    cost = asdict(step_cost(owner, project))
    cost["ms"] = threaded_ms(owner, project)
    print(json.dumps(cost))


def threaded_ms(owner, project, short: int = 10, long: int = 30) -> float:
    """The engine's own time a step, in ms, on the embedded thread pool (the product's
    embedded mode), the model answering at once: two chains, the difference.

    Not the counting chains' time: in the synchronous mode each step's task runs inside the
    commit hook of the step before, ever deeper, and at that depth CPython 3.11 maps and
    unmaps a chunk of its frame stack over and over (hundreds of times a step), which the
    product's threads never do."""
    import time

    from django.conf import settings

    from agents.llm import override_client
    from orchestra.engine import start_run
    from orchestra.models import Run
    from tests.costs import _answer
    from tests.scripted import ScriptedModel

    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"  # read by the queue at each task
    ended = (Run.Status.COMPLETED, Run.Status.FAILED, Run.Status.CANCELLED)
    seconds = []
    for length in (short, long):
        with override_client(ScriptedModel(_answer(length))):
            began = time.perf_counter()
            run = start_run(owner, project, f"Threaded chain of {length}")
            while Run.objects.filter(pk=run.pk).values_list("status", flat=True)[0] not in ended:
                time.sleep(0.005)  # the figure is the difference of two chains: 5 ms is noise
            seconds.append(time.perf_counter() - began)
        run.refresh_from_db()
        if run.status != Run.Status.COMPLETED:
            raise AssertionError(f"run {run.pk} ended {run.status}: {run.error}")
    return (seconds[1] - seconds[0]) / (long - short) * 1000


def print_statements(rows: list[tuple[float, str, str]]) -> None:
    total = sum(times for times, _origin, _sql in rows)
    print(f"{total:g} statements per step (BEGIN ... COMMIT counts two)")
    for times, origin, sql in rows:
        print(f"{times:5g}  {origin}\n       {sql}")


if __name__ == "__main__":
    main()
