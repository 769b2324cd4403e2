from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from agents.teams import known_roles
from approvals.models import PolicyRule
from approvals.run_rules import revoke_run_rule
from orchestra.access import CREATE_ROLES, can_decide, get_run_for_user, role_in
from orchestra.dashboard import present, queries
from orchestra.dashboard.auth import login_required
from orchestra.engine import (
    EngineError,
    cancel_run,
    fork_run,
    pause_run,
    resume_run,
    retry_step,
)
from orchestra.engine.forks import FORKABLE
from orchestra.engine.retries import RETRIABLE
from orchestra.models import Run

TEMPLATE = "dashboard/run.html"
# Fields of the run the partials show; re-read after the feed (see `run`).
LIVE_FIELDS = [
    "status",
    "phase",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "report",
    "error",
    "finished_at",
    "stopped_by",
    "paused_at",
    "paused_by",
]


def _header(run: Run, user) -> dict:
    return {
        "pending_here": [c for c in queries.run_checkpoints(run) if c.status == "pending"],
        "can_operate": role_in(user, run.project) in CREATE_ROLES,
        "can_decide": can_decide(user, run.project),
    }


def _phases(run: Run, user) -> dict:
    return {"phases": present.phases_of(run)}


def _graph(run: Run, user) -> dict:
    steps = list(run.steps.order_by("position"))
    if not steps:
        return {"graph_steps": [], "plan": queries.proposed_plan(run)}
    return {
        "graph_steps": steps,
        "graph_lr": queries.plan_graph(steps, "lr"),
        "graph_tb": queries.plan_graph(steps, "tb"),
    }


def _steps(run: Run, user) -> dict:
    return {
        "step_views": queries.step_views(run),
        "can_operate": role_in(user, run.project) in CREATE_ROLES,
        "retriable": RETRIABLE,
    }


def _rules(run: Run, user) -> dict:
    return {"run_rules": queries.run_rules(run), "can_decide": can_decide(user, run.project)}


def _nothing(run: Run, user) -> dict:
    return {}


def _report(run: Run, user) -> dict:
    """The report, and the human decisions taken during the run (who, what, why)."""
    decided = [c for c in queries.run_checkpoints(run) if c.decided_at and c.status != "cancelled"]
    for checkpoint in decided:
        checkpoint.decision_text = present.decision_label(checkpoint).lower()
    return {"decisions": decided}


# One entry per htmx target on the run page: the partial's name and what it needs.
PARTIALS = {
    "header": _header,
    "phases": _phases,
    "graph": _graph,
    "steps": _steps,
    "usage": _nothing,
    "rules": _rules,
    "report": _report,
}


@login_required
def run(request, run_id: int):
    run = get_run_for_user(request.user, run_id)
    # The feed is read first and the state after it: an event committed in between is then
    # replayed over the WebSocket (after=last_seq) and refreshes the partials, so the page
    # can be newer than its feed but never older.
    events = queries.feed_events(run)
    run.refresh_from_db(fields=LIVE_FIELDS)
    context = {
        "run": run,
        "feed_lines": [present.event_line(event) for event in events],
        "last_seq": events[-1].seq if events else 0,
    }
    for build in PARTIALS.values():
        context |= build(run, request.user)
    if run.status in FORKABLE and context["can_operate"]:
        context["fork_agents"] = sorted(known_roles(run.project))
    return render(request, TEMPLATE, context)


@login_required
def run_partial(request, run_id: int, name: str):
    """One named partial of the run page, for the live page's refreshes."""
    build = PARTIALS.get(name)
    if build is None:
        raise Http404("No such part of the run page.")
    run = get_run_for_user(request.user, run_id)
    return render(request, f"{TEMPLATE}#{name}", {"run": run, **build(run, request.user)})


@login_required
def run_parts(request, run_id: int):
    """Several partials of the run page in one response (`?name=header&name=steps`), one
    after the other, for one coalesced round of the live page's refreshes."""
    names = list(dict.fromkeys(request.GET.getlist("name")))
    if not names or any(name not in PARTIALS for name in names):
        raise Http404("No such part of the run page.")
    run = get_run_for_user(request.user, run_id)
    html = "".join(
        render_to_string(
            f"{TEMPLATE}#{name}", {"run": run, **PARTIALS[name](run, request.user)}, request
        )
        for name in names
    )
    return HttpResponse(html)


@login_required
@require_POST
def cancel(request, run_id: int):
    run = get_run_for_user(request.user, run_id, write=True)
    try:
        cancel_run(request.user, run)
    except EngineError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The run was cancelled.")
    return redirect("dashboard:run", run.pk)


def _operate(request, run_id: int, action, done: str):
    run = get_run_for_user(request.user, run_id, write=True)
    try:
        action(request.user, run)
    except EngineError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("dashboard:run", run.pk)


@login_required
@require_POST
def pause(request, run_id: int):
    return _operate(
        request,
        run_id,
        pause_run,
        "The run is paused: running steps stop after their current model call.",
    )


@login_required
@require_POST
def resume(request, run_id: int):
    return _operate(request, run_id, resume_run, "The run was resumed.")


@login_required
@require_POST
def retry(request, run_id: int, key: str):
    return _operate(
        request,
        run_id,
        lambda user, run: retry_step(user, run, key),
        f"Step {key} is tried again; the run is running.",
    )


@login_required
@require_POST
def fork(request, run_id: int):
    """Fork the run at a step, with an edited objective or agent; on to the new run."""
    run = get_run_for_user(request.user, run_id, write=True)
    key = request.POST.get("step", "")
    objective = request.POST.get("objective", "").strip()
    try:
        created = fork_run(
            request.user,
            run,
            key,
            objective or None,
            request.POST.get("agent") or None,
            request.POST.get("model", "").strip() or None,
        )
    except EngineError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:run", run.pk)
    messages.success(request, f"Forked from run #{run.pk} at step {key}.")
    return redirect("dashboard:run", created.pk)


@login_required
@require_POST
def revoke_rule(request, run_id: int, rule_id: int):
    """Withdraw a “for the rest of this run” rule: later calls ask a human again."""
    run = get_run_for_user(request.user, run_id)
    rule = get_object_or_404(PolicyRule, pk=rule_id, run=run)
    revoke_run_rule(request.user, rule)  # PermissionDenied (403) for who may not decide
    if request.htmx:
        return render(request, f"{TEMPLATE}#rules", {"run": run, **_rules(run, request.user)})
    messages.success(request, f"Revoked: {rule.name}. Later calls ask again.")
    return redirect("dashboard:run", run.pk)
