"""Human checkpoints: what was asked, what was shown, who decided and how."""

from django.conf import settings
from django.db import models


class Checkpoint(models.Model):
    class Kind(models.TextChoices):
        PLAN = "plan"
        TOOL_CALL = "tool_call"
        DEPLOY = "deploy"
        ESCALATION = "escalation"
        # The run reached its soft spending limit: continue with a new limit, or stop.
        BUDGET = "budget"
        # The final report waits for a person (the project's report approval).
        REPORT = "report"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        # The agent's question was answered without running the tool.
        RESPONDED = "responded"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    run = models.ForeignKey("orchestra.Run", on_delete=models.CASCADE, related_name="checkpoints")
    step = models.ForeignKey(
        "orchestra.Step",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="checkpoints",
    )
    # Usually one per call; a call whose outcome was lost (a deploy whose worker stopped
    # mid-call) gets a second one asking what happened.
    tool_call = models.ForeignKey(
        "agents.ToolCall",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="checkpoints",
    )
    plan = models.ForeignKey(
        "orchestra.Plan", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # Exactly what the approver is shown: tool, arguments, reason, brief.
    shown = models.JSONField(default=dict, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    # Arguments as edited by the approver; None when approved as proposed.
    arguments = models.JSONField(null=True, blank=True)
    # How the approved arguments differ from the proposed ones: [{path, proposed, approved}].
    arguments_diff = models.JSONField(default=list, blank=True)
    # approve | edit | reject | reject_stop | respond | expire ...: the decision's exact form.
    decision = models.CharField(max_length=20, blank=True)
    # What the policy asked for when the checkpoint opened.
    rule = models.ForeignKey(
        "approvals.PolicyRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approvals_required = models.PositiveSmallIntegerField(default=1)
    approver_group = models.CharField(max_length=150, blank=True)
    # User ids who may not approve this checkpoint (the task's creator for deploys).
    excluded_approvers = models.JSONField(default=list, blank=True)
    timeout_outcome = models.CharField(max_length=20, default="reject")
    remind_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    escalate_group = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [
            models.Index(fields=["status", "-requested_at"], name="checkpoint_status"),
            models.Index(fields=["status", "expires_at"], name="checkpoint_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} checkpoint #{self.pk} ({self.status})"


class Vote(models.Model):
    """One approver's approval of a checkpoint that needs several distinct ones."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    comment = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at"]
        constraints = [
            models.UniqueConstraint(fields=["checkpoint", "user"], name="one_vote_per_approver"),
        ]

    def __str__(self) -> str:
        return f"approval of checkpoint #{self.checkpoint_id} by user #{self.user_id}"


class PolicyRule(models.Model):
    """One rule of a project's approval policy; rules are evaluated by `position`, first
    match wins. A rule with a `run` applies to that run only (an approver's "for the rest
    of this run"), and is tried before the project's rules."""

    class Outcome(models.TextChoices):
        ALLOW = "allow"
        REQUIRE_APPROVAL = "require_approval"
        DENY = "deny"

    project = models.ForeignKey(
        "orchestra.Project", on_delete=models.CASCADE, related_name="policy_rules"
    )
    run = models.ForeignKey(
        "orchestra.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200, blank=True)
    # Match conditions; empty means "any".
    tool = models.CharField(max_length=120, blank=True)
    risk = models.CharField(max_length=20, blank=True)
    agent_role = models.CharField(max_length=64, blank=True)
    # {argument name: glob}; e.g. {"path": "src/*"}, {"command": "pytest*"}.
    arguments = models.JSONField(default=dict, blank=True)
    # Matches only when every path the call writes lies inside the step's claims.
    within_claims = models.BooleanField(default=False)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    approver_group = models.CharField(max_length=150, blank=True)
    exclude_task_creator = models.BooleanField(default=False)
    deadline_minutes = models.PositiveIntegerField(null=True, blank=True)
    timeout_outcome = models.CharField(max_length=20, default="reject")
    remind_after_minutes = models.PositiveIntegerField(null=True, blank=True)
    escalate_group = models.CharField(max_length=150, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "position", "pk"]

    def __str__(self) -> str:
        return self.name or f"rule #{self.pk}"


class Delivery(models.Model):
    """A notification about a checkpoint: one webhook POST or one email, with its attempts."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    channel = models.CharField(max_length=20, choices=Channel.choices)
    target = models.CharField(max_length=500)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"


class AuditRecord(models.Model):
    """One link of a project's tamper-evident audit chain: `hash` covers this record's
    content and the previous record's hash."""

    project = models.ForeignKey(
        "orchestra.Project", on_delete=models.CASCADE, related_name="audit_records"
    )
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=60)
    actor = models.CharField(max_length=150)
    run = models.ForeignKey(
        "orchestra.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict)
    at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["project", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["project", "seq"], name="unique_audit_seq"),
        ]

    def __str__(self) -> str:
        return f"audit #{self.seq} {self.kind}"
