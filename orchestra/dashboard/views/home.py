from django.shortcuts import render

from orchestra.access import visible_projects
from orchestra.dashboard import queries
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.inbox import home_context, inbox_state


@login_required
def home(request):
    """Active runs and waiting checkpoints (read once with the badge's count, so they agree;
    the inbox socket keeps both live), recent runs and projects."""
    user = request.user
    state = inbox_state(user)
    return render(
        request,
        "dashboard/home.html",
        {
            "projects": visible_projects(user).order_by("name"),
            "recent_runs": queries.recent_runs(user),
            "badge_count": state.count,
            **home_context(state),
        },
    )
