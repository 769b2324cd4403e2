"""The embedded default as a newcomer meets it: `orchestra up` with nothing configured
(SQLite, in-process worker and channel layer, demo model), then a task created through the
API is approved to completion. Runs everywhere: it needs no PostgreSQL or Redis."""

import time

import pytest

from tests.embedded_server import embedded_server
from tests.http_json import JsonApi
from tests.integration.conftest import wait_until


@pytest.fixture
def embedded(tmp_path):
    with embedded_server(
        tmp_path, ORCHESTRA_DEMO_LATENCY="0.05", ORCHESTRA_ADMIN_PASSWORD="correct-horse-battery"
    ) as running:
        yield running.base, running.token("admin"), tmp_path


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


def test_a_stop_waits_seconds_not_for_a_model_call_and_the_next_start_takes_over(tmp_path):
    """SIGTERM while the planner's model call takes a minute: `orchestra up` stops serving,
    gives the call its grace (1 s here) and exits, saying what it left; the next start plans
    the run again and it reaches its first checkpoint. (Without the grace the process waited
    for the call: the stop below timed out.)"""
    slow = {"ORCHESTRA_DEMO_LATENCY": "60", "ORCHESTRA_STOP_GRACE": "1"}
    with embedded_server(tmp_path, ORCHESTRA_ADMIN_PASSWORD="correct-horse-battery", **slow) as up:
        api = JsonApi(up.base, up.token("admin"))
        status, created = api.call("POST", "/api/tasks", {"project": "demo", "title": "Hello"})
        assert status == 201, created
        run_id = created["run"]["id"]
        wait_until(
            lambda: any(e["kind"] == "phase.changed" for e in api.events(run_id)), 30, "planning"
        )
        started = time.monotonic()
        up.process.terminate()
        assert up.process.wait(15) == 0
        took = time.monotonic() - started
        log = up.log.read_text()
    assert took < 10, f"{took:.1f} s to stop"
    assert "Stopping: 1 task(s) of the engine get up to 1 s to end" in log
    assert "Stopped with 1 task(s) unfinished: the next start takes their work over." in log

    with embedded_server(tmp_path, ORCHESTRA_DEMO_LATENCY="0.05") as again:
        api = JsonApi(again.base, again.token("admin"))
        wait_until(lambda: api.run(run_id)["status"] == "awaiting_approval", 60, "a checkpoint")
        assert "run.recovered" in {e["kind"] for e in api.events(run_id)}
