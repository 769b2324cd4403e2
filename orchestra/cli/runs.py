"""`run`: start a run as a user, and with `--wait` follow its events until it ends.

The pause between two polls is reached as `orchestra.cli._wait`, looked up when it runs, so
the package is the one place to replace it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from orchestra import cli
from orchestra.cli.common import CliError, get_user, say

if TYPE_CHECKING:
    from approvals.models import Checkpoint
    from orchestra.models import Event

# How often `run --wait` looks at the database; plenty for a human watching a terminal.
POLL_INTERVAL = 0.2
DATA_PREVIEW = 160


def cmd_run(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from orchestra.access import get_project_for_user
    from orchestra.engine import EngineError, start_run

    user = get_user(args.user)
    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread":
        # The embedded worker is a thread pool in the process that enqueues the work, and an
        # `orchestra up` server never picks up work another process queued. Work this
        # short-lived process put on its own pool would die with it at exit, so here the run
        # is driven in this thread until it waits for a human or ends; decisions made in the
        # dashboard or the API then continue it in the server.
        settings.ORCHESTRA_EMBEDDED_WORKER = "sync"
        say("Embedded mode: running the task in this process until it needs a human…")
    try:
        project = get_project_for_user(user, args.project, write=True)
        run = start_run(user, project, args.title, args.description)
    except Http404:
        raise CliError(f"no project {args.project!r} that {args.user} can see") from None
    except (PermissionDenied, EngineError) as exc:
        raise CliError(str(exc)) from None
    say(f"Run {run.pk} started in project {project.slug}.")
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
            say(event_line(event))
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
            say(f"awaiting approval: checkpoint {checkpoint.pk} ({checkpoint_summary(checkpoint)})")
            announced.add(checkpoint.pk)
        cli._wait()
    run = Run.objects.get(pk=run_id)
    if run.status == Run.Status.COMPLETED:
        say(f"Run {run.pk} completed.\n\n{run.report}")
        return 0
    say(f"Run {run.pk} {run.status}." + (f" {run.error}" if run.error else ""))
    return 1


def pause() -> None:
    time.sleep(POLL_INTERVAL)


def event_line(event: Event) -> str:
    data = json.dumps(event.data, default=str, ensure_ascii=False) if event.data else ""
    if len(data) > DATA_PREVIEW:
        data = data[: DATA_PREVIEW - 1] + "…"
    step = event.step.key if event.step_id and event.step else "-"
    return f"#{event.seq:<4} {event.at:%H:%M:%S} {event.kind:<20} {step:<12} {event.actor} {data}"


def checkpoint_summary(checkpoint: Checkpoint) -> str:
    if checkpoint.tool_call is not None:
        arguments = json.dumps(checkpoint.tool_call.arguments, ensure_ascii=False)
        return f"tool {checkpoint.tool_call.tool} {arguments}"
    if checkpoint.step is not None:
        return f"{checkpoint.kind} of step {checkpoint.step.key}"
    return checkpoint.kind
