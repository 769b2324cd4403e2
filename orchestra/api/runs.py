"""Tasks and runs: start a task's run, list and read runs, cancel one, read its events."""

from django.http import HttpRequest
from ninja.errors import HttpError

from orchestra.access import get_project_for_user, get_run_for_user, visible_projects
from orchestra.api.app import Status, api, request_user
from orchestra.api.pages import DEFAULT_LIMIT, paginate
from orchestra.api.schemas import (
    ErrorOut,
    EventListOut,
    RunDetailOut,
    RunListOut,
    RunSummaryOut,
    TaskCreatedOut,
    TaskIn,
    iso,
)
from orchestra.engine import EngineError, cancel_run, start_run
from orchestra.markdown import render_markdown
from orchestra.models import Event, Run, Step
from orchestra.text import CleanText

EVENT_LIMIT_DEFAULT = 1000
EVENT_LIMIT_MAX = 5000


def run_summary(run: Run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "phase": run.phase,
        "project": run.project.slug,
        "task": {"id": run.task_id, "title": run.task.title},
        "demo_model": run.uses_demo_model,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
        **_operations(run),
    }


def _operations(run: Run) -> dict:
    return {
        "paused_at": iso(run.paused_at),
        "paused_by": run.paused_by,
        "parent": run.parent_id,
        "forked_at_step": run.forked_at_step,
    }


def step_json(step: Step) -> dict:
    return {
        "key": step.key,
        "title": step.title,
        "agent": step.agent_role,
        "status": step.status,
        "depends_on": step.depends_on,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "attempts": step.attempts,
        "revisions": step.revisions,
    }


def run_detail(run: Run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "phase": run.phase,
        "task": {"id": run.task_id, "title": run.task.title, "description": run.task.description},
        "project": run.project.slug,
        "demo_model": run.uses_demo_model,
        "steps": [step_json(step) for step in run.steps.order_by("position")],
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": str(run.cost_usd),
        },
        "report": run.report,
        "report_html": str(render_markdown(run.report)),
        "error": run.error,
        **_operations(run),
    }


@api.post(
    "/tasks",
    response={201: TaskCreatedOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Create a task and start its run",
)
def create_task(request: HttpRequest, payload: TaskIn):
    user = request_user(request)
    project = get_project_for_user(user, payload.project, write=True)
    run = start_run(user, project, payload.title, payload.description, budget=payload.budget)
    # The embedded worker may already have moved the run on; report where it is now.
    run.refresh_from_db(fields=["status"])
    return Status(201, {"id": run.task_id, "run": {"id": run.pk, "status": run.status}})


@api.get("/runs", response={200: RunListOut, 400: ErrorOut, 404: ErrorOut}, summary="Runs")
def list_runs(
    request: HttpRequest,
    project: CleanText | None = None,
    status: CleanText | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
):
    """Newest first, `limit` at a time (at most 500), only in projects the user can see;
    `next` is the link to the following page, null on the last."""
    user = request_user(request)
    runs = Run.objects.filter(project__in=visible_projects(user))
    if project:
        runs = runs.filter(project=get_project_for_user(user, project))
    if status:
        if status not in Run.Status.values:
            raise HttpError(400, f"status must be one of {', '.join(Run.Status.values)}.")
        runs = runs.filter(status=status)
    runs = runs.select_related("project", "task")
    page, next_url = paginate(request, runs, by="created_at", cursor=cursor, limit=limit)
    return {"runs": [run_summary(run) for run in page], "next": next_url}


@api.get("/runs/{run_id}", response={200: RunDetailOut, 404: ErrorOut}, summary="One run")
def get_run(request: HttpRequest, run_id: int):
    return run_detail(get_run_for_user(request_user(request), run_id))


@api.post(
    "/runs/{run_id}/cancel",
    response={200: RunSummaryOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Cancel a run",
)
def cancel(request: HttpRequest, run_id: int):
    user = request_user(request)
    run = get_run_for_user(user, run_id, write=True)
    try:
        run = cancel_run(user, run)
    except EngineError as exc:  # the run already ended: a conflict, not bad input
        raise HttpError(409, str(exc)) from None
    return run_summary(run)


@api.get(
    "/runs/{run_id}/events",
    response={200: EventListOut, 404: ErrorOut},
    summary="A run's events after a sequence number",
)
def list_events(
    request: HttpRequest, run_id: int, after: int = 0, limit: int = EVENT_LIMIT_DEFAULT
):
    """Ordered by `seq`; pass the last `seq` you saw as `after` to read only what is new."""
    run = get_run_for_user(request_user(request), run_id)
    limit = max(1, min(limit, EVENT_LIMIT_MAX))
    events = run.events.filter(seq__gt=after).order_by("seq")[:limit]
    # The rows are `EventOut`'s already (`Event.json_rows`), rendered as the API renders every
    # reply: checking each against the schema again was a quarter of a long page's CPU, and
    # clients poll this endpoint all through a run.
    return api.create_response(request, {"events": Event.json_rows(events)}, status=200)
