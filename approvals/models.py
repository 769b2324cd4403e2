"""Human checkpoints: what was asked, what was shown, who decided and how."""

from django.conf import settings
from django.db import models


class Checkpoint(models.Model):
    class Kind(models.TextChoices):
        PLAN = "plan"
        TOOL_CALL = "tool_call"
        DEPLOY = "deploy"
        ESCALATION = "escalation"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
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
    tool_call = models.OneToOneField(
        "agents.ToolCall",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="checkpoint",
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

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["status", "-requested_at"], name="checkpoint_status")]

    def __str__(self) -> str:
        return f"{self.kind} checkpoint #{self.pk} ({self.status})"
