"""The NinjaAPI object every route module registers on, and how a request's user is read."""

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.operation import Operation

from orchestra.api.auth import BearerToken, SessionCookie

try:
    from ninja import Status
except ImportError:  # django-ninja before 1.5 takes a (status, body) tuple instead

    def Status(status_code: int, value: object) -> tuple[int, object]:
        return status_code, value


class OrchestraAPI(NinjaAPI):
    """The API, with operation ids that name the view, not the module of the package it is in.

    Ids stay `orchestra_api_<view>`, so clients generated from the OpenAPI document keep their
    method names whichever area module holds a view.
    """

    def get_openapi_operation_id(self, operation: Operation) -> str:
        return f"orchestra_api_{operation.view_func.__name__}"


api = OrchestraAPI(
    title="Orchestra API",
    version="1",
    description="Start tasks, follow runs and their events, and decide human checkpoints.",
    urls_namespace="api",
    auth=[BearerToken(), SessionCookie()],
)


def request_user(request: HttpRequest) -> AbstractBaseUser:
    """The authenticated user, whichever way in (bearer token or session)."""
    return request.auth  # type: ignore[attr-defined]


__all__ = ["OrchestraAPI", "Status", "api", "request_user"]
