"""The JSON API through django.test.Client, as scripts and the dashboard call it: bearer tokens
and the session, every endpoint's happy path, who may do what, and the error shapes.

The engine drains its queue in the calling thread (tests/conftest.py) once a transaction
commits, hence `transaction=True`: a POST /api/tasks returns with the run already waiting at
its first checkpoint.
"""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils.crypto import get_random_string

from agents.models import AgentProfile
from approvals.models import Checkpoint
from orchestra.models import ApiToken, Event, Membership, Project, Run

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def post(client: Client, path: str, body) -> tuple[int, dict]:
    response = client.post(path, body, content_type="application/json")
    return response.status_code, response.json()


def get(client: Client, path: str) -> tuple[int, dict]:
    response = client.get(path)
    return response.status_code, response.json()


@pytest.fixture
def admin(demo):
    return get_user_model().objects.get(username="admin")


@pytest.fixture
def started(demo, owner) -> int:
    """A run through the API, waiting at its first (exec) checkpoint; returns its id."""
    status, body = post(client_for(owner), "/api/tasks", {"project": "demo", "title": "Greet"})
    assert status == 201, body
    return body["run"]["id"]


def pending(client: Client, run_id: int) -> list[dict]:
    status, body = get(client, f"/api/approvals?status=pending&run={run_id}")
    assert status == 200, body
    return body["approvals"]


# --- authentication -------------------------------------------------------------------------
ENDPOINTS = [
    ("get", "/api/projects"),
    ("post", "/api/projects"),
    ("post", "/api/tasks"),
    ("get", "/api/runs"),
    ("get", "/api/runs/1"),
    ("post", "/api/runs/1/cancel"),
    ("get", "/api/runs/1/events"),
    ("get", "/api/approvals"),
    ("post", "/api/approvals/1/decision"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_requests_get_401(db, method, path):
    response = getattr(Client(), method)(path, {}, content_type="application/json")
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer orc_not-a-token", "Bearer ", "Token abc", "Basic x"])
def test_bad_credentials_get_401(db, header):
    assert Client(HTTP_AUTHORIZATION=header).get("/api/projects").status_code == 401


def test_a_token_of_an_inactive_user_is_refused(owner):
    client = client_for(owner)
    owner.is_active = False
    owner.save()
    assert client.get("/api/projects").status_code == 401


def test_token_use_is_recorded_at_most_once_a_minute(owner):
    raw = ApiToken.issue(owner)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    token = ApiToken.objects.get(digest=ApiToken.digest_of(raw))
    assert token.last_used_at is None

    assert client.get("/api/projects").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    assert client.get("/api/projects").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first  # not rewritten within the minute

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    assert client.get("/api/projects").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(seconds=1)


def test_the_session_works_and_unsafe_methods_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert get(client, "/api/projects")[1]["projects"][0]["slug"] == "demo"

    body = {"project": "demo", "title": "From the dashboard"}
    refused = client.post("/api/tasks", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]

    secret = get_random_string(32)
    client.cookies["csrftoken"] = secret
    created = client.post(
        "/api/tasks", body, content_type="application/json", headers={"X-CSRFToken": secret}
    )
    assert created.status_code == 201, created.json()


def test_an_anonymous_post_is_401_not_a_csrf_failure(db):
    response = Client(enforce_csrf_checks=True).post(
        "/api/tasks", {}, content_type="application/json"
    )
    assert response.status_code == 401


# --- tasks ----------------------------------------------------------------------------------
def test_creating_a_task_starts_a_run(owner):
    status, body = post(
        client_for(owner), "/api/tasks", {"project": "demo", "title": "Hi", "description": "d"}
    )
    assert status == 201, body
    run = Run.objects.get(pk=body["run"]["id"])
    assert body == {"id": run.task_id, "run": {"id": run.pk, "status": run.status}}
    assert run.status == Run.Status.AWAITING_APPROVAL  # the sync engine ran ahead
    assert run.task.created_by == owner and run.task.description == "d"


def test_a_viewer_may_not_create_tasks(viewer):
    status, body = post(client_for(viewer), "/api/tasks", {"project": "demo", "title": "x"})
    assert status == 403
    assert body["detail"] == "You may not create tasks in this project."
    assert not Run.objects.exists()


@pytest.mark.parametrize("slug", ["demo", "nope"])
def test_an_unknown_or_invisible_project_is_404(outsider, slug):
    status, body = post(client_for(outsider), "/api/tasks", {"project": slug, "title": "x"})
    assert status == 404
    assert body == {"detail": "No such project."}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"project": "demo", "title": "   "}, "A task needs a title."),
        ({"project": "demo", "title": "t" * 301}, "The title is longer than 300 characters."),
        ({"project": "demo"}, "title: Field required"),
        ({"project": "demo", "title": ["x"]}, "title: Input should be a valid string"),
    ],
)
def test_bad_task_input_is_400_with_a_readable_detail(owner, body, message):
    status, answer = post(client_for(owner), "/api/tasks", body)
    assert status == 400
    assert answer == {"detail": message}


def test_an_oversized_description_is_400(owner, settings):
    settings.ORCHESTRA_MAX_TEXT = 50
    status, body = post(
        client_for(owner), "/api/tasks", {"project": "demo", "title": "x", "description": "d" * 51}
    )
    assert status == 400
    assert body == {"detail": "The description is longer than 50 characters."}


def test_a_body_that_is_not_json_is_400(owner):
    response = client_for(owner).post("/api/tasks", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"]


# --- projects -------------------------------------------------------------------------------
def test_projects_are_listed_by_visibility(owner, outsider):
    assert get(client_for(owner), "/api/projects") == (
        200,
        {"projects": [{"slug": "demo", "name": "Demo", "team": "software"}]},
    )
    assert get(client_for(outsider), "/api/projects") == (200, {"projects": []})


def test_a_superuser_creates_a_project_and_becomes_its_admin(admin):
    AgentProfile.objects.filter(team="content").delete()
    status, body = post(
        client_for(admin), "/api/projects", {"slug": "blog", "name": "Blog", "team": "content"}
    )
    assert status == 201, body
    assert body == {"slug": "blog", "name": "Blog", "team": "content"}
    project = Project.objects.get(slug="blog")
    assert Membership.objects.get(project=project, user=admin).role == Membership.Role.ADMIN
    assert AgentProfile.objects.filter(team="content", role="orchestrator").exists()

    again = post(
        client_for(admin), "/api/projects", {"slug": "blog", "name": "B", "team": "content"}
    )
    assert again[0] == 409
    assert "already exists" in again[1]["detail"]


def test_only_superusers_create_projects(owner):
    status, body = post(client_for(owner), "/api/projects", {"slug": "x", "name": "X"})
    assert status == 403
    assert body == {"detail": "Only superusers may create projects."}
    assert not Project.objects.filter(slug="x").exists()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"slug": "has space", "name": "X"}, "slug may contain only"),
        ({"slug": "ok", "name": " "}, "needs a name"),
        ({"slug": "ok", "name": "X", "team": "marketing"}, "team must be one of"),
        ({"name": "X"}, "slug: Field required"),
    ],
)
def test_bad_project_input_is_400(admin, body, fragment):
    status, answer = post(client_for(admin), "/api/projects", body)
    assert status == 400
    assert fragment in answer["detail"]


# --- runs -----------------------------------------------------------------------------------
def test_runs_are_listed_newest_first_and_filtered(demo, owner, outsider):
    client = client_for(owner)
    first = post(client, "/api/tasks", {"project": "demo", "title": "one"})[1]["run"]["id"]
    second = post(client, "/api/tasks", {"project": "demo", "title": "two"})[1]["run"]["id"]
    post(client, f"/api/runs/{first}/cancel", {})

    status, body = get(client, "/api/runs")
    assert status == 200
    assert [r["id"] for r in body["runs"]] == [second, first]
    summary = body["runs"][0]
    assert summary["task"]["title"] == "two" and summary["project"] == "demo"
    assert set(summary) == {
        "id", "status", "phase", "project", "task", "demo_model", "created_at", "finished_at",
        "paused_at", "paused_by", "parent", "forked_at_step",
    }  # fmt: skip
    assert [r["id"] for r in get(client, "/api/runs?status=cancelled")[1]["runs"]] == [first]
    assert len(get(client, "/api/runs?project=demo")[1]["runs"]) == 2
    assert get(client, "/api/runs?status=bogus")[0] == 400

    stranger = client_for(outsider)
    assert get(stranger, "/api/runs") == (200, {"runs": [], "next": None})
    assert get(stranger, "/api/runs?project=demo")[0] == 404


def test_a_run_in_detail(owner, started):
    status, run = get(client_for(owner), f"/api/runs/{started}")
    assert status == 200
    assert set(run) == {
        "id", "status", "phase", "task", "project", "demo_model", "steps", "usage", "report",
        "report_html", "error", "paused_at", "paused_by", "parent", "forked_at_step",
    }  # fmt: skip
    assert run["status"] == "awaiting_approval" and run["project"] == "demo"
    assert run["task"] == {"id": run["task"]["id"], "title": "Greet", "description": ""}
    assert run["demo_model"] is True
    assert set(run["usage"]) == {"input_tokens", "output_tokens", "cost_usd"}
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["implement"]["depends_on"] == ["research"]
    assert steps["implement"]["agent"] == "coder"
    assert steps["implement"]["revisions"] == 1
    assert steps["research"]["started_at"] < steps["research"]["finished_at"]
    assert steps["deploy"]["started_at"] is None


def test_an_outsider_gets_404_for_a_run(outsider, started):
    assert get(client_for(outsider), f"/api/runs/{started}") == (404, {"detail": "No such run."})
    assert get(client_for(outsider), f"/api/runs/{started}/events")[0] == 404
    assert post(client_for(outsider), f"/api/runs/{started}/cancel", {})[0] == 404
    assert get(client_for(outsider), "/api/runs/999999")[0] == 404


def test_cancelling_a_run_then_again_is_409(operator, viewer, started):
    assert post(client_for(viewer), f"/api/runs/{started}/cancel", {})[0] == 403

    status, body = post(client_for(operator), f"/api/runs/{started}/cancel", {})
    assert status == 200, body
    assert body["id"] == started and body["status"] == "cancelled" and body["finished_at"]
    assert Checkpoint.objects.filter(run_id=started, status="pending").count() == 0

    status, body = post(client_for(operator), f"/api/runs/{started}/cancel", {})
    assert status == 409
    assert body == {"detail": "The run already ended (cancelled)."}


def test_events_after_a_seq_are_only_the_later_ones(viewer, started):
    client = client_for(viewer)
    status, body = get(client, f"/api/runs/{started}/events")
    assert status == 200
    events = body["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "run.created" and events[0]["actor"] == "olivia"
    assert any(e["step"] == "research" for e in events)
    # Read as plain values, each is what the stored event says of itself (the broadcast form).
    stored = Event.objects.filter(run_id=started).select_related("step").order_by("seq")
    assert events == [event.as_json() for event in stored]

    later = get(client, f"/api/runs/{started}/events?after=5")[1]["events"]
    assert [e["seq"] for e in later] == list(range(6, len(events) + 1))
    assert later == events[5:]
    limited = get(client, f"/api/runs/{started}/events?after=2&limit=3")[1]["events"]
    assert [e["seq"] for e in limited] == [3, 4, 5]
    assert get(client, f"/api/runs/{started}/events?after={len(events)}")[1] == {"events": []}


# --- approvals ------------------------------------------------------------------------------
def test_approvals_are_listed_over_visible_runs(viewer, outsider, started):
    [approval] = pending(client_for(viewer), started)
    checkpoint = Checkpoint.objects.get(run_id=started)
    assert approval == {
        "id": checkpoint.pk,
        "kind": "tool_call",
        "run": started,
        "step": "verify",
        "tool": "run_command",
        "arguments": checkpoint.tool_call.arguments,
        "status": "pending",
        "requested_at": checkpoint.requested_at.isoformat(),
        "expires_at": None,
        "approvals_required": 1,
        "shown": checkpoint.shown,
    }
    assert approval["shown"]["brief"]["acceptance_criteria"] == ["The tests were run"]
    assert get(client_for(viewer), "/api/approvals?status=approved")[1] == {
        "approvals": [],
        "next": None,
    }
    assert get(client_for(viewer), "/api/approvals?status=nope")[0] == 400
    assert get(client_for(outsider), "/api/approvals") == (200, {"approvals": [], "next": None})
    assert get(client_for(outsider), f"/api/approvals?run={started}")[0] == 404


@pytest.mark.parametrize("persona", ["viewer", "operator"])
def test_viewers_and_operators_may_not_decide(request, started, persona):
    user = request.getfixturevalue(persona)
    [approval] = pending(client_for(user), started)
    status, body = post(
        client_for(user), f"/api/approvals/{approval['id']}/decision", {"decision": "approve"}
    )
    assert status == 403
    assert body == {"detail": "You may not decide checkpoints in this project."}
    assert Checkpoint.objects.get(pk=approval["id"]).status == "pending"


def test_an_outsider_cannot_see_a_checkpoint(outsider, started):
    checkpoint = Checkpoint.objects.get(run_id=started)
    path = f"/api/approvals/{checkpoint.pk}/decision"
    assert post(client_for(outsider), path, {"decision": "approve"})[0] == 404
    assert (
        post(client_for(outsider), "/api/approvals/999999/decision", {"decision": "approve"})[0]
        == 404
    )


def test_the_demo_cycle_through_the_api_only(owner, approver):
    client, deciding = client_for(owner), client_for(approver)
    status, created = post(client, "/api/tasks", {"project": "demo", "title": "Add a greeting"})
    assert status == 201, created
    run_id = created["run"]["id"]
    assert get(client, f"/api/runs/{run_id}")[1]["status"] == "awaiting_approval"

    decided_kinds = []
    while approvals := pending(client, run_id):
        for approval in approvals:
            status, body = post(
                deciding,
                f"/api/approvals/{approval['id']}/decision",
                {"decision": "approve", "comment": "ok"},
            )
            assert status == 200, body
            assert body["id"] == approval["id"] and body["status"] == "approved"
            assert body["decided_by"] == "ada" and body["decided_at"]
            decided_kinds.append(approval["kind"])
    assert decided_kinds == ["tool_call", "deploy"]

    run = get(client, f"/api/runs/{run_id}")[1]
    assert run["status"] == "completed", run["error"]
    assert "implement" in run["report"] and "deploy" in run["report"]
    # The same report rendered: its Markdown heading and list items as HTML.
    assert run["report"].startswith("# Report") and run["report_html"].startswith("<h1>Report")
    assert run["report_html"].count("<li>") == run["report"].count("\n- ") > 0
    assert all(step["status"] == "done" for step in run["steps"])
    kinds = [e["kind"] for e in get(client, f"/api/runs/{run_id}/events")[1]["events"]]
    assert kinds[-1] == "run.completed"


def test_the_report_comes_as_markdown_and_as_sanitised_html(owner, started):
    written = "## Done\n\n- one\n\n<script>alert(1)</script> [x](javascript:alert(1))"
    Run.objects.filter(pk=started).update(report=written)
    run = get(client_for(owner), f"/api/runs/{started}")[1]
    assert run["report"] == written
    html = run["report_html"]
    assert html.startswith("<h2>Done</h2>\n<ul>\n<li>one</li>\n</ul>")
    assert "<script>" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html  # shown as text, never run


def test_a_second_decision_is_409_naming_who_decided(approver, second_approver, started):
    [approval] = pending(client_for(approver), started)
    path = f"/api/approvals/{approval['id']}/decision"
    assert post(client_for(approver), path, {"decision": "approve"})[0] == 200
    status, body = post(client_for(second_approver), path, {"decision": "reject", "comment": "no"})
    assert status == 409
    assert body == {"detail": "This checkpoint was already approved by ada."}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"decision": "approve", "arguments": {"command": 5}}, "5 is not of type 'string'"),
        ({"decision": "approve", "arguments": {"cmd": "ls"}}, "'command' is a required property"),
        ({"decision": "reject", "arguments": {"command": "ls"}}, "only go with an approval"),
    ],
)
def test_edited_arguments_that_do_not_fit_are_400(approver, started, body, fragment):
    [approval] = pending(client_for(approver), started)
    status, answer = post(client_for(approver), f"/api/approvals/{approval['id']}/decision", body)
    assert status == 400
    assert fragment in answer["detail"]
    if body["decision"] == "approve":
        assert answer["detail"].startswith("the edited arguments do not fit the tool: ")
    assert Checkpoint.objects.get(pk=approval["id"]).status == "pending"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"decision": "maybe"}, "decision: Input should be 'approve', 'approve_run'"),
        ({"comment": "hm"}, "decision: Field required"),
        ({"decision": "approve", "arguments": ["ls"]}, "arguments: Input should be a valid"),
        ({"decision": "approve", "comment": "c" * 5001}, "longer than 5000 characters"),
    ],
)
def test_a_malformed_decision_is_400(approver, started, body, fragment):
    [approval] = pending(client_for(approver), started)
    status, answer = post(client_for(approver), f"/api/approvals/{approval['id']}/decision", body)
    assert status == 400
    assert fragment in answer["detail"]


def test_edited_arguments_that_fit_are_recorded(approver, started):
    [approval] = pending(client_for(approver), started)
    edited = {"command": "python3 -m unittest discover -s tests"}
    status, body = post(
        client_for(approver),
        f"/api/approvals/{approval['id']}/decision",
        {"decision": "edit", "comment": "quieter", "arguments": edited},
    )
    assert status == 200, body
    checkpoint = Checkpoint.objects.get(pk=approval["id"])
    assert checkpoint.arguments == edited and checkpoint.comment == "quieter"


# --- OpenAPI --------------------------------------------------------------------------------
def test_the_openapi_document_lists_the_paths_and_the_bearer_scheme(db):
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Orchestra API"
    assert {
        "/api/tasks",
        "/api/projects",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/events",
        "/api/approvals",
        "/api/approvals/{checkpoint_id}/decision",
    } <= set(document["paths"])
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"} in schemes.values()
    assert {"BearerToken": []} in document["paths"]["/api/tasks"]["post"]["security"]


def test_a_request_changes_thread_a_few_times_not_at_each_middleware(monkeypatch):
    """Under ASGI the middleware chain runs in one thread (orchestra.middleware): before it,
    each middleware's hooks were each called through a hand-over to a thread, eighteen
    hand-overs for a poll of a run's new events; five now (the request-started signal, the
    chain, CSRF's view hook, the view, closing the response), and one more to log a refusal.
    The request here is refused before the database is read: a thread of the request's that
    had opened a connection would keep it past the test (19 hand-overs without the chain)."""
    import asyncio

    from asgiref.sync import SyncToAsync
    from django.test import AsyncClient

    handed = []
    hand_over = SyncToAsync.__call__

    def counted(self, *args, **kwargs):
        handed.append(getattr(self.func, "__qualname__", repr(self.func)))
        return hand_over(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)

    response = asyncio.run(AsyncClient().get("/api/runs/1/events?after=1000000"))

    assert response.status_code == 401
    assert len(handed) <= 6, handed


def test_the_events_reply_is_what_its_schema_makes_of_it(owner, started):
    """Sent without checking each event against `EventOut` again (`list_events`): the rows
    must be what the schema would make of them, every field of it and no other."""
    from orchestra.api.schemas import EventListOut, EventOut

    status, body = get(client_for(owner), f"/api/runs/{started}/events")

    assert status == 200 and len(body["events"]) > 3
    assert EventListOut.model_validate(body).model_dump() == body
    assert {key for event in body["events"] for key in event} == set(EventOut.model_fields)
    assert any(event["step"] for event in body["events"])
