"""Approvals in the Django admin: to look at, never to decide.

Checkpoints, votes, deliveries and audit records change only through the approvals service,
which checks who may decide, records the decision once and appends it to the audit chain.
An admin form would do none of that, so staff may view these rows and nothing else.
"""

from django.contrib import admin

from approvals.models import AuditRecord, Checkpoint, Delivery, Vote
from orchestra.admin import ReadOnlyAdmin


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "kind", "status", "requested_at", "decided_by", "decided_at"]
    list_filter = ["kind", "status"]
    raw_id_fields = ["run", "step", "tool_call", "plan"]


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    list_display = ["checkpoint", "user", "at"]
    raw_id_fields = ["checkpoint"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "checkpoint", "event", "channel", "status", "attempts", "created_at"]
    list_filter = ["channel", "status"]
    raw_id_fields = ["checkpoint"]


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["project", "seq", "kind", "actor", "at"]
    list_filter = ["kind"]
    raw_id_fields = ["project", "run"]
