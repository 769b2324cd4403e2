"""A run operated by hand: pause and resume it, retry a failed step, fork it at a step."""

from django.http import Http404, HttpRequest
from ninja.errors import HttpError

from orchestra.access import get_run_for_user
from orchestra.api.app import Status, api, request_user
from orchestra.api.runs import run_summary
from orchestra.api.schemas import ErrorOut, ForkIn, RunSummaryOut
from orchestra.engine import EngineError, fork_run, pause_run, resume_run, retry_step
from orchestra.engine.forks import InvalidFork

OPERATED = {200: RunSummaryOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}


def _operate(request: HttpRequest, run_id: int, action) -> dict:
    """Resolve the run for an operator, apply `action`; a refusal (the run ended, or is
    not in the state the action needs) is a conflict."""
    user = request_user(request)
    run = get_run_for_user(user, run_id, write=True)
    try:
        run = action(user, run)
    except EngineError as exc:
        raise HttpError(409, str(exc)) from None
    return run_summary(run)


@api.post("/runs/{run_id}/pause", response=OPERATED, summary="Pause a run")
def pause(request: HttpRequest, run_id: int):
    """Nothing new is dispatched; running steps finish their model call and park at their
    next turn, resumable from their conversation."""
    return _operate(request, run_id, pause_run)


@api.post("/runs/{run_id}/resume", response=OPERATED, summary="Resume a paused run")
def resume(request: HttpRequest, run_id: int):
    """Parked steps carry on from their conversations; dispatch starts again."""
    return _operate(request, run_id, resume_run)


@api.post("/runs/{run_id}/steps/{key}/retry", response=OPERATED, summary="Retry a failed step")
def retry(request: HttpRequest, run_id: int, key: str):
    """A failed run's failed step gets a fresh attempt; the run goes back to running."""
    user = request_user(request)
    run = get_run_for_user(user, run_id, write=True)
    if not run.steps.filter(key=key).exists():
        raise Http404(f"Run {run.pk} has no step {key!r}.")
    return _operate(request, run_id, lambda user, run: retry_step(user, run, key))


@api.post(
    "/runs/{run_id}/fork",
    response={201: RunSummaryOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Fork a finished or failed run at a step",
)
def fork(request: HttpRequest, run_id: int, payload: ForkIn):
    """A new run linked to this one: the step (its brief or agent edited) and everything
    downstream of it run again; the other completed steps are reused as they were."""
    user = request_user(request)
    parent = get_run_for_user(user, run_id, write=True)
    if not parent.steps.filter(key=payload.step).exists():
        raise Http404(f"Run {parent.pk} has no step {payload.step!r}.")
    try:
        created = fork_run(user, parent, payload.step, payload.brief, payload.agent, payload.model)
    except InvalidFork as exc:
        raise HttpError(400, str(exc)) from None
    except EngineError as exc:  # the run is still under way
        raise HttpError(409, str(exc)) from None
    return Status(201, run_summary(created))
