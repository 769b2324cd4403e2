"""`orchestra worker`'s processes: the threads dealt out, each a node of its own, and the
parent that passes signals on, starts again a process that died, stops when one fails at start,
and takes its processes with it when it is killed outright. Real processes throughout: the
children here are small programs that record what happened to them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestra.cli.processes import node_names, shares

ROOT = Path(__file__).resolve().parents[2]

# A child: counts its starts in <marks>/<name>.runs, writes the signal that stopped it to
# <marks>/<name>.stopped; "fail" ends at once (exit 3), "dies-once" ends on its own (exit 5)
# a while after its first start, "waits" runs until it is stopped.
CHILD = """
import os, pathlib, signal, sys, time
marks, name, mode = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = marks / f"{name}.runs"
run = int(runs.read_text()) + 1 if runs.exists() else 1
(marks / f"{name}.pid").write_text(str(os.getpid()))
def stop(signum, frame):
    (marks / f"{name}.stopped").write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
runs.write_text(str(run))
if mode == "fail":
    sys.exit(3)
if mode == "dies-once" and run == 1:
    time.sleep(0.5)
    sys.exit(5)
while True:
    signal.pause()
"""

# The parent: WorkerProcesses over the commands given as JSON, with the start grace given.
PARENT = """
import json, os, sys
from orchestra.cli.processes import Child, WorkerProcesses
commands = json.loads(sys.argv[1])
children = [Child(command, dict(os.environ)) for command in commands]
sys.exit(WorkerProcesses(children, start_grace=float(sys.argv[2])).run())
"""


def test_the_threads_are_dealt_out_and_every_process_is_a_node_of_its_own():
    assert shares(64, 2) == [32, 32]
    assert shares(64, 3) == [22, 21, 21]
    assert sum(shares(7, 4)) == 7
    assert node_names("bench@%h", 2) == ["bench-1@%h", "bench-2@%h"]
    assert node_names(None, 2) == ["celery-1@%h", "celery-2@%h"]
    assert node_names("solo", 1) == ["solo-1@%h"]


def _parent(marks: Path, *children: tuple[str, str], grace: float = 10.0) -> subprocess.Popen:
    """The parent of `children` (name, mode); a child that ends within `grace` seconds of its
    start failed at start ("dies-once" runs longer than 0.3 s)."""
    commands = [[sys.executable, "-c", CHILD, str(marks), name, mode] for name, mode in children]
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, json.dumps(commands), str(grace)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _runs(marks: Path, name: str) -> int:
    path = marks / f"{name}.runs"
    text = path.read_text() if path.exists() else ""
    return int(text) if text else 0  # empty while the child writes it


def test_a_process_that_dies_is_started_again_and_a_stop_reaches_every_one(tmp_path):
    parent = _parent(tmp_path, ("a", "waits"), ("b", "dies-once"), grace=0.3)
    try:
        _until(lambda: _runs(tmp_path, "b") == 2, "the process that died to start again")
        assert _runs(tmp_path, "a") == 1
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=20)
    finally:
        parent.kill()
    assert parent.returncode == 0, out
    assert "ended on its own (exit 5): starting it again" in out
    # Celery's warm shutdown is SIGTERM: each process got it from the parent.
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.stopped").read_text() == str(int(signal.SIGTERM))


def test_a_process_that_fails_at_start_stops_the_others_and_the_parent_fails(tmp_path):
    parent = _parent(tmp_path, ("a", "waits"), ("b", "fail"))
    try:
        out, _ = parent.communicate(timeout=20)
    finally:
        parent.kill()
    assert parent.returncode == 3, out
    assert "failed at start (exit 3)" in out
    assert _runs(tmp_path, "b") == 1  # not started again
    _until(lambda: (tmp_path / "a.stopped").exists(), "the other process to be stopped")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)
def test_a_parent_killed_outright_takes_its_processes_with_it(tmp_path):
    parent = _parent(tmp_path, ("a", "waits"), ("b", "waits"))
    _until(lambda: _runs(tmp_path, "a") and _runs(tmp_path, "b"), "both processes to start")
    pids = [int((tmp_path / f"{name}.pid").read_text()) for name in ("a", "b")]
    parent.kill()
    parent.wait(timeout=20)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # Reparented and killed, a zombie until its new parent reaps it: gone as a worker.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:  # reaped meanwhile
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    _until(lambda: all(gone(pid) for pid in pids), "the processes to die with their parent")
    assert not any((tmp_path / f"{name}.stopped").exists() for name in ("a", "b"))
