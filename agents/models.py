"""Model providers, agent profiles and the record of every agent attempt, model call and tool
call."""

from decimal import Decimal

from django.conf import settings
from django.db import models


class Provider(models.Model):
    """A model endpoint agents can be pointed at: where it is, how to authenticate, what it
    costs and which protocol features it takes.

    The key is never stored in clear: either the name of an environment variable that holds
    it (`api_key_env`), or the key encrypted with a key derived from SECRET_KEY
    (`api_key_encrypted`, see `agents.keys`). Neither is ever shown back.
    """

    class Kind(models.TextChoices):
        OPENAI_COMPATIBLE = "openai-compatible", "OpenAI-compatible"

    class SystemRole(models.TextChoices):
        SYSTEM = "system"
        DEVELOPER = "developer"

    name = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=40, choices=Kind.choices, default=Kind.OPENAI_COMPATIBLE)
    # Blank: the SDK's default (OpenAI itself).
    base_url = models.URLField(max_length=300, blank=True)
    api_key_env = models.CharField(
        "API key environment variable",
        max_length=120,
        blank=True,
        help_text="The name of the environment variable that holds the key, e.g. OPENAI_API_KEY.",
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    default_headers = models.JSONField(default=dict, blank=True)
    timeout = models.FloatField(default=120, help_text="Seconds per request.")
    max_retries = models.PositiveSmallIntegerField(default=2)
    # {"model": [input, output]} in USD per million tokens.
    prices = models.JSONField(default=dict, blank=True)
    stream = models.BooleanField(default=False, help_text="Stream answers as they are made.")
    stream_usage = models.BooleanField(
        default=True, help_text="Reports usage in streams (takes stream_options)."
    )
    parallel_tool_calls = models.BooleanField(
        default=True, help_text="Takes parallel_tool_calls (sent when tools are offered)."
    )
    tool_choice = models.BooleanField(default=True, help_text="Takes tool_choice.")
    json_schema = models.BooleanField(
        default=False, help_text="Takes response_format with a JSON schema."
    )
    system_role = models.CharField(
        max_length=20, choices=SystemRole.choices, default=SystemRole.SYSTEM
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    #: What a person edits (the key goes through its own write-only field).
    EDITABLE = [
        "name",
        "kind",
        "base_url",
        "api_key_env",
        "default_headers",
        "timeout",
        "max_retries",
        "prices",
        "stream",
        "stream_usage",
        "parallel_tool_calls",
        "tool_choice",
        "json_schema",
        "system_role",
    ]

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_key(self) -> bool:
        return bool(self.api_key_env or self.api_key_encrypted)


class AgentProfile(models.Model):
    """How one role of a team works: its prompt, model, tools and limits. A profile without a
    project is the team's, for every project of that team; a project's admins edit their own
    copy (`project` set), which its runs use instead. Every save through the dashboard or the
    API records a `ProfileVersion`."""

    team = models.CharField(max_length=40)
    project = models.ForeignKey(
        "orchestra.Project",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agent_profiles",
    )
    role = models.CharField(max_length=64)
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField()
    # Blank means the environment's default provider (OPENAI_BASE_URL, OPENAI_API_KEY).
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="profiles"
    )
    # Blank means ORCHESTRA_MODEL_<ROLE>, then ORCHESTRA_MODEL.
    model = models.CharField(max_length=120, blank=True)
    # Asked when the first choice is rate-limited, overloaded or timing out after its
    # retries; a blank provider means the profile's own.
    fallback_provider = models.ForeignKey(
        Provider,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="fallback_profiles",
    )
    fallback_model = models.CharField(max_length=120, blank=True)
    temperature = models.FloatField(default=0.2)
    allowed_tools = models.JSONField(default=list, blank=True)
    turn_limit = models.PositiveIntegerField(default=12)

    #: What a version records, and what a person edits.
    VERSIONED = [
        "system_prompt",
        "provider",
        "model",
        "fallback_provider",
        "fallback_model",
        "temperature",
        "allowed_tools",
        "turn_limit",
    ]

    class Meta:
        ordering = ["team", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "role"],
                condition=models.Q(project__isnull=True),
                name="unique_team_role",
            ),
            models.UniqueConstraint(fields=["project", "role"], name="unique_project_role"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug if self.project_id else self.team}/{self.role}"


class ProfileVersion(models.Model):
    """An immutable copy of a profile's settings as saved: number, fields, who and when.
    Agent runs point at the version they ran with, so an edit never rewrites history."""

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    system_prompt = models.TextField()
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=120, blank=True)
    fallback_provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    fallback_model = models.CharField(max_length=120, blank=True)
    temperature = models.FloatField()
    allowed_tools = models.JSONField(default=list, blank=True)
    turn_limit = models.PositiveIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["profile", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["profile", "number"], name="unique_profile_version"),
        ]

    def __str__(self) -> str:
        return f"{self.profile} v{self.number}"


class AgentRun(models.Model):
    """One attempt of one agent: the exact brief and conversation it saw, and how it ended."""

    class Purpose(models.TextChoices):
        PLAN = "plan"
        STEP = "step"
        REVIEW = "review"
        REPORT = "report"

    class Status(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    run = models.ForeignKey("orchestra.Run", on_delete=models.CASCADE, related_name="agent_runs")
    step = models.ForeignKey(
        "orchestra.Step",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agent_runs",
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    role = models.CharField(max_length=64)
    model = models.CharField(max_length=120)
    attempt = models.PositiveIntegerField(default=1)
    brief = models.JSONField(default=dict, blank=True)
    messages = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    outcome = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    turns = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    worker = models.CharField(max_length=200, blank=True)
    # The profile version the agent ran with; null for runs recorded before versions.
    profile_version = models.ForeignKey(
        ProfileVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "started_at"]
        indexes = [models.Index(fields=["run", "started_at"], name="agentrun_run_started")]

    def __str__(self) -> str:
        return f"{self.role} {self.purpose} #{self.pk}"


class ModelCall(models.Model):
    agent_run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="model_calls")
    run = models.ForeignKey("orchestra.Run", on_delete=models.CASCADE, related_name="model_calls")
    model = models.CharField(max_length=120)
    endpoint = models.CharField(max_length=300, blank=True)
    # The provider that answered ("" for the environment's default).
    provider = models.CharField(max_length=60, blank=True)
    # The endpoint sent no usage: the tokens are an estimate.
    usage_estimated = models.BooleanField(default=False)
    # Why the first choice did not answer, when a fallback did.
    fallback_reason = models.TextField(blank=True)
    # The model has no price: its cost is unknown (counted as 0 in sums, never shown as $0).
    cost_unknown = models.BooleanField(default=False)
    # The request was agent_run.messages[:message_count]: a reference, not a copy.
    message_count = models.PositiveIntegerField(default=0)
    response = models.JSONField(default=dict, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    latency_ms = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "started_at"]
        indexes = [models.Index(fields=["run", "started_at"], name="modelcall_run_started")]

    def __str__(self) -> str:
        return f"{self.model} call #{self.pk}"


class ToolCall(models.Model):
    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval"
        # An exec or deploy call committed before its side effect starts: found on resume,
        # it means a worker stopped mid-call, and the call is not run a second time.
        RUNNING = "running"
        DENIED = "denied"
        RESPONDED = "responded"
        REJECTED = "rejected"
        REFUSED = "refused"
        INVALID = "invalid"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    agent_run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="tool_calls")
    run = models.ForeignKey("orchestra.Run", on_delete=models.CASCADE, related_name="tool_calls")
    step = models.ForeignKey(
        "orchestra.Step", null=True, blank=True, on_delete=models.CASCADE, related_name="tool_calls"
    )
    model_call = models.ForeignKey(
        ModelCall, null=True, blank=True, on_delete=models.SET_NULL, related_name="tool_calls_made"
    )
    call_id = models.CharField(max_length=120)
    tool = models.CharField(max_length=120)
    arguments = models.JSONField(default=dict, blank=True)
    raw_arguments = models.TextField(blank=True)
    risk = models.CharField(max_length=20, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices)
    result = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # run:step:attempt:call-index; a resumed or retried attempt reuses a recorded result.
    idempotency_key = models.CharField(max_length=200, unique=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "started_at"]
        indexes = [models.Index(fields=["run", "started_at"], name="toolcall_run_started")]

    def __str__(self) -> str:
        return f"{self.tool} ({self.status})"


class ProjectBudget(models.Model):
    """A project's spending limits: the defaults each new run gets (soft: pause and ask a
    person; hard: stop the run), and what the project may spend in a day and a month (a new
    task is refused past them). Blank means no limit."""

    project = models.OneToOneField(
        "orchestra.Project", on_delete=models.CASCADE, related_name="budget"
    )
    run_soft_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    run_hard_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    run_soft_tokens = models.BigIntegerField(null=True, blank=True)
    run_hard_tokens = models.BigIntegerField(null=True, blank=True)
    day_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    month_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    day_tokens = models.BigIntegerField(null=True, blank=True)
    month_tokens = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"budget of {self.project}"


class RunBudget(models.Model):
    """One run's limits, copied from its project's (or set with the task) when it starts;
    a person raises the soft ones at the budget checkpoint."""

    run = models.OneToOneField("orchestra.Run", on_delete=models.CASCADE, related_name="budget")
    soft_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    hard_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    soft_tokens = models.BigIntegerField(null=True, blank=True)
    hard_tokens = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"budget of run #{self.run_id}"
