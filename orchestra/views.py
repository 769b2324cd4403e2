"""Thin views: health, and the pages that exist before the dashboard issue lands."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from orchestra.access import visible_projects
from orchestra.health import health_report
from orchestra.models import Run


def healthz(request):
    report = health_report()
    return JsonResponse(report, status=200 if report["ok"] else 503)


@login_required
def home(request):
    projects = visible_projects(request.user)
    runs = Run.objects.filter(project__in=projects).select_related("task", "project")[:25]
    return render(request, "orchestra/home.html", {"projects": projects, "runs": runs})
