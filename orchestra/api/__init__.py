"""The JSON API at /api/: tasks, projects (with their profiles,
members and policy), runs (with their steps and model calls), events and approvals.

Views stay thin: they resolve objects through `orchestra.access` (404 for what a user may not
see, 403 for what they may see but not do) and change state only through the services, so
the API, the dashboard, the CLI and the consumers all obey the same rules. Errors always come
back as `{"detail": message}`; the exception handlers in `errors` do that mapping once.

Two ways in: `Authorization: Bearer <token>` for scripts and the CLI, and the Django session
(with its CSRF check on unsafe methods) so the browser dashboard can call the same endpoints.

`api` is created in `app`; each area's module registers its routes on it when imported, so
importing this package registers them all.
"""

from orchestra.api import (
    approvals,
    audit,
    errors,
    operations,
    policy,
    projects,
    runs,
    settings,
    traces,
)
from orchestra.api.app import api

__all__ = [
    "api",
    "approvals",
    "audit",
    "errors",
    "operations",
    "policy",
    "projects",
    "runs",
    "settings",
    "traces",
]
