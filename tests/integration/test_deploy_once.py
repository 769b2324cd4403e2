"""A deploy runs once even when its worker dies in the middle of it: the call was recorded
as running before it started, so the worker that takes the step over never runs it again,
and the deploy's receipt confirms what the dead worker shipped."""

import os
import shlex
import signal
import subprocess
import sys
from contextlib import suppress
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import ToolCall
from approvals.models import Checkpoint
from orchestra import engine
from orchestra.engine import decide_checkpoint
from orchestra.engine.workspaces import releases_for
from orchestra.models import Project, Run

from .conftest import ROOT, Processes, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Run as the project's deploy command, in the exported tree (in the sandbox, which lets it
# write its releases folder only), with the counter and marker files, kept there, as
# arguments. It does its whole work (release, receipt, counter), then hangs, as a deploy
# stuck in a health check would; the marker says the work is done and names the
# deploy's process group (the deploy tool starts it in a session of its own).
HANGING_DEPLOY = """\
import json
import os
import shutil
import sys
import time
from pathlib import Path

counter, marker = sys.argv[1], sys.argv[2]
folder = Path(os.environ["ORCHESTRA_RELEASES"]) / os.environ["ORCHESTRA_ENVIRONMENT"]
folder.mkdir(parents=True, exist_ok=True)
target = folder / f"release-{len(list(folder.glob('release-*'))) + 1:04d}"
shutil.copytree(".", target)
key, commit = os.environ["ORCHESTRA_DEPLOY_KEY"], os.environ["ORCHESTRA_COMMIT"]
(target / "RELEASE.json").write_text(json.dumps({"commit": commit, "key": key}))
result = f"released {target.name} of {commit[:10]}"
receipt = Path(os.environ["ORCHESTRA_RECEIPT"])
receipt.with_suffix(".tmp").write_text(json.dumps({"key": key, "result": result}))
os.replace(receipt.with_suffix(".tmp"), receipt)
with open(counter, "a") as handle:
    handle.write(target.name + "\\n")
Path(marker + ".tmp").write_text(str(os.getpgid(0)))
os.replace(marker + ".tmp", marker)
time.sleep(600)
print(result)
"""


def start_worker_in_own_group(processes: Processes, name: str) -> subprocess.Popen:
    """`orchestra worker` leading a process group of its own, so the test can kill the
    group without killing itself; waits until it answers a ping."""
    from orchestra.celery import app

    with open(processes.logs / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", "worker", "--concurrency", "8"],
            cwd=ROOT,
            env=processes.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.running[name] = process  # stop_all kills it if the test fails early

    def answers():
        if process.poll() is not None:
            raise AssertionError(f"worker exited:\n{processes.log(name)[-3000:]}")
        return app.control.ping(timeout=0.5)

    wait_until(answers, 60, "the Celery worker to answer a ping", every=0.2)
    return process


def confined() -> bool:
    from agents.sandbox import reset_sandbox, sandbox_status

    reset_sandbox()
    return sandbox_status()["confined"]


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_status(run_id: int, processes: Processes, workers: list[str]) -> str:
    """The run's status; fails at once, with the log, when a worker task crashed."""
    for name in workers:
        log = processes.log(name)
        if "raised unexpected" in log:
            raise AssertionError(f"a task crashed on {name}:\n{log[-4000:]}")
    return Run.objects.get(pk=run_id).status


def approve(approver, run_id: int, kind: str, check) -> None:
    def waiting():
        check()
        return Checkpoint.objects.filter(run_id=run_id, kind=kind, status="pending").first()

    decide_checkpoint(approver, wait_until(waiting, 90, f"the {kind} checkpoint"), "approve")


def test_a_deploy_whose_worker_is_killed_is_not_run_again(
    demo, owner, approver, processes, tmp_path
):
    script = tmp_path / "scripts" / "hanging_deploy.py"
    script.parent.mkdir()
    script.write_text(HANGING_DEPLOY)
    processes.env["ORCHESTRA_SANDBOX_READ_ONLY"] = str(script.parent)
    releases = releases_for(demo)
    releases.mkdir(parents=True, exist_ok=True)
    counter, marker = releases / "deploys.txt", releases / "deployed"
    command = shlex.join([sys.executable, str(script), str(counter), str(marker)])
    Project.objects.filter(pk=demo.pk).update(deploy_command=command)
    workers = ["worker-1"]
    first = start_worker_in_own_group(processes, "worker-1")

    run = engine.start_run(owner, demo, "Deploy once")

    def healthy():
        return run_status(run.pk, processes, workers)

    approve(approver, run.pk, Checkpoint.Kind.TOOL_CALL, healthy)
    approve(approver, run.pk, Checkpoint.Kind.DEPLOY, healthy)
    wait_until(lambda: healthy() and marker.exists(), 90, "the deploy to do its work")

    # The worker dies mid-deploy; the hanging deploy, in a session of its own, goes too.
    kill_group(first.pid)
    first.wait(timeout=20)
    processes.running.pop("worker-1")
    if not confined():  # in the sandbox it died with its worker (bubblewrap's own PID space)
        kill_group(int(marker.read_text()))
    deploy = ToolCall.objects.get(run=run, tool="deploy")
    assert deploy.status == ToolCall.Status.RUNNING

    workers.append("worker-2")
    start_worker(processes, "worker-2")
    assert engine.reclaim_expired_leases(now=timezone.now() + timedelta(hours=1)) == 1
    status = wait_until(
        lambda: (s := healthy()) in Run.TERMINAL and s, 90, "the run to end after the take-over"
    )

    run.refresh_from_db()
    assert status == Run.Status.COMPLETED, run.error
    assert counter.read_text().splitlines() == ["release-0001"]
    folder = releases_for(demo) / "demo"
    assert sorted(p.name for p in folder.iterdir()) == ["release-0001"]
    [deploy] = ToolCall.objects.filter(run=run, tool="deploy")
    assert deploy.status == ToolCall.Status.SUCCEEDED, deploy.result
    assert deploy.result.startswith("deployed; confirmed by its receipt"), deploy.result
    assert "released release-0001" in deploy.result
    taken_over = run.events.get(kind="step.taken_over")
    assert taken_over.step.key == "deploy"
    assert taken_over.data["from"] != taken_over.data["to"]
