"""Serving: `up` (the embedded default), `web` (daphne only), and the Celery `worker` and `beat`.

The server loop is reached as `orchestra.cli._serve`, looked up when a command runs, so the
package is the one place to replace it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import os
import signal
import subprocess
import sys

from orchestra import cli
from orchestra.cli.admin import seed_and_tell
from orchestra.cli.common import CliError, say


def cmd_up(args: argparse.Namespace) -> int:
    """The embedded default: everything a newcomer needs in one process."""
    from django.conf import settings
    from django.core.management import call_command

    if not _loopback(args.host) and settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        # Sessions are signed with the key: a public default would let anyone forge one.
        raise CliError(
            f"refusing to serve on {args.host} with the development secret key: set "
            "DJANGO_SECRET_KEY to a long random value (see .env.example), or serve on "
            "127.0.0.1"
        )
    call_command("migrate", interactive=False, verbosity=0)
    seed_and_tell()
    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread":
        # This process is the only worker, so nothing else can be running the lost work.
        from orchestra import queue
        from orchestra.engine import recover_embedded_work

        recovered = recover_embedded_work()
        if recovered:
            say(f"Checked {recovered} unfinished run(s) for work lost at the last stop.")
        queue.start_embedded_beat()
    elif not settings.ORCHESTRA_EMBEDDED_WORKER:
        say("Steps run on Celery workers: start `orchestra worker` next to this server.")
    wildcard = args.host in ("0.0.0.0", "::")  # noqa: S104 - only to print a usable URL
    shown_host = "127.0.0.1" if wildcard else args.host
    say(f"Orchestra is serving at http://{shown_host}:{args.port}/ (API docs at /api/docs)")
    if settings.ORCHESTRA_USE_DEMO_MODEL:
        say("Using the demo model: set OPENAI_BASE_URL / OPENAI_API_KEY for a real one.")
    try:
        return cli._serve(args.host, args.port, static=True, access_log=False)
    finally:
        _stop_embedded_work(settings.ORCHESTRA_STOP_GRACE)


def _stop_embedded_work(grace: float) -> None:
    """After the server stopped serving: the embedded pool's running tasks get `grace`
    seconds to end, none of what is queued starts (`queue.stop_embedded`). Past that, or at a
    second Ctrl-C or SIGTERM, the process ends without them: their work is due in the
    database, and the next start takes it over. A stop waits for seconds, not for a run."""
    from orchestra import queue

    def now(_signum, _frame) -> None:
        _exit_leaving(queue.unfinished())

    if queue.unfinished():
        signal.signal(signal.SIGTERM, now)
        signal.signal(signal.SIGINT, now)
        say(
            f"Stopping: {queue.unfinished()} task(s) of the engine get up to {grace:g} s to "
            "end (Ctrl-C again to stop now)."
        )
    left = queue.stop_embedded(grace)
    if left:
        _exit_leaving(left)


def _exit_leaving(left: int) -> None:
    say(f"Stopped with {left} task(s) unfinished: the next start takes their work over.")
    sys.stdout.flush()
    sys.stderr.flush()
    # Not the interpreter's exit, which joins the pool's threads: a step's model call could
    # hold it for minutes.
    os._exit(0)


def cmd_web(args: argparse.Namespace) -> int:
    """Daphne only: migrations are a separate step (`orchestra migrate`) in a deployment."""
    say(f"Orchestra web listening on {args.host}:{args.port}")
    return cli._serve(args.host, args.port, static=not args.no_static, access_log=True)


def serve(host: str, port: int, *, static: bool, access_log: bool) -> int:
    """Run daphne in this process until SIGINT/SIGTERM.

    With `static`, /static/ is served from the finders (Django's ASGIStaticFilesHandler), so
    no collectstatic is needed; WebSockets pass straight through to the Channels router.
    """
    from daphne.access import AccessLogGenerator
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    from orchestra.asgi import application

    app = application
    if static:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        app = ASGIStaticFilesHandler(application)
    server = Server(
        application=app,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        action_logger=AccessLogGenerator(sys.stdout) if access_log else None,
        verbosity=0,
    )
    settle_heap()
    server.run()
    if server.abort_start or not server.listening_addresses:
        raise CliError(f"could not listen on {host}:{port} (is the port in use?)")
    return 0


def settle_heap(**_signal) -> None:
    """Once a server or worker has started: what it made to start (modules, settings, the
    ORM's models, the app's registry: a quarter of a million objects) is kept out of the
    garbage collector's full collections from now on (`gc.freeze`), after one collection of
    what starting left over (migrations, the seed). Each full collection walked all of it: 55
    to 95 ms with the interpreter held, every thread of the process waiting, about once in a
    hundred steps of an in-process chain (0.6 to 0.8 ms a step). The objects made later are
    collected as ever."""
    gc.collect()
    gc.freeze()


def require_broker(what: str) -> None:
    from django.conf import settings

    if not settings.REDIS_URL:
        raise CliError(
            f"REDIS_URL is not set, so there is no broker for {what}. The embedded default "
            "(`orchestra up`) runs steps inside the web process and needs no worker."
        )


def cmd_worker(args: argparse.Namespace) -> int:
    from django.conf import settings

    require_broker("a worker")
    queues = worker_queues(args.queues)
    if args.processes is not None and args.processes < 1:
        raise CliError("--processes must be at least 1")
    threads = args.concurrency or settings.ORCHESTRA_WORKER_CONCURRENCY
    processes = min(args.processes or settings.ORCHESTRA_WORKER_PROCESSES, threads)
    if processes > 1:
        return _workers(args, processes, threads)
    from orchestra import queue
    from orchestra.celery import app

    pool = args.pool or settings.ORCHESTRA_WORKER_POOL
    argv = [
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(threads),
        "--loglevel",
        args.loglevel,
        # Workers coordinate through the database, not through gossip; skipping the start-up
        # sync also makes a restart quick.
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    argv += ["--queues", ",".join(queues)]
    # What its threads may carry on (`queue.carrying_on`). Not in a pool that enforces the
    # tasks' time limits (prefork): a task carrying a long chain on would run into them.
    queue.consumed = frozenset(queues) if pool == "threads" else frozenset()
    from celery import signals

    # The worker's own process once it is ready (the threads pool's tasks run in it), and
    # each of a prefork pool's processes.
    signals.worker_ready.connect(settle_heap, weak=False, dispatch_uid="settle_heap")
    signals.worker_process_init.connect(settle_heap, weak=False, dispatch_uid="settle_heap")
    return app.start(argv) or 0


def _workers(args: argparse.Namespace, processes: int, threads: int) -> int:
    """`processes` workers, each a process of its own (this command again, with one) with its
    share of the `threads`, and so of the database connections. The engine's Python runs
    one thread at a time in a process: a wide plan kept one worker's interpreter busy while
    the machine's other core idled.

    They run until one stops; then the others are stopped too, and this process exits with
    the first one's status, for the service manager to start the set again. SIGTERM or SIGINT
    here is passed on as SIGTERM (a warm shutdown: running tasks finish). The workers stay in
    this process's group, so a signal to the group reaches them all, and die with it should
    it be killed."""
    share = -(-threads // processes)
    name, _, host = (args.hostname or "worker@%h").partition("@")
    argv = ["--processes", "1", "--concurrency", str(share), "--loglevel", args.loglevel]
    argv += ["--pool", args.pool] if args.pool else []
    argv += ["--queues", args.queues] if args.queues else []
    env = {**os.environ, "ORCHESTRA_WORKER_CONCURRENCY": str(share)}  # sizes its pool
    children = {}
    for number in range(1, processes + 1):
        node = f"{name}{number}@{host or '%h'}"
        child = subprocess.Popen(  # noqa: S603 - this program, with our own arguments
            [sys.executable, "-m", "orchestra.cli", "worker", "--hostname", node, *argv],
            env=env,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
        )
        children[child.pid] = child
    say(f"Started {processes} worker processes, {share} threads each.")
    stopping = False

    def stop(signum=None, _frame=None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while any(child.returncode is None for child in children.values()):
        pid, wait_status = os.waitpid(-1, 0)
        if pid not in children:
            continue
        children[pid].returncode = os.waitstatus_to_exitcode(wait_status)
        if not stopping:  # one stopped on its own: the set goes down with it
            status = children[pid].returncode or 1
            say(f"A worker process stopped (status {children[pid].returncode}); stopping the rest.")
            stop()
        elif children[pid].returncode not in (0, -signal.SIGTERM):
            status = status or 1
    return status


_PR_SET_PDEATHSIG = 1  # prctl's option, from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """In a worker process before it runs: the kernel sends it SIGKILL when its parent dies
    (Linux), so killing the parent kills the set, as killing one worker would; a parent gone
    already (before this) is caught by asking for it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def worker_queues(option: str | None) -> list[str]:
    """The queues a worker consumes: `--queues`, else every queue it can serve. A worker
    whose repositories are remote cannot serve the central queue."""
    from django.conf import settings

    from orchestra import queues

    remote = bool(settings.ORCHESTRA_GIT_REMOTE)
    if option is None:
        return queues.worker_queues(remote)
    chosen = [name.strip() for name in option.split(",") if name.strip()]
    if not chosen:
        raise CliError("--queues names no queue")
    if remote and queues.CENTRAL in chosen:
        raise CliError(
            f"this worker's repositories are remote (ORCHESTRA_GIT_REMOTE), so it cannot "
            f"consume the {queues.CENTRAL!r} queue: planning, merges and the report need the "
            f"central repository. Use --queues {queues.STEPS} (or role queues) here, and run "
            f"a worker for {queues.CENTRAL!r} on the central machine."
        )
    return chosen


def cmd_beat(args: argparse.Namespace) -> int:
    from django.conf import settings

    require_broker("beat")
    from orchestra.celery import app

    # The working directory of a container is often read-only; the data dir is writable.
    schedule = settings.DATA_DIR / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return app.start(["beat", "--loglevel", args.loglevel, "--schedule", str(schedule)]) or 0


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")
