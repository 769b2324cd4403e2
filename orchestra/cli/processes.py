"""`orchestra worker` on every core: worker processes under one parent.

A step's engine work is Python, and one process runs Python on one core at a time, however
many threads it has: a worker with 64 threads on a 2-core machine kept one core busy while
a wide plan queued for it. So `orchestra worker` starts ORCHESTRA_WORKER_PROCESSES Celery
workers (by default one per core it may use, with the thread pool), each with its share of
the threads (the concurrency is the total, and so are the database connections), and stays
as their parent: it passes SIGTERM, SIGINT and SIGQUIT on (Celery's warm and cold
shutdowns), starts a process again when one dies on its own (its tasks' leases run out and
they are sent again, as for any lost worker), and ends, stopping the others, when one fails
at start (a setting or the broker is wrong: starting it again would only fail again).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from orchestra.cli.common import say

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# A process that ends sooner than this after its start failed to start.
START_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def node_names(hostname: str | None, processes: int) -> list[str]:
    """Each process's Celery node name: `hostname` (e.g. `worker@%h`, default `celery@%h`)
    with its number after the name part, since two nodes may not share a name."""
    name, _, host = (hostname or "celery@%h").partition("@")
    return [f"{name}-{number}@{host or '%h'}" for number in range(1, processes + 1)]


def shares(total: int, processes: int) -> list[int]:
    """`total` threads dealt to `processes` processes as evenly as they go."""
    return [total // processes + (index < total % processes) for index in range(processes)]


@dataclass
class Child:
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started: float = 0.0

    def start(self) -> None:
        parent = os.getpid()
        self.process = subprocess.Popen(  # noqa: S603 - our own argv
            self.command, env=self.env, preexec_fn=lambda: _die_with(parent)
        )
        self.started = time.monotonic()


def _die_with(parent: int) -> None:
    """In a new child, before it runs its program: the kernel kills it when its parent dies
    (Linux), so a worker killed outright stops all its processes, as one process would."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the processes outlive a parent killed outright
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


@dataclass
class WorkerProcesses:
    """The parent of `children`; `run()` returns when every child has ended."""

    children: list[Child]
    start_grace: float = START_GRACE
    stopping: int | None = field(default=None, init=False)  # the signal passed on

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._pass_on) for signum in FORWARDED}
        try:
            for child in self.children:
                child.start()
            return self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _pass_on(self, signum: int, _frame) -> None:
        self.stopping = signum
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        # os.kill, not Popen.send_signal (which polls, and would reap a child `_watch` waits
        # for); a child not yet waited for keeps its pid, so it cannot name another process.
        for child in self.children:
            if child.process is not None:
                os.kill(child.process.pid, signum)

    def _watch(self) -> int:
        """Wait for children to end; start again one that died on its own."""
        failed = 0
        while any(child.process is not None for child in self.children):
            pid, status = os.wait()  # signals interrupt it, run their handler, and it goes on
            child = next((c for c in self.children if c.process and c.process.pid == pid), None)
            if child is None:
                continue
            child.process.returncode = code = os.waitstatus_to_exitcode(status)
            child.process = None
            if self.stopping is not None:
                continue
            if time.monotonic() - child.started < self.start_grace:
                say(f"A worker process failed at start (exit {code}): stopping the others.")
                failed = code or 1
                self.stopping = signal.SIGTERM
                self._signal_all(signal.SIGTERM)
                continue
            say(f"A worker process ended on its own (exit {code}): starting it again.")
            child.start()
        return failed


def worker_processes(argv: list[str], total: int, processes: int, hostname: str | None):
    """The parent of `processes` `orchestra worker` processes, each run with `argv` (the
    options they share) and its share of the `total` threads."""
    children = []
    for name, threads in zip(
        node_names(hostname, processes), shares(total, processes), strict=True
    ):
        command = [sys.executable, "-m", "orchestra.cli", "worker", "--processes", "1"]
        command += [*argv, "--concurrency", str(threads), "--hostname", name]
        # Settings size the process's database pool from the variable.
        env = os.environ | {"ORCHESTRA_WORKER_CONCURRENCY": str(threads)}
        children.append(Child(command, env))
    return WorkerProcesses(children)
