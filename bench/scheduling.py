"""Scheduling benchmarks: how close the engine gets to a plan's critical path.

Processes split as in production: `orchestra web` (daphne), one `orchestra worker` (thread
pool), PostgreSQL and Redis, with the protocol test server as the model. Every specialist
call sleeps for its step's latency; planner, reviewer and reporter calls answer at once, so
the critical path is the sum of step latencies along the plan's longest path.

Measured per run, from the database's events: wall = first `step.dispatched` to last
`step.completed`; ratio = wall / critical path. The 50-step zero-latency chain reports
orchestration overhead per step instead (wall / 50), which includes both model round trips
(specialist and reviewer) over loopback HTTP and every event stored and broadcast.

Usage: python bench/scheduling.py [--repeat 5]   (needs PostgreSQL and Redis; see --help)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import create_database  # noqa: E402
from tests.llm_server import ScriptedLLMServer, reply  # noqa: E402


def brief(key: str) -> dict:
    return {"objective": f"bench {key}", "expected_output": "ok", "acceptance_criteria": ["ok"]}


def plan_step(key: str, depends_on: list[str], agent: str = "coder") -> dict:
    return {"key": key, "title": key, "agent": agent, "brief": brief(key), "depends_on": depends_on}


def fan_out() -> tuple[list[dict], dict[str, float]]:
    steps = [plan_step(f"s{i:02d}", []) for i in range(20)]
    return steps, {s["key"]: 0.2 for s in steps}


def diamond() -> tuple[list[dict], dict[str, float]]:
    """Depth 5, width 4: every step of a layer depends on every step of the layer before."""
    steps, previous = [], []
    for layer in range(5):
        current = [f"l{layer}w{w}" for w in range(4)]
        steps += [plan_step(key, list(previous)) for key in current]
        previous = current
    return steps, {s["key"]: 0.1 for s in steps}


def skewed() -> tuple[list[dict], dict[str, float]]:
    """A chain of five 100 ms steps beside one 500 ms step: a superstep barrier costs 1.8x."""
    steps = [plan_step("c0", [])] + [plan_step(f"c{i}", [f"c{i - 1}"]) for i in range(1, 5)]
    steps.append(plan_step("long", []))
    latencies = {f"c{i}": 0.1 for i in range(5)} | {"long": 0.5}
    return steps, latencies


def chain() -> tuple[list[dict], dict[str, float]]:
    steps = [plan_step("k00", [])] + [
        plan_step(f"k{i:02d}", [f"k{i - 1:02d}"]) for i in range(1, 50)
    ]
    return steps, {s["key"]: 0.0 for s in steps}


SCENARIOS = {"fan-out": fan_out, "diamond": diamond, "skewed": skewed, "chain": chain}
TARGETS = {"fan-out": 1.10, "diamond": 1.05, "skewed": 1.05}


def critical_path(steps: list[dict], latencies: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for step in steps:  # plans here are listed in dependency order
        start = max((finish[d] for d in step["depends_on"]), default=0.0)
        finish[step["key"]] = start + latencies[step["key"]]
    return max(finish.values())


def make_responder(plans: dict[str, tuple[list[dict], dict[str, float]]]):
    def respond(body: dict):
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        messages = body["messages"]
        first = next(m["content"] for m in messages if m["role"] == "user")
        if "submit_plan" in tools:
            name = first.split("\n", 1)[0].removeprefix("Task: bench:").split("#")[0].strip()
            return reply(tool_calls=[("submit_plan", {"steps": plans[name][0]})])
        if "submit_verdict" in tools:
            return reply(tool_calls=[("submit_verdict", {"verdict": "pass", "feedback": "ok"})])
        if first.startswith("Write the final report"):
            return reply(content="report")
        key = first.split("\n", 1)[0].removeprefix("Step: ").split(" ")[0]
        for _steps, latencies in plans.values():
            if key in latencies:
                return reply(content=f"{key} done", delay=latencies[key])
        return reply(content="done")

    return respond


class Stack:
    """PostgreSQL database, migrated; `orchestra web` and `orchestra worker` processes."""

    def __init__(self, database_url: str, redis_url: str, model_url: str, workdir: Path):
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": model_url,
            "OPENAI_API_KEY": "bench",
            "ORCHESTRA_MODEL": "bench",
            "ORCHESTRA_USE_DEMO_MODEL": "0",
            "ORCHESTRA_MODEL_STREAM": "0",
            "ORCHESTRA_DATA_DIR": str(workdir),
            "ORCHESTRA_ADMIN_PASSWORD": "bench-password",
            "ORCHESTRA_MAX_PLAN_STEPS": "60",
        }
        self.processes: list[subprocess.Popen] = []
        self.workdir = workdir

    def cli(self, *argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "orchestra.cli", *argv],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def spawn(self, *argv: str) -> None:
        log = open(self.workdir / f"{argv[0]}-{len(self.processes)}.log", "ab")  # noqa: SIM115
        prefix = []
        if argv[0] == "worker" and os.environ.get("ORCHESTRA_BENCH_PROFILE"):
            prefix = [
                "py-spy",
                "record",
                "-o",
                os.environ["ORCHESTRA_BENCH_PROFILE"],
                "--format",
                "raw",
                "-t",
                "--",
            ]
        self.processes.append(
            subprocess.Popen(
                [*prefix, sys.executable, "-m", "orchestra.cli", *argv],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(20)


def http(method: str, url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(0.25)  # the figures come from event times, not from this poll
    raise SystemExit(f"timed out waiting for {what}")


def measure(base: str, token: str, name: str, index: int) -> float:
    created = http(
        "POST", f"{base}/api/tasks", token, {"project": "bench", "title": f"bench:{name}#{index}"}
    )
    run_id = created["run"]["id"]

    def finished():
        run = http("GET", f"{base}/api/runs/{run_id}", token)
        return run if run["status"] in ("completed", "failed", "cancelled") else None

    run = wait_for(finished, 300, f"run {run_id} ({name})")
    if run["status"] != "completed":
        raise SystemExit(f"run {run_id} ({name}) ended {run['status']}: {run.get('error')}")
    events = http("GET", f"{base}/api/runs/{run_id}/events?after=0&limit=5000", token)["events"]
    from datetime import datetime

    def at(event):
        return datetime.fromisoformat(event["at"]).timestamp()

    first = min(at(e) for e in events if e["kind"] == "step.dispatched")
    last = max(at(e) for e in events if e["kind"] == "step.completed")
    return last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/orchestra_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--workers", type=int, default=1, help="orchestra worker processes")
    args = parser.parse_args()

    import tempfile

    create_database(args.database, fresh=True)
    import redis

    redis.Redis.from_url(args.redis).flushdb()

    plans = {name: SCENARIOS[name]() for name in args.scenarios.split(",")}
    server = ScriptedLLMServer()
    server.responder = make_responder(plans)
    with server, tempfile.TemporaryDirectory() as tmp:
        stack = Stack(args.database, args.redis, server.base_url, Path(tmp))
        try:
            stack.cli("migrate")
            stack.cli("seed")
            token = stack.cli("token", "admin").strip().splitlines()[-1]
            port = 18000 + os.getpid() % 1000
            base = f"http://127.0.0.1:{port}"
            for index in range(args.workers):
                stack.spawn("worker", "--concurrency", "64", "--hostname", f"bench{index}@%h")
            stack.spawn("web", "--host", "127.0.0.1", "--port", str(port))
            wait_for(
                lambda: json.loads(urllib.request.urlopen(base + "/healthz").read())["ok"],  # noqa: S310
                60,
                "web and worker",
            )
            http(
                "POST",
                f"{base}/api/projects",
                token,
                {"slug": "bench", "name": "Bench", "team": "software"},
            )
            measure(base, token, next(iter(plans)), -1)  # warm-up: imports, connections
            print(f"{'scenario':10} {'critical':>9} {'median wall':>12} {'ratio':>7} target")
            for name, (steps, latencies) in plans.items():
                walls = [measure(base, token, name, i) for i in range(args.repeat)]
                wall = statistics.median(walls)
                if name == "chain":
                    per_step = wall / len(steps) * 1000
                    print(
                        f"{name:10} {'0 ms':>9} {wall * 1000:10.0f}ms {'':>7} "
                        f"overhead {per_step:.1f} ms/step (target <= 5)"
                    )
                    continue
                path = critical_path(steps, latencies)
                print(
                    f"{name:10} {path * 1000:7.0f}ms {wall * 1000:10.0f}ms "
                    f"{wall / path:7.3f} <= {TARGETS[name]}"
                )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
