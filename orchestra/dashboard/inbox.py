"""What waits for a user, read once for the header badge and the home page together, so the
two always agree: the badge counts the same checkpoints the home page lists.

The inbox socket (`orchestra.consumers.InboxConsumer`) renders both from one `inbox_state`
and pushes them; the home page renders the same partials on load.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.template.loader import render_to_string

from approvals.models import Checkpoint
from orchestra.access import visible_projects
from orchestra.dashboard import queries
from orchestra.models import Run

LISTED = 10  # checkpoints listed on the home page; the badge counts them all


@dataclass
class InboxState:
    count: int
    pending: list[Checkpoint]
    active_runs: list[Run]


def inbox_state(user) -> InboxState:
    """The pending checkpoints' ids are read once: the count and the listed ones come from
    that one read, whatever is decided meanwhile."""
    ids = list(queries.pending_checkpoints(user).values_list("pk", flat=True))
    listed = (
        Checkpoint.objects.filter(pk__in=ids[:LISTED])
        .select_related("run__task", "run__project", "step", "tool_call")
        .order_by("-requested_at", "-pk")
    )
    return InboxState(len(ids), list(listed), queries.active_runs(user))


def render_inbox(user) -> dict:
    """The socket's frame: the count, the badge and the home page's live part, as HTML."""
    state = inbox_state(user)
    first_project = list(visible_projects(user).order_by("name")[:1])
    context = {
        "user": user,
        "projects": first_project,
        "badge_count": state.count,
        **home_context(state),
    }
    return {
        "count": state.count,
        "badge": render_to_string("base.html#approvals-badge", context).strip(),
        "home": render_to_string("dashboard/home.html#live", context).strip(),
    }


def home_context(state: InboxState) -> dict:
    return {
        "pending": state.pending,
        "active_runs": state.active_runs,
        "pending_total": state.count,
    }
