"""Who is in a project and with which role: its admins add, change and remove members."""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction

from orchestra.access import role_in
from orchestra.models import Membership, Project


class InvalidMember(Exception):
    """Bad input; the message says what to fix."""


def require_admin(user, project: Project) -> None:
    if role_in(user, project) != Membership.Role.ADMIN:
        raise PermissionDenied("Only the project's admins may change its members.")


def set_member(user, project: Project, username: str, role: str) -> Membership:
    """Add `username` to the project with `role`, or change their role if already in."""
    require_admin(user, project)
    if role not in Membership.Role.values:
        raise InvalidMember(f"role must be one of {', '.join(Membership.Role.values)}.")
    person = get_user_model().objects.filter(username=username, is_active=True).first()
    if person is None:
        raise InvalidMember(f"There is no active user {username!r}.")
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update().filter(project=project, user=person).first()
        )
        if membership is None:
            return Membership.objects.create(project=project, user=person, role=role)
        if membership.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN:
            _keep_an_admin(project, membership)
        membership.role = role
        membership.save(update_fields=["role"])
        return membership


def remove_member(user, project: Project, username: str) -> None:
    """Take `username` out of the project; its last admin stays."""
    require_admin(user, project)
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update()
            .filter(project=project, user__username=username)
            .first()
        )
        if membership is None:
            raise InvalidMember(f"{username!r} is not a member of this project.")
        if membership.role == Membership.Role.ADMIN:
            _keep_an_admin(project, membership)
        membership.delete()


def _keep_an_admin(project: Project, leaving: Membership) -> None:
    """Caller holds `leaving`'s row lock; the other admins' rows are locked here too."""
    others = Membership.objects.select_for_update().filter(
        project=project, role=Membership.Role.ADMIN
    )
    if not others.exclude(pk=leaving.pk).exists():
        raise InvalidMember("A project keeps at least one admin.")
