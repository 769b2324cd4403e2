from django.urls import path

from orchestra import views

urlpatterns = [
    path("", views.home, name="home"),
]
