from django.contrib import admin

from orchestra.models import ApiToken, Event, Membership, Plan, Project, Run, Step, Task


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "team", "concurrency_cap", "requires_plan_approval"]
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
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "project", "status", "phase", "cost_usd", "created_at"]
    list_filter = ["status", "project"]
    inlines = [StepInline]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["run", "version", "status", "created_at"]


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ["key", "run", "agent_role", "status", "attempts", "revisions"]
    list_filter = ["status", "agent_role"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["run", "seq", "kind", "actor", "at"]
    list_filter = ["kind"]
    raw_id_fields = ["run", "step"]

    def has_change_permission(self, request, obj=None):
        return False  # append-only


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_at", "last_used_at"]
    readonly_fields = ["digest"]
