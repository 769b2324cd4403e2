"""Bounded connections: a real `orchestra web` under 50 concurrent API requests holds no more
PostgreSQL connections than its pool allows (ORCHESTRA_DB_POOL_MAX), where without the pool
it holds one per request in flight. pg_stat_activity is sampled while the requests run; the
figures show with `pytest -s` (bench/connections.py prints the same for more settings)."""

import pytest
from django.db import connection

from bench.connections import WEB, counter, load
from orchestra.models import ApiToken

from .conftest import start_web

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 50
ROUNDS = 3
BOUND = 5


def test_the_web_process_holds_no_more_connections_than_its_pool(owner, processes):
    token = ApiToken.issue(owner)
    db = connection.settings_dict
    dsn = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"
    count = counter(dsn, db["NAME"], WEB)
    results = {}
    try:
        for mode, env in {
            "no pool": {"ORCHESTRA_DB_POOL": "0", "DATABASE_CONN_MAX_AGE": "0"},
            "pool": {"ORCHESTRA_DB_POOL": "1", "ORCHESTRA_DB_POOL_MAX": str(BOUND)},
        }.items():
            processes.env.update(env)
            base = start_web(processes, mode)
            load(base, token, count, 3, 1)  # warm-up
            results[mode] = load(base, token, count, CLIENTS, ROUNDS)
            processes.stop(mode)
    finally:
        count.close()

    for mode, result in results.items():
        print(
            f"\n{CLIENTS} concurrent clients x {ROUNDS} GET /api/runs, {mode}: web connections"
            f" peak {result['peak']}, held after {result['after']},"
            f" {result['ok']}/{result['total']} ok, {result['rate']:.0f} req/s"
        )
    for result in results.values():
        assert result["ok"] == result["total"] == CLIENTS * ROUNDS, result
    # The load does reach the database concurrently: unpooled, it takes more than the bound.
    assert results["no pool"]["peak"] > BOUND, results
    assert 0 < results["pool"]["peak"] <= BOUND, results
    assert results["pool"]["after"] <= BOUND, results
