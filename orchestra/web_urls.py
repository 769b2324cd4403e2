from django.urls import include, path

urlpatterns = [
    path("", include("orchestra.dashboard.urls")),
]
