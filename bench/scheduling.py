"""Scheduling benchmark: Orchestra embedded and split beside LangGraph, in one run.

Four plan shapes (fan-out 20 x 0.2 s, diamond 5 x 4 x 0.1 s, skewed 5 x 0.1 s beside 0.5 s,
a chain of 50 zero-latency steps), each run `--repeat` times, interleaved, on:
- Orchestra embedded: `orchestra up`, one process, its in-process worker, its default SQLite;
- Orchestra split: `orchestra web` + `orchestra worker`, PostgreSQL, Redis;
- LangGraph: the same shapes as async StateGraphs, in-memory and SQLite checkpointers.
All of them call the same loopback model server (bench/model.py), streaming. An Orchestra step
calls `write_file` on its claimed file in a clone of a ~400-file repository, answers, is
reviewed (a model turn) and merged; planning and the report are model turns too.

Printed: one table (ratio = wall / critical path, or ms per step for the chain; Orchestra's
two windows, see bench/measure.py), each shape's CPU a step in each mode (every process of
the stack, user and kernel apart, planning and report in), the per-step counts (statements,
git processes, events; tests/costs.py) and, with --scale, a 200-step fan-out against the
20-step one (each run `--repeat` times, medians) and 100 concurrent 5-step runs in each
mode. --check exits 1 when a target is missed.

It creates its own PostgreSQL databases (unique names, dropped at the end) and uses a Redis
database only if it is empty, deleting only the stack's keys afterwards (bench/databases.py).

Usage: python bench/scheduling.py [--repeat 5] [--scale] [--check] [--modes embedded,split]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import shapes as plans  # noqa: E402
from bench.databases import BenchDatabases, RedisDatabase, admin_url, database_name  # noqa: E402
from bench.measure import (  # noqa: E402
    ConnectionPeak,
    RunFailed,
    ShapeResult,
    measure_run,
    measure_shapes,
    run_concurrently,
)
from bench.model import served  # noqa: E402
from bench.report import print_report  # noqa: E402
from bench.repository import build_repository, describe  # noqa: E402
from bench.stacks import Stack, peak_rss_kb  # noqa: E402

MODES = ("embedded", "split")


def step_costs(databases: BenchDatabases) -> dict | None:
    """bench/step_costs.py on a database of its own."""
    url = databases.create("costs")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "step_costs.py")],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        print(f"step costs failed:\n{result.stderr[-2000:]}", flush=True)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_mode(mode: str, args, model_url: str, repository: Path, workdir: Path, databases) -> dict:
    """Start the mode's stack, run the shapes (and the scale checks), stop it."""
    database_url = databases.create(mode) if mode == "split" else ""
    stack = Stack(
        mode,
        workdir / mode,
        model_url,
        database_url=database_url,
        redis_url=args.redis,
        worker_threads=args.worker_threads,
    )
    redis = RedisDatabase(args.redis) if mode == "split" else None
    if redis:
        redis.claim()
    began = time.monotonic()
    outcome: dict = {"database": stack.database}
    try:
        stack.prepare(repository, ["bench", "benchscale"])
        stack.start()
        connections = (
            ConnectionPeak(admin_url(database_url), database_name(database_url))
            if database_url
            else None
        )
        if connections:
            connections.__enter__()
        try:
            outcome["shapes"] = measure_shapes(stack, shapes_for(args), args.repeat)
            if args.scale:
                outcome["wide"] = measure_wide(stack, args.repeat)
                outcome["concurrent"] = run_concurrently(stack, plans.small(), args.runs)
            outcome["rss"] = {name: peak_rss_kb(pid) for name, pid in stack.pids().items()}
        finally:
            if connections:
                connections.__exit__(None, None, None)
                outcome["connections"] = connections.peak
    finally:
        stack.stop()
        if redis:
            redis.release()
    print(f"  {mode}: measured in {time.monotonic() - began:.0f} s", flush=True)
    return outcome


def measure_wide(stack: Stack, repeat: int) -> ShapeResult:
    """The 200-step fan-out, `repeat` times (its median is held to the target, as every
    shape's is); the first failure ends it."""
    result = ShapeResult(plans.wide_fan_out())
    for index in range(repeat):
        try:
            result.timings.append(measure_run(stack, "bench", result.shape, f"scale-{index}"))
        except RunFailed as exc:
            result.failures.append(str(exc))
            break
    return result


def shapes_for(args) -> list[plans.Shape]:
    wanted = args.shapes.split(",")
    return [shape for shape in plans.four_shapes() if shape.name in wanted]


def langgraph(args, model_url: str) -> dict | None:
    try:
        from bench import langgraph_shapes
    except ImportError as exc:  # the `bench` extra is not installed
        print(f"  LangGraph skipped: {exc} (pip install -e '.[bench]')", flush=True)
        return None
    began = time.monotonic()
    try:
        return langgraph_shapes.run(shapes_for(args), model_url, args.repeat)
    except ImportError as exc:
        print(f"  LangGraph skipped: {exc} (pip install -e '.[bench]')", flush=True)
        return None
    finally:
        print(f"  LangGraph: measured in {time.monotonic() - began:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per shape (medians)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--shapes", default=",".join(s.name for s in plans.four_shapes()))
    parser.add_argument("--scale", action="store_true", help="200-step plan, concurrent runs")
    parser.add_argument("--runs", type=int, default=100, help="concurrent runs with --scale")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--check-window",
        choices=("dispatch", "run"),
        default="dispatch",
        help="the window whose ratios --check holds to the targets",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="the server on which the benchmark creates (and drops) its own databases",
    )
    parser.add_argument("--db-prefix", default=os.environ.get("BENCH_DB_PREFIX", "orchestra_bench"))
    parser.add_argument(
        "--redis",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"),
        help="an empty Redis database for the split stack (checked; never flushed)",
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=64,
        help="the split stack's worker threads (`--concurrency`; the product's default is 64)",
    )
    parser.add_argument("--no-costs", action="store_true", help="skip the per-step counts")
    parser.add_argument(
        "--keep", metavar="DIR", help="work (repository, stacks' data and logs) in DIR, kept"
    )
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]

    began = time.monotonic()
    results: dict = {"modes": {}, "args": args}
    with (
        BenchDatabases(args.postgres, args.db_prefix) as databases,
        tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp,
        served() as model_url,
    ):
        workdir = Path(args.keep or tmp)
        repository = build_repository(workdir / "source")
        results["repository"] = describe(repository)
        print(f"Measuring (repository: {results['repository']}) ...", flush=True)
        if not args.no_costs:
            results["costs"] = step_costs(databases)
        for mode in modes:
            results["modes"][mode] = run_mode(mode, args, model_url, repository, workdir, databases)
        results["langgraph"] = langgraph(args, model_url)
    results["elapsed"] = time.monotonic() - began
    missed = print_report(results, shapes_for(args))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
