"""Spending limits from the dashboard and the API: a project's admins set its run defaults and
its day and month limits on the Budget page (others read them); the New task form takes a
run's own limits. Each limit is checked beside its field, and nothing is saved on bad input."""

from decimal import Decimal

import pytest
from django.test import Client

from agents.models import ProjectBudget, RunBudget
from approvals.models import AuditRecord
from orchestra.models import ApiToken, Run
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {
    name: ""
    for name in (
        "run_soft_usd",
        "run_hard_usd",
        "run_soft_tokens",
        "run_hard_tokens",
        "day_usd",
        "day_tokens",
        "month_usd",
        "month_tokens",
    )
}


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def budget_changes(project) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(project=project, kind="budget.changed").order_by("seq"))


def test_an_admin_sets_the_projects_limits_and_new_runs_follow_them(demo, owner):
    client = client_for(owner)
    assert 'href="/projects/demo/budget/"' in client.get("/projects/demo/").text
    page = client.get("/projects/demo/budget/")
    assert page.status_code == 200 and "Save budget" in page.text

    saved = client.post(
        "/projects/demo/budget/",
        {**EMPTY, "run_soft_usd": "2.5", "run_hard_tokens": "400", "month_usd": "100"},
        follow=True,
    )

    assert saved.redirect_chain == [("/projects/demo/budget/", 302)]
    assert "Budget saved." in saved.text
    budget = ProjectBudget.objects.get(project=demo)
    assert budget.run_soft_usd == Decimal("2.5") and budget.run_hard_tokens == 400
    assert budget.month_usd == Decimal(100) and budget.day_usd is None
    assert "$2.50" in saved.text and "400 tokens" in saved.text and "$100.00" in saved.text
    [change] = budget_changes(demo)
    assert change.actor == "olivia" and change.data["before"]["run_soft_usd"] is None
    assert change.data["after"]["run_soft_usd"] == "2.5000"
    # The project page says what a task's limits default to.
    assert "soft $2.50, hard 400 tokens" in client.get("/projects/demo/").text

    # A new run gets the project's defaults: 400 tokens is too few for the demo.
    client.post("/projects/demo/tasks/", {"title": "Greet people"})
    run = Run.objects.get()
    assert RunBudget.objects.get(run=run).hard_tokens == 400
    assert run.status == Run.Status.FAILED and "hard budget" in run.error

    # A day limit already spent refuses the next task, beside the form.
    client.post("/projects/demo/budget/", {**EMPTY, "day_tokens": "1"})
    refused = client.post("/projects/demo/tasks/", {"title": "Greet again"})
    assert refused.status_code == 400 and "daily budget of 1 tokens" in refused.text
    assert Run.objects.count() == 1

    # An empty field removes its limit.
    client.post("/projects/demo/budget/", EMPTY)
    budget.refresh_from_db()
    assert budget.run_soft_usd is None and budget.day_tokens is None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"day_usd": "lots"}, "day_usd", "Enter a number."),
        ({"day_usd": "-1"}, "day_usd", "greater than or equal to 0.0001"),
        ({"month_usd": "0.00001"}, "month_usd", "no more than 4 decimal places"),
        ({"run_soft_tokens": "1.5"}, "run_soft_tokens", "Enter a whole number."),
        ({"run_hard_tokens": "0"}, "run_hard_tokens", "greater than or equal to 1"),
        (
            {"run_soft_usd": "5", "run_hard_usd": "2"},
            "run_soft_usd",
            "The soft limit (5) is above the hard one (2).",
        ),
    ],
)
def test_a_bad_limit_is_refused_beside_its_field_and_nothing_is_saved(
    demo, owner, data, field, message
):
    page = client_for(owner).post("/projects/demo/budget/", {**EMPTY, **data})
    assert page.status_code == 400
    errors = page.text.split(f'id="id_{field}-errors"', 1)
    assert len(errors) == 2 and message in errors[1].split("</ul>", 1)[0]
    assert not ProjectBudget.objects.filter(project=demo).exists()
    assert not budget_changes(demo)


def test_others_read_the_budget_and_only_admins_change_it(
    demo, owner, operator, approver, viewer, outsider
):
    for member in (operator, approver, viewer):
        client = client_for(member)
        page = client.get("/projects/demo/budget/")
        assert page.status_code == 200
        assert "Only the project's admins can change its budget." in page.text
        assert "Save budget" not in page.text
        assert client.post("/projects/demo/budget/", {**EMPTY, "day_usd": "1"}).status_code == 403
    assert client_for(outsider).get("/projects/demo/budget/").status_code == 404
    assert client_for(outsider).post("/projects/demo/budget/", EMPTY).status_code == 404
    anonymous = Client().get("/projects/demo/budget/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert not ProjectBudget.objects.filter(project=demo).exists()


def test_the_new_task_form_takes_the_runs_own_limits(demo, owner, operator):
    client = client_for(operator)
    form = client.get("/projects/demo/").text
    assert "Limits for this run" in form and 'name="hard_tokens"' in form

    bad = client.post("/projects/demo/tasks/", {"title": "Greet", "soft_usd": "x"})
    assert bad.status_code == 400 and 'id="id_soft_usd-errors"' in bad.text
    assert '<details class="plain" open>' in bad.text  # the limits stay in view
    crossed = client.post(
        "/projects/demo/tasks/", {"title": "Greet", "soft_tokens": "900", "hard_tokens": "500"}
    )
    assert crossed.status_code == 400
    assert (
        "The soft limit (900) is above the hard one (500)."
        in crossed.text.split('id="id_soft_tokens-errors"', 1)[1].split("</ul>", 1)[0]
    )
    assert not Run.objects.exists()

    started = client.post(
        "/projects/demo/tasks/", {"title": "Greet", "soft_usd": "1.25", "hard_tokens": "400"}
    )
    run = Run.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/runs/{run.pk}/"
    limits = RunBudget.objects.get(run=run)
    assert limits.soft_usd == Decimal("1.25") and limits.hard_tokens == 400
    assert limits.hard_usd is None and limits.soft_tokens is None

    # Without limits the run takes the project's (none here: no budget row at all).
    client.post("/projects/demo/tasks/", {"title": "Greet again"})
    assert not RunBudget.objects.filter(run__task__title="Greet again").exists()


def test_the_api_reads_and_sets_the_projects_budget(demo, owner, viewer, outsider):
    read = api(viewer).get("/api/projects/demo/budget")
    assert read.status_code == 200
    assert read.json()["day_usd"] is None
    assert read.json()["spent"]["daily"] == {"usd": "0", "tokens": 0, "unpriced_calls": 0}

    saved = api(owner).put(
        "/api/projects/demo/budget",
        {"day_usd": "12.5", "run_hard_tokens": 5000},
        content_type="application/json",
    )
    assert saved.status_code == 200, saved.content
    assert saved.json()["day_usd"] == "12.5000" and saved.json()["run_hard_tokens"] == 5000
    cleared = api(owner).put(
        "/api/projects/demo/budget", {"day_usd": None}, content_type="application/json"
    )
    assert cleared.json()["day_usd"] is None and cleared.json()["run_hard_tokens"] == 5000

    bad = api(owner).put(
        "/api/projects/demo/budget",
        {"run_soft_tokens": 9000},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert bad.json()["detail"] == (
        "run_soft_tokens: The soft limit (9000) is above the hard one (5000)."
    )
    for body, field in (
        ({"month_usd": "NaN"}, "month_usd"),
        ({"month_usd": "1e20"}, "month_usd"),
        ({"day_tokens": -3}, "day_tokens"),
        ({"weekly_usd": 3}, "weekly_usd"),
    ):
        refused = api(owner).put("/api/projects/demo/budget", body, content_type="application/json")
        assert refused.status_code == 400 and field in refused.json()["detail"], body
    assert ProjectBudget.objects.get(project=demo).run_soft_tokens is None
    assert len(budget_changes(demo)) == 2

    denied = api(viewer).put(
        "/api/projects/demo/budget", {"day_usd": "1"}, content_type="application/json"
    )
    assert denied.status_code == 403 and "admins" in denied.json()["detail"]
    assert api(outsider).get("/api/projects/demo/budget").status_code == 404
    assert Client().get("/api/projects/demo/budget").status_code == 401
