"""The two ways Orchestra runs, started as real processes for the benchmark.

- embedded: `orchestra up`, one process serving HTTP and running every task on its in-process
  thread pool (ORCHESTRA_EMBEDDED_WORKER=thread, the default without REDIS_URL), on its
  default database, SQLite in the data folder;
- split: `orchestra web` (daphne), one `orchestra worker` (Celery, thread pool; a process
  per core, as by default) and `orchestra beat`, as docker-compose.yml deploys them, on
  PostgreSQL, with Redis as broker and channel layer.

Both talk to the same loopback model server with streaming on (the default) and work on a
clone of the same repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Inherited settings that would change what is measured: each stack sets its own.
_CLEARED = (
    "DATABASE_URL",
    "REDIS_URL",
    "ORCHESTRA_EMBEDDED_WORKER",
    "ORCHESTRA_MODEL_STREAM",
    "ORCHESTRA_USE_DEMO_MODEL",
    "ORCHESTRA_SQLITE_PATH",
    "ORCHESTRA_WORKSPACES",
    "DJANGO_SETTINGS_MODULE",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(
        self,
        mode: str,
        workdir: Path,
        model_url: str,
        *,
        database_url: str = "",
        redis_url: str = "",
        max_plan_steps: int = 250,
        worker_threads: int = 64,
    ):
        self.mode = mode
        self.worker_threads = worker_threads
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        self.env = env | {
            "OPENAI_BASE_URL": model_url,
            "OPENAI_API_KEY": "bench",
            "ORCHESTRA_MODEL": "bench",
            "ORCHESTRA_DATA_DIR": str(workdir),
            "ORCHESTRA_ADMIN_PASSWORD": "bench-password",
            "ORCHESTRA_MAX_PLAN_STEPS": str(max_plan_steps),
            "ORCHESTRA_LOG_LEVEL": "WARNING",
        }
        if mode == "split":
            self.env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        self.database_url = database_url
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = ""

    @property
    def database(self) -> str:
        return "SQLite" if self.mode == "embedded" else "PostgreSQL"

    def prepare(self, repository: Path, projects: list[str]) -> None:
        """Migrate, seed, create the projects on `repository`; keep the admin's token."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "stack_setup.py"), str(repository), *projects],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise SystemExit(f"{self.mode}: setting up the database failed:\n{result.stderr}")
        self.token = result.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        address = ("--host", "127.0.0.1", "--port", str(self.port))
        if self.mode == "embedded":
            self._spawn("up", "up", *address)
        else:
            threads = str(self.worker_threads)
            self._spawn("worker", "worker", "--concurrency", threads, "--hostname", "bench@%h")
            # As deployed: beat schedules the sweep that sends lost or expired work again.
            self._spawn("beat", "beat")
            self._spawn("web", "web", *address)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"{self.mode}: {name} exited:\n{self.log(name)[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5) as response:  # noqa: S310
                    if json.loads(response.read())["ok"]:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.mode}: not healthy within 90 s")

    def _spawn(self, name: str, *argv: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", *argv],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cpu(self) -> tuple[float, float]:
        """CPU the stack's processes have used so far, (user, kernel) in seconds."""
        used = [cpu_seconds(p.pid) for p in self.processes.values()]
        return sum(u for u, _ in used), sum(k for _, k in used)

    def pids(self) -> dict[str, int]:
        """The processes whose memory is reported: `up`, or `web` and `worker`."""
        return {name: p.pid for name, p in self.processes.items() if name != "beat"}

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    # -- the API

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())

    def create_task(self, project: str, title: str) -> int:
        return self.api("POST", "/api/tasks", {"project": project, "title": title})["run"]["id"]

    def run(self, run_id: int) -> dict:
        return self.api("GET", f"/api/runs/{run_id}")

    def events(self, run_id: int, after: int = 0) -> list[dict]:
        """The run's events after seq `after`, in order (every page)."""
        events: list[dict] = []
        while True:
            page = self.api("GET", f"/api/runs/{run_id}/events?after={after}&limit=5000")
            events += page["events"]
            if len(page["events"]) < 5000:
                return events
            after = events[-1]["seq"]

    def runs(self, project: str) -> list[dict]:
        """The project's runs, newest first (the concurrent runs fit in one page)."""
        return self.api("GET", f"/api/runs?project={project}&limit=500")["runs"]

    def steps_done(self) -> int:
        """Steps finished in the whole database: how the benchmark sees that runs still move
        when none has ended yet (100 runs at once all progress before the first ends). Read
        from the database directly, so watching costs the server nothing."""
        query = "SELECT count(*) FROM orchestra_step WHERE status = 'done'"
        if self.mode == "embedded":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.workdir / "orchestra.sqlite3")) as conn:
                return conn.execute(query).fetchone()[0]
        import psycopg

        try:
            with psycopg.connect(self.database_url) as conn:
                return conn.execute(query).fetchone()[0]
        except psycopg.OperationalError:  # a shared server out of connections: unknown now
            return -1


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU a process has used since it started, (user, kernel) in seconds, with its child
    processes' added: those alive (`orchestra worker` runs one per core) and those it has
    waited for (git commands). Kernel time is shown apart: on some file systems creating
    files costs more kernel time than anything the engine does (see the worktrees' parking)."""
    user = kernel = 0.0
    for process in _and_children(pid):
        process_user, process_kernel = _cpu_of(process)
        user, kernel = user + process_user, kernel + process_kernel
    return user, kernel


def _cpu_of(pid: int) -> tuple[float, float]:
    """One process's (user, kernel) seconds, the children it waited for included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # After the name: state is field 3, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
    utime, stime, cutime, cstime = (int(value) / tick for value in fields[11:15])
    return utime + cutime, stime + cstime


def peak_rss_kb(pid: int) -> int:
    """A process's peak resident memory since it started (the kernel's VmHWM), in kB, with
    its child processes' added (`orchestra worker` runs one per core; the sum of peaks, which
    need not have come at once); 0 once it is gone, so read it before stopping the stack."""
    return sum(_peak_of(process) for process in _and_children(pid))


def _peak_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _and_children(pid: int) -> list[int]:
    """`pid` and its descendants alive now; [] when it is gone."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(process for child in children for process in _and_children(int(child)))]


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(every)  # the figures come from the events' times, not from this poll
    raise TimeoutError(f"timed out waiting for {what}")
