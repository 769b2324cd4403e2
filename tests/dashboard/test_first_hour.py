"""What a newcomer meets in the first hour, through django.test.Client: the report rendered
and sanitised, the navigation, empty states that say what to do, a run a person stopped
(its own status, out of the failure rate), phases that say what is true, and a step's file
writes shown as code with the change from the previous attempt."""

import re
from datetime import timedelta

import pytest

from approvals.models import Checkpoint
from orchestra.dashboard import metrics, queries
from orchestra.dashboard.present import phases_of
from orchestra.engine import decide_checkpoint
from orchestra.markdown import render_markdown
from orchestra.models import Run, Task

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


# --- the report ------------------------------------------------------------------------------
def test_markdown_renders_headings_lists_and_code_and_drops_what_could_run():
    html = render_markdown(
        "# Report\n\n- one\n- two\n\n`code` and [a link](https://example.test/)\n\n"
        '<script>alert(1)</script>\n\n[bad](javascript:alert(1))\n\n<img src=x onerror="alert(1)">'
    )
    assert "<h1>Report</h1>" in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert "<code>code</code>" in html
    assert '<a href="https://example.test/" rel="noopener noreferrer nofollow">a link</a>' in html
    assert "<script>" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html  # shown as text, not run


def test_a_report_with_markup_in_it_is_shown_sanitised(waiting_run, owner):
    Run.objects.filter(pk=waiting_run.pk).update(
        report="## Done\n\n1. first\n2. second\n\n<b onmouseover=x>bold</b>", status="completed"
    )
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    report = page.split('id="report-body">')[1].split("</div>")[0]
    assert "<h2>Done</h2>" in report
    assert "<ol>\n<li>first</li>\n<li>second</li>\n</ol>" in report
    assert "onmouseover" not in report.replace("&lt;b onmouseover=x&gt;", "")


def test_the_history_links_the_report_of_each_run_that_has_one(waiting_run, owner):
    reported = Run.objects.create(
        task=Task.objects.create(project=waiting_run.project, title="Reported", created_by=owner),
        project=waiting_run.project,
        status=Run.Status.COMPLETED,
        report="# Report: Reported\n\n- done",
    )
    page = client_for(owner).get("/runs/").text
    row = r'<tr>\s*<td><a href="/runs/(\d+)/">.*?</tr>'
    rows = {int(m[1]): m[0] for m in re.finditer(row, page, re.S)}
    assert f'href="/runs/{reported.pk}/#run-report">report</a>' in rows[reported.pk]
    assert "#run-report" not in rows[waiting_run.pk]  # no report yet


# --- navigation ------------------------------------------------------------------------------
def test_the_header_links_projects_the_projects_policy_and_admin_for_staff(waiting_run, owner):
    client = client_for(owner)
    run_page = client.get(f"/runs/{waiting_run.pk}/").text
    nav = run_page.split('aria-label="Main"')[1].split("</nav>")[0]
    assert '<a href="/projects/">Projects</a>' in nav
    assert '<a href="/projects/demo/policy/" id="nav-policy">Demo policy</a>' in nav
    assert "/admin/" not in nav  # not staff
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    nav = client.get("/projects/").text.split('aria-label="Main"')[1].split("</nav>")[0]
    assert '<a href="/admin/">Admin</a>' in nav
    assert 'id="nav-policy"' not in nav  # no project on this page
    assert 'rel="icon" type="image/svg+xml" href="/static/orchestra/favicon.svg"' in run_page
    favicon = client.get("/favicon.ico")
    assert (favicon.status_code, favicon["Location"]) == (302, "/static/orchestra/favicon.svg")


def test_the_header_links_model_providers_for_project_admins_only(waiting_run, owner, viewer):
    nav = client_for(owner).get("/").text.split('aria-label="Main"')[1].split("</nav>")[0]
    assert '<a href="/providers/">Providers</a>' in nav
    nav = client_for(viewer).get("/").text.split('aria-label="Main"')[1].split("</nav>")[0]
    assert "/providers/" not in nav  # the page would refuse a viewer


def test_the_projects_page_lists_visible_projects_with_their_runs(waiting_run, owner, outsider):
    page = client_for(owner).get("/projects/").text
    row = page.split('<tr data-project="demo">')[1].split("</tr>")[0]
    assert '<a href="/projects/demo/">Demo</a>' in row
    assert re.findall(r'<td class="num">(\d+)</td>', row) == ["1", "1"]  # runs, active
    assert 'href="/projects/demo/policy/"' in row
    empty = client_for(outsider).get("/projects/").text
    assert "No project yet" in empty and "Ask an admin to add you" in empty


def test_projects_page_needs_sign_in(client):
    response = client.get("/projects/")
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- empty states ----------------------------------------------------------------------------
def test_before_any_run_the_history_says_how_to_start_one(demo, owner):
    client = client_for(owner)
    page = client.get("/runs/").text
    assert 'id="no-runs-yet"' in page and "No run matches" not in page
    assert "New task" in page and 'href="/projects/"' in page
    home = client.get("/").text
    assert 'Start one: open <a href="/projects/demo/">Demo</a> and create a task.' in home


def test_with_runs_a_filter_that_matches_nothing_says_so(waiting_run, owner):
    page = client_for(owner).get("/runs/?q=nothing-like-this").text
    assert "No run matches these filters." in page and 'id="no-runs-yet"' not in page


# --- a run stopped by a person ---------------------------------------------------------------
def test_a_stopped_run_has_its_own_status_and_stays_out_of_the_failure_rate(
    waiting_run, owner, approver
):
    checkpoint = waiting_run.checkpoints.get(status=Checkpoint.Status.PENDING)
    decide_checkpoint(approver, checkpoint, "reject_stop", "Not this week.")
    waiting_run.refresh_from_db()
    assert (waiting_run.status, waiting_run.stopped_by) == (Run.Status.STOPPED, approver)
    assert waiting_run.events.filter(kind="run.stopped", data__by="ada").exists()

    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    assert "<strong>Stopped by ada</strong>" in page and "Not this week." in page
    assert "The run was stopped at a checkpoint before its report" in page
    assert "rejected and the step stopped by ada — “Not this week.”" in page  # the decision
    assert 'role="alert"' not in page.split('id="run-header"')[1].split("</section>")[0]

    # Stopped: counted as a run, not as finished, so the success rate has no outcome yet.
    m = metrics.compute(owner, "7d")
    assert (m.total.runs, m.total.completed, m.total.finished) == (1, 0, 0)
    assert m.total.success_label == "—"
    assert "1 stopped by a person" in m.timeline_summary
    listed = client_for(owner).get("/runs/?status=stopped").text
    assert listed.count('class="status s-stopped"') == 1


# --- phases ----------------------------------------------------------------------------------
def test_phases_never_go_back_and_say_who_the_run_waits_for(waiting_run):
    phases = {p.key: p for p in phases_of(waiting_run)}
    checkpoint = waiting_run.checkpoints.get()
    assert phases["plan"].state == "done"
    dispatch = phases["dispatch"]
    assert (dispatch.state, dispatch.checkpoint_id) == ("waiting", checkpoint.pk)
    assert phases["dispatch"].loops == 1  # implement was sent back once: a loop, not a step back
    assert phases["review"].is_current and phases["review"].state == "idle"
    assert phases["report"].state == "upcoming"
    # A step sent back for another round does not move the run's mark back to dispatch.
    waiting_run.steps.filter(key="implement").update(status="revising")
    phases = {p.key: p for p in phases_of(waiting_run)}
    assert phases["review"].is_current
    assert (phases["dispatch"].state, phases["dispatch"].note) == ("waiting", "2 steps")


def test_a_planning_run_waiting_for_plan_approval_says_so(demo, owner):
    demo.requires_plan_approval = True
    demo.save(update_fields=["requires_plan_approval"])
    from orchestra.engine import start_run

    run = start_run(owner, demo, "Plan first")
    run.refresh_from_db()
    phases = {p.key: p for p in phases_of(run)}
    assert phases["plan"].state == "waiting" and phases["plan"].is_current
    page = client_for(owner).get(f"/runs/{run.pk}/part/phases/").text
    assert "waiting for a person</a>" in page


# --- a step's file writes --------------------------------------------------------------------
def test_file_contents_read_as_code_with_the_change_from_the_previous_attempt(waiting_run, owner):
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/steps/implement/").text
    assert '<code class="tool-name">write_file</code>' in page
    # The content is shown as it is, in the tool-call table and in the conversation, not as
    # an escaped JSON string.
    assert '\\"\\"\\"' not in page
    arguments = re.findall(r'<dl class="args">(.*?)</dl>', page, re.S)
    assert arguments and not any("\\n" in block for block in arguments)
    assert page.count('<dt>content</dt><dd><pre class="code">&quot;&quot;&quot;') >= 2
    assert "<code>src/greeting.py</code>" in page
    # Attempt 2 rewrote the file: its write shows the diff from attempt 1's.
    second = page.split('id="attempt-2"')[1]
    assert "Change from the previous attempt" in second
    assert "a/src/greeting.py (previous attempt)" in second
    assert 'class="diff-line diff-add"' in second
    first = page.split('id="attempt-1"')[1].split('id="attempt-2"')[0]
    assert "Change from the previous attempt" not in first


def test_an_attempt_that_wrote_nothing_before_has_no_diff(waiting_run, owner):
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/steps/tests/").text
    assert "Change from the previous attempt" not in page
    assert Task.objects.count() == 1


# --- people's time is not machine time -------------------------------------------------------
def test_a_tool_span_is_its_execution_and_the_wait_for_a_person_its_own_span(waiting_run, owner):
    checkpoint = waiting_run.checkpoints.get(status=Checkpoint.Status.PENDING)
    # The person took six minutes to decide.
    asked = checkpoint.requested_at - timedelta(minutes=6)
    Checkpoint.objects.filter(pk=checkpoint.pk).update(requested_at=asked)
    checkpoint.tool_call.__class__.objects.filter(pk=checkpoint.tool_call_id).update(
        started_at=asked
    )
    decide_checkpoint(owner, checkpoint, "approve")

    spans = queries.trace(waiting_run).spans
    tool = next(s for s in spans if s.label == "tool · run_command")
    wait = next(s for s in spans if s.kind == "wait" and "tool call" in s.label)
    assert wait.elapsed >= timedelta(minutes=6)
    assert tool.elapsed < timedelta(seconds=30)  # the command's run, not the wait
    assert tool.start >= wait.end

    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    verify = re.search(
        r'<article class="step-card[^"]*" data-step="verify".*?</article>', page, re.S
    )[0]
    waited = re.search(r"<dd data-waited>([^<]+)</dd>", verify)[1]
    worked = re.search(r"<dd data-work>([^<]+)</dd>", verify)[1]
    assert waited.startswith("6 min")
    assert "min" not in worked  # the step's own work took seconds


def test_a_tool_span_opens_to_its_input_and_output_and_folds_under_its_agent_run(
    waiting_run, owner
):
    call = waiting_run.tool_calls.filter(tool="write_file", status="succeeded").first()
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/trace/").text
    span = r'<details class="wf-span" data-group="([\w-]+)">(.*?)</details>'
    spans = re.findall(span, page, re.S)
    assert len(spans) == waiting_run.tool_calls.count() - 1  # the call still waiting has not run
    group = f"agent-run-{call.agent_run_id}"
    opened = [body for key, body in spans if key == group and "tool · write_file" in body]
    assert opened, spans
    path = call.arguments["path"]
    assert any(f"&quot;path&quot;: &quot;{path}&quot;" in body for body in opened)
    assert any(f'<pre class="code">{call.result}</pre>' in body for body in opened)
    # The agent run's row carries the fold button for exactly its own spans.
    assert f'data-fold="{group}"' in page
    assert "<script>" not in page.split("<main")[1]  # behaviour lives in static/trace.js
    assert "/static/orchestra/trace.js" in page


# --- one request per refresh round -----------------------------------------------------------
def test_several_partials_come_back_in_one_response(waiting_run, owner, outsider, client):
    url = f"/runs/{waiting_run.pk}/parts/?name=header&name=steps&name=usage&name=steps"
    response = client_for(owner).get(url)
    assert response.status_code == 200
    roots = re.findall(r'^\s*<(?:section|ol) id="(run-[a-z]+)"', response.text, re.M)
    assert roots == ["run-header", "run-steps", "run-usage"]  # each once, in the asked order
    assert "<html" not in response.text
    assert client_for(owner).get(f"/runs/{waiting_run.pk}/parts/?name=secrets").status_code == 404
    assert client_for(owner).get(f"/runs/{waiting_run.pk}/parts/").status_code == 404
    assert client_for(outsider).get(url).status_code == 404
    assert client.get(url).status_code == 302  # anonymous: to the sign-in page
    page = client_for(owner).get(f"/runs/{waiting_run.pk}/").text
    assert f'data-parts-url="/runs/{waiting_run.pk}/parts/"' in page
    assert page.count('data-part="') == 7
