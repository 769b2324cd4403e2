"""Template helpers for the dashboard: `{% load dashboard %}`."""

import json
from datetime import timedelta
from decimal import Decimal

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from agents.llm.providers import may_manage_providers
from agents.sandbox import sandbox_status as current_sandbox_status
from orchestra.dashboard import present, queries
from orchestra.markdown import render_markdown

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_approvals(context, known: int | None = None) -> int:
    """Undecided checkpoints the signed-in user can see (the header badge); `known` when the
    page already counted them with what it lists (`dashboard.inbox`), so the two agree."""
    if known is not None and known != "":
        return int(known)
    request = context.get("request")
    if request is None:
        return 0
    return queries.pending_count(request.user)


@register.simple_tag(takes_context=True)
def manages_providers(context) -> bool:
    """Whether the header links the model providers page: project admins and staff manage
    providers, everyone else would meet a refusal there."""
    request = context.get("request")
    return request is not None and may_manage_providers(request.user)


@register.simple_tag
def sandbox_status() -> dict:
    """Which sandbox agents' commands run in: `{% sandbox_status as sandbox %}`, then
    `sandbox.confined`, `sandbox.network`, `sandbox.required`, `sandbox.reason`."""
    return current_sandbox_status()


@register.filter
def ago(moment) -> str:
    """“just now”, “3 minutes ago”, “2 days ago”."""
    if moment is None:
        return "—"
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


@register.filter
def duration(value) -> str:
    return present.humanize_duration(value)


@register.filter
def ms(value) -> str:
    return present.humanize_duration(None if value is None else float(value) / 1000)


@register.filter
def status_label(value) -> str:
    return present.status_label(str(value))


@register.filter
def markdown(value) -> str:
    """Markdown (a model's report) as sanitised HTML."""
    return render_markdown(value)


@register.filter
def pretty_json(value) -> str:
    return present.pretty_json(value)


@register.filter
def tokens(value) -> str:
    """12,345 — grouped thousands, without django.contrib.humanize."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def usd(value) -> str:
    """$0.0123: four significant decimals for small amounts, cents above a dollar."""
    if value is None:
        return "—"
    amount = Decimal(value)
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


@register.filter
def get_item(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def is_scalar(value) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


@register.filter
def is_list(value) -> bool:
    return isinstance(value, list | tuple)


@register.filter
def argument_items(arguments) -> list[tuple[str, str, bool]]:
    """A tool call's arguments to show one by one: (name, text, is_code). A string is shown as
    it is (a file's content reads as code, not as an escaped JSON string); anything else as
    indented JSON."""
    if isinstance(arguments, str):
        return [("", arguments, True)]
    if not isinstance(arguments, dict):
        return [("", present.pretty_json(arguments), True)]
    items = []
    for name, value in arguments.items():
        if isinstance(value, str):
            items.append((name, value, "\n" in value))
        else:
            items.append((name, present.pretty_json(value), True))
    return items


@register.filter
def parsed_args(raw):
    """Tool-call arguments as the model sent them (a JSON string), parsed when they parse; a
    string that does not parse is returned as it is."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
