"""`pause`, `resume`, `retry` and `fork`: a run operated by hand from a terminal, as a user.

The same access function and engine actions as the run page and the API
(`get_run_for_user(write=True)`, `pause_run`, `resume_run`, `retry_step`, `fork_run`), so the
same refusals apply. In the embedded default the work that follows runs in this process
until the run is quiet again (see `follow.wait_until_quiet`).
"""

from __future__ import annotations

import argparse

from orchestra.cli.common import CliError, get_user, say
from orchestra.cli.follow import wait_until_quiet


def _operate(args: argparse.Namespace, action) -> int:
    from django.conf import settings
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from orchestra.access import get_run_for_user
    from orchestra.engine import EngineError

    user = get_user(args.user)
    try:
        run = action(user, get_run_for_user(user, args.run, write=True))
    except Http404:
        raise CliError(f"no run {args.run} that {args.user} can see") from None
    except (PermissionDenied, EngineError) as exc:
        raise CliError(str(exc)) from None
    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread" and not run.is_paused:
        say("Embedded mode: continuing the run in this process until it needs a person…")
        wait_until_quiet(run.pk)
    run.refresh_from_db()
    state = "paused" if run.is_paused else run.status.replace("_", " ")
    say(f"Run {run.pk} is now {state}.")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from orchestra.engine import pause_run

    return _operate(args, pause_run)


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestra.engine import resume_run

    return _operate(args, resume_run)


def cmd_retry(args: argparse.Namespace) -> int:
    from orchestra.engine import retry_step

    return _operate(args, lambda user, run: retry_step(user, run, args.step))


def cmd_fork(args: argparse.Namespace) -> int:
    from orchestra.engine import fork_run

    def fork(user, run):
        created = fork_run(user, run, args.step, args.objective, args.agent, args.model)
        say(f"Run {created.pk} forked from run {run.pk} at step {args.step}.")
        return created

    return _operate(args, fork)


def add_parsers(commands) -> None:
    def run_command(name: str, help: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        parser.add_argument("run", type=int, help="run id")
        parser.add_argument("--user", default="admin", help="who operates it (default admin)")
        parser.set_defaults(handler=handler)
        return parser

    run_command("pause", "pause a run: running steps stop after their model call", cmd_pause)
    run_command("resume", "resume a paused run", cmd_resume)
    retry = run_command("retry", "retry a failed run's failed step", cmd_retry)
    retry.add_argument("step", help="step key")
    fork = run_command("fork", "fork a finished run at a step, as a new run", cmd_fork)
    fork.add_argument("step", help="step key: it and everything downstream run again")
    fork.add_argument("--objective", help="the step's new objective")
    fork.add_argument("--agent", help="another agent for the step")
    fork.add_argument("--model", help="another model for the step's agent")
