"""Agents in the Django admin: profiles are configuration; what agents did (their runs, model
calls and tool calls, whose arguments an approval covers) is only viewed."""

from django.contrib import admin
from django.utils.html import format_html

from agents.forms import ProviderForm
from agents.llm.providers import save_provider
from agents.models import (
    AgentProfile,
    AgentRun,
    ModelCall,
    ProfileVersion,
    ProjectBudget,
    Provider,
    RunBudget,
    ToolCall,
)
from agents.profiles import record_saved_profile, version_diff
from orchestra.admin import ReadOnlyAdmin, ReadOnlyMixin


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "key_source", "stream", "timeout", "max_retries"]

    @admin.display(description="Key")
    def key_source(self, provider: Provider) -> str:
        if provider.api_key_encrypted:
            return "stored (encrypted)"
        return f"${provider.api_key_env}" if provider.api_key_env else "none"

    def save_model(self, request, obj, form, change) -> None:
        save_provider(
            request.user,
            obj,
            api_key=form.cleaned_data.get("api_key", ""),
            clear_key=form.cleaned_data.get("clear_key", False),
        )


@admin.register(ProjectBudget)
class ProjectBudgetAdmin(admin.ModelAdmin):
    """A project's limits: its runs' defaults, and its day and month."""

    list_display = ["project", "run_soft_usd", "run_hard_usd", "day_usd", "month_usd"]


@admin.register(RunBudget)
class RunBudgetAdmin(ReadOnlyAdmin):
    """A run's limits change at its budget checkpoint, not here."""

    list_display = ["run", "soft_usd", "hard_usd", "soft_tokens", "hard_tokens"]
    raw_id_fields = ["run"]


class ProfileVersionInline(ReadOnlyMixin, admin.TabularInline):
    """A profile's versions, newest first: history, viewed only (a version is never edited)."""

    model = ProfileVersion
    fields = ["number", "created_by", "created_at", "model", "temperature", "turn_limit"]
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ["team", "role", "project", "provider", "model", "fallback_model", "temperature"]
    list_filter = ["team", "provider"]
    inlines = [ProfileVersionInline]

    def save_model(self, request, obj, form, change) -> None:
        """Saved here as from the dashboard: a change of its settings is a new version."""
        super().save_model(request, obj, form, change)
        record_saved_profile(request.user, obj)


@admin.register(ProfileVersion)
class ProfileVersionAdmin(ReadOnlyAdmin):
    """Each saved version of a profile, with what changed from the one before it."""

    list_display = ["profile", "number", "created_by", "created_at", "model", "turn_limit"]
    list_filter = ["profile__team", "profile__role"]
    list_select_related = ["profile", "profile__project", "created_by"]
    fields = ["profile", "number", "created_by", "created_at", *AgentProfile.VERSIONED, "changes"]
    readonly_fields = ["changes"]

    @admin.display(description="Changes from the previous version")
    def changes(self, version: ProfileVersion) -> str:
        previous = (
            ProfileVersion.objects.filter(profile=version.profile_id, number__lt=version.number)
            .order_by("-number")
            .first()
        )
        return format_html('<pre class="profile-diff">{}</pre>', version_diff(previous, version))


@admin.register(AgentRun)
class AgentRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "step", "purpose", "role", "status", "turns", "started_at"]
    list_filter = ["purpose", "status", "role"]
    raw_id_fields = ["run", "step"]


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "run",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "usage_estimated",
        "latency_ms",
        "error",
    ]
    raw_id_fields = ["run", "agent_run"]


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "tool", "risk", "status", "started_at"]
    list_filter = ["risk", "status"]
    raw_id_fields = ["run", "agent_run", "step", "model_call"]
