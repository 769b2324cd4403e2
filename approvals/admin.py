from django.contrib import admin

from approvals.models import Checkpoint


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "kind", "status", "requested_at", "decided_by", "decided_at"]
    list_filter = ["kind", "status"]
    raw_id_fields = ["run", "step", "tool_call", "plan"]
