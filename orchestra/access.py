"""One access function per object kind; every view, API endpoint, consumer and CLI uses them.

Raises `Http404` for objects the user may not see (so their existence does not leak) and
`PermissionDenied` for actions the user may see but not perform.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from orchestra.models import Membership, Project, Run
from orchestra.prepared import PreparedRead

CREATE_ROLES = (Membership.Role.OPERATOR, Membership.Role.APPROVER, Membership.Role.ADMIN)
DECIDE_ROLES = (Membership.Role.APPROVER, Membership.Role.ADMIN)


def visible_projects(user) -> QuerySet[Project]:
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


# The reads behind every request about a run, compiled once per process (`PreparedRead`):
# compiling them each time was a quarter of the interpreter time of a client's poll for a
# run's new events.
_RUN = PreparedRead(
    "a run to show", lambda run_id: Run.objects.select_related("project", "task").filter(pk=run_id)
)
_ROLE = PreparedRead(
    "a member's role",
    lambda project_id, user_id: Membership.objects.filter(
        project_id=project_id, user_id=user_id
    ).values_list("role"),
    values=2,
)


def role_in(user, project: Project) -> str | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Membership.Role.ADMIN
    roles = _ROLE.tuples(project.pk, user.pk)  # one at most: a member has one role
    return roles[0][0] if roles else None


def get_project_for_user(user, slug: str, *, write: bool = False) -> Project:
    """The project if `user` may see it; with `write`, only if they may create tasks in it."""
    project = Project.objects.filter(slug=slug).first()
    role = role_in(user, project) if project else None
    if role is None:
        raise Http404("No such project.")
    if write and role not in CREATE_ROLES:
        raise PermissionDenied("You may not create tasks in this project.")
    return project


def get_run_for_user(user, run_id: int, *, write: bool = False) -> Run:
    """The run if `user` may see its project; with `write`, only if they may operate it."""
    try:
        run = _RUN.get(int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        run = None
    role = role_in(user, run.project) if run else None
    if role is None:
        raise Http404("No such run.")
    if write and role not in CREATE_ROLES:
        raise PermissionDenied("You may not change this run.")
    return run


def decide_refusal(user, project: Project, checkpoint=None) -> str | None:
    """Why `user` may not decide (this checkpoint in) `project`, or None if they may.

    The one place the approve permission is checked: views, API, WebSocket and CLI all come
    here, and only a signed-in person reaches it; agents and tool output never do.
    """
    if role_in(user, project) not in DECIDE_ROLES:
        return "You may not decide checkpoints in this project."
    if checkpoint is None:
        return None
    if user.pk in (checkpoint.excluded_approvers or []):
        return "The person who created the task may not approve this checkpoint."
    if checkpoint.approver_group:
        # After a reminder, the escalation group may decide too.
        groups = [checkpoint.approver_group]
        if checkpoint.reminded_at and checkpoint.escalate_group:
            groups.append(checkpoint.escalate_group)
        if not user.groups.filter(name__in=groups).exists():
            return f"Only members of the {' or '.join(map(repr, groups))} group may decide this."
    return None


def can_decide(user, project: Project, checkpoint=None) -> bool:
    return decide_refusal(user, project, checkpoint) is None
