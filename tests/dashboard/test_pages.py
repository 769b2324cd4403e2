"""Dashboard pages through django.test.Client: sign in and out, home, project and the New
task form, the run page and its partials, cancel, step detail, history, trace."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from agents.models import ModelCall
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import Run, Task

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<li data-seq="(\d+)"', html)]


# --- sign in / out ----------------------------------------------------------------------------
def test_sign_in_and_out(owner):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in page.text
    response = client.post("/login/", {"username": "olivia", "password": "pw-olivia"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200
    # Signing out is a POST with the CSRF token, from the header of every page.
    assert 'action="/logout/"' in client.get("/").text
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_told_inline(owner):
    page = Client().post("/login/", {"username": "olivia", "password": "nope"})
    assert page.status_code == 200
    assert "Please enter a correct username and password" in page.text


def test_forms_carry_csrf_tokens(waiting_run, checkpoint, owner):
    client = client_for(owner)
    for path in ["/projects/demo/", f"/runs/{waiting_run.pk}/", f"/approvals/{checkpoint.pk}/"]:
        page = client.get(path).text
        assert page.count("<form") - page.count('method="get"') <= page.count(
            'name="csrfmiddlewaretoken"'
        ), path
        assert '"X-CSRFToken"' in page  # hx-headers on <body> for htmx requests


def test_csrf_is_enforced(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post("/projects/demo/tasks/", {"title": "No token"}).status_code == 403
    assert not Task.objects.exists()


# --- home and the header badge -----------------------------------------------------------------
def test_home_lists_active_runs_pending_checkpoints_and_recent_runs(waiting_run, checkpoint, owner):
    finished = start_run(owner, waiting_run.project, "An older task")
    from orchestra.engine import cancel_run

    cancel_run(owner, finished)
    page = client_for(owner).get("/").text
    active, recent = page.split('id="recent-title"')
    assert "Add a greeting" in active and "phase: dispatch" in active
    assert "An older task" in recent
    assert f'href="/approvals/{checkpoint.pk}/"' in page
    assert 'data-count="1"' in page  # the header badge


def test_the_badge_partial_counts_pending_checkpoints(waiting_run, owner):
    client = client_for(owner)
    badge = client.get("/approvals/badge/", HTTP_HX_REQUEST="true")
    assert badge.status_code == 200
    assert badge.text.strip().startswith('<a id="approvals-badge"')
    assert 'data-count="1"' in badge.text
    # Not polled: the inbox socket pushes it (tests/orchestra/test_inbox_socket.py).
    assert "hx-trigger" not in badge.text
    assert 'src="/static/orchestra/inbox.js"' in client.get("/").text
    waiting_run.checkpoints.update(status=Checkpoint.Status.CANCELLED)
    assert 'data-count="0"' in client.get("/approvals/badge/").text


# --- project and the New task form -------------------------------------------------------------
def test_new_task_starts_a_run_and_redirects_to_its_live_page(demo, owner):
    client = client_for(owner)
    page = client.get("/projects/demo/")
    assert page.status_code == 200
    assert "Create task" in page.text
    response = client.post(
        "/projects/demo/tasks/", {"title": "  Greet people  ", "description": "Politely."}
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert run.task.title == "Greet people"
    assert run.task.description == "Politely."
    assert run.task.created_by == owner
    assert "Greet people" in client.get("/projects/demo/").text


BAD_TASKS = [
    ({"title": ""}, "A task needs a title."),
    ({"title": "   "}, "A task needs a title."),
    ({"title": "x" * 301}, "Ensure this value has at most 300 characters (it has 301)."),
    ({"title": "ok", "description": "y" * 51}, "at most 50 characters (it has 51)"),
]


def test_new_task_refuses_bad_input_inline(demo, owner, settings):
    settings.ORCHESTRA_MAX_TEXT = 50
    client = client_for(owner)
    for data, message in BAD_TASKS:
        page = client.post("/projects/demo/tasks/", data)
        assert page.status_code == 400, data
        assert message in page.text, data
        assert 'class="errorlist"' in page.text
        assert 'value="ok"' in page.text or data["title"] != "ok"  # input is kept
    assert not Run.objects.exists()


# --- the run page ------------------------------------------------------------------------------
def test_run_page_shows_phases_graph_steps_feed_usage_and_cancel(waiting_run, owner):
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    # Phases say what is true: plan done; dispatch waits for a person (linked to the
    # checkpoint); review was reached (steps were reviewed, one sent back: a loop) and holds
    # nothing now; report to come.
    checkpoint = waiting_run.checkpoints.get()
    assert 'class="phase done" data-phase="plan"' in page
    assert 'class="phase waiting" data-phase="dispatch" data-state="waiting"' in page
    assert f'<a href="/approvals/{checkpoint.pk}/">waiting for a person</a>' in page
    assert "↺ 1 revision<" in page
    assert 'class="phase idle reached" data-phase="review" data-state="idle" aria-current' in page
    assert 'class="phase upcoming" data-phase="report"' in page
    # The plan graph: nodes coloured by status, labelled with it, edges from dependencies.
    assert 'data-step="verify" data-status="awaiting_approval"' in page
    assert 'data-step="deploy" data-status="pending"' in page
    assert "awaiting approval</text>" in page
    assert page.count('class="edge') == 2 * 5  # two drawings (wide and narrow) of 5 edges
    # Step cards and usage.
    assert page.count('class="step-card') == 5
    assert "Tokens and cost so far" in page
    assert "Demo model" in page
    assert ">Cancel</button>" in page
    # The feed holds every event so far, and the socket resumes after the last one.
    events = list(waiting_run.events.values_list("seq", flat=True))
    assert seqs(page) == events
    assert f'data-last-seq="{events[-1]}"' in page
    assert 'src="/static/orchestra/live.js"' in page
    # The pending checkpoint is one click away.
    checkpoint = waiting_run.checkpoints.get()
    assert f'href="/approvals/{checkpoint.pk}/"' in page


def test_the_feed_shows_only_the_newest_events_of_a_long_run(waiting_run, owner, monkeypatch):
    from orchestra.dashboard import queries

    monkeypatch.setattr(queries, "FEED_LIMIT", 10)
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    last = waiting_run.events.order_by("-seq").first().seq
    assert seqs(page) == list(range(last - 9, last + 1))
    assert f"{last - 10} earlier events not shown" in page


PARTIAL_ROOTS = {
    "header": '<section id="run-header"',
    "phases": '<ol id="run-phases"',
    "graph": '<section id="run-graph"',
    "steps": '<section id="run-steps"',
    "usage": '<section id="run-usage"',
    "report": '<section id="run-report"',
}


def test_each_partial_renders_alone_with_its_root_id(waiting_run, owner):
    client = client_for(owner)
    for name, root in PARTIAL_ROOTS.items():
        url = f"/runs/{waiting_run.pk}/part/{name}/"
        response = client.get(url, HTTP_HX_REQUEST="true")
        assert response.status_code == 200, name
        assert response.text.strip().startswith(root), name
        assert f'hx-get="{url}"' in response.text, name
        assert "data-refresh-on=" in response.text, name
        assert "<html" not in response.text, name


def test_an_unknown_partial_is_404(waiting_run, owner):
    assert client_for(owner).get(f"/runs/{waiting_run.pk}/part/secrets/").status_code == 404


def test_a_planning_run_says_so(demo, owner, settings):
    # No queue drain: the run stays in planning with no steps.
    settings.ORCHESTRA_EMBEDDED_WORKER = ""
    from unittest import mock

    with mock.patch("orchestra.queue.enqueue"):
        run = start_run(owner, demo, "Still planning")
    page = client_for(owner).get(f"/runs/{run.pk}/").text
    assert 'data-phase="plan" data-state="current" aria-current="step"' in page
    assert "The orchestrator is planning" in page


def test_cancel_stops_the_run(waiting_run, owner):
    client = client_for(owner)
    response = client.post(f"/runs/{waiting_run.pk}/cancel/", follow=True)
    assert response.redirect_chain == [(f"/runs/{waiting_run.pk}/", 302)]
    assert "The run was cancelled." in response.text
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.CANCELLED
    assert ">Cancel</button>" not in response.text
    again = client.post(f"/runs/{waiting_run.pk}/cancel/", follow=True)
    assert "The run already ended (cancelled)." in again.text
    assert client.get(f"/runs/{waiting_run.pk}/cancel/").status_code == 405


def test_completed_run_shows_its_report(waiting_run, owner):
    for _ in range(2):  # the command, then the deploy
        pending = waiting_run.checkpoints.get(status=Checkpoint.Status.PENDING)
        decide_checkpoint(owner, pending, "approve")
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.COMPLETED
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    # The report's Markdown is rendered: a heading, not "# ..." in a <pre>.
    assert "<h1>Report: Add a greeting</h1>" in page
    assert "# Report" not in page
    assert "Tokens and cost so far" not in page and "Live events" not in page
    assert 'data-state="ended" role="status">Run ended<' in page
    # The decisions people took are named with the report.
    assert "Decisions people took" in page
    assert page.count('<li data-checkpoint="') == 2
    assert "Deploy (deploy) in step deploy</a>: approved by olivia" in page
    assert page.count('class="phase done"') == 4
    assert "aria-current" not in page.split('id="run-phases"')[1].split("</ol>")[0]


# --- step detail -------------------------------------------------------------------------------
def test_step_detail_shows_brief_handover_attempts_verdicts_and_decisions(waiting_run, owner):
    client = client_for(owner)
    implement = client.get(f"/runs/{waiting_run.pk}/steps/implement/").text
    assert "Write src/greeting.py with a greet(name) function." in implement  # the brief
    assert "Attempt 1" in implement and "Attempt 2" in implement
    assert "Output of step research:" in implement  # the exact message the agent saw
    assert 'Calls <code class="tool-name">write_file</code>' in implement  # its tool calls
    assert "revise</span>" in implement and "pass</span>" in implement  # both verdicts
    assert "Add a module docstring" in implement

    checkpoint = waiting_run.checkpoints.get()
    decide_checkpoint(owner, checkpoint, "reject", "Not on a Friday.")
    verify = client.get(f"/runs/{waiting_run.pk}/steps/verify/").text
    assert "rejected by olivia: Not on a Friday." in verify  # the tool result it received
    assert "a human rejected my request" in verify  # and how it reacted
    assert "Not on a Friday." in verify.split('id="checkpoints-title"')[1]
    assert "olivia" in verify.split('id="checkpoints-title"')[1]


def test_step_conversation_partial_refreshes_alone(waiting_run, owner):
    response = client_for(owner).get(f"/runs/{waiting_run.pk}/steps/verify/conversation/")
    assert response.text.strip().startswith('<div id="step-live"')
    assert 'data-refresh-step="verify"' in response.text


def test_unknown_step_is_404(waiting_run, owner):
    assert client_for(owner).get(f"/runs/{waiting_run.pk}/steps/nope/").status_code == 404


# --- trace -------------------------------------------------------------------------------------
def test_trace_is_a_waterfall_on_one_time_axis(waiting_run, owner):
    client = client_for(owner)
    page = client.get(f"/runs/{waiting_run.pk}/trace/").text
    rows = re.findall(r'data-kind="(\w+)"', page)
    assert rows.count("agent_run") == waiting_run.agent_runs.count()
    assert rows.count("model_call") == waiting_run.model_calls.count()
    # The call waiting for a person has not run: its wait is drawn, its execution not yet.
    assert rows.count("tool_call") == waiting_run.tool_calls.count() - 1
    assert rows.count("wait") == 1
    assert "waiting" in page
    lefts = [float(x) for x in re.findall(r"left:([\d.]+)%;width", page)]
    assert lefts and all(0 <= x <= 100 for x in lefts)
    call = waiting_run.model_calls.order_by("started_at").first()
    assert f'href="/runs/{waiting_run.pk}/calls/{call.pk}/"' in page


def test_a_model_call_opens_to_the_messages_it_was_sent(waiting_run, owner):
    call = ModelCall.objects.filter(run=waiting_run).order_by("-started_at").first()
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/calls/{call.pk}/").text
    assert f"Messages sent ({call.message_count})" in page
    assert page.count('class="msg role-') == call.message_count + 1  # plus the reply


def test_a_model_call_of_another_run_is_404(waiting_run, owner):
    other = start_run(owner, waiting_run.project, "Other")
    call = ModelCall.objects.filter(run=other).first()
    response = client_for(owner).get(f"/runs/{waiting_run.pk}/calls/{call.pk}/")
    assert response.status_code == 404


# --- history -----------------------------------------------------------------------------------
def make_runs(owner, project, count: int, **fields) -> list[Run]:
    runs = []
    for i in range(count):
        task = Task.objects.create(project=project, title=f"Task {i}", created_by=owner)
        runs.append(Run.objects.create(task=task, project=project, **fields))
    return runs


def test_history_filters_and_searches(demo, owner, waiting_run):
    make_runs(owner, demo, 3, status=Run.Status.COMPLETED)
    client = client_for(owner)
    page = client.get("/runs/").text
    assert "4 runs" in page
    assert "1 run<" in client.get("/runs/?q=greeting").text
    assert "3 runs" in client.get("/runs/?status=completed").text
    # Only the engine-made run has coder steps.
    assert "1 run<" in client.get("/runs/?agent=coder").text
    today = timezone.now().date()
    assert "4 runs" in client.get(f"/runs/?since={today}&until={today}").text
    tomorrow = today + timedelta(days=1)
    assert "0 runs" in client.get(f"/runs/?since={tomorrow}").text
    assert "4 runs" in client.get("/runs/?project=demo").text
    bad = client.get(f"/runs/?since={tomorrow}&until={today}").text
    assert "The end date is before the start date." in bad


def test_history_htmx_gets_only_the_results(demo, owner):
    make_runs(owner, demo, 2)
    response = client_for(owner).get(
        "/runs/?q=Task", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="history-results"
    )
    assert response.text.strip().startswith('<section id="history-results"')


def test_history_paginates_without_n_plus_one(demo, owner, django_assert_max_num_queries):
    make_runs(owner, demo, 60)
    client = client_for(owner)
    with django_assert_max_num_queries(12):
        first = client.get("/runs/").text
    assert "Page 1 of 3" in first
    assert first.count("<tr>") == 25 + 1
    third = client.get("/runs/?page=3&project=demo").text
    assert "Page 3 of 3" in third
    assert third.count("<tr>") == 10 + 1
    assert "?page=2&amp;project=demo" in third  # filters survive paging
