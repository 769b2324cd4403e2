"""Who may open what: every dashboard page and action for an anonymous visitor (sent to sign
in), an outsider (404: the object's existence does not leak), and a viewer (sees, may not
act)."""

import pytest
from django.test import Client

from approvals.models import Checkpoint
from orchestra.models import Run

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def object_pages(run: Run, checkpoint: Checkpoint) -> list[str]:
    call = run.model_calls.first()
    return [
        "/projects/demo/",
        f"/runs/{run.pk}/",
        *(f"/runs/{run.pk}/part/{name}/" for name in PARTS),
        f"/runs/{run.pk}/trace/",
        f"/runs/{run.pk}/calls/{call.pk}/",
        f"/runs/{run.pk}/steps/verify/",
        f"/runs/{run.pk}/steps/verify/conversation/",
        f"/approvals/{checkpoint.pk}/",
    ]


LIST_PAGES = ["/", "/runs/", "/approvals/", "/approvals/badge/"]
PARTS = ["header", "phases", "graph", "steps", "usage", "report"]


def test_anonymous_visitors_are_sent_to_sign_in(waiting_run, checkpoint):
    client = Client()
    for path in LIST_PAGES + object_pages(waiting_run, checkpoint):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"/login/?next={path}", path
    posts = [
        "/projects/demo/tasks/",
        f"/runs/{waiting_run.pk}/cancel/",
        f"/approvals/{checkpoint.pk}/",
    ]
    for path in posts:
        response = client.post(path, {"title": "x", "action": "approve"})
        assert response.status_code == 302, path
        assert response["Location"].startswith("/login/"), path
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.AWAITING_APPROVAL
    assert Run.objects.count() == 1


def test_an_expired_session_in_an_htmx_refresh_reloads_the_sign_in_page(waiting_run):
    response = Client().get(
        f"/runs/{waiting_run.pk}/part/graph/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver/runs/{waiting_run.pk}/",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"/login/?next=/runs/{waiting_run.pk}/"


def test_outsiders_get_404_for_every_object_page(waiting_run, checkpoint, outsider):
    client = client_for(outsider)
    for path in object_pages(waiting_run, checkpoint):
        assert client.get(path).status_code == 404, path
    assert client.post("/projects/demo/tasks/", {"title": "Sneaky"}).status_code == 404
    assert client.post(f"/runs/{waiting_run.pk}/cancel/").status_code == 404
    response = client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert response.status_code == 404
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.AWAITING_APPROVAL
    assert Run.objects.count() == 1


def test_outsiders_list_pages_show_nothing_of_the_project(waiting_run, outsider):
    client = client_for(outsider)
    for path in LIST_PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert waiting_run.task.title not in response.text, path
    badge = client.get("/approvals/badge/")
    assert 'data-count="0"' in badge.text


def test_unknown_objects_are_404(owner):
    client = client_for(owner)
    for path in ["/projects/nope/", "/runs/999/", "/runs/999/trace/", "/approvals/999/"]:
        assert client.get(path).status_code == 404, path


def test_viewers_see_but_may_not_act(waiting_run, checkpoint, viewer):
    client = client_for(viewer)
    run_page = client.get(f"/runs/{waiting_run.pk}/")
    assert run_page.status_code == 200
    assert ">Cancel</button>" not in run_page.text
    project = client.get("/projects/demo/")
    assert "Create task" not in project.text
    assert client.post("/projects/demo/tasks/", {"title": "Nope"}).status_code == 403
    assert client.post(f"/runs/{waiting_run.pk}/cancel/").status_code == 403

    approval = client.get(f"/approvals/{checkpoint.pk}/")
    assert approval.status_code == 200
    assert ">Approve</button>" not in approval.text
    assert "Only approvers of Demo can decide" in approval.text
    assert client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"}).status_code == 403
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING


def test_operators_create_and_cancel_but_do_not_decide(waiting_run, checkpoint, operator):
    client = client_for(operator)
    approval = client.get(f"/approvals/{checkpoint.pk}/")
    assert ">Approve</button>" not in approval.text
    response = client.post(f"/approvals/{checkpoint.pk}/", {"action": "approve"})
    assert response.status_code == 403
    assert ">Cancel</button>" in client.get(f"/runs/{waiting_run.pk}/").text
