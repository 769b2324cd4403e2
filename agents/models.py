"""Agent profiles and the record of every agent attempt, model call and tool call."""

from decimal import Decimal

from django.db import models


class AgentProfile(models.Model):
    team = models.CharField(max_length=40)
    role = models.CharField(max_length=64)
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField()
    # Blank means ORCHESTRA_MODEL_<ROLE>, then ORCHESTRA_MODEL.
    model = models.CharField(max_length=120, blank=True)
    temperature = models.FloatField(default=0.2)
    allowed_tools = models.JSONField(default=list, blank=True)
    turn_limit = models.PositiveIntegerField(default=12)

    class Meta:
        ordering = ["team", "role"]
        constraints = [
            models.UniqueConstraint(fields=["team", "role"], name="unique_team_role"),
        ]

    def __str__(self) -> str:
        return f"{self.team}/{self.role}"


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
