"""Agents in the Django admin: profiles are configuration; what agents did (their runs, model
calls and tool calls, whose arguments an approval covers) is only viewed."""

from django.contrib import admin

from agents.models import AgentProfile, AgentRun, ModelCall, ToolCall
from orchestra.admin import ReadOnlyAdmin


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ["team", "role", "model", "temperature", "turn_limit"]
    list_filter = ["team"]


@admin.register(AgentRun)
class AgentRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "step", "purpose", "role", "status", "turns", "started_at"]
    list_filter = ["purpose", "status", "role"]
    raw_id_fields = ["run", "step"]


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "model", "input_tokens", "output_tokens", "latency_ms", "error"]
    raw_id_fields = ["run", "agent_run"]


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = ["id", "run", "tool", "risk", "status", "started_at"]
    list_filter = ["risk", "status"]
    raw_id_fields = ["run", "agent_run", "step", "model_call"]
