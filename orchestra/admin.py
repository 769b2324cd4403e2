"""Orchestra in the Django admin.

Configuration (projects, memberships, tokens) is edited here. What the engine records (runs,
plans, steps, events) is only viewed: it changes through the engine's actions, which lock,
emit events and keep the audit chain; an admin form would bypass all of that.
"""

from django.contrib import admin

from orchestra.models import (
    ApiToken,
    Event,
    Membership,
    Plan,
    Project,
    Run,
    Step,
    Task,
    WorkerCredential,
)


class ReadOnlyMixin:
    """For a model admin or an inline: rows viewed, never added, changed or deleted."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Rows staff may view but not add, change or delete: the change page has no save button
    and a POST to it is refused (403)."""


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "team",
        "concurrency_cap",
        "requires_plan_approval",
        "requires_report_approval",
    ]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "created_by", "created_at"]
    list_filter = ["project"]
    search_fields = ["title"]


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    fields = ["key", "agent_role", "status", "attempts", "revisions"]
    readonly_fields = fields
    can_delete = False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "project", "status", "phase", "cost_usd", "created_at"]
    list_filter = ["status", "project"]
    inlines = [StepInline]


@admin.register(Plan)
class PlanAdmin(ReadOnlyAdmin):
    list_display = ["run", "version", "status", "created_at"]


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin):
    list_display = ["key", "run", "agent_role", "status", "attempts", "revisions"]
    list_filter = ["status", "agent_role"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "kind", "actor", "at"]
    list_filter = ["kind"]
    raw_id_fields = ["run", "step"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_at", "last_used_at"]
    readonly_fields = ["digest"]


@admin.register(WorkerCredential)
class WorkerCredentialAdmin(admin.ModelAdmin):
    """Issued and revoked with `orchestra worker-token`; here they are seen (and may be
    revoked by setting the date)."""

    list_display = ["name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["name", "digest", "created_at", "last_used_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False
