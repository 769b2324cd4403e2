"""The API's request and response shapes, and the one timestamp form every response uses."""

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import ConfigDict, Field

from orchestra.models import Project
from orchestra.text import CleanInput


class ErrorOut(Schema):
    detail: str


# Input schemas derive from CleanInput: text with NUL, control characters or lone surrogates,
# and numbers that are not finite, are refused with a 400 before any view runs.
class TaskIn(CleanInput):
    project: str
    title: str
    description: str = ""
    # This run's limits, e.g. {"soft_usd": "2", "hard_tokens": 500000}; else the project's.
    budget: dict[str, str | int | float | None] | None = None


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
    # Paused by hand: when and by whom; null when not paused.
    paused_at: str | None = None
    paused_by: str = ""
    # A fork: the run it came from and the step it was forked at.
    parent: int | None = None
    forked_at_step: str = ""


class RunListOut(Schema):
    runs: list[RunSummaryOut]
    # The next page's absolute URL (cursor pagination); null on the last page.
    next: str | None = None


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
    # The report as written (Markdown), and as sanitised HTML to show as it is.
    report: str
    report_html: str
    error: str
    paused_at: str | None = None
    paused_by: str = ""
    parent: int | None = None
    forked_at_step: str = ""


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
    next: str | None = None


class ForkIn(CleanInput):
    # The step to fork at: it and every step downstream of it run again.
    step: str
    # The step's new brief: an object of brief fields (merged over the old brief), or the new
    # objective as text. Omitted: the brief as it was.
    brief: dict | str | None = None
    # Another agent (role) for the step. Omitted: the same agent.
    agent: str | None = None
    # Another model for the step's agent (its reviewer keeps its own). Omitted: the same.
    model: str | None = None


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


def iso(moment: datetime | None) -> str | None:
    """Full-precision ISO 8601, the same form as `Event.as_json`, so clients compare strings."""
    return moment.isoformat() if moment else None


# --- project settings: profiles, members, policy ---------------------------------------------
class ProfileSettingsOut(Schema):
    """What a profile's version records (`AgentProfile.VERSIONED`)."""

    system_prompt: str
    provider: str | None
    model: str
    fallback_provider: str | None
    fallback_model: str
    temperature: float
    allowed_tools: list[str]
    turn_limit: int


class ProfileVersionOut(ProfileSettingsOut):
    number: int
    created_by: str | None
    created_at: str


class ProfileOut(ProfileSettingsOut):
    role: str
    description: str
    # "project": the project's own copy; "team": the team's, shared with its other projects.
    owner: Literal["project", "team"]
    version: int | None


class ProfileListOut(Schema):
    profiles: list[ProfileOut]
    next: str | None = None


class ProfileDetailOut(ProfileOut):
    versions: list[ProfileVersionOut]


class ProfileIn(CleanInput):
    # Omitted fields keep their value; providers by name, "" for the environment's default.
    system_prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    fallback_provider: str | None = None
    fallback_model: str | None = None
    temperature: float | None = None
    allowed_tools: list[str] | None = None
    turn_limit: int | None = None


class MemberOut(Schema):
    username: str
    role: str


class MemberListOut(Schema):
    members: list[MemberOut]
    next: str | None = None


class MemberIn(CleanInput):
    username: str
    role: str


class PolicyRuleOut(Schema):
    id: int
    position: int
    name: str
    tool: str
    risk: str
    agent_role: str
    arguments: dict
    within_claims: bool | None
    outcome: str
    approvals_required: int
    approver_group: str
    exclude_task_creator: bool
    deadline_minutes: int | None
    timeout_outcome: str
    remind_after_minutes: int | None
    escalate_group: str


class PolicyOut(Schema):
    rules: list[PolicyRuleOut]
    next: str | None = None


class PolicyRuleIn(CleanInput):
    """A rule to add at the end of the policy: `outcome` is required, omitted fields take the
    defaults shown. The rules service checks the values, as for the dashboard's rule form."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Shown on the policy page and in the reasons it gives.")
    tool: str = Field("", description="A tool's name; empty for any tool.")
    risk: str = Field("", description="read, write, exec or deploy; empty for any risk.")
    agent_role: str = Field("", description="An agent role; empty for any agent.")
    arguments: dict[str, str] = Field(
        default_factory=dict,
        description='Argument name to glob, e.g. {"path": "src/*"}; all must match.',
    )
    within_claims: bool = Field(False, description="Only writes inside the step's claims.")
    outcome: str = Field(description="allow, deny or require_approval.")
    approvals_required: int = Field(1, description="Distinct approvals needed, 1 to 5.")
    approver_group: str = Field("", description="A group whose members approve; empty: any.")
    exclude_task_creator: bool = Field(False, description="The task's creator may not approve.")
    deadline_minutes: int | None = Field(None, description="Minutes until the timeout outcome.")
    timeout_outcome: str = Field("reject", description="reject or reject_stop.")
    remind_after_minutes: int | None = Field(None, description="Before the deadline.")
    escalate_group: str = Field("", description="A group that may decide after the reminder.")


Limit = str | int | float | None


class ProjectBudgetIn(CleanInput):
    """Limits to set; omitted ones keep their value, null removes one. Dollars as text or a
    number (at most 4 decimals), tokens as a whole number, each above zero."""

    model_config = ConfigDict(extra="forbid")

    run_soft_usd: Limit = Field(None, description="Each new run pauses and asks past it.")
    run_hard_usd: Limit = Field(None, description="Each new run stops past it.")
    run_soft_tokens: Limit = None
    run_hard_tokens: Limit = None
    day_usd: Limit = Field(None, description="No new task once spent today.")
    day_tokens: Limit = None
    month_usd: Limit = Field(None, description="No new task once spent this month.")
    month_tokens: Limit = None


class SpendOut(Schema):
    usd: str
    tokens: int
    unpriced_calls: int


class ProjectBudgetOut(Schema):
    run_soft_usd: str | None
    run_hard_usd: str | None
    run_soft_tokens: int | None
    run_hard_tokens: int | None
    day_usd: str | None
    day_tokens: int | None
    month_usd: str | None
    month_tokens: int | None
    spent: dict[str, SpendOut] = Field(description='"daily" and "monthly": this period so far.')


class RuleErrorOut(ErrorOut):
    field: str | None = Field(None, description="The field at fault, when one is.")


# --- a run's steps and model calls ------------------------------------------------------------
class StepAttemptOut(Schema):
    id: int
    purpose: str
    role: str
    model: str
    attempt: int
    status: str
    profile_version: str | None
    model_calls: list[int]


class RunStepOut(StepOut):
    position: int
    brief: dict
    output: str
    agent_runs: list[StepAttemptOut]


class RunStepListOut(Schema):
    steps: list[RunStepOut]
    next: str | None = None


class ModelCallOut(Schema):
    id: int
    run: int
    step: str | None
    agent_run: int
    model: str
    provider: str
    started_at: str
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: str
    error: str
    # Exactly what was sent (a prefix of the agent's conversation) and what came back.
    messages: list[dict]
    response: dict
    tool_calls: list
