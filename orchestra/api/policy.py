"""A project's approval policy: read by its members; rules added and revoked by its admins.

Adding and revoking go through the rules service (`approvals.rules`), as the dashboard's policy
page does: the same checks of a rule's fields, the same project lock and the same audit
records ("policy.created", "policy.deleted"). A rule that is wrong gets a 422 naming the field,
and nothing is saved.
"""

import pydantic
from django.http import HttpRequest

from approvals import rules as policy
from approvals.models import PolicyRule
from approvals.rules import InvalidRule
from orchestra.access import get_project_for_user
from orchestra.api.app import Status, api, request_user
from orchestra.api.errors import validation_message
from orchestra.api.pages import DEFAULT_LIMIT, paginate_in_order
from orchestra.api.schemas import ErrorOut, PolicyOut, PolicyRuleIn, PolicyRuleOut, RuleErrorOut


def rule_json(rule: PolicyRule) -> dict:
    return policy.rule_fields(rule)


@api.get(
    "/projects/{slug}/policy",
    response={200: PolicyOut, 400: ErrorOut, 404: ErrorOut},
    summary="A project's approval policy rules, in the order they are tried",
)
def get_policy(
    request: HttpRequest, slug: str, cursor: str | None = None, limit: int = DEFAULT_LIMIT
):
    project = get_project_for_user(request_user(request), slug)
    rules = PolicyRule.objects.filter(project=project, run__isnull=True, revoked_at__isnull=True)
    page, next_url = paginate_in_order(request, rules, by="position", cursor=cursor, limit=limit)
    return {"rules": [rule_json(rule) for rule in page], "next": next_url}


# The body is read in the view rather than by ninja, so that a rule of the wrong shape (a
# missing outcome, a number that is not one) is a 422 naming the field like a rule the service
# refuses, and only after the admin check: a viewer learns nothing from a malformed rule.
_RULE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PolicyRuleIn.model_json_schema()}},
    }
}


@api.post(
    "/projects/{slug}/policy/rules",
    response={201: PolicyRuleOut, 403: ErrorOut, 404: ErrorOut, 422: RuleErrorOut},
    summary="Add a rule at the end of the policy (admins)",
    openapi_extra=_RULE_BODY,
)
def add_policy_rule(request: HttpRequest, slug: str):
    """The rule is tried after every existing one (the first matching rule decides a call);
    it applies from the next tool call of every run of the project."""
    user = request_user(request)
    project = get_project_for_user(user, slug)
    policy.require_admin(user, project)
    try:
        payload = PolicyRuleIn.model_validate_json(request.body or b"{}")
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        location = errors[0].get("loc") if errors else ()
        return Status(422, _refusal(validation_message(errors), location[0] if location else None))
    try:
        rule = policy.create_rule(user, project, **payload.model_dump(exclude_unset=True))
    except InvalidRule as exc:
        message = f"{exc.field}: {exc}" if exc.field else str(exc)
        return Status(422, _refusal(message, exc.field))
    return Status(201, rule_json(rule))


@api.delete(
    "/projects/{slug}/policy/rules/{rule_id}",
    response={204: None, 403: ErrorOut, 404: ErrorOut},
    summary="Revoke a rule (admins): the policy no longer tries it",
)
def revoke_policy_rule(request: HttpRequest, slug: str, rule_id: int):
    """The row stays, marked revoked, so the checkpoints it opened still name it."""
    user = request_user(request)
    project = get_project_for_user(user, slug)
    policy.require_admin(user, project)
    rule = PolicyRule.objects.filter(
        pk=rule_id, project=project, run__isnull=True, revoked_at__isnull=True
    ).first()
    if rule is None:
        return Status(404, {"detail": f"The policy has no rule {rule_id} (or it was revoked)."})
    try:
        policy.delete_rule(user, rule)
    except InvalidRule as exc:  # revoked by someone else since it was read
        return Status(404, {"detail": str(exc)})
    return Status(204, None)


def _refusal(message: str, field) -> dict:
    field = str(field) if field is not None else None
    return {"detail": message, "field": field}
