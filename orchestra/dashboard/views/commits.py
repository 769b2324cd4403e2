"""A run's code between two commits: what a deploy ships, linked from its approval page."""

from django.http import Http404
from django.shortcuts import render

from orchestra.access import get_run_for_user
from orchestra.dashboard.auth import login_required
from orchestra.engine import shipping


@login_required
def run_diff(request, run_id: int):
    """`?from=<sha>&to=<sha>`: the unified diff between two commits of the run's project
    repository (hex shas only; anything that is not a commit there is a 404)."""
    run = get_run_for_user(request.user, run_id)
    if not run.branch:
        raise Http404("This run has no commits yet.")
    base = shipping.run_commit(run, request.GET.get("from", ""))
    commit = shipping.run_commit(run, request.GET.get("to", ""))
    if base is None or commit is None:
        raise Http404("from and to must name commits of this run's repository.")
    return render(
        request,
        "dashboard/run_diff.html",
        {
            "run": run,
            "base": base,
            "commit": commit,
            "diff": shipping.diff_between(run, base, commit),
        },
    )
