from django.core.paginator import Paginator
from django.shortcuts import render

from orchestra.access import visible_projects
from orchestra.dashboard import queries
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.forms import HistoryFilterForm

PER_PAGE = 25


@login_required
def history(request):
    """Runs with filters and title search, paginated; htmx gets only the results."""
    form = HistoryFilterForm(request.GET or None, projects=visible_projects(request.user))
    runs = queries.history(request.user, form.filters() if form.is_bound else {})
    page = Paginator(runs, PER_PAGE).get_page(request.GET.get("page"))
    template = "dashboard/history.html"
    if request.htmx and request.htmx.target == "history-results":
        template += "#results"
    # Before any run exists, the page says how to start one rather than “no match”.
    any_runs = page.paginator.count > 0 or queries.visible_runs(request.user).exists()
    return render(request, template, {"form": form, "page": page, "any_runs": any_runs})
