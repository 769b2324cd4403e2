"""How records read on the dashboard: event lines, phases, durations, status labels.

An event's feed line is written here and drawn by one partial, `dashboard/run.html#event`:
the run page renders it for its feed, and the run's WebSocket renders it for every event it
pushes (`render_event_line`), so the browser inserts the server's HTML and never words an
event itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.template.loader import render_to_string

from orchestra.models import Event, Run

SUMMARY_LIMIT = 160

# How each decision reads after "checkpoint #n" (and on the approval page).
DECISIONS = {
    "approve": "approved",
    "edit": "approved with edited arguments",
    "approve_run": "approved for the rest of the run",
    "approve_pattern": "approved for matching arguments",
    "reject": "rejected",
    "reject_stop": "rejected and the step stopped",
    "respond": "answered without running the tool",
}

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


# What an activity (orchestra.models.Activity.Kind) or a taken-over piece of work is called.
WORK = {
    "plan": "the plan",
    "step": "step {step}",
    "review": "the review of step {step}",
    "merge": "the merge of step {step}",
    "report": "the report",
}


def _work(kind: str, step: str | None) -> str:
    """“the review of step tests”; “the review of a step” when the step is not known."""
    name = WORK.get(kind, f"the {kind or 'work'}")
    return name.format(step=step) if step else name.replace("step {step}", "a step")


def describe_event(kind: str, data: dict | None, step: str | None = None) -> str:
    """One line saying what the event means; empty when the kind alone says it. `step` is
    the key of the event's step, for the kinds whose line names it."""
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
        case "run.stopped":
            text = f"by {d.get('by') or 'its deadline'}: {d.get('error', '')}"
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
            verb = DECISIONS.get(d.get("decision", ""), status_label(d.get("status", "")))
            if d.get("status") == "expired":
                verb = f"expired and was {verb}"
            text = f"checkpoint #{d.get('checkpoint')} {verb}"
            if d.get("edited_arguments") is not None and d.get("decision") != "edit":
                text += " with edited arguments"
            if d.get("comment"):
                text += f": {d['comment']}"
        case "approval.voted":
            text = (
                f"checkpoint #{d.get('checkpoint')}: {d.get('approvals')} of "
                f"{d.get('approvals_required')} approvals"
            )
            if d.get("edited_arguments") is not None:
                text += " (arguments edited: earlier approvals reset)"
        case "approval.reminder":
            text = f"checkpoint #{d.get('checkpoint')} is still waiting"
            if d.get("escalated_to"):
                text += f"; the {d['escalated_to']} group may decide too"
        case "policy.rule_added":
            text = f"rule “{d.get('name', '')}”"
        case "policy.rule_revoked":
            text = f"rule “{d.get('name', '')}” revoked"
        case "plan.edited":
            changes = len(d.get("diff") or [])
            text = (
                f"version {d.get('version')} from version {d.get('based_on')}: "
                f"{changes} change{'' if changes == 1 else 's'}"
            )
        case "run.paused":
            running = ", ".join(d.get("running") or []) or "none"
            text = f"paused by {d.get('by')}; steps running: {running}"
        case "run.resumed":
            text = f"resumed by {d.get('by')}; carried on: {', '.join(d.get('steps') or [])}"
        case "step.paused":
            text = "parked at a turn boundary until the run is resumed"
        case "run.retried":
            text = f"{d.get('by')} retries step {d.get('step')}"
        case "run.forked":
            text = f"forked at step {d.get('step')} as run #{d.get('fork')}"
        case "step.reused":
            text = f"reused from run #{d.get('from_run')}, no model call"
        case "report.written":
            text = f"{d.get('chars')} characters, waiting for approval (round {d.get('round')})"
        case "report.sent_back":
            text = f"sent back: {d.get('comment', '')}"
        case "merge.queued":
            text = f"{d.get('branch', '?')} waits to merge"
        case "step.merged":
            files = len(d.get("files") or [])
            text = (
                f"{d.get('branch', '?')} merged as {str(d.get('commit') or '')[:10]} "
                f"({files} file{'' if files == 1 else 's'})"
            )
        case "merge.conflict":
            text = f"conflict in {', '.join(d.get('files') or [])} (round {d.get('round')})"
        case "step.checks":
            if d.get("passed"):
                text = "checks passed"
            else:
                failed = [
                    r.get("command", "?") for r in d.get("results") or [] if not r.get("passed")
                ]
                text = "checks failed: " + ", ".join(failed)
        case "plan.taken_over" | "step.taken_over" | "review.taken_over" | "report.taken_over":
            work = _work(kind.partition(".")[0], step)
            text = (
                f"{work} was taken over from {d.get('from') or 'a lost worker'} "
                f"by {d.get('to') or 'another worker'}"
            )
        case "activity.reclaimed":
            work = _work(d.get("activity", ""), step)
            if d.get("was") == "running":
                text = (
                    f"{work} was sent to another worker: {d.get('owner') or 'its worker'} "
                    f"stopped during attempt {d.get('attempt')}"
                )
            else:
                text = f"{work} was sent again: no worker had started it"
        case "notification.failed":
            text = (
                f"{d.get('channel', '?')} to {d.get('target', '?')} failed after "
                f"{d.get('attempts')} attempts: {d.get('error', '')}"
            )
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
class EventLine:
    """One line of the run page's feed."""

    seq: int
    kind: str
    at: datetime
    step: str | None  # the step's key
    actor: str
    what: str


def event_line(event: Event | dict) -> EventLine:
    """The feed line of a stored event, or of its JSON form (`Event.as_json()`, what the
    WebSocket carries)."""
    if isinstance(event, Event):
        event = event.as_json()
    at = event.get("at")
    step = event.get("step")
    return EventLine(
        seq=event["seq"],
        kind=event["kind"],
        at=datetime.fromisoformat(at) if isinstance(at, str) else at,
        step=step,
        actor=event.get("actor") or "",
        what=describe_event(event["kind"], event.get("data"), step),
    )


def render_event_line(event: Event | dict) -> str:
    """The feed line's HTML, exactly as the run page renders it. Reads no database."""
    return render_to_string("dashboard/run.html#event", {"line": event_line(event)}).strip()


@dataclass(frozen=True)
class PhaseView:
    key: str
    label: str
    # done | current (holds work) | waiting (for a person) | idle (reached, nothing in it
    # now) | upcoming | stopped
    state: str
    is_current: bool = False  # the furthest phase the run has reached (aria-current)
    note: str = ""  # “2 steps”, “stopped by ada”
    checkpoint_id: int | None = None  # the decision it waits for (state == "waiting")
    loops: int = 0  # revision rounds sent back from review to work (on the Dispatch phase)


# Where a step's status puts its work: dispatch (to do or being done) or review.
_IN_REVIEW = ("in_review", "merging")
# (A step awaiting approval is shown by its checkpoint: the phase waits for a person.)
_WORKING = ("pending", "ready", "running", "revising")
# Where a pending checkpoint of each kind holds the run.
_WAITS_IN = {"plan": "plan", "tool_call": "dispatch", "deploy": "dispatch", "escalation": "review"}


def _reached(run: Run, steps: list) -> int:
    """Index of the furthest phase the run has reached. It never decreases: a step counts as
    having reached review once it was in review, was sent back (a revision) or is done."""
    if run.status == Run.Status.REPORTING or run.report or run.status == Run.Status.COMPLETED:
        return 3
    if any(s.status in (*_IN_REVIEW, "done") or s.revisions for s in steps):
        return 2
    return 1 if steps else 0


def phases_of(run: Run, steps: list | None = None, pending: list | None = None) -> list[PhaseView]:
    """The four phases as they are: every phase holding work says so (parallel steps can be
    working and in review at once), a phase held by a pending checkpoint says it waits for a
    person, and the furthest phase reached is marked current. That mark only moves forward;
    a revision is counted on Dispatch as a loop instead of moving it back.

    `steps` are the run's steps and `pending` its undecided checkpoints (read when None)."""
    if steps is None:
        steps = list(run.steps.only("status", "revisions"))
    if pending is None:
        pending = list(run.checkpoints.filter(status="pending").order_by("requested_at"))
    reached = _reached(run, steps)
    working = sum(1 for s in steps if s.status in _WORKING)
    reviewing = sum(1 for s in steps if s.status in _IN_REVIEW)
    holds = {
        "plan": run.status == Run.Status.PLANNING,
        "dispatch": working > 0,
        "review": reviewing > 0,
        "report": run.status == Run.Status.REPORTING,
    }
    notes = {
        "dispatch": f"{working} step{'' if working == 1 else 's'}" if working else "",
        "review": f"{reviewing} step{'' if reviewing == 1 else 's'}" if reviewing else "",
    }
    waiting = {}
    for checkpoint in pending:
        waiting.setdefault(_WAITS_IN.get(checkpoint.kind, "dispatch"), checkpoint.pk)
    loops = sum(s.revisions for s in steps)
    views = []
    for index, (key, label) in enumerate(PHASES):
        note, checkpoint_id = notes.get(key, ""), None
        if run.status == Run.Status.COMPLETED:
            state = "done"
        elif run.is_terminal:
            if index < reached:
                state = "done"
            elif index == reached:
                state, note = "stopped", status_label(run.status)
            else:
                state = "upcoming"
        elif key in waiting:
            state, checkpoint_id = "waiting", waiting[key]
        elif holds[key]:
            state = "current"
        elif index == reached:
            state = "idle"  # reached, and nothing in it right now (earlier work holds the run)
        elif index < reached:
            state = "done"
        else:
            state = "upcoming"
        views.append(
            PhaseView(
                key,
                label,
                state,
                is_current=index == reached and run.status != Run.Status.COMPLETED,
                note=note,
                checkpoint_id=checkpoint_id,
                loops=loops if key == "dispatch" else 0,
            )
        )
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


# --- approval policy -------------------------------------------------------------------------
TIMEOUT_OUTCOMES = {"reject": "rejected", "reject_stop": "rejected and the step stopped"}


def rule_conditions(rule) -> list[str]:
    """What a call must be for `rule` to decide it, one plain phrase per condition; empty
    when the rule matches every call."""
    conditions = []
    if rule.tool:
        conditions.append(f"the tool is {rule.tool}")
    if rule.risk:
        conditions.append(f"the tool's risk is {rule.risk}")
    if rule.agent_role:
        conditions.append(f"the agent's role is {rule.agent_role}")
    for name, glob in (rule.arguments or {}).items():
        conditions.append(f"its {name} matches {glob}")
    if rule.within_claims:
        conditions.append("every path it writes lies inside the step's claimed files")
    return conditions


def rule_outcome(rule) -> str:
    """What happens to a call the rule matches, in plain words."""
    if rule.outcome == "allow":
        return "Runs without asking anyone."
    if rule.outcome == "deny":
        return "Refused: the agent is told it may not."
    count = rule.approvals_required or 1
    text = "Needs one approver" if count == 1 else f"Needs {count} different approvers"
    if rule.approver_group:
        text += f" from the {rule.approver_group} group"
    if rule.exclude_task_creator:
        text += ", none of them the task's creator"
    text += "."
    if rule.deadline_minutes:
        outcome = TIMEOUT_OUTCOMES.get(rule.timeout_outcome, "rejected")
        text += f" Undecided after {rule.deadline_minutes} min, it is {outcome}."
    if rule.remind_after_minutes:
        text += f" A reminder goes out after {rule.remind_after_minutes} min"
        if rule.escalate_group:
            text += f", and then the {rule.escalate_group} group may decide too"
        text += "."
    elif rule.escalate_group:
        text += f" (Escalates to the {rule.escalate_group} group after a reminder; none is set.)"
    return text


def decision_label(checkpoint) -> str:
    """“Approved for the rest of the run”, “Expired and was rejected”…"""
    verb = DECISIONS.get(checkpoint.decision, status_label(checkpoint.status))
    if checkpoint.status == "expired":
        verb = f"expired and was {verb}"
    return verb[:1].upper() + verb[1:]


# --- plan review -----------------------------------------------------------------------------
def describe_plan_change(change: dict) -> str:
    """One entry of an edited plan's diff (orchestra.plan_edits) in plain words."""
    step, op = change.get("step", "?"), change.get("op")
    match op:
        case "edit_brief":
            return f"Changed the brief of {step}"
        case "edit_title":
            return f"Renamed {step}: “{change.get('before')}” → “{change.get('after')}”"
        case "remove_step":
            text = f"Removed step {step}"
            if change.get("rewired"):
                text += (
                    f"; {', '.join(change['rewired'])} now wait"
                    f"{'s' if len(change['rewired']) == 1 else ''} for what it waited for"
                )
            return text
        case "add_dependency":
            return f"{step} now waits for {change.get('on')}"
        case "remove_dependency":
            return f"{step} no longer waits for {change.get('on')}"
    return f"{op} on {step}"


def limit_text(name: str, value) -> str:
    """One spending limit in words: "$2.50" or "500,000 tokens"; "no limit" when None."""
    if value is None:
        return "no limit"
    return f"${value:,.2f}" if name.endswith("usd") else f"{value:,} tokens"


def limits_text(limits: dict, prefix: str = "") -> str:
    """A run's limits in a phrase, e.g. "soft $2.00, hard 500,000 tokens"; "" when none."""
    parts = []
    for which in ("soft", "hard"):
        for kind in ("usd", "tokens"):
            value = limits.get(f"{prefix}{which}_{kind}")
            if value is not None:
                parts.append(f"{which} {limit_text(kind, value)}")
    return ", ".join(parts)
