"""The benchmark's own parts: its shapes' critical paths, its model's answers, that it
touches only the databases it made (bench/databases.py) on a shared server, and the CPU it
reads of a stack's processes."""

import os
import subprocess
import sys

import pytest

from bench import shapes
from bench.databases import BenchDatabases, RedisDatabase, RedisNotEmpty, admin_url
from bench.model import responder
from bench.stacks import cpu_seconds
from tests.llm_server import Reply


def test_critical_paths_are_the_longest_sum_of_latencies():
    assert shapes.fan_out().critical_path == pytest.approx(0.2)
    assert shapes.diamond().critical_path == pytest.approx(0.5)
    assert shapes.skewed().critical_path == pytest.approx(0.5)
    assert shapes.chain().critical_path == 0.0
    assert shapes.small().critical_path == pytest.approx(0.3)
    assert len(shapes.wide_fan_out().steps) == 200


def test_every_step_claims_the_file_it_writes():
    respond = responder({"diamond": shapes.diamond()})
    plan = respond(
        {
            "messages": [{"role": "user", "content": "Task: bench:diamond#0\n\n..."}],
            "tools": [{"function": {"name": "submit_plan"}}],
        }
    )
    steps = json_arguments(plan)["steps"]
    assert [s["claims"] for s in steps][:2] == [["src/bench/d0w0.py"], ["src/bench/d0w1.py"]]
    step = [{"role": "system", "content": "You are a coder"}]
    step.append({"role": "user", "content": "Step: d1w2 — Write d1w2\n\nBrief: ..."})
    first = respond({"messages": step, "tools": [{"function": {"name": "write_file"}}]})
    assert first.delay == pytest.approx(0.1)
    assert json_arguments(first)["path"] == "src/bench/d1w2.py"
    step.append({"role": "tool", "content": "wrote 40 characters"})
    answer = respond({"messages": step, "tools": [{"function": {"name": "write_file"}}]})
    assert answer.tool_calls == () and answer.delay == 0


def json_arguments(item: Reply) -> dict:
    import json

    return json.loads(item.tool_calls[0].arguments)


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL"
)
def test_drops_only_the_databases_it_created():
    import psycopg

    server = os.environ["DATABASE_URL"]
    databases = BenchDatabases(server, prefix="orchestra_bench_test")
    url = databases.create("one")
    other = BenchDatabases(server, prefix="orchestra_bench_test")
    kept = other.create("kept")
    databases.drop_all()
    with psycopg.connect(admin_url(server), autocommit=True) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert url.rsplit("/", 1)[1] not in names
    assert kept.rsplit("/", 1)[1] in names
    other.drop_all()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_a_redis_database_in_use_is_refused_and_left_alone():
    redis = RedisDatabase(os.environ["REDIS_URL"])
    if redis.client.dbsize():
        pytest.skip("REDIS_URL's database is in use; this test deletes a stack's keys in it")
    redis.client.set("someone-elses-key", "1")
    try:
        with pytest.raises(RedisNotEmpty):
            redis.claim()
        redis.client.set("celery", "the stack's")
        redis.release()
        client = RedisDatabase(os.environ["REDIS_URL"]).client
        assert client.get("someone-elses-key") == b"1"
        assert client.get("celery") is None
    finally:
        RedisDatabase(os.environ["REDIS_URL"]).client.delete("someone-elses-key")


_BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_cpu_counts_the_processes_alive_and_those_waited_for():
    before = cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", _BURN], check=True)  # waited for: the kernel adds it
    waited = cpu_seconds(os.getpid())
    alive = subprocess.Popen(  # still running when read: its own figures are added
        [sys.executable, "-c", _BURN + "import sys\nprint(flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        alive.stdout.readline()  # done burning, and waiting
        with_alive = cpu_seconds(os.getpid())
    finally:
        alive.communicate(b"")
    # The children's loop asks the kernel for the time: its CPU is user and kernel both.
    assert sum(waited) - sum(before) >= 0.25
    assert sum(with_alive) - sum(waited) >= 0.25
    assert cpu_seconds(alive.pid) == (0.0, 0.0)  # gone: nothing to read
