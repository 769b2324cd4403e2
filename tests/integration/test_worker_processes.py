"""`orchestra worker --processes N`: N Celery workers, each a process with its share of the
threads, which stop together: on SIGTERM (a warm shutdown), when one of them stops, and when
the process that started them is killed."""

import os
import signal
from pathlib import Path

from .conftest import wait_until


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def _gone(pid: int) -> bool:
    """No such process, or one that has ended and waits only to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _start_pair(processes, name: str):
    from orchestra.celery import app

    parent = processes.start(
        name, "worker", "--processes", "2", "--concurrency", "6", "--hostname", f"{name}@%h"
    )

    def both_answer():
        if parent.poll() is not None:
            raise AssertionError(f"the worker exited:\n{processes.log(name)[-3000:]}")
        nodes = {node for reply in app.control.ping(timeout=0.5) for node in reply}
        ours = sorted(node for node in nodes if node.startswith(name))
        return ours if len(ours) == 2 else None

    nodes = wait_until(both_answer, 90, "both worker processes to answer a ping", every=0.2)
    assert [node.split("@")[0] for node in nodes] == [f"{name}1", f"{name}2"]
    stats = app.control.inspect(destination=nodes, timeout=2).stats()
    assert {node: stats[node]["pool"]["max-concurrency"] for node in nodes} == dict.fromkeys(
        nodes, 3
    )  # six threads shared
    children = _children(parent.pid)
    assert len(children) == 2
    return parent, children


def test_sigterm_stops_every_worker_process_warmly(processes):
    parent, children = _start_pair(processes, "pair")
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    wait_until(lambda: all(_gone(pid) for pid in children), 10, "both workers to stop")
    assert processes.log("pair").count("Warm shutdown") == 2


def test_when_one_worker_process_dies_the_rest_stop_and_the_command_fails(processes):
    parent, children = _start_pair(processes, "lone")
    os.kill(children[0], signal.SIGKILL)
    assert parent.wait(timeout=60) != 0
    assert _gone(children[1])
    assert "A worker process stopped" in processes.log("lone")


def test_killing_the_command_kills_its_worker_processes(processes):
    parent, children = _start_pair(processes, "kept")
    parent.kill()
    parent.wait(timeout=10)
    wait_until(lambda: all(_gone(pid) for pid in children), 10, "both workers to die with it")
