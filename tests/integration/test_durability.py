"""Durable execution on a split deployment: real Celery workers and beat on PostgreSQL and
Redis. A worker SIGKILLed in any phase of a run (planning, a step, its checks, its review,
its merge, the deploy, the report) loses nothing: the run finishes (a deploy whose outcome is
unknown asks a person first), and no command or deploy runs twice. A Redis outage delays
work and fails no request."""

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agents.models import AgentRun, ToolCall
from approvals.models import Checkpoint
from orchestra import engine
from orchestra.engine.workspaces import releases_for, repository_for
from orchestra.models import Activity, ApiToken, Project, Run, Step

from .conftest import free_port, start_web, wait_until
from .test_deploy_once import confined, kill_group, start_worker_in_own_group

pytestmark = pytest.mark.django_db(transaction=True)

LEASE, SWEEP = 2, 1

# The project's deploy command: says where its process group is, waits (the window in which
# the test kills it, before anything shipped), then ships and counts the release.
SLOW_DEPLOY = """\
import os
import sys
import time
from pathlib import Path

counter, marker = sys.argv[1], sys.argv[2]
Path(marker + ".tmp").write_text(str(os.getpgid(0)))
os.replace(marker + ".tmp", marker)
time.sleep(float(sys.argv[3]))
with open(counter, "a") as handle:
    handle.write(os.environ["ORCHESTRA_DEPLOY_KEY"] + "\\n")
print("released")
"""


@pytest.fixture
def durable_env(processes, live_settings):
    """Short leases for every process (and this one, which decides checkpoints), a demo model
    slow enough for each phase to be caught."""
    live_settings.ORCHESTRA_LEASE = LEASE
    extra = {
        "ORCHESTRA_LEASE": str(LEASE),
        "ORCHESTRA_SWEEP_INTERVAL": str(SWEEP),
        "ORCHESTRA_DEMO_LATENCY": "0.6",
    }
    processes.env = {**processes.env, **extra}
    return processes


def _repository_lock(project: Project):
    """Take the repository's workspace lock, as the merge queue does (blocks merges)."""
    common = repository_for(project) / ".git"
    fd = os.open(common / "orchestra-workspace.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_worker_killed_in_every_phase_loses_nothing(demo, owner, approver, durable_env, tmp_path):
    processes = durable_env
    script = tmp_path / "scripts" / "slow_deploy.py"
    script.parent.mkdir()
    script.write_text(SLOW_DEPLOY)
    processes.env["ORCHESTRA_SANDBOX_READ_ONLY"] = str(script.parent)
    releases = releases_for(demo)  # the one folder a sandboxed deploy may write
    releases.mkdir(parents=True, exist_ok=True)
    counter, marker = releases / "deploys.txt", releases / "deploying"
    deploy_command = shlex.join([sys.executable, str(script), str(counter), str(marker), "4"])
    slow_tests = "sh -c 'sleep 3 && python3 -m unittest discover -s tests -t . -v'"
    Project.objects.filter(pk=demo.pk).update(
        deploy_command=deploy_command, test_command=slow_tests
    )
    demo.refresh_from_db()
    processes.start("beat", "beat")
    generation = [0]
    worker = [start_worker_in_own_group(processes, "worker-0")]

    def restart_worker() -> None:
        kill_group(worker[0].pid)
        worker[0].wait(timeout=20)
        processes.running.pop(f"worker-{generation[0]}")
        generation[0] += 1
        worker[0] = start_worker_in_own_group(processes, f"worker-{generation[0]}")

    run = engine.start_run(owner, demo, "Survive every kill")

    def running(purpose: str, **where) -> bool:
        return AgentRun.objects.filter(
            run=run, purpose=purpose, status=AgentRun.Status.RUNNING, **where
        ).exists()

    def checks_running() -> bool:
        verify = Step.objects.filter(run=run, key="verify").first()
        return (
            verify is not None
            and verify.status == Step.Status.IN_REVIEW
            and not verify.checks
            and Activity.objects.filter(
                step=verify, kind=Activity.Kind.REVIEW, status=Activity.Status.RUNNING
            ).exists()
        )

    def merge_blocked() -> bool:
        return Activity.objects.filter(
            step__run=run,
            step__key="implement",
            kind=Activity.Kind.MERGE,
            status=Activity.Status.RUNNING,
        ).exists()

    def deploying() -> bool:
        return (
            marker.exists()
            and ToolCall.objects.filter(
                run=run, tool="deploy", status=ToolCall.Status.RUNNING
            ).exists()
        )

    phases = {
        "planning": lambda: running(AgentRun.Purpose.PLAN),
        "a step": lambda: running(AgentRun.Purpose.STEP, step__key="research"),
        "a review": lambda: running(AgentRun.Purpose.REVIEW, step__key="research"),
        "a merge": merge_blocked,
        "checks": checks_running,
        "the deploy": deploying,
        "the report": lambda: running(AgentRun.Purpose.REPORT),
    }
    killed: list[str] = []
    lock = None
    deadline = time.monotonic() + 300
    while True:
        run.refresh_from_db()
        if run.is_terminal or time.monotonic() > deadline:
            break
        implement = Step.objects.filter(run=run, key="implement").first()
        waiting_for_merge = implement is not None and implement.status == Step.Status.IN_REVIEW
        if lock is None and "a merge" not in killed and waiting_for_merge:
            lock = _repository_lock(demo)  # its merge waits for this
        for name, caught in phases.items():
            if name not in killed and caught():
                if name == "the deploy" and not confined():
                    kill_group(int(marker.read_text()))  # unconfined, in its own session
                restart_worker()
                killed.append(name)
                if name == "a merge":
                    os.close(lock)
        for checkpoint in Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING):
            engine.decide_checkpoint(approver, checkpoint, "approve")
        time.sleep(0.05)

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, (run.status, run.error, killed)
    assert set(killed) == set(phases), f"phases never caught: {set(phases) - set(killed)}"
    reclaimed = {e.data["activity"] for e in run.events.filter(kind="activity.reclaimed")}
    assert {"plan", "step", "review", "merge", "report"} <= reclaimed, reclaimed
    # The deploy that was killed before it shipped asked a person, who had it run again:
    # exactly one release, under the call's one idempotency key.
    lost = Checkpoint.objects.get(run=run, kind=Checkpoint.Kind.DEPLOY, shown__outcome_unknown=True)
    assert lost.status == Checkpoint.Status.APPROVED
    [deploy] = ToolCall.objects.filter(run=run, tool="deploy")
    assert counter.read_text().splitlines() == [deploy.idempotency_key]
    assert deploy.status == ToolCall.Status.SUCCEEDED, deploy.result
    # Every command ran at most once: one record per call, none caught running twice.
    commands = ToolCall.objects.filter(run=run, risk__in=["exec", "deploy"])
    keys = list(commands.values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    verify = Step.objects.get(run=run, key="verify")
    assert [c["attempt"] for c in verify.checks] == [verify.attempts]


def _api(base: str, token: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(payload).encode() if payload is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST" if payload is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _redis(port: int, logs: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=open(logs / f"redis-{port}.log", "ab"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    import redis

    wait_until(lambda: _pings(redis.Redis(port=port, socket_timeout=0.5)), 20, "Redis to answer")
    return process


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_a_redis_outage_delays_work_and_fails_no_request(
    demo, owner, approver, durable_env, tmp_path
):
    """Our own Redis, stopped for 5 s while runs are in flight and a decision is posted.
    Everything goes through the processes (the API for tasks and decisions)."""
    processes = durable_env
    port = free_port()
    redis_server = _redis(port, tmp_path)
    # No phase is caught here: the demo model may be quick.
    processes.env = {
        **processes.env,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "ORCHESTRA_DEMO_LATENCY": "0.1",
    }
    try:
        processes.start("beat", "beat")
        processes.start("worker", "worker", "--concurrency", "8")
        # Its broker is this test's own Redis, so readiness is read from its log.
        wait_until(lambda: " ready." in processes.log("worker"), 60, "the worker to be ready")
        base = start_web(processes)
        owner_token, approver_token = ApiToken.issue(owner), ApiToken.issue(approver)
        runs = []
        for n in range(3):
            status, body = _api(
                base, owner_token, "/api/tasks", {"project": "demo", "title": f"Outage {n}"}
            )
            assert status in (200, 201), body
            runs.append(body["run"]["id"])
        first = wait_until(
            lambda: Checkpoint.objects.filter(run_id=runs[0], status="pending").first(),
            120,
            "the first run's checkpoint",
        )

        redis_server.terminate()
        redis_server.wait(timeout=20)
        stopped = time.monotonic()
        status, body = _api(
            base, approver_token, f"/api/approvals/{first.pk}/decision", {"decision": "approve"}
        )
        assert status == 200, body  # recorded; the broker's refusal is not the caller's
        first.refresh_from_db()
        assert first.status == Checkpoint.Status.APPROVED
        wait_until(lambda: time.monotonic() - stopped >= 5, 10, "the outage to last 5 s")
        redis_server = _redis(port, tmp_path)
        back = time.monotonic()

        def all_done() -> bool:
            for checkpoint in Checkpoint.objects.filter(run_id__in=runs, status="pending"):
                _api(
                    base,
                    approver_token,
                    f"/api/approvals/{checkpoint.pk}/decision",
                    {"decision": "approve"},
                )
            return all(Run.objects.get(pk=pk).is_terminal for pk in runs)

        wait_until(all_done, 180, "every run to end after Redis came back", every=0.2)
        print(f"\nall {len(runs)} runs ended {time.monotonic() - back:.1f} s after Redis returned")
        for pk in runs:
            finished = Run.objects.get(pk=pk)
            assert finished.status == Run.Status.COMPLETED, (pk, finished.status, finished.error)
    finally:
        redis_server.kill()
        redis_server.wait()
