"""Dashboard page benchmarks over a big history: 10,000 runs and 1,000,000 events.

Seeds a PostgreSQL database (created when missing; seeded once, `--reseed` to start over)
with COPY: 10,000 tasks and runs across five projects and 90 days, each with a plan of five
steps, 100 events, 12 agent runs (plan, five steps, five reviews, report), 24 model calls,
five tool calls and a decided deploy checkpoint. Then it times pages through
django.test.Client, signed in as the superuser: the run history (first page, filtered and
searched, a deep page), a run page, one of its htmx partials and the trace view. Each figure
is the median of 20 requests after 3 warm-ups; the target is a median under 150 ms.

Usage: python bench/pages.py [--database-url postgres://...] [--reseed] [--requests 20]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import ensure_database  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/orchestra_pages"
RUNS = 10_000
EVENTS_PER_RUN = 100
TARGET_MS = 150.0
STEP_KEYS = ["research", "implement", "tests", "verify", "deploy"]
ROLES = {"research": "researcher", "deploy": "deployer"}
EVENT_KINDS = [
    "model.called",
    "tool.called",
    "step.started",
    "step.output",
    "review.started",
    "review.verdict",
    "step.completed",
    "step.dispatched",
]


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")
    os.environ.setdefault("ORCHESTRA_EMBEDDED_WORKER", "sync")
    os.environ.setdefault("ORCHESTRA_LOG_LEVEL", "ERROR")
    import django

    django.setup()


# --- seeding ------------------------------------------------------------------------------------
class Copier:
    """COPY rows of a model with every concrete column, defaults filled in Python."""

    def __init__(self, raw_connection):
        self.raw = raw_connection

    def copy(self, model, rows) -> int:
        from django.db.models import JSONField

        fields = model._meta.concrete_fields
        columns = ", ".join(f'"{f.column}"' for f in fields)
        defaults = [f.get_default() for f in fields]
        is_json = [isinstance(f, JSONField) for f in fields]
        names = [f.attname for f in fields]
        count = 0
        sql = f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN'
        with self.raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                values = []
                for name, default, js in zip(names, defaults, is_json, strict=True):
                    value = row.get(name, default)
                    values.append(json.dumps(value) if js and value is not None else value)
                copy.write_row(values)
                count += 1
        return count


def seed(reseed: bool, may_flush: bool) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from agents.models import AgentRun, ModelCall, ToolCall
    from approvals.models import Checkpoint
    from orchestra.models import Event, Plan, Project, Run, Step, Task
    from orchestra.seed import seed_demo

    call_command("migrate", interactive=False, verbosity=0)
    if reseed:
        call_command("flush", interactive=False, verbosity=0)
    if Run.objects.count() >= RUNS and Event.objects.count() >= RUNS * EVENTS_PER_RUN:
        print(f"Already seeded: {Run.objects.count():,} runs, {Event.objects.count():,} events.")
        return
    if Run.objects.exists():
        if not may_flush:
            raise SystemExit(
                "The database holds runs that this benchmark did not seed; pass --reseed to "
                "flush it, or --database-url for another."
            )
        call_command("flush", interactive=False, verbosity=0)

    started = time.perf_counter()
    seed_demo()
    admin = get_user_model().objects.get(username="admin")
    projects = [Project.objects.get(slug="demo")]
    for i in range(1, 5):
        project, _ = Project.objects.get_or_create(
            slug=f"bench-{i}", defaults={"name": f"Bench {i}", "team": Project.Team.SOFTWARE}
        )
        projects.append(project)

    rng = random.Random(7)
    now = datetime.now(UTC)
    statuses = ["completed"] * 80 + ["failed"] * 10 + ["cancelled"] * 7 + ["awaiting_approval"] * 3
    plan_data = {
        "summary": "Bench plan",
        "steps": [
            {"key": k, "title": k, "agent": ROLES.get(k, "coder"), "brief": {"objective": k}}
            for k in STEP_KEYS
        ],
    }
    message = {"role": "user", "content": "Step: bench — do the work. " * 8}
    reply = {"role": "assistant", "content": "Done, as asked. " * 6}

    tasks, runs, plans, steps = [], [], [], []
    agent_runs, model_calls, tool_calls, checkpoints = [], [], [], []
    for n in range(1, RUNS + 1):
        created = now - timedelta(days=90) * (1 - n / RUNS) - timedelta(seconds=rng.random())
        status = rng.choice(statuses)
        project = projects[n % len(projects)]
        finished = None if status == "awaiting_approval" else created + timedelta(seconds=40)
        tasks.append(
            {
                "id": n,
                "project_id": project.pk,
                "title": f"Task {n}: {rng.choice(['greet', 'deploy', 'refactor', 'document'])}",
                "description": "A benchmark task.",
                "created_by_id": admin.pk,
                "created_at": created,
            }
        )
        runs.append(
            {
                "id": n,
                "task_id": n,
                "project_id": project.pk,
                "status": status,
                "phase": "report" if finished else "dispatch",
                "uses_demo_model": True,
                "input_tokens": 12_000,
                "output_tokens": 3_000,
                "cost_usd": Decimal("0.0123"),
                "report": "# Report\n\nAll steps done." if status == "completed" else "",
                "error": "Step 'verify' failed." if status == "failed" else "",
                "event_seq": EVENTS_PER_RUN,
                "created_at": created,
                "finished_at": finished,
            }
        )
        plans.append(
            {"id": n, "run_id": n, "version": 1, "status": "accepted", "data": plan_data}
            | {"created_at": created}
        )
        step_ids = []
        for position, key in enumerate(STEP_KEYS):
            step_id = (n - 1) * len(STEP_KEYS) + position + 1
            step_ids.append(step_id)
            begin = created + timedelta(seconds=2 + position * 7)
            steps.append(
                {
                    "id": step_id,
                    "run_id": n,
                    "plan_id": n,
                    "key": key,
                    "position": position,
                    "title": key.title(),
                    "agent_role": ROLES.get(key, "coder"),
                    "brief": {"objective": key},
                    "depends_on": [STEP_KEYS[position - 1]] if position else [],
                    "status": "done"
                    if finished
                    else ("awaiting_approval" if key == "deploy" else "done"),
                    "attempts": 1,
                    "reviewed_attempt": 1,
                    "output": f"{key} done.",
                    "input_tokens": 2000,
                    "output_tokens": 500,
                    "dispatched_at": begin,
                    "started_at": begin,
                    "finished_at": begin + timedelta(seconds=6),
                }
            )
        purposes = (
            [("plan", None, "orchestrator")]
            + [("step", s, ROLES.get(k, "coder")) for s, k in zip(step_ids, STEP_KEYS, strict=True)]
            + [("review", s, "reviewer") for s in step_ids]
            + [("report", None, "orchestrator")]
        )
        for index, (purpose, step_id, role) in enumerate(purposes):
            agent_run_id = (n - 1) * len(purposes) + index + 1
            begin = created + timedelta(seconds=index * 3)
            agent_runs.append(
                {
                    "id": agent_run_id,
                    "run_id": n,
                    "step_id": step_id,
                    "purpose": purpose,
                    "role": role,
                    "model": "demo",
                    "brief": {"objective": "bench"},
                    "messages": [message, reply, message, reply],
                    "status": "completed",
                    "turns": 2,
                    "input_tokens": 800,
                    "output_tokens": 200,
                    "started_at": begin,
                    "finished_at": begin + timedelta(seconds=2.5),
                }
            )
            for call in range(2):
                model_calls.append(
                    {
                        "id": (agent_run_id - 1) * 2 + call + 1,
                        "agent_run_id": agent_run_id,
                        "run_id": n,
                        "model": "demo",
                        "endpoint": "demo",
                        "message_count": 1 + call * 2,
                        "response": reply,
                        "tool_calls": [],
                        "input_tokens": 400,
                        "output_tokens": 100,
                        "latency_ms": 900.0,
                        "started_at": begin + timedelta(seconds=call * 1.2),
                    }
                )
            if purpose == "step":
                tool_calls.append(
                    {
                        "id": len(tool_calls) + 1,
                        "agent_run_id": agent_run_id,
                        "run_id": n,
                        "step_id": step_id,
                        "call_id": f"call_{agent_run_id}",
                        "tool": "write_file",
                        "arguments": {"path": "x.py", "content": "print('hi')"},
                        "risk": "write",
                        "status": "succeeded",
                        "result": "wrote 11 characters",
                        "idempotency_key": f"{n}:{step_id}:1:0",
                        "started_at": begin + timedelta(seconds=1),
                        "finished_at": begin + timedelta(seconds=1.1),
                    }
                )
        checkpoints.append(
            {
                "id": n,
                "run_id": n,
                "step_id": step_ids[-1],
                "kind": "deploy",
                "status": "approved" if finished else "pending",
                "shown": {"tool": "deploy", "arguments": {"environment": "demo"}},
                "requested_at": created + timedelta(seconds=30),
                "decided_by_id": admin.pk if finished else None,
                "decided_at": created + timedelta(seconds=35) if finished else None,
            }
        )

    def event_rows():
        for n in range(1, RUNS + 1):
            created = runs[n - 1]["created_at"]
            first_step = (n - 1) * len(STEP_KEYS) + 1
            for seq in range(1, EVENTS_PER_RUN + 1):
                yield {
                    "id": (n - 1) * EVENTS_PER_RUN + seq,
                    "run_id": n,
                    "seq": seq,
                    "kind": EVENT_KINDS[seq % len(EVENT_KINDS)],
                    "actor": "coder",
                    "step_id": first_step + seq % len(STEP_KEYS),
                    "data": {"input_tokens": 400, "output_tokens": 100, "model": "demo"},
                    "at": created + timedelta(milliseconds=seq * 400),
                }

    connection.ensure_connection()
    copier = Copier(connection.connection)
    with connection.connection.transaction():
        for model, rows in [
            (Task, tasks),
            (Run, runs),
            (Plan, plans),
            (Step, steps),
            (AgentRun, agent_runs),
            (ModelCall, model_calls),
            (ToolCall, tool_calls),
            (Checkpoint, checkpoints),
            (Event, event_rows()),
        ]:
            t0 = time.perf_counter()
            count = copier.copy(model, rows)
            print(f"  {model.__name__:<10} {count:>9,} rows  {time.perf_counter() - t0:6.1f} s")
        with connection.connection.cursor() as cursor:
            for model in (Task, Run, Plan, Step, AgentRun, ModelCall, ToolCall, Checkpoint, Event):
                table = model._meta.db_table
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                    f'(SELECT COALESCE(MAX(id), 1) FROM "{table}"))'
                )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"Seeded in {time.perf_counter() - started:.1f} s.")


# --- timing -------------------------------------------------------------------------------------
def measure(requests: int) -> list[tuple[str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from orchestra.models import Run

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="admin"))
    run = Run.objects.filter(status="completed").order_by("-created_at").first()
    pages = [
        ("history, first page", "/runs/"),
        ("history, filtered + search", "/runs/?status=completed&agent=coder&q=greet"),
        ("history, page 200", "/runs/?page=200"),
        (f"run page (#{run.pk}, 100 events)", f"/runs/{run.pk}/"),
        ("run page partial (steps)", f"/runs/{run.pk}/part/steps/"),
        ("trace view", f"/runs/{run.pk}/trace/"),
    ]
    results = []
    for name, path in pages:
        for _ in range(3):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        timings = []
        for _ in range(requests):
            t0 = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        results.append((name, statistics.median(timings)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PAGES_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--reseed", action="store_true", help="flush and seed again")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")

    # Seeded once and reused; an existing database is flushed only when it was made here or
    # --reseed says so (it may be someone else's).
    created = ensure_database(args.database_url)
    setup_django(args.database_url)
    from django.db import connection

    from orchestra.models import Event, Run

    seed(args.reseed, may_flush=created or args.reseed)
    print(f"Database: {Run.objects.count():,} runs, {Event.objects.count():,} events.")
    connection.close()
    results = measure(args.requests)
    print(f"\nMedian of {args.requests} requests (target < {TARGET_MS:.0f} ms):")
    ok = True
    for name, median in results:
        verdict = "ok" if median < TARGET_MS else "SLOW"
        ok &= median < TARGET_MS
        print(f"  {name:<36} {median:7.1f} ms  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
