"""The JSON API at /api/: tasks, projects, runs, events and approvals.

Views stay thin: they resolve objects through `orchestra.access` (404 for what a user may not
see, 403 for what they may see but not do) and change state only through the services, so
the API, the dashboard, the CLI and the consumers all obey the same rules. Errors always come
back as `{"detail": message}`; the exception handlers at the bottom do that mapping once.

Two ways in: `Authorization: Bearer <token>` for scripts and the CLI, and the Django session
(with its CSRF check on unsafe methods) so the browser dashboard can call the same endpoints.
"""

from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth

from approvals import audit
from approvals.models import Checkpoint
from approvals.services import (
    AlreadyDecided,
    AlreadyVoted,
    InvalidDecision,
    get_checkpoint_for_user,
)
from orchestra.access import get_project_for_user, get_run_for_user, visible_projects
from orchestra.engine import EngineError, cancel_run, decide_checkpoint, start_run
from orchestra.engine import projects as project_services
from orchestra.models import ApiToken, Project, Run, Step
from orchestra.text import CleanInput, CleanText

try:
    from ninja import Status
except ImportError:  # django-ninja before 1.5 takes a (status, body) tuple instead

    def Status(status_code: int, value: object) -> tuple[int, object]:
        return status_code, value


# A token's last use is recorded at most this often: a busy client must not turn every read
# into a write.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
RUN_LIST_LIMIT = 100
APPROVAL_LIST_LIMIT = 100
EVENT_LIMIT_DEFAULT = 1000
EVENT_LIMIT_MAX = 5000


# --- authentication -------------------------------------------------------------------------
class BearerToken(HttpBearer):
    """`Authorization: Bearer orc_...`, looked up by the SHA-256 digest (the only thing stored)."""

    def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        if not token:
            return None
        api_token = (
            ApiToken.objects.select_related("user")
            .filter(digest=ApiToken.digest_of(token.strip()))
            .first()
        )
        if api_token is None or not api_token.user.is_active:
            return None
        now = timezone.now()
        if api_token.last_used_at is None or now - api_token.last_used_at >= TOKEN_TOUCH_INTERVAL:
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        # Code that reads request.user (logging, helpers) sees the token's owner too.
        request.user = api_token.user
        return api_token.user


class SessionCookie(SessionAuth):
    """The logged-in browser session, with Django's CSRF check on unsafe methods.

    Without a logged-in user there is nothing to protect, so the CSRF check is skipped and the
    request falls through to 401 instead of a misleading 403 "CSRF check Failed".
    """

    def __call__(self, request: HttpRequest) -> AbstractBaseUser | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return super().__call__(request)


api = NinjaAPI(
    title="Orchestra API",
    version="1",
    description="Start tasks, follow runs and their events, and decide human checkpoints.",
    urls_namespace="api",
    auth=[BearerToken(), SessionCookie()],
)


# --- schemas --------------------------------------------------------------------------------
class ErrorOut(Schema):
    detail: str


# Input schemas derive from CleanInput: text with NUL, control characters or lone surrogates,
# and numbers that are not finite, are refused with a 400 before any view runs.
class TaskIn(CleanInput):
    project: str
    title: str
    description: str = ""


class AuditRecordRef(Schema):
    seq: int
    id: int
    kind: str


class AuditVerifyOut(Schema):
    ok: bool
    count: int
    first_bad: AuditRecordRef | None
    reason: str


class RunRef(Schema):
    id: int
    status: str


class TaskCreatedOut(Schema):
    id: int
    run: RunRef


class ProjectIn(CleanInput):
    slug: str
    name: str
    team: str = Project.Team.SOFTWARE.value


class ProjectOut(Schema):
    slug: str
    name: str
    team: str


class ProjectListOut(Schema):
    projects: list[ProjectOut]


class TaskRef(Schema):
    id: int
    title: str


class TaskOut(TaskRef):
    description: str


class RunSummaryOut(Schema):
    id: int
    status: str
    phase: str
    project: str
    task: TaskRef
    demo_model: bool
    created_at: str
    finished_at: str | None


class RunListOut(Schema):
    runs: list[RunSummaryOut]


class StepOut(Schema):
    key: str
    title: str
    agent: str
    status: str
    depends_on: list[str]
    started_at: str | None
    finished_at: str | None
    attempts: int
    revisions: int


class UsageOut(Schema):
    input_tokens: int
    output_tokens: int
    # A decimal string: money does not go through floats.
    cost_usd: str


class RunDetailOut(Schema):
    id: int
    status: str
    phase: str
    task: TaskOut
    project: str
    demo_model: bool
    steps: list[StepOut]
    usage: UsageOut
    report: str
    error: str


class EventOut(Schema):
    seq: int
    kind: str
    at: str
    step: str | None
    actor: str
    data: dict


class EventListOut(Schema):
    events: list[EventOut]


class ApprovalOut(Schema):
    id: int
    kind: str
    run: int
    step: str | None
    tool: str | None
    arguments: dict | None
    status: str
    requested_at: str
    expires_at: str | None
    approvals_required: int
    # Exactly what an approver is shown: tool and reason, the plan, or the escalated output.
    shown: dict


class ApprovalListOut(Schema):
    approvals: list[ApprovalOut]


class PatternIn(CleanInput):
    argument: str
    glob: str


class DecisionIn(CleanInput):
    decision: Literal[
        "approve", "approve_run", "approve_pattern", "reject", "reject_stop", "respond", "edit"
    ]
    # Feedback for a rejection, the answer for "respond", a note for an approval.
    comment: str = ""
    # With "edit": the approver's edited arguments, which run instead of the proposed ones
    # (checked against the tool's schema and the project's policy). Any other approval runs
    # the call as proposed: arguments sent with it must be the proposed ones (400 otherwise).
    arguments: dict | None = None
    # With "approve_pattern": allow the tool for the rest of the run when `argument` matches.
    pattern: PatternIn | None = None
    # With "approve" on a plan checkpoint: edit_brief, edit_title, remove_step,
    # add_dependency, remove_dependency operations; the edited plan runs.
    plan_edits: list[dict] | None = None


class DecisionOut(Schema):
    id: int
    status: str
    decision: str
    decided_by: str | None
    decided_at: str | None
    approvals: list[str]
    approvals_required: int
    arguments_diff: list


# --- serialisation --------------------------------------------------------------------------
def _iso(moment: datetime | None) -> str | None:
    """Full-precision ISO 8601, the same form as `Event.as_json`, so clients compare strings."""
    return moment.isoformat() if moment else None


def _project_json(project: Project) -> dict:
    return {"slug": project.slug, "name": project.name, "team": project.team}


def _run_summary(run: Run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "phase": run.phase,
        "project": run.project.slug,
        "task": {"id": run.task_id, "title": run.task.title},
        "demo_model": run.uses_demo_model,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
    }


def _step_json(step: Step) -> dict:
    return {
        "key": step.key,
        "title": step.title,
        "agent": step.agent_role,
        "status": step.status,
        "depends_on": step.depends_on,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "attempts": step.attempts,
        "revisions": step.revisions,
    }


def _run_detail(run: Run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "phase": run.phase,
        "task": {"id": run.task_id, "title": run.task.title, "description": run.task.description},
        "project": run.project.slug,
        "demo_model": run.uses_demo_model,
        "steps": [_step_json(step) for step in run.steps.order_by("position")],
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": str(run.cost_usd),
        },
        "report": run.report,
        "error": run.error,
    }


def _approval_json(checkpoint: Checkpoint) -> dict:
    call = checkpoint.tool_call
    return {
        "id": checkpoint.pk,
        "kind": checkpoint.kind,
        "run": checkpoint.run_id,
        "step": checkpoint.step.key if checkpoint.step else None,
        "tool": call.tool if call else None,
        "arguments": call.arguments if call else None,
        "status": checkpoint.status,
        "requested_at": _iso(checkpoint.requested_at),
        "expires_at": _iso(checkpoint.expires_at),
        "approvals_required": checkpoint.approvals_required,
        "shown": checkpoint.shown,
    }


def _decision_json(checkpoint: Checkpoint) -> dict:
    return {
        "id": checkpoint.pk,
        "status": checkpoint.status,
        "decision": checkpoint.decision,
        "decided_by": checkpoint.decided_by.get_username() if checkpoint.decided_by else None,
        "decided_at": _iso(checkpoint.decided_at),
        "approvals": list(checkpoint.votes.values_list("user__username", flat=True)),
        "approvals_required": checkpoint.approvals_required,
        "arguments_diff": checkpoint.arguments_diff,
    }


def _user(request: HttpRequest) -> AbstractBaseUser:
    """The authenticated user, whichever way in (bearer token or session)."""
    return request.auth  # type: ignore[attr-defined]


# --- tasks ----------------------------------------------------------------------------------
@api.post(
    "/tasks",
    response={201: TaskCreatedOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    summary="Create a task and start its run",
)
def create_task(request: HttpRequest, payload: TaskIn):
    user = _user(request)
    project = get_project_for_user(user, payload.project, write=True)
    run = start_run(user, project, payload.title, payload.description)
    # The embedded worker may already have moved the run on; report where it is now.
    run.refresh_from_db(fields=["status"])
    return Status(201, {"id": run.task_id, "run": {"id": run.pk, "status": run.status}})


# --- projects -------------------------------------------------------------------------------
@api.get("/projects", response=ProjectListOut, summary="Projects you can see")
def list_projects(request: HttpRequest):
    projects = visible_projects(_user(request)).order_by("name")
    return {"projects": [_project_json(project) for project in projects]}


@api.post(
    "/projects",
    response={201: ProjectOut, 400: ErrorOut, 403: ErrorOut, 409: ErrorOut},
    summary="Create a project (superusers only)",
)
def create_project(request: HttpRequest, payload: ProjectIn):
    project = _create_project(_user(request), payload.slug, payload.name, payload.team)
    return Status(201, _project_json(project))


def _create_project(user: AbstractBaseUser, slug: str, name: str, team: str) -> Project:
    try:
        return project_services.create_project(user, slug, name, team)
    except project_services.InvalidProject as exc:
        raise HttpError(400, str(exc)) from None
    except project_services.ProjectExists as exc:
        raise HttpError(409, str(exc)) from None


@api.get(
    "/projects/{slug}/audit.jsonl",
    response={200: None, 403: ErrorOut, 404: ErrorOut},
    summary="The project's audit chain as JSON lines (admins and approvers)",
)
def export_audit(request: HttpRequest, slug: CleanText):
    """One record per line in seq order, hashes included, to verify the chain elsewhere."""
    project = audit.get_audit_project_for_user(_user(request), slug)
    response = HttpResponse(content_type="application/x-ndjson; charset=utf-8")
    audit.export_jsonl(project, response)
    response["Content-Disposition"] = f'attachment; filename="audit-{project.slug}.jsonl"'
    return response


@api.get(
    "/projects/{slug}/audit/verify",
    response={200: AuditVerifyOut, 403: ErrorOut, 404: ErrorOut},
    summary="Check the project's audit chain (admins and approvers)",
)
def verify_audit(request: HttpRequest, slug: CleanText):
    result = audit.verify(audit.get_audit_project_for_user(_user(request), slug))
    bad = result.first_bad
    return {
        "ok": result.ok,
        "count": result.count,
        "first_bad": {"seq": bad.seq, "id": bad.pk, "kind": bad.kind} if bad else None,
        "reason": result.reason,
    }


# --- runs -----------------------------------------------------------------------------------
@api.get("/runs", response={200: RunListOut, 400: ErrorOut, 404: ErrorOut}, summary="Runs")
def list_runs(
    request: HttpRequest, project: CleanText | None = None, status: CleanText | None = None
):
    """Newest first, at most 100, only in projects the user can see."""
    user = _user(request)
    runs = Run.objects.filter(project__in=visible_projects(user))
    if project:
        runs = runs.filter(project=get_project_for_user(user, project))
    if status:
        if status not in Run.Status.values:
            raise HttpError(400, f"status must be one of {', '.join(Run.Status.values)}.")
        runs = runs.filter(status=status)
    runs = runs.select_related("project", "task").order_by("-created_at", "-pk")[:RUN_LIST_LIMIT]
    return {"runs": [_run_summary(run) for run in runs]}


@api.get("/runs/{run_id}", response={200: RunDetailOut, 404: ErrorOut}, summary="One run")
def get_run(request: HttpRequest, run_id: int):
    return _run_detail(get_run_for_user(_user(request), run_id))


@api.post(
    "/runs/{run_id}/cancel",
    response={200: RunSummaryOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Cancel a run",
)
def cancel(request: HttpRequest, run_id: int):
    user = _user(request)
    run = get_run_for_user(user, run_id, write=True)
    try:
        run = cancel_run(user, run)
    except EngineError as exc:  # the run already ended: a conflict, not bad input
        raise HttpError(409, str(exc)) from None
    return _run_summary(run)


@api.get(
    "/runs/{run_id}/events",
    response={200: EventListOut, 404: ErrorOut},
    summary="A run's events after a sequence number",
)
def list_events(
    request: HttpRequest, run_id: int, after: int = 0, limit: int = EVENT_LIMIT_DEFAULT
):
    """Ordered by `seq`; pass the last `seq` you saw as `after` to read only what is new."""
    run = get_run_for_user(_user(request), run_id)
    limit = max(1, min(limit, EVENT_LIMIT_MAX))
    events = run.events.filter(seq__gt=after).select_related("step").order_by("seq")[:limit]
    return {"events": [event.as_json() for event in events]}


# --- approvals ------------------------------------------------------------------------------
@api.get(
    "/approvals",
    response={200: ApprovalListOut, 400: ErrorOut, 404: ErrorOut},
    summary="Checkpoints in runs you can see",
)
def list_approvals(request: HttpRequest, status: CleanText | None = None, run: int | None = None):
    """Newest first, at most 100."""
    user = _user(request)
    checkpoints = Checkpoint.objects.filter(run__project__in=visible_projects(user))
    if run is not None:
        checkpoints = checkpoints.filter(run=get_run_for_user(user, run))
    if status:
        if status not in Checkpoint.Status.values:
            raise HttpError(400, f"status must be one of {', '.join(Checkpoint.Status.values)}.")
        checkpoints = checkpoints.filter(status=status)
    checkpoints = checkpoints.select_related("step", "tool_call").order_by("-requested_at", "-pk")
    return {"approvals": [_approval_json(c) for c in checkpoints[:APPROVAL_LIST_LIMIT]]}


@api.post(
    "/approvals/{checkpoint_id}/decision",
    response={200: DecisionOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Approve or reject a checkpoint",
)
def decide(request: HttpRequest, checkpoint_id: int, payload: DecisionIn):
    user = _user(request)
    checkpoint = get_checkpoint_for_user(user, checkpoint_id)
    checkpoint = decide_checkpoint(
        user,
        checkpoint,
        payload.decision,
        payload.comment,
        payload.arguments,
        pattern=payload.pattern.dict() if payload.pattern else None,
        plan_edits=payload.plan_edits,
    )
    return _decision_json(checkpoint)


# --- errors: always {"detail": message} -----------------------------------------------------
def _detail(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return api.create_response(request, {"detail": message}, status=status)


def _validation_message(errors: list[dict]) -> str:
    """ninja's error list as one readable clause per field, e.g. "title: Field required".

    Locations drop ninja's plumbing: the source ("body", "query", "path") and, for bodies,
    the view's parameter name, leaving the field path the client actually sent.
    """
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] == "body" and len(loc) > 2:
            loc = loc[2:]
        elif loc and loc[0] in ("body", "query", "path") and len(loc) > 1:
            loc = loc[1:] if loc[0] != "body" else ["body"]
        message = error.get("msg", "is invalid")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts) or "The request is invalid."


@api.exception_handler(ValidationError)
def _on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _detail(request, _validation_message(exc.errors), 400)


@api.exception_handler(RequestDataTooBig)
def _on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _detail(request, f"The request body is larger than {limit} bytes.", 413)


@api.exception_handler(SuspiciousOperation)
def _on_suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    # Django's other refusals of a request's shape (too many fields, a bad header...).
    return _detail(request, "The request is malformed.", 400)


@api.exception_handler(UnicodeError)
def _on_unicode_error(request: HttpRequest, exc: UnicodeError) -> HttpResponse:
    # A last guard: input schemas refuse such text first, but a path or header that still
    # carries it must not become a 500.
    return _detail(request, "The request contains text that is not valid Unicode.", 400)


@api.exception_handler(AuthenticationError)
def _on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _detail(
        request, "Authentication required: send 'Authorization: Bearer <token>'.", 401
    )
    response["WWW-Authenticate"] = 'Bearer realm="orchestra"'
    return response


@api.exception_handler(Http404)
def _on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _detail(request, str(exc) or "Not found.", 404)


@api.exception_handler(PermissionDenied)
def _on_forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _detail(request, str(exc) or "Forbidden.", 403)


@api.exception_handler(EngineError)
def _on_engine_error(request: HttpRequest, exc: EngineError) -> HttpResponse:
    return _detail(request, str(exc), 400)


@api.exception_handler(InvalidDecision)
def _on_invalid_decision(request: HttpRequest, exc: InvalidDecision) -> HttpResponse:
    return _detail(request, str(exc), 400)


@api.exception_handler(AlreadyVoted)
def _on_already_voted(request: HttpRequest, exc: AlreadyVoted) -> HttpResponse:
    return _detail(request, str(exc), 409)


@api.exception_handler(AlreadyDecided)
def _on_already_decided(request: HttpRequest, exc: AlreadyDecided) -> HttpResponse:
    return _detail(request, str(exc), 409)
