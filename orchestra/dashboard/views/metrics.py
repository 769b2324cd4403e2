from django import forms
from django.shortcuts import render

from orchestra.access import visible_projects
from orchestra.dashboard import metrics
from orchestra.dashboard.auth import login_required

TEMPLATE = "dashboard/metrics.html"


# Kept beside its only view while the page settles; it belongs in dashboard/forms.py.
class MetricsFilterForm(forms.Form):
    period = forms.ChoiceField(
        choices=[(key, label) for key, (label, _) in metrics.PERIODS.items()]
    )
    project = forms.ModelChoiceField(
        queryset=None, required=False, to_field_name="slug", empty_label="All projects"
    )

    def __init__(self, *args, projects, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects

    def filters(self) -> dict:
        """The valid filters, the default period in place of a bad one: like the history
        page, a bad value is said beside the form and filters nothing."""
        self.is_valid()
        return {
            "period": self.cleaned_data.get("period") or metrics.DEFAULT_PERIOD,
            "project": self.cleaned_data.get("project"),
        }


@login_required
def metrics_page(request):
    """Runs, success rate, step durations, usage and checkpoint waits per project and agent
    role over a period; htmx gets only the results."""
    data = request.GET.copy()
    data.setdefault("period", metrics.DEFAULT_PERIOD)
    form = MetricsFilterForm(data, projects=visible_projects(request.user).order_by("name"))
    report = metrics.compute(request.user, **form.filters())
    template = TEMPLATE
    if request.htmx and request.htmx.target == "metrics-results":
        template += "#results"
    return render(request, template, {"form": form, "m": report})
