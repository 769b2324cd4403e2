"""The provider form, shared by the admin and the dashboard."""

import json

from django import forms

from agents.models import Provider


class ProviderForm(forms.ModelForm):
    """The key is write-only: typed in, stored encrypted, never rendered back."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; leave blank to keep the current key.",
    )
    clear_key = forms.BooleanField(label="Forget the stored key", required=False)
    base_url = forms.URLField(
        label="Base URL",
        required=False,
        max_length=300,
        assume_scheme="https",
        help_text="Blank for OpenAI itself; usually ends in /v1.",
    )

    class Meta:
        model = Provider
        fields = Provider.EDITABLE
        help_texts = {
            "prices": 'USD per million tokens, e.g. {"gpt-4o-mini": [0.15, 0.6]}.',
            "default_headers": 'Sent with every request, e.g. {"X-Team": "docs"}.',
        }

    def clean_prices(self) -> dict:
        prices = self.cleaned_data.get("prices") or {}
        if not isinstance(prices, dict):
            raise forms.ValidationError('Prices are an object: {"model": [input, output]}.')
        for model, pair in prices.items():
            numbers = isinstance(pair, list) and len(pair) == 2
            if not numbers or not all(isinstance(p, int | float) and p >= 0 for p in pair):
                raise forms.ValidationError(
                    f"The price of {model} must be two non-negative numbers "
                    f"[input, output], not {json.dumps(pair)}."
                )
        return prices

    def clean_default_headers(self) -> dict:
        headers = self.cleaned_data.get("default_headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise forms.ValidationError('Headers are an object of strings: {"Name": "value"}.')
        return headers


class ConnectionTestForm(forms.Form):
    model = forms.CharField(max_length=120, help_text="The model to ask, e.g. gpt-4o-mini.")
