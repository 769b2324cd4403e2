"""Run rules: an approval "for the rest of this run" becomes a run-scoped policy rule.

"approve_run" allows every later call of the tool in the run, "approve_pattern" those whose
argument matches a glob (`Pattern`, checked against the call being approved by
`check_pattern`). `allow_for_run` adds the rule (caller holds the run lock);
`revoke_run_rule` withdraws it, after which later calls ask again.
"""

import fnmatch
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents.tools import REGISTRY
from approvals import audit
from approvals.errors import InvalidDecision
from approvals.models import Checkpoint, PolicyRule
from orchestra.access import decide_refusal
from orchestra.events import emit, locked_run
from orchestra.models import Run


@dataclass(frozen=True)
class Pattern:
    """ "Approve this tool for arguments matching": argument name and glob."""

    argument: str
    glob: str


def check_pattern(checkpoint: Checkpoint, pattern) -> Pattern:
    if isinstance(pattern, dict):
        pattern = Pattern(str(pattern.get("argument", "")), str(pattern.get("glob", "")))
    if not isinstance(pattern, Pattern) or not pattern.argument or not pattern.glob:
        raise InvalidDecision("approve_pattern needs an argument name and a glob pattern")
    tool = REGISTRY.get(checkpoint.tool_call.tool)
    if tool is None or pattern.argument not in tool.parameters.get("properties", {}):
        raise InvalidDecision(f"`{checkpoint.tool_call.tool}` has no argument {pattern.argument!r}")
    value = checkpoint.tool_call.arguments.get(pattern.argument)
    if not isinstance(value, str) or not fnmatch.fnmatchcase(value, pattern.glob):
        raise InvalidDecision(
            f"the pattern {pattern.glob!r} does not match this call's {pattern.argument} "
            f"({value!r}); approve_pattern approves this call too"
        )
    return pattern


def allow_for_run(run: Run, checkpoint: Checkpoint, user, pattern: Pattern | None) -> None:
    tool = checkpoint.tool_call.tool
    arguments = {pattern.argument: pattern.glob} if pattern else {}
    described = f" with {pattern.argument} matching {pattern.glob!r}" if pattern else ""
    rule = PolicyRule.objects.create(
        project=run.project,
        run=run,
        position=0,
        name=f"{tool}{described}: approved by {user.get_username()} for run {run.pk}",
        tool=tool,
        arguments=arguments,
        outcome=PolicyRule.Outcome.ALLOW,
        created_by=user,
    )
    data = {"rule": rule.pk, "name": rule.name, "tool": tool, "arguments": arguments}
    emit(run, "policy.rule_added", actor=user.get_username(), data=data)
    audit.record(run.project, "policy.created", user.get_username(), data, run=run)


def revoke_run_rule(user, rule: PolicyRule) -> PolicyRule:
    """Withdraw an approver's "for the rest of this run" rule; later calls ask again."""
    if rule.run_id is None:
        raise InvalidDecision("only run-scoped rules are revoked; edit the project's policy")
    refusal = decide_refusal(user, rule.project)
    if refusal:
        raise PermissionDenied(refusal)
    with locked_run(rule.run_id) as run:
        updated = PolicyRule.objects.filter(pk=rule.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=user
        )
        rule.refresh_from_db()
        if updated:
            data = {"rule": rule.pk, "name": rule.name}
            emit(run, "policy.rule_revoked", actor=user.get_username(), data=data)
            audit.record(run.project, "policy.revoked", user.get_username(), data, run=run)
    return rule
