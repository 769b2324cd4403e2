"""Dashboard forms. They validate shape only; the services keep the last word (their
errors are attached to the form, so the person sees them beside the field).

Every form derives from `CleanForm`: no text field takes NUL, other control characters or
lone surrogates (`orchestra.text`), and numbers have bounds, so bad input is a message beside
the field, never a 500 or a row that cannot be read back."""

from __future__ import annotations

import json
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core.validators import MaxLengthValidator

from agents.models import AgentProfile
from agents.tools import REGISTRY, Risk
from approvals.models import Checkpoint, PolicyRule
from approvals.rules import MAX_APPROVALS, MAX_MINUTES
from approvals.services import MAX_COMMENT
from orchestra.engine.budgets import MAX_TOKENS, MAX_USD
from orchestra.models import Project, Run
from orchestra.text import json_problem, reject_control_text

TITLE_MAX = 300  # Task.title


class CleanForm(forms.Form):
    """A form whose text fields, those added in `__init__` included, refuse text that cannot
    be stored."""

    def full_clean(self):
        for field in self.fields.values():
            if isinstance(field, forms.CharField) and reject_control_text not in field.validators:
                field.validators.append(reject_control_text)
        super().full_clean()


def usd_limit(label: str, help_text: str = "") -> forms.DecimalField:
    """An optional limit in dollars, as the budget service takes it (`parse_limit`)."""
    return forms.DecimalField(
        required=False,
        min_value=Decimal("0.0001"),
        max_value=MAX_USD,
        decimal_places=4,
        label=label,
        help_text=help_text,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "no limit"}),
    )


def token_limit(label: str, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TOKENS,
        label=label,
        help_text=help_text,
        widget=forms.TextInput(attrs={"inputmode": "numeric", "placeholder": "no limit"}),
    )


class NewTaskForm(CleanForm):
    title = forms.CharField(
        max_length=TITLE_MAX,
        widget=forms.TextInput(attrs={"placeholder": "Add a greeting module"}),
        error_messages={"required": "A task needs a title."},
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="What should the agents produce, and what must they respect?",
    )
    # This run's own limits; empty: the project's defaults (engine.budgets.run_limits).
    soft_usd = usd_limit("Soft limit ($)", "The run pauses and asks a person past it.")
    hard_usd = usd_limit("Hard limit ($)", "The run stops past it.")
    soft_tokens = token_limit("Soft limit (tokens)")
    hard_tokens = token_limit("Hard limit (tokens)")
    LIMITS = ("soft_usd", "hard_usd", "soft_tokens", "hard_tokens")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.ORCHESTRA_MAX_TEXT
        self.fields["description"].max_length = limit
        self.fields["description"].validators.append(MaxLengthValidator(limit))
        # Lengths are checked here and said beside the field: a browser-side maxlength would
        # cut a pasted description short without a word.
        for field in self.fields.values():
            field.widget.attrs.pop("maxlength", None)

    def task_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name not in self.LIMITS]

    def limit_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.LIMITS]

    @property
    def budget_given(self) -> bool:
        return any(self.data.get(name) for name in self.LIMITS)

    def budget(self) -> dict | None:
        """The limits given for this run, or None for the project's."""
        given = {n: self.cleaned_data[n] for n in self.LIMITS if self.cleaned_data[n] is not None}
        return given or None


class DecisionForm(CleanForm):
    """A decision on a tool-call, deploy or escalation checkpoint: one form, one button per
    decision (the `action`). Which actions a checkpoint offers depends on its kind."""

    # action -> the service's decision ("edit" is the approval with edited arguments).
    DECISIONS = {
        "approve": "approve",
        "edit": "edit",
        "reject": "reject",
        "reject_stop": "reject_stop",
        "respond": "respond",
        "approve_run": "approve_run",
        "approve_pattern": "approve_pattern",
    }
    # What the messages say after a decision that closed the checkpoint.
    DONE = {
        "approve": "Approved",
        "edit": "Approved with edited arguments",
        "reject": "Rejected",
        "reject_stop": "Rejected; the step was stopped",
        "respond": "Answered; the tool did not run",
        "approve_run": "Approved, and allowed for the rest of this run",
        "approve_pattern": "Approved, and allowed for matching arguments in this run",
    }

    action = forms.ChoiceField(choices=[])
    comment = forms.CharField(
        required=False,
        strip=True,
        max_length=MAX_COMMENT,
        label="Comment, feedback or answer",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            "Required to reject (the agent reads it as feedback) and to respond (the agent "
            "gets it as the answer, and the tool does not run)."
        ),
    )
    arguments = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
        help_text=(
            "Edit the JSON, then choose “Edit and approve”. Once edited, plain “Approve” is "
            "refused: it would run the call as proposed."
        ),
    )
    pattern_argument = forms.ChoiceField(required=False, label="Argument")
    pattern_glob = forms.CharField(
        required=False,
        max_length=500,
        label="Matches (glob)",
        widget=forms.TextInput(attrs={"spellcheck": "false", "class": "code"}),
        help_text="* matches anything, ? one character; e.g. src/* or pytest*.",
    )

    def __init__(self, *args, checkpoint: Checkpoint, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint = checkpoint
        actions = ["approve"]
        if self.edits_arguments:
            actions.append("edit")
        actions.append("reject")
        if checkpoint.step_id is not None:
            actions.append("reject_stop")
        if self.edits_arguments:
            actions.append("respond")
        if self.offers_run_approval:
            actions += ["approve_run", "approve_pattern"]
            call = checkpoint.tool_call.arguments or {}
            # Short enough for a phone's select box: the glob field below shows the whole value.
            self.fields["pattern_argument"].choices = [
                (name, f"{name} (now: {value if len(value) <= 20 else value[:19] + '…'})")
                for name, value in call.items()
                if isinstance(value, str)
            ]
        else:
            del self.fields["pattern_argument"], self.fields["pattern_glob"]
        if not self.edits_arguments:
            del self.fields["arguments"]
        else:
            # The arguments as they are, for the page's script to tell an edit (a re-shown
            # form holds the edit as its text).
            widget = self.fields["arguments"].widget
            widget.attrs["data-arguments-box"] = self.initial.get("arguments", "")
        self.fields["action"].choices = [(a, a) for a in actions]
        self.actions = actions

    @property
    def edits_arguments(self) -> bool:
        return self.checkpoint.tool_call_id is not None

    @property
    def offers_run_approval(self) -> bool:
        """“For the rest of this run” is for tool calls only: never a deploy."""
        return self.edits_arguments and self.checkpoint.kind == Checkpoint.Kind.TOOL_CALL

    def clean(self):
        data = super().clean()
        action = data.get("action")
        if action == "reject" and not data.get("comment"):
            self.add_error("comment", "Say why you reject it: the agent will read this.")
        if action == "respond" and not data.get("comment"):
            self.add_error("comment", "Write the answer the agent will get instead of the tool.")
        data["parsed_arguments"] = None
        # A plain approve carries the arguments box too, so the service can refuse it when
        # the box was edited: an edit is never dropped silently.
        if action in ("approve", "edit") and "arguments" in self.fields:
            raw = data.get("arguments") or ""
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                self.add_error("arguments", f"The arguments are not valid JSON: {exc}.")
            else:
                # JSON escapes can spell what the text field itself refused (\u0000, \ud800).
                problem = json_problem(parsed)
                if not isinstance(parsed, dict):
                    self.add_error("arguments", "The arguments must be a JSON object.")
                elif problem:
                    self.add_error("arguments", f"The arguments cannot be stored: {problem}.")
                else:
                    data["parsed_arguments"] = parsed
        data["pattern"] = None
        if action == "approve_pattern":
            if not data.get("pattern_argument"):
                self.add_error("pattern_argument", "Choose the argument the pattern applies to.")
            elif not data.get("pattern_glob"):
                self.add_error("pattern_glob", "Give the pattern the argument must match.")
            else:
                data["pattern"] = {
                    "argument": data["pattern_argument"],
                    "glob": data["pattern_glob"],
                }
        return data

    @property
    def decision(self) -> str:
        return self.DECISIONS[self.cleaned_data["action"]]

    def error_field(self) -> str | None:
        """Where a refusal from the service belongs on the page (a plain approve is refused
        for its arguments: edited, or denied by the policy)."""
        field = {"approve": "arguments", "edit": "arguments", "approve_pattern": "pattern_glob"}
        name = field.get(self.cleaned_data.get("action"))
        return name if name in self.fields else None


class PlanReviewForm(CleanForm):
    """Review of a proposed plan: per step its objective (editable) and a “Remove step” box,
    one dependency to add, and Approve plan / Reject plan. The edits go to the service as
    `plan_edits` (orchestra.plan_edits); the service has the last word (cycles, unknown
    agents...)."""

    action = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])
    comment = forms.CharField(
        required=False,
        strip=True,
        max_length=MAX_COMMENT,
        label="Comment",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required to reject the plan: the run stops with it.",
    )
    dep_step = forms.ChoiceField(required=False, label="Step")
    dep_on = forms.ChoiceField(required=False, label="Depends on")

    def __init__(self, *args, plan: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = list(plan.get("steps") or [])
        keys = [("", "—")] + [(s["key"], f"{s['key']}: {s.get('title', '')}") for s in self.steps]
        self.fields["dep_step"].choices = keys
        self.fields["dep_on"].choices = keys
        for step in self.steps:
            key = step["key"]
            self.fields[f"objective-{key}"] = forms.CharField(
                required=False,
                strip=True,
                label="Objective",
                initial=(step.get("brief") or {}).get("objective", ""),
                widget=forms.Textarea(attrs={"rows": 3}),
            )
            self.fields[f"remove-{key}"] = forms.BooleanField(required=False, label="Remove step")

    def rows(self) -> list[tuple[dict, forms.BoundField, forms.BoundField]]:
        """Each step with its objective and “Remove step” fields, in plan order."""
        return [(s, self[f"objective-{s['key']}"], self[f"remove-{s['key']}"]) for s in self.steps]

    def clean(self):
        data = super().clean()
        if data.get("action") == "reject":
            if not data.get("comment"):
                self.add_error("comment", "Say why you reject the plan: the run stops with it.")
            data["edits"] = None
            return data
        removed = [s["key"] for s in self.steps if data.get(f"remove-{s['key']}")]
        edits = []
        for step in self.steps:
            key = step["key"]
            if f"objective-{key}" not in self.data:
                continue  # not posted: unchanged
            brief = step.get("brief") or {}
            objective = (data.get(f"objective-{key}") or "").replace("\r\n", "\n").strip()
            if key in removed or objective == (brief.get("objective") or "").strip():
                continue
            if not objective:
                self.add_error(f"objective-{key}", "A step needs an objective.")
                continue
            edits.append(
                {"op": "edit_brief", "step": key, "brief": {**brief, "objective": objective}}
            )
        step, on = data.get("dep_step"), data.get("dep_on")
        if step or on:
            if not (step and on):
                self.add_error("dep_on", "Choose both the step and the step it depends on.")
            elif step == on:
                self.add_error("dep_on", "A step cannot depend on itself.")
            elif step in removed or on in removed:
                self.add_error("dep_on", "That dependency involves a step you remove.")
            else:
                edits.append({"op": "add_dependency", "step": step, "on": on})
        edits += [{"op": "remove_step", "step": key} for key in removed]
        data["edits"] = edits or None
        return data


class RuleForm(CleanForm):
    """One rule of a project's approval policy, as a person fills it in. Shape only: the
    rules service (approvals.rules) validates the rule and names the field at fault."""

    name = forms.CharField(required=False, max_length=200)
    tool = forms.ChoiceField(required=False, help_text="Empty: any tool.")
    risk = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *((r.value, r.value) for r in Risk)],
    )
    agent_role = forms.CharField(
        required=False, max_length=64, label="Agent role", help_text="Empty: any agent."
    )
    arguments = forms.CharField(
        required=False,
        label="Arguments matching",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "code"}),
        help_text="One per line: argument = glob, e.g. path = src/*. Empty: any arguments.",
    )
    within_claims = forms.BooleanField(
        required=False, label="Only writes inside the step's claimed files"
    )
    outcome = forms.ChoiceField(choices=PolicyRule.Outcome.choices, initial="require_approval")
    approvals_required = forms.IntegerField(
        min_value=1, max_value=MAX_APPROVALS, initial=1, label="Approvals required"
    )
    approver_group = forms.CharField(
        required=False, max_length=150, label="Approver group", help_text="Empty: any approver."
    )
    exclude_task_creator = forms.BooleanField(
        required=False, label="The task's creator may not approve"
    )
    deadline_minutes = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_MINUTES,
        label="Deadline (minutes)",
        help_text="Empty: no deadline.",
    )
    timeout_outcome = forms.ChoiceField(
        choices=[("reject", "reject"), ("reject_stop", "reject and stop the step")],
        label="At the deadline",
    )
    remind_after_minutes = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_MINUTES, label="Reminder after (minutes)"
    )
    escalate_group = forms.CharField(
        required=False,
        max_length=150,
        label="Escalate to group",
        help_text="After the reminder, this group may decide too.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tool"].choices = [("", "any"), *((name, name) for name in sorted(REGISTRY))]

    @classmethod
    def for_rule(cls, rule: PolicyRule) -> RuleForm:
        initial = {name: getattr(rule, name) for name in cls.base_fields}
        initial["arguments"] = "\n".join(f"{k} = {v}" for k, v in (rule.arguments or {}).items())
        return cls(initial=initial)

    def clean_arguments(self) -> dict:
        conditions = {}
        for number, line in enumerate(self.cleaned_data["arguments"].splitlines(), start=1):
            if not line.strip():
                continue
            name, equals, glob = line.partition("=")
            if not equals or not name.strip() or not glob.strip():
                raise forms.ValidationError(
                    f"Line {number} should read: argument = glob (for example path = src/*)."
                )
            conditions[name.strip()] = glob.strip()
        return conditions

    def rule_fields(self) -> dict:
        return dict(self.cleaned_data)


class HistoryFilterForm(CleanForm):
    q = forms.CharField(required=False, max_length=200, label="Search task titles")
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, to_field_name="slug", empty_label="All"
    )
    status = forms.ChoiceField(required=False)
    agent = forms.ChoiceField(required=False, label="Agent role")
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, projects, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["status"].choices = [("", "All"), *Run.Status.choices]
        roles = AgentProfile.objects.order_by("role").values_list("role", flat=True).distinct()
        self.fields["agent"].choices = [("", "All"), *((r, r) for r in roles)]

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return data

    def filters(self) -> dict:
        """The valid filters (an invalid form filters nothing rather than failing)."""
        if not self.is_valid():
            return {k: v for k, v in self.cleaned_data.items() if k not in self.errors}
        return self.cleaned_data
