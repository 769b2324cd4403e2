"""The metrics page: numbers per project and agent role checked against what the database
holds, the period and project filters, who sees what, the charts, the empty states, and a
query count that does not grow with the data."""

import re
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F, Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import AgentRun
from approvals.models import Checkpoint
from orchestra.dashboard import charts, metrics
from orchestra.dashboard.templatetags.dashboard import tokens, usd
from orchestra.engine import cancel_run, decide_checkpoint, start_run
from orchestra.models import Membership, Plan, Project, Run, Step, Task

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_runs(waiting_run, owner) -> tuple[Run, Run]:
    """The demo run approved to completion, and a second one cancelled at its first
    checkpoint: one success out of two finished runs."""
    while pending := waiting_run.checkpoints.filter(status=Checkpoint.Status.PENDING).first():
        decide_checkpoint(owner, pending, "approve")
    waiting_run.refresh_from_db()
    assert waiting_run.status == Run.Status.COMPLETED, waiting_run.error
    cancelled = cancel_run(owner, start_run(owner, waiting_run.project, "Cancel me"))
    assert cancelled.status == Run.Status.CANCELLED
    return waiting_run, cancelled


def seconds(pairs) -> list[float]:
    return sorted((end - start).total_seconds() for start, end in pairs)


def work_seconds(steps) -> list[float]:
    """Each step's time less its waits for people, worked out here in Python."""
    worked = []
    for step in steps:
        waited = sum(
            ((c.decided_at or timezone.now()) - c.requested_at).total_seconds()
            for c in Checkpoint.objects.filter(step=step)
        )
        worked.append((step.finished_at - step.started_at).total_seconds() - waited)
    return sorted(worked)


def p95(values: list[float]) -> float:
    """An independent 95th percentile: Python's own linear interpolation (type 7)."""
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def row_html(page: str, table: str, key: str) -> str:
    body = page.split(f'id="{table}"')[1].split("</table>")[0]
    match = re.search(rf'<tr (?:class="total" )?data-key="{key}">(.*?)</tr>', body, re.S)
    assert match, f"no row {key} in {table}"
    return match[1]


def cell(row: str, column: str) -> str:
    return re.search(rf'data-col="{column}">(.*?)</td>', row, re.S)[1]


# --- numbers -----------------------------------------------------------------------------------
def test_numbers_per_project_match_the_database(two_runs, owner):
    report = metrics.compute(owner)
    [demo] = report.projects
    assert (demo.label, demo.runs, demo.completed, demo.finished) == ("Demo", 2, 1, 2)
    assert demo.success_rate == 0.5 and demo.success_label == "50%"
    usage = Run.objects.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    assert usage["i"] > 0
    assert (demo.input_tokens, demo.output_tokens, demo.cost) == (
        usage["i"],
        usage["o"],
        usage["c"],
    )

    steps = work_seconds(Step.objects.filter(status=Step.Status.DONE))
    assert demo.steps.count == len(steps) >= 5  # the completed run's five and more
    assert demo.steps.median == pytest.approx(statistics.median(steps))
    assert demo.steps.p95 == pytest.approx(p95(steps))

    # Only human decisions: the cancelled run's checkpoint waited for no one.
    decided = Checkpoint.objects.filter(status=Checkpoint.Status.APPROVED)
    waits = seconds(decided.values_list("requested_at", "decided_at"))
    assert len(waits) == 2 and Checkpoint.objects.filter(status="cancelled").count() == 1
    assert demo.waits.count == 2
    assert demo.waits.median == pytest.approx(statistics.median(waits))
    assert demo.waits.p95 == pytest.approx(p95(waits))
    assert report.total.runs == 2 and report.total.steps == demo.steps


def test_numbers_per_agent_role_match_the_database(two_runs, owner):
    report = metrics.compute(owner)
    roles = {row.label: row for row in report.roles}
    assert set(roles) == set(AgentRun.objects.values_list("role", flat=True))
    for role, row in roles.items():
        agent_runs = AgentRun.objects.filter(role=role)
        usage = agent_runs.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
        assert (row.input_tokens, row.output_tokens) == (usage["i"], usage["o"]), role
        assert row.runs == agent_runs.values("run").distinct().count(), role
        ran_in = Run.objects.filter(agent_runs__role=role).distinct()
        assert row.completed == ran_in.filter(status=Run.Status.COMPLETED).count(), role
        steps = work_seconds(Step.objects.filter(agent_role=role, status="done"))
        assert row.steps.count == len(steps), role
        if steps:
            assert row.steps.median == pytest.approx(statistics.median(steps)), role
    # The coder worked in both runs, one of which completed.
    assert (roles["coder"].runs, roles["coder"].success_label) == (2, "50%")
    # Every token was spent by some agent run, so the roles add up to the projects.
    assert sum(r.input_tokens for r in roles.values()) == report.total.input_tokens
    # Both decided checkpoints belong to steps, and so to their steps' roles.
    waited = Checkpoint.objects.filter(status="approved").values_list("step__agent_role", flat=True)
    for role in set(waited):
        assert roles[role].waits.count == list(waited).count(role)


def test_step_durations_leave_out_the_time_people_took_to_decide(waiting_run, owner):
    pending = waiting_run.checkpoints.get(status=Checkpoint.Status.PENDING)
    # The person took six minutes to decide: the step started six minutes earlier too.
    earlier = timedelta(minutes=6)
    Checkpoint.objects.filter(pk=pending.pk).update(requested_at=F("requested_at") - earlier)
    Step.objects.filter(pk=pending.step_id).update(started_at=F("started_at") - earlier)
    step_id = pending.step_id
    decide_checkpoint(owner, pending, "approve")
    while pending := waiting_run.checkpoints.filter(status=Checkpoint.Status.PENDING).first():
        decide_checkpoint(owner, pending, "approve")
    step = Step.objects.get(pk=step_id)
    assert step.status == Step.Status.DONE
    assert step.finished_at - step.started_at > earlier  # waits included, as stored

    report = metrics.compute(owner)
    assert report.total.waits.p95 > 300  # the six minutes count as a wait for a human
    assert report.total.steps.p95 < 60, report.total.steps  # the work alone took seconds
    role = next(r for r in report.roles if r.label == step.agent_role)
    assert role.steps.p95 < 60 and role.waits.p95 > 300


def test_the_page_shows_the_numbers_tables_and_charts(two_runs, owner):
    response = client_for(owner).get("/metrics/")
    assert response.status_code == 200
    page = response.text
    assert '<a href="/metrics/">Metrics</a>' in page  # in the header nav
    assert '<option value="7d" selected>Last 7 days</option>' in page  # the default period

    usage = Run.objects.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    demo = row_html(page, "projects-table", "Demo")
    assert '<a href="/projects/demo/">Demo</a>' in demo
    assert cell(demo, "runs") == "2"
    assert cell(demo, "success").startswith("50%") and "1 of 2" in cell(demo, "success")
    assert cell(demo, "input") == tokens(usage["i"])
    assert cell(demo, "output") == tokens(usage["o"])
    assert cell(demo, "cost") == usd(usage["c"])
    assert 'data-key="all"' not in page  # no total row under a single project
    coder = row_html(page, "roles-table", "coder")
    assert cell(coder, "runs") == "2" and cell(coder, "success").startswith("50%")

    # Runs per day: one column a day from a week ago to today, outcomes stacked.
    runs_chart = page.split('id="runs-chart"')[1].split("</svg>")[0]
    assert '<title id="runs-chart-title">Runs per day by outcome, last 7 days</title>' in page
    assert re.search(r'<desc id="runs-chart-desc">2 runs started, per day: 1 completed, 1 ca', page)
    assert runs_chart.count('<g class="column"') == 8
    assert 'data-outcome="completed" data-value="1"' in runs_chart
    assert 'data-outcome="cancelled" data-value="1"' in runs_chart
    assert 'data-outcome="failed"' not in runs_chart
    # Median step duration per role, with the numbers in words for assistive technology.
    durations = page.split('id="durations-chart"')[1].split("</svg>")[0]
    assert 'role="img" aria-labelledby="durations-chart-title durations-chart-desc"' in page
    assert 'data-role="coder"' in durations and 'data-role="researcher"' in durations
    assert "Median step duration by agent role: coder" in durations
    # The chart's numbers as a table too.
    assert "Runs per day as a table" in page


def test_htmx_gets_only_the_results(two_runs, owner):
    response = client_for(owner).get(
        "/metrics/?period=30d", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="metrics-results"
    )
    assert response.text.strip().startswith('<div id="metrics-results"')
    assert "<html" not in response.text


# --- filters -----------------------------------------------------------------------------------
def test_the_period_leaves_older_runs_out(two_runs, owner):
    completed, cancelled = two_runs
    Run.objects.filter(pk=completed.pk).update(created_at=timezone.now() - timedelta(days=10))
    week = metrics.compute(owner, "7d")
    assert (week.total.runs, week.total.completed, week.total.finished) == (1, 0, 1)
    assert week.total.success_label == "0%"
    # The old run's steps and checkpoints go with it.
    kept = Step.objects.filter(run=cancelled, status="done").count()
    assert week.total.steps.count == kept
    assert week.total.waits.count == 0 and week.total.waits.median is None
    assert metrics.compute(owner, "24h").total.runs == 1
    for period in ("30d", "all"):
        assert metrics.compute(owner, period).total.runs == 2, period

    client = client_for(owner)
    page = client.get("/metrics/?period=7d").text
    assert cell(row_html(page, "projects-table", "Demo"), "runs") == "1"
    page = client.get("/metrics/?period=30d").text
    assert cell(row_html(page, "projects-table", "Demo"), "runs") == "2"
    runs_chart = page.split('id="runs-chart"')[1].split("</svg>")[0]
    assert runs_chart.count('<g class="column"') == 31
    assert runs_chart.count('data-outcome="completed"') == 1
    hours = client.get("/metrics/?period=24h").text
    assert "Runs per hour by outcome" in hours


def test_a_bad_period_falls_back_to_the_default_and_says_so(two_runs, owner):
    page = client_for(owner).get("/metrics/?period=forever").text
    assert "Select a valid choice. forever is not one of the available choices." in page
    assert "Runs per day by outcome, last 7 days" in page


def test_the_project_filter_narrows_to_one_project(two_runs, owner):
    other = Project.objects.create(slug="other", name="Other")
    Membership.objects.create(project=other, user=owner, role=Membership.Role.ADMIN)
    Run.objects.create(task=Task.objects.create(project=other, title="t"), project=other)
    client = client_for(owner)
    everything = client.get("/metrics/").text
    assert cell(row_html(everything, "projects-table", "all"), "runs") == "3"
    assert cell(row_html(everything, "projects-table", "Other"), "success") == "—"
    page = client.get("/metrics/?project=demo").text
    assert 'data-key="Other"' not in page
    assert cell(row_html(page, "projects-table", "Demo"), "runs") == "2"
    assert metrics.compute(owner, project=other).total.runs == 1


# --- who sees what -----------------------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_sign_in(demo):
    response = Client().get("/metrics/?period=30d")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/metrics/%3Fperiod%3D30d"
    htmx = Client().get(
        "/metrics/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/metrics/?period=all",
    )
    assert htmx.status_code == 204
    assert htmx["HX-Redirect"] == "/login/?next=/metrics/%3Fperiod%3Dall"


def test_an_outsider_sees_nothing_of_projects_they_are_not_in(two_runs, outsider):
    client = client_for(outsider)
    page = client.get("/metrics/").text
    assert "You are not a member of any project" in page
    assert 'id="projects-table"' not in page and 'id="runs-chart"' not in page
    assert metrics.compute(outsider, "all").total.runs == 0

    side = Project.objects.create(slug="side", name="Side project")
    Membership.objects.create(project=side, user=outsider, role=Membership.Role.VIEWER)
    task = Task.objects.create(project=side, title="Side task")
    Run.objects.create(
        task=task,
        project=side,
        status=Run.Status.COMPLETED,
        input_tokens=7,
        output_tokens=3,
        cost_usd=Decimal("0.5"),
    )
    page = client.get("/metrics/").text
    side_row = row_html(page, "projects-table", "Side project")
    assert (cell(side_row, "runs"), cell(side_row, "input")) == ("1", "7")
    assert cell(side_row, "success").startswith("100%")
    assert 'data-key="Demo"' not in page and ">Demo<" not in page
    assert 'value="demo"' not in page  # the project filter offers only their own
    assert "No agent has worked in these runs." in page
    # Asking for Demo by name is refused and shows nothing of it.
    page = client.get("/metrics/?project=demo").text
    assert "Select a valid choice" in page
    assert ">Demo<" not in page and 'data-key="Side project"' in page


# --- empty states ------------------------------------------------------------------------------
def test_no_runs_says_what_to_do_next(demo, owner):
    page = client_for(owner).get("/metrics/").text
    assert "No runs in the last 7 days" in page
    assert '<a href="/">Start a task from one of your projects</a>' in page
    assert '<a href="?period=all">look at all time</a>' in page
    page = client_for(owner).get("/metrics/?period=all&project=demo").text
    assert "No runs yet in Demo" in page
    assert '<a href="/projects/demo/">Start a task in Demo</a>' in page
    assert "look at all time" not in page


# --- cost --------------------------------------------------------------------------------------
def seed_project(slug: str, runs: int, user) -> Project:
    """A project with `runs` completed runs of two done steps each, made directly."""
    project = Project.objects.create(slug=slug, name=slug.title())
    Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
    now = timezone.now()
    for i in range(runs):
        task = Task.objects.create(project=project, title=f"{slug} {i}")
        run = Run.objects.create(task=task, project=project, status=Run.Status.COMPLETED)
        plan = Plan.objects.create(run=run, version=1)
        for role in ("coder", "writer"):
            step = Step.objects.create(
                run=run,
                plan=plan,
                key=role,
                title=role,
                agent_role=role,
                status=Step.Status.DONE,
                started_at=now - timedelta(seconds=5 + i),
                # after its checkpoint's 30 s wait below: 5 + i seconds of work
                finished_at=now + timedelta(seconds=31),
            )
            AgentRun.objects.create(
                run=run, step=step, purpose="step", role=role, model="demo", input_tokens=10
            )
            Checkpoint.objects.create(
                run=run,
                step=step,
                kind=Checkpoint.Kind.ESCALATION,
                status=Checkpoint.Status.APPROVED,
                decided_at=now + timedelta(seconds=30),
            )
    return project


def test_the_query_count_does_not_grow_with_the_data(owner):
    client = client_for(owner)
    seed_project("small", 1, owner)
    client.get("/metrics/")  # warm the session and content-type caches
    with CaptureQueriesContext(connection) as few:
        assert client.get("/metrics/").status_code == 200
    for n in range(3):
        seed_project(f"more{n}", 4, owner)
    with CaptureQueriesContext(connection) as many:
        page = client.get("/metrics/").text
    assert len(many) == len(few) <= 12, [q["sql"] for q in many]
    assert cell(row_html(page, "projects-table", "all"), "runs") == "13"
    assert cell(row_html(page, "roles-table", "writer"), "steps") == "13"


def test_durations_past_the_limit_use_the_newest_and_say_so(owner, monkeypatch):
    seed_project("busy", 3, owner)
    monkeypatch.setattr(metrics, "DURATION_LIMIT", 4)
    report = metrics.compute(owner)
    assert report.steps_capped and report.waits_capped
    assert report.total.steps.count == 4
    page = client_for(owner).get("/metrics/").text
    assert "the durations are those of the newest 4" in page


# --- the pure parts ----------------------------------------------------------------------------
def test_percentiles_interpolate_between_ranks():
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([5.0], 95) == 5.0
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    values = [float(v) for v in range(1, 101)]
    assert metrics.percentile(values, 95) == pytest.approx(p95(values))


def test_stacked_columns_scale_and_stack_by_series():
    series = [("completed", "Completed"), ("failed", "Failed")]
    chart = charts.stacked_columns(
        [("Mon", "Mon", {"completed": 3, "failed": 1}), ("Tue", "Tue", {})], series
    )
    monday, tuesday = chart.columns
    assert (monday.total, tuesday.total, tuesday.segments) == (4, 0, [])
    completed, failed = monday.segments
    assert completed.y + completed.h == pytest.approx(chart.bottom)  # on the baseline
    assert failed.y + failed.h == pytest.approx(completed.y)  # stacked on top
    assert completed.h == pytest.approx(3 * failed.h, rel=0.01)
    assert [t.label for t in chart.ticks] == ["0", "1", "2", "3", "4"]
    assert chart.ticks[-1].at <= monday.segments[-1].y + 0.01
    assert monday.x + monday.w <= tuesday.x
    month = charts.stacked_columns([(str(d), str(d), {}) for d in range(31)], series)
    labelled = [c for c in month.columns if c.axis_label]
    assert 3 <= len(labelled) < 31 and labelled[-1] is month.columns[-1]  # today, always
    last = labelled[-1]
    assert last.label_anchor == "end" and last.label_x == pytest.approx(last.x + last.w)
    empty = charts.stacked_columns([("Mon", "Mon", {})], series)
    assert [t.label for t in empty.ticks] == ["0", "1"]


def test_duration_bars_are_proportional_with_a_p95_marker():
    chart = charts.duration_bars([("coder", 2.0, 8.0), ("writer", 4.0, None), ("idle", None, None)])
    coder, writer = chart.bars
    assert writer.w == pytest.approx(2 * coder.w)
    assert coder.p95_x == pytest.approx(chart.left + 4 * coder.w)
    assert writer.p95_x is None
    assert chart.ticks[0].label == "0s" and chart.ticks[-1].at == pytest.approx(chart.right)
