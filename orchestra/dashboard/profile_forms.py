"""The agent profile form: shape only; `agents.profiles.save_profile` has the last word."""

from django import forms

from agents.models import AgentProfile, Provider
from agents.profiles import TEMPERATURE_RANGE, TURN_LIMIT_RANGE
from agents.tools import REGISTRY
from orchestra.dashboard.forms import CleanForm

PROMPT_MAX = 20_000


class ProfileForm(CleanForm):
    system_prompt = forms.CharField(
        max_length=PROMPT_MAX, widget=forms.Textarea(attrs={"rows": 10}), label="System prompt"
    )
    provider = forms.ModelChoiceField(
        Provider.objects.all(),
        required=False,
        empty_label="The environment's default",
        label="Provider",
    )
    model = forms.CharField(
        required=False, max_length=120, label="Model", help_text="Empty: the default model."
    )
    fallback_provider = forms.ModelChoiceField(
        Provider.objects.all(),
        required=False,
        empty_label="The profile's own provider",
        label="Fallback provider",
    )
    fallback_model = forms.CharField(
        required=False, max_length=120, label="Fallback model", help_text="Empty: no fallback."
    )
    temperature = forms.FloatField(
        min_value=TEMPERATURE_RANGE[0], max_value=TEMPERATURE_RANGE[1], label="Temperature"
    )
    allowed_tools = forms.MultipleChoiceField(
        required=False,
        choices=[(name, name) for name in sorted(REGISTRY)],
        widget=forms.CheckboxSelectMultiple,
        label="Allowed tools",
    )
    turn_limit = forms.IntegerField(
        min_value=TURN_LIMIT_RANGE[0], max_value=TURN_LIMIT_RANGE[1], label="Turn limit"
    )

    @classmethod
    def for_profile(cls, profile: AgentProfile) -> "ProfileForm":
        return cls(initial={name: getattr(profile, name) for name in AgentProfile.VERSIONED})

    def profile_fields(self) -> dict:
        return {name: self.cleaned_data[name] for name in AgentProfile.VERSIONED}
