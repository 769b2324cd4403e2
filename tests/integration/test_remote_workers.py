"""Workers on machines without a shared disk: daphne serves the central repositories over
HTTP, a central worker consumes `orchestra` (planning, merges, the report) beside it, and two
remote workers, each with its own data folder, workspaces and credential, consume `steps`.
The demo run (parallel steps, an exec and a deploy checkpoint) completes; each step's work
reaches the central run branch through a push, and the steps ran on both remote workers."""

import socket

import pytest

from agents import workspace as git
from agents.models import AgentRun
from orchestra.celery import app
from orchestra.credentials import issue_worker_token
from orchestra.models import ApiToken, Run
from tests.http_json import JsonApi as Api

from .conftest import Processes, start_web, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DEMO_STEPS = {"research", "implement", "tests", "verify", "deploy"}


def start_queue_worker(processes: Processes, name: str, queues: str, env: dict) -> int:
    """Start `orchestra worker --queues QUEUES --concurrency 1` as node `name@host`, wait
    until that node answers a ping; returns its process id (the records' worker names hold
    it)."""
    node = f"{name}@{socket.gethostname()}"
    process = processes.start(
        name, "worker", "--queues", queues, "--concurrency", "1", "--hostname", node, env=env
    )

    def answers():
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{processes.log(name)[-3000:]}")
        return app.control.ping(destination=[node], timeout=0.5)

    wait_until(answers, 60, f"{name} to answer a ping", every=0.2)
    return process.pid


def test_remote_workers_run_the_steps_and_push_their_work(demo, owner, processes, tmp_path):
    central_workspaces = tmp_path / "workspaces"
    base = start_web(processes)
    start_queue_worker(processes, "central", "orchestra", processes.env)
    remote_pids = {}
    for name in ("box-1", "box-2"):
        env = {
            **processes.env,
            "ORCHESTRA_DATA_DIR": str(tmp_path / name / "data"),
            "ORCHESTRA_WORKSPACES": str(tmp_path / name / "workspaces"),
            "ORCHESTRA_GIT_REMOTE": f"{base}/git",
            "ORCHESTRA_GIT_TOKEN": issue_worker_token(name),
        }
        remote_pids[start_queue_worker(processes, name, "steps", env)] = name

    api = Api(base, ApiToken.issue(owner))
    status, created = api.call("POST", "/api/tasks", {"project": "demo", "title": "Remote run"})
    assert status == 201, created
    run_id = created["run"]["id"]

    def approve_what_waits():
        run = api.run(run_id)
        if run["status"] in ("completed", "failed", "cancelled", "stopped"):
            return run
        for approval in api.pending(run_id):
            api.call("POST", f"/api/approvals/{approval['id']}/decision", {"decision": "approve"})
        return None

    run = wait_until(approve_what_waits, 180, "the run to end", every=0.2)
    assert run["status"] == "completed", (run, processes.log("box-1")[-3000:])

    # Every step's work is on the central run branch, merged from the branch it pushed.
    stored = Run.objects.get(pk=run_id)
    central = central_workspaces / "demo"
    steps = {step.key: step for step in stored.steps.all()}
    assert set(steps) == DEMO_STEPS
    for step in steps.values():
        assert git.head_commit(central, step.branch) == step.head_commit, step.key
        assert step.merged_commit, step.key
    assert git.head_commit(central, stored.branch) == stored.head_commit
    assert git.file_at(central, stored.branch, "src/remote_run.py")
    assert git.file_at(central, stored.branch, "tests/test_remote_run.py")

    # The steps ran on both remote workers, never on the central one.
    ran_on = {
        remote_pids.get(int(agent_run.worker.split(":")[1]), agent_run.worker)
        for agent_run in AgentRun.objects.filter(run=stored, purpose=AgentRun.Purpose.STEP)
    }
    assert ran_on == {"box-1", "box-2"}, ran_on

    # The central data folder holds no step worktree; each remote folder its own clone.
    central_worktrees = central_workspaces / "demo-worktrees" / f"run-{run_id}"
    left = [p.name for p in central_worktrees.iterdir()] if central_worktrees.is_dir() else []
    assert set(left) <= {"_merge"}, left
    for name in ("box-1", "box-2"):
        clone = tmp_path / name / "workspaces" / "demo"
        assert (clone / ".git").is_dir(), name
        config = (clone / ".git" / "config").read_text()
        assert f"{base}/git/demo.git" in config and "orcw_" not in config
