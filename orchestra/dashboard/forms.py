"""Dashboard forms. They validate shape only; the services keep the last word (their
errors are attached to the form, so the person sees them beside the field)."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.core.validators import MaxLengthValidator

from agents.models import AgentProfile
from approvals.models import Checkpoint
from approvals.services import MAX_COMMENT
from orchestra.models import Project, Run

TITLE_MAX = 300  # Task.title


class NewTaskForm(forms.Form):
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.ORCHESTRA_MAX_TEXT
        self.fields["description"].max_length = limit
        self.fields["description"].validators.append(MaxLengthValidator(limit))
        # Lengths are checked here and said beside the field: a browser-side maxlength would
        # cut a pasted description short without a word.
        for field in self.fields.values():
            field.widget.attrs.pop("maxlength", None)


class DecisionForm(forms.Form):
    """One form, three buttons: Approve, Edit and approve, Reject."""

    ACTIONS = ("approve", "edit", "reject")

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    comment = forms.CharField(
        required=False,
        strip=True,
        max_length=MAX_COMMENT,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required to reject: the agent receives it as the answer to its request.",
    )
    arguments = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
        help_text="Edit the JSON, then choose “Edit and approve”.",
    )

    def __init__(self, *args, checkpoint: Checkpoint, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint = checkpoint
        if checkpoint.tool_call_id is None:
            del self.fields["arguments"]

    @property
    def edits_arguments(self) -> bool:
        return "arguments" in self.fields

    def clean(self):
        data = super().clean()
        action = data.get("action")
        if action == "reject" and not data.get("comment"):
            self.add_error("comment", "Say why you reject it: the agent will read this.")
        data["parsed_arguments"] = None
        if action == "edit":
            if not self.edits_arguments:
                raise forms.ValidationError("This checkpoint has no arguments to edit.")
            raw = data.get("arguments") or ""
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                self.add_error("arguments", f"The arguments are not valid JSON: {exc}.")
            else:
                if isinstance(parsed, dict):
                    data["parsed_arguments"] = parsed
                else:
                    self.add_error("arguments", "The arguments must be a JSON object.")
        return data

    @property
    def decision(self) -> str:
        return "reject" if self.cleaned_data["action"] == "reject" else "approve"


class HistoryFilterForm(forms.Form):
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
