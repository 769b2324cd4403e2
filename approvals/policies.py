"""Which tool calls run, stop for a human, or are refused: a project's approval policy.

A policy is an ordered list of `PolicyRule`s; the first rule that matches a call decides it.
Rules scoped to a run (an approver's "approve this tool for the rest of this run") come
before the project's, but a call the project's rules deny stays denied. The evaluation fails
closed: a call no rule matches, or one whose arguments a rule cannot read, needs a human (and
a deploy is refused outright).
"""

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, replace

from django.db.models import F, Q, QuerySet

from agents.sandbox import sandbox_status
from agents.tools import REGISTRY, Risk, command_allowlisted, patch_paths
from approvals.models import PolicyRule
from orchestra.models import Project
from orchestra.prepared import PreparedRead

Outcome = PolicyRule.Outcome

# What a new project starts with. Each entry is the keyword arguments of one PolicyRule.
DEFAULT_RULES: tuple[dict, ...] = (
    {"name": "Reading is free", "risk": Risk.READ, "outcome": Outcome.ALLOW},
    {
        "name": "Writes inside the step's claimed files",
        "risk": Risk.WRITE,
        "within_claims": True,
        "outcome": Outcome.ALLOW,
    },
    {"name": "Writes elsewhere", "risk": Risk.WRITE, "outcome": Outcome.REQUIRE_APPROVAL},
    {"name": "The project's test command", "tool": "run_tests", "outcome": Outcome.ALLOW},
    {"name": "Commands", "risk": Risk.EXEC, "outcome": Outcome.REQUIRE_APPROVAL},
    {
        "name": "Deploys: two people, neither the task's creator",
        "risk": Risk.DEPLOY,
        "outcome": Outcome.REQUIRE_APPROVAL,
        "approvals_required": 2,
        "exclude_task_creator": True,
    },
)

# The seeded demo: one approver for everything, so a newcomer alone can finish a run.
DEMO_RULES: tuple[dict, ...] = (
    *DEFAULT_RULES[:-1],
    {"name": "Deploys", "risk": Risk.DEPLOY, "outcome": Outcome.REQUIRE_APPROVAL},
)

TIMEOUT_OUTCOMES = ("reject", "reject_stop")


@dataclass(frozen=True)
class Call:
    """What the policy looks at: the tool, its arguments as sent (None when they could not
    be parsed into an object), the agent's role and the step's claims."""

    tool: str
    arguments: dict | None
    role: str = ""
    claims: tuple[str, ...] = ()

    @property
    def risk(self) -> str:
        tool = REGISTRY.get(self.tool)
        return tool.risk.value if tool else ""


@dataclass(frozen=True)
class Verdict:
    outcome: str
    reason: str
    rule: PolicyRule | None = None
    approvals_required: int = 1
    approver_group: str = ""
    exclude_task_creator: bool = False
    deadline_minutes: int | None = None
    timeout_outcome: str = "reject"
    remind_after_minutes: int | None = None
    escalate_group: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome == Outcome.ALLOW

    @property
    def denied(self) -> bool:
        return self.outcome == Outcome.DENY


class Unreadable(Exception):
    """A rule's condition cannot be checked against these arguments."""


def install_default_policy(project: Project, rules: Iterable[dict] = DEFAULT_RULES) -> None:
    """Give a project with no rules the default policy. Idempotent."""
    if project.policy_rules.filter(run__isnull=True).exists():
        return
    PolicyRule.objects.bulk_create(
        PolicyRule(project=project, position=(index + 1) * 10, **spec)
        for index, spec in enumerate(rules)
    )


def _in_order(scope: Q) -> QuerySet[PolicyRule]:
    return PolicyRule.objects.filter(scope, revoked_at__isnull=True).order_by(
        F("run_id").asc(nulls_last=True), "position", "pk"
    )


# A run's rules are read for every tool call: compiled once per connection.
_RUN_RULES = PreparedRead(
    "run_rules",
    lambda project_id, run_id: _in_order(
        Q(project_id=project_id, run__isnull=True) | Q(run_id=run_id)
    ),
    values=2,
)


def rules_for(project: Project, run_id: int | None = None) -> list[PolicyRule]:
    """The rules in evaluation order: the run's own (unrevoked), then the project's. One
    query: this runs for every tool call."""
    if run_id is not None:
        return _RUN_RULES.all(project.pk, run_id)
    return list(_in_order(Q(project=project, run__isnull=True)))


def evaluate(project: Project, call: Call, *, run_id: int | None = None, rules=None) -> Verdict:
    """First match wins; no match, or arguments a rule cannot read, fail closed.

    A run's own rules are tried first, but they only spare a person's approval: when the
    project's rules alone deny the call, the denial stands, whoever made the run rule."""
    rules = list(rules) if rules is not None else rules_for(project, run_id)
    verdict = _first_match(project, call, rules)
    if verdict.rule is not None and verdict.rule.run_id is not None and not verdict.denied:
        project_verdict = _first_match(project, call, [r for r in rules if r.run_id is None])
        if project_verdict.denied:
            return project_verdict
    return verdict


def _first_match(project: Project, call: Call, rules: Iterable[PolicyRule]) -> Verdict:
    if call.arguments is None:
        return safe_outcome(call, "the arguments could not be read")
    if call.tool not in REGISTRY:
        return safe_outcome(call, f"the policy does not know the tool `{call.tool}`")
    for rule in rules:
        try:
            if not matches(rule, call):
                continue
        except Unreadable as exc:
            return safe_outcome(call, f"rule {rule} cannot read the arguments: {exc}")
        return _unless_unconfined(_verdict_of(rule, call, project), call)
    return safe_outcome(call, "no policy rule matches this call")


def _unless_unconfined(verdict: Verdict, call: Call) -> Verdict:
    """Where no sandbox is in force, no command is free: an allowed command (the allowlist,
    the project's test command, any allow rule) needs a person. A deny stays a deny."""
    if not verdict.allowed or call.risk != Risk.EXEC or sandbox_status()["confined"]:
        return verdict
    return replace(
        verdict,
        outcome=Outcome.REQUIRE_APPROVAL,
        reason=(
            "needs a person: no sandbox is in force, so this command would run unconfined on "
            f"the host, with the server's own access to its files and network ({verdict.reason})"
        ),
    )


def safe_outcome(call: Call, why: str) -> Verdict:
    if call.risk == Risk.DEPLOY or not call.risk:
        return Verdict(Outcome.DENY, f"denied: {why}")
    return Verdict(Outcome.REQUIRE_APPROVAL, f"needs approval: {why}")


def _verdict_of(rule: PolicyRule, call: Call, project: Project) -> Verdict:
    if (
        rule.outcome == Outcome.REQUIRE_APPROVAL
        and call.risk == Risk.EXEC
        and _allowlisted(call, project)
    ):
        return Verdict(Outcome.ALLOW, "the command is on the project's allowlist", rule)
    return Verdict(
        outcome=rule.outcome,
        reason=f"rule “{rule}”",
        rule=rule,
        approvals_required=max(1, rule.approvals_required),
        approver_group=rule.approver_group,
        exclude_task_creator=rule.exclude_task_creator,
        deadline_minutes=rule.deadline_minutes,
        timeout_outcome=rule.timeout_outcome or "reject",
        remind_after_minutes=rule.remind_after_minutes,
        escalate_group=rule.escalate_group,
    )


def _allowlisted(call: Call, project: Project) -> bool:
    if call.tool == "run_tests":
        return bool(project.test_command)
    command = (call.arguments or {}).get("command")
    # The project's named checks are commands its admin allows, like the allowlist.
    allowed = [*(project.command_allowlist or []), *project.check_commands().values()]
    return isinstance(command, str) and command_allowlisted(command, allowed, project.test_command)


def matches(rule: PolicyRule, call: Call) -> bool:
    if rule.tool and rule.tool != call.tool:
        return False
    if rule.risk and rule.risk != call.risk:
        return False
    if rule.agent_role and rule.agent_role != call.role:
        return False
    for name, pattern in (rule.arguments or {}).items():
        if not _argument_matches(call, name, pattern):
            return False
    return not rule.within_claims or _within_claims(call)


def _argument_matches(call: Call, name: str, pattern: str) -> bool:
    """`pattern` is a glob (`*` also crosses `/`). An absent argument does not match; one
    that is not text or a number cannot be read."""
    arguments = call.arguments or {}
    if name == "path" and call.tool == "apply_patch":
        paths = _written_paths(call)
        return bool(paths) and all(fnmatch.fnmatchcase(p, pattern) for p in paths)
    if name not in arguments:
        return False
    value = arguments[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Unreadable(f"`{name}` is not text")
    return fnmatch.fnmatchcase(str(value), str(pattern))


def _written_paths(call: Call) -> list[str]:
    arguments = call.arguments or {}
    if call.tool == "apply_patch":
        patch = arguments.get("patch")
        if not isinstance(patch, str):
            raise Unreadable("`patch` is not text")
        try:
            return patch_paths(patch)
        except Exception as exc:
            raise Unreadable(f"the patch cannot be parsed ({exc})") from None
    path = arguments.get("path")
    if not isinstance(path, str):
        raise Unreadable("`path` is not text")
    return [path]


def _within_claims(call: Call) -> bool:
    file_claims = [c for c in call.claims if ":" not in c]
    if not file_claims:
        return False
    paths = _written_paths(call)
    return bool(paths) and all(
        any(_claim_covers(claim, path) for claim in file_claims) for path in paths
    )


def _claim_covers(claim: str, path: str) -> bool:
    path = path.removeprefix("./")
    claim = claim.removeprefix("./")
    if ".." in path.split("/"):
        return False
    return (
        path == claim
        or path.startswith(claim.rstrip("/") + "/")
        or (fnmatch.fnmatchcase(path, claim))
    )
