from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from orchestra.access import CREATE_ROLES, get_project_for_user, role_in, visible_projects
from orchestra.dashboard import present, queries
from orchestra.dashboard.auth import login_required
from orchestra.dashboard.forms import NewTaskForm
from orchestra.engine import EngineError, start_run
from orchestra.engine.budgets import InvalidBudget
from orchestra.engine.project_budgets import project_limits


@login_required
def projects(request):
    """Every project the user can see, with its latest run."""
    return render(
        request,
        "dashboard/projects.html",
        {"projects": queries.project_summaries(visible_projects(request.user))},
    )


@login_required
def project(request, slug: str):
    project = get_project_for_user(request.user, slug)
    return _page(request, project, NewTaskForm())


@login_required
@require_POST
def new_task(request, slug: str):
    """Start a run from the New task form and go to its live page; errors stay inline."""
    project = get_project_for_user(request.user, slug, write=True)
    form = NewTaskForm(request.POST)
    if form.is_valid():
        try:
            run = start_run(
                request.user,
                project,
                form.cleaned_data["title"],
                form.cleaned_data["description"],
                budget=form.budget(),
            )
        except InvalidBudget as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        except EngineError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("dashboard:run", run.pk)
    return _page(request, project, form, status=400)


def _page(request, project, form, status: int = 200):
    return render(
        request,
        "dashboard/project.html",
        {
            "project": project,
            "runs": queries.project_runs(project),
            "form": form,
            "can_create": role_in(request.user, project) in CREATE_ROLES,
            "run_defaults": present.limits_text(project_limits(project), prefix="run_"),
        },
        status=status,
    )
