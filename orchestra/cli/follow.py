"""Following a run from a terminal: one readable line per step change, a progress line, and
at a checkpoint where to decide it (the approval page's URL and the command).

Also how a short-lived process drives an embedded run: the work runs on this process's
thread pool, as in the server, so parallel steps run in parallel; the process waits until
the run is quiet (waiting for a person, or ended, with no work due) before it may exit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestra.cli.common import say

if TYPE_CHECKING:
    from approvals.models import Checkpoint
    from orchestra.models import Event, Run

# The events a person following a run wants to read; model and tool calls stay in the trace.
SHOWN = (
    "run.",
    "plan.accepted",
    "plan.rejected",
    "plan.edited",
    "step.",
    "review.verdict",
    "approval.requested",
    "approval.decided",
    "report.published",
    "merge.conflict",
)
HIDDEN = ("step.output", "run.created")
# After these a progress line follows: the steps' states changed.
PROGRESS_AFTER = (
    "plan.accepted",
    "step.started",
    "step.completed",
    "step.failed",
    "step.revising",
    "approval.requested",
    "approval.decided",
)
MARKS = {
    "step.started": "▸",
    "step.resumed": "▸",
    "step.completed": "✓",
    "step.failed": "✗",
    "step.revising": "↺",
    "approval.requested": "⏸",
    "run.completed": "✓",
    "run.failed": "✗",
    "run.stopped": "■",
    "run.cancelled": "■",
}


def is_shown(kind: str) -> bool:
    return kind.startswith(SHOWN) and kind not in HIDDEN


def event_line(event: Event) -> str:
    """`12:03:04 ▸ implement     step started: attempt 1`."""
    from orchestra.dashboard.present import describe_event

    step = event.step.key if event.step_id and event.step else ""
    what = describe_event(event.kind, event.data, step or None)
    label = event.kind.replace(".", " ").replace("_", " ")
    mark = MARKS.get(event.kind, "·")
    return f"{event.at:%H:%M:%S} {mark} {step:<12} {label}" + (f": {what}" if what else "")


def progress_line(run_id: int) -> str:
    """`  progress: 2 of 5 steps done · 1 running · 1 waiting for a person`."""
    from collections import Counter

    from orchestra.models import Step

    counts = Counter(Step.objects.filter(run_id=run_id).values_list("status", flat=True))
    total = sum(counts.values())
    parts = [f"{counts.get('done', 0)} of {total} steps done"]
    for status, words in (
        ("running", "running"),
        ("revising", "revising"),
        ("in_review", "in review"),
        ("merging", "merging"),
        ("awaiting_approval", "waiting for a person"),
        ("failed", "failed"),
    ):
        if counts.get(status):
            parts.append(f"{counts[status]} {words}")
    return "  progress: " + " · ".join(parts)


def approval_url(checkpoint_id: int) -> str:
    from django.conf import settings
    from django.urls import reverse

    base = settings.ORCHESTRA_BASE_URL.rstrip("/")
    return base + reverse("dashboard:approval", args=[checkpoint_id])


def how_to_decide(checkpoint: Checkpoint) -> list[str]:
    """What to tell a person at a checkpoint: what is asked, where and how to decide."""
    return [
        f"  ⏸ waiting for a person: checkpoint {checkpoint.pk} — {checkpoint_summary(checkpoint)}",
        f"    open    {approval_url(checkpoint.pk)}",
        f"    or run  orchestra approvals approve {checkpoint.pk}",
        f"            orchestra approvals reject {checkpoint.pk} --comment 'why'",
    ]


def checkpoint_summary(checkpoint: Checkpoint) -> str:
    import json

    if checkpoint.tool_call is not None:
        arguments = json.dumps(checkpoint.tool_call.arguments, ensure_ascii=False)
        if len(arguments) > 120:
            arguments = arguments[:119] + "…"
        where = f" in step {checkpoint.step.key}" if checkpoint.step else ""
        return f"{checkpoint.tool_call.tool}{where} {arguments}"
    if checkpoint.step is not None:
        return f"{checkpoint.kind} of step {checkpoint.step.key}"
    return f"{checkpoint.kind} of the run"


class Follower:
    """Prints a run's shown events once each, the progress after step changes, and each
    pending checkpoint's decision hints once."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.last_seq = 0
        self.announced: set[int] = set()

    def poll(self) -> Run:
        """Print what happened since the last poll; return the run as it was read first (the
        transaction that ends a run also writes its last events, so a terminal status read
        first means the events read after it are complete)."""
        from approvals.models import Checkpoint
        from orchestra.models import Event, Run

        run = Run.objects.get(pk=self.run_id)
        events = Event.objects.filter(run_id=self.run_id, seq__gt=self.last_seq)
        progress = False
        for event in events.select_related("step").order_by("seq"):
            self.last_seq = event.seq
            if is_shown(event.kind):
                say(event_line(event))
                progress = progress or event.kind in PROGRESS_AFTER
        if progress and not run.is_terminal:
            say(progress_line(self.run_id))
        pending = (
            Checkpoint.objects.filter(run_id=self.run_id, status=Checkpoint.Status.PENDING)
            .exclude(pk__in=self.announced)
            .select_related("tool_call", "step")
            .order_by("pk")
        )
        for checkpoint in pending:
            for line in how_to_decide(checkpoint):
                say(line)
            self.announced.add(checkpoint.pk)
        return run


def is_quiet(run_id: int) -> bool:
    """The run waits for a person or has ended, and no work of it is due or running."""
    from orchestra.models import Activity, Run

    status = Run.objects.values_list("status", flat=True).get(pk=run_id)
    if status not in (*Run.TERMINAL, Run.Status.AWAITING_APPROVAL):
        return False
    busy = Activity.objects.filter(run_id=run_id).exclude(status=Activity.Status.DONE)
    return not busy.exists()


def wait_until_quiet(run_id: int, follower: Follower | None = None, poll: float = 0.2) -> None:
    """Block until `is_quiet`, printing through `follower` meanwhile: a process whose pool
    runs the work must not exit under it."""
    while True:
        if follower is not None:
            follower.poll()
        if is_quiet(run_id):
            return
        time.sleep(poll)
