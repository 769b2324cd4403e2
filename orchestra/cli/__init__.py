"""`orchestra`: one command for every process and the everyday chores.

    orchestra up                  the embedded default: migrate, seed, serve (worker inside)
    orchestra web                 daphne only, for a configured deployment (no migrate)
    orchestra worker / beat       Celery processes for a configured deployment (REDIS_URL)
    orchestra run demo "title"    start a run as a user, optionally following it (--wait)
    orchestra token admin         issue an API token (printed last, shown once)
    orchestra audit verify demo   check a project's audit chain (exit 1 if tampered)
    orchestra audit export demo   the audit chain as JSON lines (stdout or -o FILE)
    orchestra migrate / seed      database chores

Django is configured only once a subcommand runs, so `orchestra --help` works without a
database and a bad setting is reported as one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from approvals.models import Checkpoint
    from orchestra.models import Event

# How often `run --wait` looks at the database; plenty for a human watching a terminal.
POLL_INTERVAL = 0.2
DATA_PREVIEW = 160


class CliError(Exception):
    """A refusal the person at the terminal can act on; printed without a traceback."""


# --- Django ---------------------------------------------------------------------------------
def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def _print(*parts: object) -> None:
    # Flushed: `up` and `run --wait` usually write to a log file or a pipe.
    print(*parts, flush=True)


# --- up / web -------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    """The embedded default: everything a newcomer needs in one process."""
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    _seed()
    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread":
        # This process is the only worker, so nothing else can be running the lost work.
        from orchestra import queue
        from orchestra.engine import recover_embedded_work

        recovered = recover_embedded_work()
        if recovered:
            _print(f"Checked {recovered} unfinished run(s) for work lost at the last stop.")
        queue.start_embedded_beat()
    elif not settings.ORCHESTRA_EMBEDDED_WORKER:
        _print("Steps run on Celery workers: start `orchestra worker` next to this server.")
    wildcard = args.host in ("0.0.0.0", "::")  # noqa: S104 - only to print a usable URL
    shown_host = "127.0.0.1" if wildcard else args.host
    _print(f"Orchestra is serving at http://{shown_host}:{args.port}/ (API docs at /api/docs)")
    if settings.ORCHESTRA_USE_DEMO_MODEL:
        _print("Using the demo model: set OPENAI_BASE_URL / OPENAI_API_KEY for a real one.")
    return _serve(args.host, args.port, static=True, access_log=False)


def cmd_web(args: argparse.Namespace) -> int:
    """Daphne only: migrations are a separate step (`orchestra migrate`) in a deployment."""
    _print(f"Orchestra web listening on {args.host}:{args.port}")
    return _serve(args.host, args.port, static=not args.no_static, access_log=True)


def _serve(host: str, port: int, *, static: bool, access_log: bool) -> int:
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
    server.run()
    if server.abort_start or not server.listening_addresses:
        raise CliError(f"could not listen on {host}:{port} (is the port in use?)")
    return 0


# --- Celery ---------------------------------------------------------------------------------
def _require_broker(what: str) -> None:
    from django.conf import settings

    if not settings.REDIS_URL:
        raise CliError(
            f"REDIS_URL is not set, so there is no broker for {what}. The embedded default "
            "(`orchestra up`) runs steps inside the web process and needs no worker."
        )


def cmd_worker(args: argparse.Namespace) -> int:
    from django.conf import settings

    _require_broker("a worker")
    from orchestra.celery import app

    argv = [
        "worker",
        "--pool",
        args.pool or settings.ORCHESTRA_WORKER_POOL,
        "--concurrency",
        str(args.concurrency or settings.ORCHESTRA_WORKER_CONCURRENCY),
        "--loglevel",
        args.loglevel,
        # Workers coordinate through the database, not through gossip; skipping the start-up
        # sync also makes a restart quick.
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    return app.start(argv) or 0


def cmd_beat(args: argparse.Namespace) -> int:
    from django.conf import settings

    _require_broker("beat")
    from orchestra.celery import app

    # The working directory of a container is often read-only; the data dir is writable.
    schedule = settings.DATA_DIR / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return app.start(["beat", "--loglevel", args.loglevel, "--schedule", str(schedule)]) or 0


# --- run ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from orchestra.access import get_project_for_user
    from orchestra.engine import EngineError, start_run

    user = _get_user(args.user)
    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread":
        # The embedded worker is a thread pool in the process that enqueues the work, and an
        # `orchestra up` server never picks up work another process queued. Work this
        # short-lived process put on its own pool would die with it at exit, so here the run
        # is driven in this thread until it waits for a human or ends; decisions made in the
        # dashboard or the API then continue it in the server.
        settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
        _print("Embedded mode: running the task in this process until it needs a human…")
    try:
        project = get_project_for_user(user, args.project, write=True)
        run = start_run(user, project, args.title, args.description)
    except Http404:
        raise CliError(f"no project {args.project!r} that {args.user} can see") from None
    except (PermissionDenied, EngineError) as exc:
        raise CliError(str(exc)) from None
    _print(f"Run {run.pk} started in project {project.slug}.")
    if not args.wait:
        return 0
    return follow_run(run.pk)


def follow_run(run_id: int) -> int:
    """Print the run's events as they are committed until it ends; 0 if it completed.

    Checkpoints are announced once each and the wait goes on: someone decides them in the
    dashboard or through the API.
    """
    from approvals.models import Checkpoint
    from orchestra.models import Event, Run

    last_seq = 0
    announced: set[int] = set()
    while True:
        # Status first: the transaction that ends a run also writes its last events, so once
        # the status reads terminal, the event query below sees everything.
        status = Run.objects.values_list("status", flat=True).get(pk=run_id)
        events = Event.objects.filter(run_id=run_id, seq__gt=last_seq).select_related("step")
        for event in events.order_by("seq"):
            _print(_event_line(event))
            last_seq = event.seq
        if status in Run.TERMINAL:
            break
        pending = (
            Checkpoint.objects.filter(run_id=run_id, status=Checkpoint.Status.PENDING)
            .exclude(pk__in=announced)
            .select_related("tool_call", "step")
            .order_by("pk")
        )
        for checkpoint in pending:
            _print(
                f"awaiting approval: checkpoint {checkpoint.pk} ({_checkpoint_summary(checkpoint)})"
            )
            announced.add(checkpoint.pk)
        _wait()
    run = Run.objects.get(pk=run_id)
    if run.status == Run.Status.COMPLETED:
        _print(f"Run {run.pk} completed.\n\n{run.report}")
        return 0
    _print(f"Run {run.pk} {run.status}." + (f" {run.error}" if run.error else ""))
    return 1


def _wait() -> None:
    time.sleep(POLL_INTERVAL)


def _event_line(event: Event) -> str:
    data = json.dumps(event.data, default=str, ensure_ascii=False) if event.data else ""
    if len(data) > DATA_PREVIEW:
        data = data[: DATA_PREVIEW - 1] + "…"
    step = event.step.key if event.step_id and event.step else "-"
    return f"#{event.seq:<4} {event.at:%H:%M:%S} {event.kind:<20} {step:<12} {event.actor} {data}"


def _checkpoint_summary(checkpoint: Checkpoint) -> str:
    if checkpoint.tool_call is not None:
        arguments = json.dumps(checkpoint.tool_call.arguments, ensure_ascii=False)
        return f"tool {checkpoint.tool_call.tool} {arguments}"
    if checkpoint.step is not None:
        return f"{checkpoint.kind} of step {checkpoint.step.key}"
    return checkpoint.kind


# --- audit ----------------------------------------------------------------------------------
def cmd_audit_verify(args: argparse.Namespace) -> int:
    """0 when the project's audit chain is intact, 1 naming the first broken record."""
    from approvals.audit import verify

    result = verify(_get_project(args.project))
    if result.ok:
        _print(f"ok: {result.count} records, chain intact")
        return 0
    bad = result.first_bad
    _print(f"TAMPERED: record seq {bad.seq} (id {bad.pk}, kind {bad.kind}): {result.reason}")
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from approvals.audit import export_jsonl

    project = _get_project(args.project)
    if args.output == "-":
        export_jsonl(project, sys.stdout)
        sys.stdout.flush()
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="\n") as stream:
            count = export_jsonl(project, stream)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    _print(f"Exported {count} audit records of {project.slug} to {args.output}.")
    return 0


def _get_project(slug: str):
    from orchestra.models import Project

    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CliError(f"no project {slug!r}")
    return project


# --- token / migrate / seed -----------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    from orchestra.models import ApiToken

    user = _get_user(args.user)
    raw = ApiToken.issue(user, name=args.name)
    _print(f"API token for {user.get_username()} (shown once; send it as 'Authorization: Bearer'):")
    _print(raw)  # last line: scripts take `tail -n 1`
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    _seed()
    return 0


def _seed() -> None:
    """Seed, and tell the person how to log in; the password is only known on first start."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from orchestra.seed import seed_demo

    existed = get_user_model().objects.filter(username="admin").exists()
    password = seed_demo()
    if password:
        _print(f"Admin user: admin / password: {password}")
    elif not existed and settings.ORCHESTRA_ADMIN_PASSWORD:
        _print("Admin user: admin / password: the value of ORCHESTRA_ADMIN_PASSWORD")
    else:
        _print(
            "Admin user: admin (already exists; its password is unchanged — reset it with "
            "`python manage.py changepassword admin`)"
        )


def _get_user(username: str):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise CliError(f"no active user {username!r}")
    return user


# --- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra", description="A control room for teams of LLM agents."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("up", help="migrate, seed and serve the embedded default")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    up.set_defaults(handler=cmd_up)

    web = commands.add_parser("web", help="serve HTTP and WebSockets with daphne")
    # In a container the server must be reachable from outside; `up` stays on loopback.
    web.add_argument("--host", default="0.0.0.0")  # noqa: S104
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--no-static", action="store_true", help="leave /static/ to a proxy in front")
    web.set_defaults(handler=cmd_web)

    worker = commands.add_parser("worker", help="run a Celery worker (needs REDIS_URL)")
    worker.add_argument("--concurrency", type=int, help="default ORCHESTRA_WORKER_CONCURRENCY")
    worker.add_argument("--pool", help="default ORCHESTRA_WORKER_POOL (threads)")
    worker.add_argument("--hostname", help="Celery node name, e.g. worker2@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=cmd_worker)

    beat = commands.add_parser("beat", help="run Celery beat (needs REDIS_URL)")
    beat.add_argument("--loglevel", default="INFO")
    beat.set_defaults(handler=cmd_beat)

    run = commands.add_parser("run", help="start a run as a user")
    run.add_argument("project", help="project slug")
    run.add_argument("title", help="task title")
    run.add_argument("--description", default="")
    run.add_argument("--user", default="admin", help="who starts it (default admin)")
    run.add_argument(
        "--wait", action="store_true", help="follow the events until the run ends (exit 0/1)"
    )
    run.set_defaults(handler=cmd_run)

    token = commands.add_parser("token", help="issue an API token for a user")
    token.add_argument("user")
    token.add_argument("--name", default="cli", help="label to recognise the token by")
    token.set_defaults(handler=cmd_token)

    audit = commands.add_parser("audit", help="verify or export a project's audit chain")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    audit_verify = audit_commands.add_parser("verify", help="check the chain (exit 1 if tampered)")
    audit_verify.add_argument("project", help="project slug")
    audit_verify.set_defaults(handler=cmd_audit_verify)
    audit_export = audit_commands.add_parser("export", help="write the chain as JSON lines")
    audit_export.add_argument("project", help="project slug")
    audit_export.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="write here instead of stdout"
    )
    audit_export.set_defaults(handler=cmd_audit_export)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=cmd_migrate)

    seed = commands.add_parser("seed", help="seed team templates, the demo project, admin")
    seed.set_defaults(handler=cmd_seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        _setup_django()
        return args.handler(args)
    except CliError as exc:
        print(f"orchestra: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ImproperlyConfigured as exc:
        print(f"orchestra: configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
