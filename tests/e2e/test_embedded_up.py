"""The embedded default as a newcomer meets it: `orchestra up` with nothing configured
(SQLite, in-process worker and channel layer, demo model), then a task created through the
API is approved to completion. Runs everywhere: it needs no PostgreSQL or Redis."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.http_json import JsonApi
from tests.integration.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_ONLY = ("DATABASE_URL", "REDIS_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY")


@pytest.fixture
def embedded(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_ONLY}
    env |= {
        "ORCHESTRA_DATA_DIR": str(tmp_path / "var"),
        "ORCHESTRA_DEMO_LATENCY": "0.05",
        "ORCHESTRA_ADMIN_PASSWORD": "correct-horse-battery",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ORCHESTRA_EMBEDDED_WORKER", None)
    port = free_port()
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def serving():
        if server.poll() is not None:
            raise AssertionError((tmp_path / "up.log").read_text())
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(serving, 90, "`orchestra up` to serve /healthz", every=0.2)
        token = (
            subprocess.run(
                [sys.executable, "-m", "orchestra.cli", "token", "admin"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        yield base, token, tmp_path
    finally:
        server.terminate()
        server.wait(20)
        log.close()


def test_a_newcomer_runs_the_demo_end_to_end(embedded):
    base, token, tmp_path = embedded
    api = JsonApi(base, token)
    status, created = api.call("POST", "/api/tasks", {"project": "demo", "title": "Hello"})
    assert status == 201, created
    run_id = created["run"]["id"]

    wait_until(lambda: api.run(run_id)["status"] == "awaiting_approval", 60, "a checkpoint")
    for expected in ("tool_call", "deploy"):
        [checkpoint] = wait_until(lambda: api.pending(run_id), 60, f"the {expected} checkpoint")
        assert checkpoint["kind"] == expected
        status, body = api.call(
            "POST",
            f"/api/approvals/{checkpoint['id']}/decision",
            {"decision": "approve", "comment": "ok"},
        )
        assert status == 200, body
    final = wait_until(
        lambda: (r := api.run(run_id))["status"] in ("completed", "failed") and r, 60, "the end"
    )
    assert final["status"] == "completed", final
    assert final["demo_model"] is True
    steps = {s["key"]: s for s in final["steps"]}
    implement, tests = steps["implement"], steps["tests"]
    assert implement["started_at"] < tests["finished_at"]
    assert tests["started_at"] < implement["finished_at"]
    phases = {e["data"]["phase"] for e in api.events(run_id) if e["kind"] == "phase.changed"}
    assert phases == {"plan", "dispatch", "review", "report"}
