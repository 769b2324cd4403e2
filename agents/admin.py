"""Agents in the Django admin: profiles are configuration; what agents did (their runs, model
calls and tool calls, whose arguments an approval covers) is only viewed."""

from django.contrib import admin

from agents.forms import ProviderForm
from agents.llm.providers import save_provider
from agents.models import (
    AgentProfile,
    AgentRun,
    ModelCall,
    ProjectBudget,
    Provider,
    RunBudget,
    ToolCall,
)
from orchestra.admin import ReadOnlyAdmin


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


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ["team", "role", "provider", "model", "fallback_model", "temperature"]
    list_filter = ["team", "provider"]


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
