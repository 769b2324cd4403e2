from django.shortcuts import get_object_or_404, render

from orchestra.access import get_run_for_user
from orchestra.dashboard import queries
from orchestra.dashboard.auth import login_required

TEMPLATE = "dashboard/step.html"


def _context(run, key: str) -> dict:
    step = get_object_or_404(run.steps.select_related("plan"), key=key)
    attempts = queries.step_attempts(step)
    queries.link_previous_writes(attempts)
    return {
        "run": run,
        "step": step,
        "work": [a for a in attempts if a.purpose == "step"],
        "reviews": [a for a in attempts if a.purpose == "review"],
        "verdicts": queries.step_verdicts(step),
        "checkpoints": queries.step_checkpoints(step),
        "dependencies": list(run.steps.filter(key__in=step.depends_on).order_by("position")),
    }


@login_required
def step(request, run_id: int, key: str):
    """The brief, the handed-over outputs, every attempt's conversation, verdicts and
    decisions. `last_seq` is read before the step, so the live refresh misses nothing."""
    run = get_run_for_user(request.user, run_id)
    return render(request, TEMPLATE, {**_context(run, key), "last_seq": run.event_seq})


@login_required
def conversation(request, run_id: int, key: str):
    run = get_run_for_user(request.user, run_id)
    return render(request, f"{TEMPLATE}#conversation", _context(run, key))
