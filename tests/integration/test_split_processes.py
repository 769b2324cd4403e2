"""The whole cycle with the processes split: daphne (`orchestra web`), a separate
`orchestra worker`, PostgreSQL and Redis, through the JSON API. Every process is stopped and
restarted while a checkpoint waits; approving afterwards finishes the run."""

import pytest

from orchestra.models import ApiToken
from tests.http_json import JsonApi as Api

from .conftest import start_web, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def overlapping(a: dict, b: dict) -> bool:
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def test_split_processes_survive_restarts_while_a_checkpoint_waits(demo, owner, processes):
    token = ApiToken.issue(owner)
    start_worker(processes)
    api = Api(start_web(processes), token)

    status, created = api.call("POST", "/api/tasks", {"project": "demo", "title": "Split run"})
    assert status == 201, created
    run_id = created["run"]["id"]
    wait_until(lambda: api.run(run_id)["status"] == "awaiting_approval", 60, "the exec checkpoint")
    [first] = api.pending(run_id)
    assert first["tool"] == "run_command"

    # Everything restarts while the checkpoint waits: state lives in the database.
    processes.stop("worker")
    processes.stop("web")
    start_worker(processes, "worker")
    api = Api(start_web(processes, "web"), token)

    status, decided = api.call(
        "POST", f"/api/approvals/{first['id']}/decision", {"decision": "approve"}
    )
    assert status == 200, decided
    again = api.call("POST", f"/api/approvals/{first['id']}/decision", {"decision": "reject"})
    assert again[0] == 409

    def deploy_checkpoint():
        return [a for a in api.pending(run_id) if a["kind"] == "deploy"]

    [deploy] = wait_until(deploy_checkpoint, 60, "the deploy checkpoint")
    status, _ = api.call("POST", f"/api/approvals/{deploy['id']}/decision", {"decision": "approve"})
    assert status == 200
    run = wait_until(
        lambda: (r := api.run(run_id))["status"] in ("completed", "failed") and r, 60, "the end"
    )
    assert run["status"] == "completed", run
    assert "deploy" in run["report"]
    steps = {s["key"]: s for s in run["steps"]}
    assert overlapping(steps["implement"], steps["tests"]), steps
    events = api.events(run_id)
    phases = [e["data"]["phase"] for e in events if e["kind"] == "phase.changed"]
    assert {"plan", "dispatch", "review", "report"} <= set(phases)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # The worker thread that merged `research` carried on one of the two steps that merge made
    # due, without the broker (`queue.carrying_on`); the other went through the broker.
    started_on: dict[str, str] = {}
    for event in events:
        if event["kind"] == "step.started":
            started_on.setdefault(event["step"], event["data"]["worker"])  # its first attempt
    assert started_on["research"] in (started_on["implement"], started_on["tests"]), started_on
