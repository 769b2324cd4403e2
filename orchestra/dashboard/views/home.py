from django.shortcuts import render

from orchestra.access import visible_projects
from orchestra.dashboard import queries
from orchestra.dashboard.auth import login_required


@login_required
def home(request):
    user = request.user
    return render(
        request,
        "dashboard/home.html",
        {
            "projects": visible_projects(user).order_by("name"),
            "active_runs": queries.active_runs(user),
            "pending": list(queries.pending_checkpoints(user)[:10]),
            "recent_runs": queries.recent_runs(user),
        },
    )
