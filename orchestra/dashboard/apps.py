from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The browser dashboard: pages, partials and their template tags (no models)."""

    name = "orchestra.dashboard"
    label = "dashboard"
