"""/healthz: a JSON report on the database, the broker and the workers, for load balancers
and for the person wondering why nothing moves."""

import pytest
from django.test import Client


@pytest.mark.django_db
def test_healthz_is_ok_in_the_embedded_default(settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    report = response.json()
    assert {"database", "broker", "worker"} <= set(report)
    assert report["ok"] is True
    assert report["database"]["ok"] is True
    assert report["broker"] == {"ok": True, "kind": "embedded"}
    assert report["worker"]["ok"] is True and report["worker"]["kind"] == "embedded"


@pytest.mark.django_db
def test_healthz_is_503_naming_the_part_that_is_down(settings):
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = Client().get("/healthz")
    assert response.status_code == 503
    report = response.json()
    assert report["ok"] is False
    assert report["database"]["ok"] is True
    assert report["broker"]["ok"] is False and report["broker"]["error"]
