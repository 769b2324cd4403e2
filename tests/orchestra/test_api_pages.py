"""Cursor pagination of the API's lists: a client follows `next` through 250 runs and sees
each exactly once, newest first, even with ties on the timestamp and a run started midway;
bad cursors and limits get a 400 with a detail."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import Checkpoint
from orchestra.models import ApiToken, Run, Task

pytestmark = pytest.mark.django_db

RUNS = 250


@pytest.fixture
def many_runs(demo) -> list[int]:
    """250 runs in the demo project; every tenth shares its timestamp with the run before."""
    task = Task.objects.create(project=demo, title="Nightly")
    start = timezone.now() - timedelta(days=1)
    runs = Run.objects.bulk_create(
        Run(task=task, project=demo, status=Run.Status.COMPLETED) for _ in range(RUNS)
    )
    moments = []
    for index, run in enumerate(runs):
        moment = start + timedelta(seconds=index)
        if index % 10 == 1:
            moment = moments[-1]  # a tie: only the id orders these two
        moments.append(moment)
        Run.objects.filter(pk=run.pk).update(created_at=moment)
    newest_first = sorted(zip(moments, (r.pk for r in runs), strict=True), reverse=True)
    return [pk for _, pk in newest_first]


def walk(client: Client, url: str, key: str) -> tuple[list[int], int]:
    """Every id along the `next` links from `url`, and how many pages it took."""
    ids, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        ids += [item["id"] for item in body[key]]
        pages += 1
        url = body["next"]
    return ids, pages


def test_walking_250_runs_by_cursor_sees_each_once_newest_first(many_runs, owner):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")

    first = client.get("/api/runs?project=demo").json()

    assert [run["id"] for run in first["runs"]] == many_runs[:100]
    assert first["next"].startswith("http://testserver/api/runs?")
    assert "project=demo" in first["next"]
    ids, pages = walk(client, "/api/runs?project=demo&limit=60", "runs")
    assert ids == many_runs
    assert pages == 5  # 60 + 60 + 60 + 60 + 10


def test_a_run_started_midway_neither_repeats_nor_shifts_the_walk(many_runs, demo, owner):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")
    first = client.get("/api/runs?limit=100").json()

    newer = Run.objects.create(task=Task.objects.get(), project=demo)
    Run.objects.filter(pk=many_runs[-1]).delete()  # and the oldest goes meanwhile
    rest, _ = walk(client, first["next"], "runs")

    seen = [run["id"] for run in first["runs"]] + rest
    assert seen == many_runs[:-1]
    assert newer.pk not in seen


def test_the_filters_carry_over_and_only_visible_runs_are_listed(many_runs, outsider):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(outsider)}")
    assert client.get("/api/runs").json() == {"runs": [], "next": None}
    assert client.get("/api/runs?project=demo").status_code == 404


def test_approvals_page_by_cursor_too(demo, owner):
    task = Task.objects.create(project=demo, title="Gated")
    run = Run.objects.create(task=task, project=demo, status=Run.Status.AWAITING_APPROVAL)
    created = Checkpoint.objects.bulk_create(
        Checkpoint(run=run, kind=Checkpoint.Kind.TOOL_CALL) for _ in range(7)
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")

    ids, pages = walk(client, f"/api/approvals?run={run.pk}&limit=3", "approvals")

    expected = list(
        Checkpoint.objects.filter(pk__in=[c.pk for c in created])
        .order_by("-requested_at", "-pk")
        .values_list("pk", flat=True)
    )
    assert ids == expected and len(ids) == 7
    assert pages == 3


@pytest.mark.parametrize(
    "query, detail",
    [
        ("cursor=not-a-cursor", "cursor is not valid"),
        ("cursor=eyJhdCI6MX0", "cursor is not valid"),  # {"at":1}
        ("limit=0", "limit must be between 1 and 500"),
        ("limit=501", "limit must be between 1 and 500"),
    ],
)
def test_bad_cursors_and_limits_are_400_with_a_detail(demo, owner, query, detail):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")
    for path in ("/api/runs", "/api/approvals"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400
        assert detail in response.json()["detail"]
