"""`orchestra`: one command for every process and the everyday chores.

    orchestra up                  the embedded default: migrate, seed, serve (worker inside)
    orchestra web                 daphne only, for a configured deployment (no migrate)
    orchestra worker / beat       Celery processes for a configured deployment (REDIS_URL)
    orchestra run demo "title"    start a run as a user, optionally following it (--wait)
    orchestra approvals           list, show, approve, reject or edit checkpoints
    orchestra pause|resume RUN    pause a run (steps park after their model call), resume it
    orchestra retry RUN STEP      a failed run's failed step, tried again in the same run
    orchestra fork RUN STEP       a new run from a finished one, that step edited and re-run
    orchestra token admin         issue an API token (printed last, shown once)
    orchestra worker-token add W  a remote worker's git credential (also revoke, list)
    orchestra password admin      set a user's password (asked for, or read from stdin)
    orchestra audit verify demo   check a project's audit chain (exit 1 if tampered)
    orchestra audit export demo   the audit chain as JSON lines (stdout or -o FILE)
    orchestra purge --older-than 90d [--dry-run]   remove what is older (retention)
    orchestra migrate / seed      database chores

Django is configured only once a subcommand runs, so `orchestra --help` works without a
database and a bad setting is reported as one line instead of a traceback.

The commands by job: `serve` (up, web, worker, beat), `runs` (run, --wait), `follow` (what
following a run prints), `approvals` (decide checkpoints), `operations` (pause, resume,
retry, fork), `workers` (worker-token), `admin` (token, password, audit,
migrate, seed); `common` holds what they share. This module parses and dispatches.
"""

import argparse
import os
import sys

from django.core.exceptions import ImproperlyConfigured

from orchestra.cli import admin, approvals, operations, purge, runs, serve, workers
from orchestra.cli.common import CliError, setup_django
from orchestra.cli.runs import follow_run

# Where `up` and `web` hand over to the server, and where `run --wait` pauses between polls:
# the commands look these two up here when they run.
_serve = serve.serve
_wait = runs.pause


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra", description="A control room for teams of LLM agents."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("up", help="migrate, seed and serve the embedded default")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    up.set_defaults(handler=serve.cmd_up)

    web = commands.add_parser("web", help="serve HTTP and WebSockets with daphne")
    # In a container the server must be reachable from outside; `up` stays on loopback.
    web.add_argument("--host", default="0.0.0.0")  # noqa: S104
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--no-static", action="store_true", help="leave /static/ to a proxy in front")
    web.set_defaults(handler=serve.cmd_web)

    worker = commands.add_parser("worker", help="run a Celery worker (needs REDIS_URL)")
    worker.add_argument(
        "--concurrency",
        type=int,
        help="threads in all, shared among the processes; default ORCHESTRA_WORKER_CONCURRENCY",
    )
    worker.add_argument(
        "--processes",
        type=int,
        help="worker processes; default ORCHESTRA_WORKER_PROCESSES (one per core, at most 4)",
    )
    worker.add_argument("--pool", help="default ORCHESTRA_WORKER_POOL (threads)")
    worker.add_argument("--hostname", help="Celery node name, e.g. worker2@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--queues",
        help="comma-separated queues to consume, e.g. steps or coder,reviewer (default: "
        "orchestra, steps, every role queue and celery; a remote worker: steps and role queues)",
    )
    worker.set_defaults(handler=serve.cmd_worker)

    beat = commands.add_parser("beat", help="run Celery beat (needs REDIS_URL)")
    beat.add_argument("--loglevel", default="INFO")
    beat.set_defaults(handler=serve.cmd_beat)

    run = commands.add_parser("run", help="start a run as a user")
    run.add_argument("project", help="project slug")
    run.add_argument("title", help="task title")
    run.add_argument("--description", default="")
    run.add_argument("--user", default="admin", help="who starts it (default admin)")
    run.add_argument(
        "--wait", action="store_true", help="follow the events until the run ends (exit 0/1)"
    )
    run.set_defaults(handler=runs.cmd_run)

    approvals.add_parser(commands)
    operations.add_parsers(commands)

    password = commands.add_parser("password", help="set a user's password")
    password.add_argument("user")
    password.set_defaults(handler=admin.cmd_password)

    token = commands.add_parser("token", help="issue an API token for a user")
    token.add_argument("user")
    token.add_argument("--name", default="cli", help="label to recognise the token by")
    token.set_defaults(handler=admin.cmd_token)

    workers.add_parser(commands)

    audit = commands.add_parser("audit", help="verify or export a project's audit chain")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    audit_verify = audit_commands.add_parser("verify", help="check the chain (exit 1 if tampered)")
    audit_verify.add_argument("project", help="project slug")
    audit_verify.set_defaults(handler=admin.cmd_audit_verify)
    audit_export = audit_commands.add_parser("export", help="write the chain as JSON lines")
    audit_export.add_argument("project", help="project slug")
    audit_export.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="write here instead of stdout"
    )
    audit_export.set_defaults(handler=admin.cmd_audit_export)

    purge.add_parser(commands)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=admin.cmd_migrate)

    seed = commands.add_parser("seed", help="seed team templates, the demo project, admin")
    seed.set_defaults(handler=admin.cmd_seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        setup_django()
        return args.handler(args)
    except CliError as exc:
        print(f"orchestra: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ImproperlyConfigured as exc:
        print(f"orchestra: configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["CliError", "build_parser", "follow_run", "main"]
