"""Health for load balancers and the CLI; the dashboard lives in orchestra.dashboard."""

from django.http import JsonResponse

from orchestra.health import health_report


def healthz(request):
    report = health_report()
    return JsonResponse(report, status=200 if report["ok"] else 503)
