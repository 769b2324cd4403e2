"""The embedded default as a newcomer meets it: `orchestra up` with nothing configured
(SQLite, in-process worker and channel layer, demo model), then a task created through the
API is approved to completion. Runs everywhere: it needs no PostgreSQL or Redis."""

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
