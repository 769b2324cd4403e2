"""Integration fixtures: PostgreSQL, Redis and real processes (Celery worker, daphne).

These tests run when DATABASE_URL points at PostgreSQL and REDIS_URL answers (CI sets both);
otherwise they are skipped with the reason. Processes started here see the pytest test
database through DATABASE_URL, so tests that use them need `transaction=True`.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


def services_missing() -> str | None:
    """Why the integration services are unavailable, or None when they are reachable."""
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return "DATABASE_URL is not a PostgreSQL URL (CI sets it; see .ci/run)"
    if not os.environ.get("REDIS_URL"):
        return "REDIS_URL is not set (CI sets it; see .ci/run)"
    if not _redis_answers(os.environ["REDIS_URL"]):
        return f"Redis at {os.environ['REDIS_URL']} does not answer"
    return None


def pytest_collection_modifyitems(config, items):
    reason = services_missing()
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"integration: {reason}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def live_settings(settings, transactional_db, tmp_path):
    """Engine settings for tests whose work runs on a real worker over Redis."""
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    settings.ORCHESTRA_WORKSPACES = tmp_path / "workspaces"
    return settings


@pytest.fixture
def process_env(live_settings, tmp_path) -> dict:
    """Environment for child processes: the test database, Redis, the demo model."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "ORCHESTRA_DATA_DIR": str(tmp_path / "data"),
        "ORCHESTRA_WORKSPACES": str(live_settings.ORCHESTRA_WORKSPACES),
        "ORCHESTRA_DEMO_LATENCY": "0.05",
        "ORCHESTRA_USE_DEMO_MODEL": "1",
        "ORCHESTRA_EMBEDDED_WORKER": "",
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Processes:
    """Starts and stops the real processes a test needs, and always cleans them up."""

    def __init__(self, env: dict, logs: Path):
        self.env = env
        self.logs = logs
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *argv: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", *argv],
            cwd=ROOT,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running[name] = process
        return process

    def stop(self, name: str, *, kill: bool = False) -> None:
        process = self.running.pop(name)
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name, kill=True)


@pytest.fixture
def processes(process_env, tmp_path) -> Iterator[Processes]:
    procs = Processes(process_env, tmp_path)
    yield procs
    procs.stop_all()


def start_worker(processes: Processes, name: str = "worker") -> None:
    """Start `orchestra worker` and wait until it answers a ping."""
    from orchestra.celery import app

    processes.start(name, "worker", "--concurrency", "64")

    def answers():
        if processes.running[name].poll() is not None:
            raise AssertionError(f"worker exited:\n{processes.log(name)[-3000:]}")
        return app.control.ping(timeout=0.5)

    wait_until(answers, 60, "the Celery worker to answer a ping", every=0.2)


def start_web(processes: Processes, name: str = "web") -> str:
    """Start `orchestra web` on a free port and wait for /healthz; returns the base URL."""
    import urllib.error
    import urllib.request

    port = free_port()
    processes.start(name, "web", "--host", "127.0.0.1", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def healthy():
        if processes.running[name].poll() is not None:
            raise AssertionError(f"web exited:\n{processes.log(name)[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:  # noqa: S310
                return response.status == 200
        except urllib.error.HTTPError as error:
            return error.code == 503  # serving; the worker may not be up yet
        except OSError:
            return False

    wait_until(healthy, 60, "the web process to serve /healthz", every=0.1)
    return base
