from django.contrib import admin
from django.urls import include, path

from orchestra import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("", include("orchestra.web_urls")),
]
