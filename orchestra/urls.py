from django.contrib import admin
from django.urls import include, path

from orchestra import gitserve, views
from orchestra.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("api/", api.urls),
    path("git/<slug:slug>.git/<path:path>", gitserve.git_http, name="git"),
    path("", include("orchestra.web_urls")),
]
