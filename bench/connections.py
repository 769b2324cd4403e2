"""PostgreSQL connections held by `orchestra web` under N concurrent API requests.

Starts a real `orchestra web` (daphne) against a database of its own on DATABASE_URL's server
(a new unique name, dropped at the end), once per setting: CONN_MAX_AGE=0 without a pool,
the connection pool (ORCHESTRA_DB_POOL_MAX), and with --persistent also persistent
connections without a pool (DATABASE_CONN_MAX_AGE=300, the old setting). Each time, N client
threads send GET /api/runs with a bearer token (each request authenticates and queries),
ROUNDS requests each, all at once, while pg_stat_activity is sampled every few milliseconds
for the web process's connections (application_name "orchestra-web"). Prints the peak during
the load, what is still held after it, and the request rate.

Usage: python bench/connections.py [--requests 50] [--rounds 4] [--pool-max 10] [--persistent]
Needs DATABASE_URL pointing at PostgreSQL (REDIS_URL is passed on when set); otherwise it
says why it cannot measure and exits 0.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEB = "orchestra-web"  # the web process's application_name (orchestra/settings.py)


def counter(dsn: str, database: str, application: str = WEB) -> Callable[[], int]:
    """A callable counting the connections `application` holds to `database` right now."""
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()"
    )

    def count() -> int:
        return conn.execute(query, [database, application]).fetchone()[0]

    count.close = conn.close  # type: ignore[attr-defined]
    return count


def load(base: str, token: str, count: Callable[[], int], requests: int, rounds: int) -> dict:
    """Fire `requests` concurrent clients (`rounds` GET /api/runs each) while sampling
    `count`; returns the peak, what is held after, the statuses and the request rate."""
    start = threading.Barrier(requests + 1)
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        start.wait()
        for _ in range(rounds):
            request = urllib.request.Request(  # noqa: S310 - loopback server
                base + "/api/runs", headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0
            with lock:
                statuses.append(status)

    before = count()
    threads = [threading.Thread(target=client) for _ in range(requests)]
    for thread in threads:
        thread.start()
    peak = 0
    start.wait()
    began = time.perf_counter()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, count())
        time.sleep(0.005)
    elapsed = time.perf_counter() - began
    for thread in threads:
        thread.join()
    time.sleep(0.5)  # let the last requests' connections close, if they are going to
    return {
        "before": before,
        "peak": peak,
        "after": count(),
        "ok": sum(status == 200 for status in statuses),
        "total": len(statuses),
        "rate": len(statuses) / elapsed,
    }


MODES = {
    "persistent, no pool (CONN_MAX_AGE=300)": {
        "ORCHESTRA_DB_POOL": "0",
        "DATABASE_CONN_MAX_AGE": "300",
    },
    "no pool (CONN_MAX_AGE=0)": {"ORCHESTRA_DB_POOL": "0", "DATABASE_CONN_MAX_AGE": "0"},
    "pool (ORCHESTRA_DB_POOL_MAX={max})": {"ORCHESTRA_DB_POOL": "1", "DATABASE_CONN_MAX_AGE": "0"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=4, help="requests per client")
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument(
        "--persistent",
        action="store_true",
        help="also measure persistent connections without a pool (the old setting); it can "
        "take every connection a shared server has",
    )
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print("connections: DATABASE_URL is not PostgreSQL; nothing to measure (SQLite has no")
        print("server connections). Set DATABASE_URL=postgres://... to run this benchmark.")
        return 0

    from bench.databases import BenchDatabases, database_name

    parts = urlsplit(url)
    databases = BenchDatabases(url)
    bench_url = databases.create("connections")
    name = database_name(bench_url)
    tmp = tempfile.mkdtemp(prefix="orchestra-connections-bench-")
    os.environ |= {
        "DATABASE_URL": bench_url,
        "ORCHESTRA_DATA_DIR": tmp,
        "DJANGO_SETTINGS_MODULE": "orchestra.settings",
        "ORCHESTRA_EMBEDDED_WORKER": "",
    }
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    from orchestra.models import ApiToken
    from tests.integration.conftest import Processes, start_web

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-connections")
    token = ApiToken.issue(user)
    connections.close_all()

    count = counter(urlunsplit(parts._replace(path="/postgres")), name)
    print(f"{args.requests} concurrent clients x {args.rounds} GET /api/runs; web connections:")
    try:
        for label, env in MODES.items():
            if "CONN_MAX_AGE=300" in label and not args.persistent:
                continue
            processes = Processes(
                {**os.environ, **env, "ORCHESTRA_DB_POOL_MAX": str(args.pool_max)}, Path(tmp)
            )
            try:
                base = start_web(processes)
                load(base, token, count, 5, 1)  # warm-up: imports, first connections
                result = load(base, token, count, args.requests, args.rounds)
            finally:
                processes.stop_all()
            print(
                f"  {label.format(max=args.pool_max):40} peak {result['peak']:3}"
                f"   held after {result['after']:3}   {result['ok']}/{result['total']} ok"
                f"   {result['rate']:6.0f} req/s"
            )
    finally:
        count.close()  # type: ignore[attr-defined]
        connections.close_all()
        databases.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
