"""How records read on the dashboard: event one-liners, phases, durations, status labels.

`describe_event` has a twin in static/orchestra/live.js (events arriving over the WebSocket
are rendered in the browser); keep the two in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from orchestra.models import Run

SUMMARY_LIMIT = 160

PHASES = [
    (Run.Phase.PLAN, "Plan"),
    (Run.Phase.DISPATCH, "Dispatch"),
    (Run.Phase.REVIEW, "Review"),
    (Run.Phase.REPORT, "Report"),
]


def status_label(status: str) -> str:
    return (status or "").replace("_", " ")


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def describe_event(kind: str, data: dict | None) -> str:
    """One line saying what the event means; empty when the kind alone says it."""
    d = data or {}
    match kind:
        case "run.created":
            text = f"task “{d.get('title', '')}”"
        case "phase.changed":
            text = f"now in {d.get('phase', '?')}"
        case "plan.proposed":
            text = f"version {d.get('version')} with {d.get('steps')} steps"
        case "plan.rejected":
            text = "; ".join(map(str, d.get("reasons") or []))
        case "plan.accepted":
            text = f"version {d.get('version')} with {len(d.get('steps') or [])} steps"
        case "step.dispatched":
            text = f"to {d.get('agent', '?')}"
        case "step.started" | "review.started":
            text = f"attempt {d.get('attempt')}"
        case "step.output":
            text = f"{d.get('chars')} characters"
        case "step.revising":
            text = f"round {d.get('round')}" + (" (human feedback)" if d.get("by_human") else "")
        case "step.completed":
            text = f"after {d.get('attempts')} attempt(s)"
        case "step.retrying" | "step.failed" | "run.failed":
            text = str(d.get("error", ""))
        case "model.called":
            text = (
                f"{d.get('model')}: {d.get('input_tokens')} in / {d.get('output_tokens')} out"
                f", {d.get('latency_ms')} ms"
            )
            if d.get("error"):
                text += f" — {d['error']}"
        case "tool.called":
            text = f"{d.get('tool')} → {status_label(d.get('status', ''))}"
        case "approval.requested":
            text = f"{status_label(d.get('kind', ''))} checkpoint #{d.get('checkpoint')}"
            if d.get("tool"):
                text += f" for {d['tool']}"
        case "approval.decided":
            verb = "approved" if d.get("decision") == "approve" else "rejected"
            text = f"checkpoint #{d.get('checkpoint')} {verb}"
            if d.get("edited_arguments") is not None:
                text += " with edited arguments"
            if d.get("comment"):
                text += f": {d['comment']}"
        case "review.verdict":
            text = f"{d.get('verdict')}: {d.get('feedback', '')}"
        case "report.published":
            text = f"{d.get('chars')} characters"
        case "run.completed":
            text = f"{d.get('input_tokens')} in / {d.get('output_tokens')} out tokens"
        case _:
            text = ""
    return _clip(text)


@dataclass(frozen=True)
class PhaseView:
    key: str
    label: str
    state: str  # done | current | upcoming | stopped

    @property
    def is_current(self) -> bool:
        return self.state in ("current", "stopped")


def phases_of(run: Run) -> list[PhaseView]:
    """The four phases, the run's current one marked; a finished run has them all done."""
    keys = [key for key, _ in PHASES]
    current = keys.index(run.phase) if run.phase in keys else 0
    views = []
    for index, (key, label) in enumerate(PHASES):
        if run.status == Run.Status.COMPLETED or index < current:
            state = "done"
        elif index == current:
            state = "stopped" if run.is_terminal else "current"
        else:
            state = "upcoming"
        views.append(PhaseView(key, label, state))
    return views


def humanize_duration(value: timedelta | float | None) -> str:
    """`412 ms`, `3.2 s`, `4 min 05 s`, `2 h 10 min`."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        seconds = 0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min"


def pretty_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
