"""Timing Orchestra runs through its API, from the events the engine stored.

Two windows per run, both read from event times (the server's clock):
- run: `run.created` (the task is created) to `run.completed` — planning, the run branch,
  every step with its review turn and merge, and the report;
- dispatch: the first `step.dispatched` to the last `step.completed` — the steps alone
  (review turns and merges included), the window the engine's scheduling is judged on.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from bench.shapes import Shape
from bench.stacks import Stack, wait_for

TERMINAL = ("completed", "failed", "stopped", "cancelled")
ENDINGS = ("run.completed", "run.failed", "run.stopped", "run.cancelled")


@dataclass
class Timing:
    run: float
    dispatch: float
    # CPU seconds the stack's processes used from the task's creation to the run's end:
    # every process's (web, worker, beat, their git commands), so also what following the
    # run through the API cost the web process.
    user: float = 0.0
    kernel: float = 0.0


@dataclass
class ShapeResult:
    shape: Shape
    timings: list[Timing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, window: str) -> float | None:
        values = [getattr(t, window) for t in self.timings]
        return statistics.median(values) if values else None

    def cpu_ms_per_step(self) -> tuple[float, float] | None:
        """Median CPU a step, (user, kernel) in milliseconds, planning and report in."""
        if not self.timings:
            return None
        steps = len(self.shape.steps)
        return (
            statistics.median(t.user for t in self.timings) / steps * 1000,
            statistics.median(t.kernel for t in self.timings) / steps * 1000,
        )

    def figure(self, window: str) -> float | None:
        """Ratio to the critical path, or milliseconds per step for the chain."""
        wall = self.median(window)
        if wall is None:
            return None
        if self.shape.per_step:
            return wall / len(self.shape.steps) * 1000
        return wall / self.shape.critical_path


def at(event: dict) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


class RunFailed(Exception):
    pass


def measure_run(stack: Stack, project: str, shape: Shape, label: str) -> Timing:
    used_before = stack.cpu()
    run_id = stack.create_task(project, f"bench:{shape.name}#{label}")
    # Followed as a client follows a run, reading only the events that are new: polling the
    # run's whole detail (every step) five times a second cost the server, in a 200-step
    # plan, about as much as the steps themselves.
    events: list[dict] = []

    def ended():
        events.extend(stack.events(run_id, events[-1]["seq"] if events else 0))
        return any(event["kind"] in ENDINGS for event in events)

    try:
        wait_for(ended, 120 + 2 * len(shape.steps), f"run {run_id}", every=0.2)
    except TimeoutError:
        raise RunFailed(f"run {run_id} ({shape.name}) did not finish") from None
    user, kernel = (after - before for after, before in zip(stack.cpu(), used_before, strict=True))
    run = stack.run(run_id)
    if run["status"] != "completed":
        raise RunFailed(f"run {run_id} ({shape.name}) ended {run['status']}: {run['error']}")
    first = {e["kind"]: at(e) for e in reversed(events)}
    last = {e["kind"]: at(e) for e in events}
    dispatched = min(at(e) for e in events if e["kind"] == "step.dispatched")
    return Timing(
        run=last["run.completed"] - first["run.created"],
        dispatch=last["step.completed"] - dispatched,
        user=user,
        kernel=kernel,
    )


def measure_shapes(stack: Stack, shapes: list[Shape], repeat: int) -> dict[str, ShapeResult]:
    """`repeat` rounds of every shape, interleaved, after one warm-up run."""
    results = {shape.name: ShapeResult(shape) for shape in shapes}
    with contextlib.suppress(RunFailed):  # imports, connections, the repository's clone
        measure_run(stack, "bench", shapes[0], "warm-up")
    for index in range(repeat):
        for shape in shapes:
            try:
                results[shape.name].timings.append(measure_run(stack, "bench", shape, str(index)))
            except RunFailed as exc:
                results[shape.name].failures.append(str(exc))
    return results


@dataclass
class Concurrent:
    runs: int
    completed: int = 0
    failed: int = 0
    #: Not ended, and no step or run had finished for `stall` seconds: nothing moves them.
    stuck: int = 0
    #: Not ended at the time limit while others still ended: slow, not stuck.
    unfinished: int = 0
    per_minute: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_concurrently(
    stack: Stack, shape: Shape, count: int, *, stall: float = 60, limit: float = 240
) -> Concurrent:
    """Start `count` runs of `shape` at once (eight clients creating tasks) and follow them
    until every one has ended, no step or run has finished for `stall` seconds (the rest
    are stuck), or `limit` seconds passed (the rest are unfinished: slow, still moving)."""
    project = "benchscale"
    result = Concurrent(count)
    began = time.time()
    with ThreadPoolExecutor(8) as pool:
        titles = [f"bench:{shape.name}#{index}" for index in range(count)]
        list(pool.map(lambda title: stack.create_task(project, title), titles))
    ended, progress = 0, -1
    moved = time.monotonic()
    deadline = time.monotonic() + limit
    runs: list[dict] = []
    while ended < count:
        if time.monotonic() - moved > stall:
            result.stuck = count - ended
            break
        if time.monotonic() > deadline:
            result.unfinished = count - ended
            break
        time.sleep(1)
        runs = stack.runs(project)
        ended = sum(run["status"] in TERMINAL for run in runs)
        # Progress is any step or run finishing anywhere, not only a run ending.
        done_steps = stack.steps_done()
        now = done_steps + ended if done_steps >= 0 else progress
        if now != progress:
            progress, moved = now, time.monotonic()
    done = [run for run in runs if run["status"] == "completed"]
    result.completed = len(done)
    result.failed = sum(run["status"] in TERMINAL for run in runs) - len(done)
    left = [r for r in runs if r not in done]
    result.errors = [f"run {r['id']} {r['status']} ({r['phase']})" for r in left][:5]
    if done:
        latencies = sorted(
            datetime.fromisoformat(r["finished_at"]).timestamp()
            - datetime.fromisoformat(r["created_at"]).timestamp()
            for r in done
        )
        last = max(datetime.fromisoformat(r["finished_at"]).timestamp() for r in done)
        result.wall = last - began
        result.per_minute = len(done) / result.wall * 60
        result.p50 = statistics.median(latencies)
        result.p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    return result


class ConnectionPeak:
    """Samples pg_stat_activity for one database every 100 ms in a thread; keeps the peak."""

    def __init__(self, admin_url: str, database: str):
        self.admin_url = admin_url
        self.database = database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            while not self._stop.wait(0.1):
                self.peak = max(self.peak, conn.execute(query, [self.database]).fetchone()[0])

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
