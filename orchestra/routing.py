"""WebSocket routes, mounted by `orchestra.asgi` behind the origin check and auth middleware."""

from django.urls import path

from orchestra.consumers import InboxConsumer, RunConsumer

websocket_urlpatterns: list = [
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi(), name="run-events"),
    path("ws/inbox/", InboxConsumer.as_asgi(), name="inbox"),
]
