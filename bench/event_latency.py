"""Event latency: from an engine transaction's commit to a WebSocket client's receive.

Processes split as in production: this process commits events the way the engine does
(`locked_run` + `emit`; the broadcast leaves after commit through channels-redis), a separate
`orchestra web` (daphne) runs the consumer, and a real WebSocket client (in a thread of this
process, so both timestamps share one clock) is connected to `/ws/runs/<id>/`. Events are
committed one at a time, each after the previous one arrived, so the figure is the latency
of one event, not a queue's.

Usage: python bench/event_latency.py [--events 500]   (needs PostgreSQL and Redis)
"""

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import BenchDatabases, RedisDatabase  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="the server on which it creates (and drops) a database of its own",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"),
        help="an empty Redis database (checked; only the stack's keys are deleted after)",
    )
    args = parser.parse_args()
    redis = RedisDatabase(args.redis)
    redis.claim()
    with BenchDatabases(args.postgres) as databases:
        try:
            measure(args, databases.create("ws"))
        finally:
            redis.release()


def measure(args: argparse.Namespace, database_url: str) -> None:
    import tempfile

    tmp = tempfile.mkdtemp(prefix="orchestra-ws-bench-")
    os.environ |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis,
        "ORCHESTRA_DATA_DIR": tmp,
        "DJANGO_SETTINGS_MODULE": "orchestra.settings",
    }
    import django

    django.setup()
    from django.core.management import call_command

    from orchestra.events import emit, locked_run
    from orchestra.models import ApiToken, Project, Run, Task
    from orchestra.seed import seed_demo
    from tests.integration.conftest import Processes, start_web

    call_command("migrate", verbosity=0)
    seed_demo()
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(username="admin")
    token = ApiToken.issue(admin)
    demo = Project.objects.get(slug="demo")
    run = Run.objects.create(task=Task.objects.create(project=demo, title="latency"), project=demo)

    processes = Processes(dict(os.environ), Path(tmp))
    try:
        base = start_web(processes)
        from websockets.sync.client import connect

        received: queue.Queue = queue.Queue()
        url = base.replace("http://", "ws://") + f"/ws/runs/{run.pk}/?after=0"
        socket = connect(url, additional_headers={"Authorization": f"Bearer {token}"})

        def listen() -> None:
            import json

            for frame in socket:
                received.put((time.perf_counter(), json.loads(frame)["seq"]))

        threading.Thread(target=listen, daemon=True).start()
        latencies = []
        for index in range(args.events + 20):
            with locked_run(run.pk) as locked:
                emit(locked, "bench.tick", data={"i": index})
            committed = time.perf_counter()
            arrived, seq = received.get(timeout=10)
            if index >= 20:  # warm-up: connections, imports
                latencies.append((arrived - committed) * 1000)
        socket.close()
    finally:
        processes.stop_all()
        from django.db import connections

        connections.close_all()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"events: {len(latencies)} (one at a time, commit -> WebSocket client)")
    median = statistics.median(latencies)
    print(f"median {median:.2f} ms   p95 {p95:.2f} ms   max {latencies[-1]:.2f} ms")


if __name__ == "__main__":
    main()
