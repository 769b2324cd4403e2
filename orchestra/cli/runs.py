"""`run`: start a run as a user, and with `--wait` follow it until it ends.

The pause between two polls is reached as `orchestra.cli._wait`, looked up when it runs, so
the package is the one place to replace it.
"""

from __future__ import annotations

import argparse
import time

from orchestra import cli
from orchestra.cli.common import CliError, get_user, say
from orchestra.cli.follow import Follower, checkpoint_summary, event_line, wait_until_quiet

# How often `run --wait` looks at the database; plenty for a human watching a terminal.
POLL_INTERVAL = 0.2


def cmd_run(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from orchestra.access import get_project_for_user
    from orchestra.engine import EngineError, start_run

    user = get_user(args.user)
    embedded = settings.ORCHESTRA_EMBEDDED_WORKER == "thread"
    if embedded:
        # The embedded worker is a thread pool in the process that enqueues the work, and an
        # `orchestra up` server never picks up work another process queued. So this process
        # runs the work on its own pool (parallel steps in parallel, as the server does) and
        # stays until the run waits for a person or ends; decisions made in the dashboard,
        # the API or `orchestra approvals` then continue it there.
        say("Embedded mode: running the task in this process until it needs a person…")
    try:
        project = get_project_for_user(user, args.project, write=True)
        run = start_run(user, project, args.title, args.description)
    except Http404:
        raise CliError(f"no project {args.project!r} that {args.user} can see") from None
    except (PermissionDenied, EngineError) as exc:
        raise CliError(str(exc)) from None
    say(f"Run {run.pk} started in project {project.slug}: {run_url(run.pk)}")
    if args.wait:
        return follow_run(run.pk)
    if embedded:
        wait_until_quiet(run.pk, Follower(run.pk))
    return 0


def run_url(run_id: int) -> str:
    from django.conf import settings
    from django.urls import reverse

    return settings.ORCHESTRA_BASE_URL.rstrip("/") + reverse("dashboard:run", args=[run_id])


def follow_run(run_id: int) -> int:
    """Print the run's step changes as they are committed until it ends; 0 if it completed.

    Each checkpoint is announced once, with where and how to decide it, and the wait goes on:
    someone decides it in the dashboard, through the API or with `orchestra approvals`.
    """
    from orchestra.models import Run

    follower = Follower(run_id)
    while not (run := follower.poll()).is_terminal:
        cli._wait()
    if run.status == Run.Status.COMPLETED:
        say(f"Run {run.pk} completed.\n\n{run.report}")
        return 0
    say(f"Run {run.pk} {run.status}." + (f" {run.error}" if run.error else ""))
    return 1


def pause() -> None:
    time.sleep(POLL_INTERVAL)


__all__ = ["checkpoint_summary", "cmd_run", "event_line", "follow_run", "pause", "run_url"]
