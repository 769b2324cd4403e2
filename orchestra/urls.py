from django.contrib import admin
from django.urls import include, path

from orchestra import views
from orchestra.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("api/", api.urls),
    path("", include("orchestra.web_urls")),
]
