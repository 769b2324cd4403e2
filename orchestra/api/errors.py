"""Errors always come back as `{"detail": message}`: every refusal is mapped here, once."""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from ninja.errors import AuthenticationError, ValidationError

from approvals.errors import AlreadyDecided, AlreadyVoted, InvalidDecision
from orchestra.api.app import api
from orchestra.engine import EngineError


def _detail(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return api.create_response(request, {"detail": message}, status=status)


def validation_message(errors: list[dict]) -> str:
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
    return _detail(request, validation_message(exc.errors), 400)


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
