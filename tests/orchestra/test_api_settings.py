"""The API covers what the dashboard shows: profiles (saved as versions by admins), members,
the approval policy, a run's steps and its model calls with their messages; outsiders get 404,
viewers cannot write, lists follow `next`."""

import pytest
from django.test import Client

from agents.models import AgentProfile, ModelCall
from orchestra.engine import start_run
from orchestra.models import ApiToken, Membership

pytestmark = pytest.mark.django_db(transaction=True)


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def test_profiles_read_and_an_admins_update_is_a_new_version(owner, viewer, outsider, demo):
    profiles = api(viewer).get("/api/projects/demo/profiles").json()["profiles"]
    assert [p["role"] for p in profiles] == sorted(p["role"] for p in profiles)
    coder = next(p for p in profiles if p["role"] == "coder")
    assert coder["owner"] == "team"

    saved = api(owner).put(
        "/api/projects/demo/profiles/coder",
        {"system_prompt": "Keep it small.", "turn_limit": 6},
        content_type="application/json",
    )

    assert saved.status_code == 200, saved.content
    body = saved.json()
    assert body["owner"] == "project" and body["version"] == 2
    assert [v["number"] for v in body["versions"]] == [2, 1]
    assert body["versions"][0]["created_by"] == "olivia"
    assert body["versions"][0]["system_prompt"] == "Keep it small."
    assert body["versions"][1]["created_by"] is None  # the team's settings as copied
    detail = api(viewer).get("/api/projects/demo/profiles/coder").json()
    assert detail["turn_limit"] == 6 and detail["system_prompt"] == "Keep it small."
    assert AgentProfile.objects.get(team="software", role="coder", project=None).turn_limit != 6

    denied = api(viewer).put(
        "/api/projects/demo/profiles/coder", {"turn_limit": 3}, content_type="application/json"
    )
    assert denied.status_code == 403 and "admins" in denied.json()["detail"]
    bad = api(owner).put(
        "/api/projects/demo/profiles/coder",
        {"allowed_tools": ["format_disk"]},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "format_disk" in bad.json()["detail"]
    assert api(owner).get("/api/projects/demo/profiles/nobody").status_code == 404
    for url in ("/api/projects/demo/profiles", "/api/projects/demo/profiles/coder"):
        assert api(outsider).get(url).status_code == 404
    assert (
        api(outsider)
        .put(
            "/api/projects/demo/profiles/coder", {"turn_limit": 3}, content_type="application/json"
        )
        .status_code
        == 404
    )

    page = api(viewer).get("/api/projects/demo/profiles?limit=2").json()
    walked = [p["role"] for p in page["profiles"]]
    while page["next"]:
        page = api(viewer).get(page["next"]).json()
        walked += [p["role"] for p in page["profiles"]]
    assert walked == [p["role"] for p in profiles]


def test_members_listed_by_all_changed_by_admins_and_the_last_admin_stays(
    owner, viewer, operator, outsider, demo
):
    listed = api(viewer).get("/api/projects/demo/members?limit=1").json()
    assert len(listed["members"]) == 1 and listed["next"]
    names = [m["username"] for m in listed["members"]]
    while listed["next"]:
        listed = api(viewer).get(listed["next"]).json()
        names += [m["username"] for m in listed["members"]]
    assert sorted(names) == sorted(
        Membership.objects.filter(project=demo).values_list("user__username", flat=True)
    )

    added = api(owner).put(
        "/api/projects/demo/members",
        {"username": "mallory", "role": "viewer"},
        content_type="application/json",
    )
    assert added.json() == {"username": "mallory", "role": "viewer"}
    assert api(outsider).get("/api/projects/demo/members").status_code == 200  # a member now
    assert api(owner).delete("/api/projects/demo/members/mallory").status_code == 204
    assert api(outsider).get("/api/projects/demo/members").status_code == 404

    refused = api(viewer).put(
        "/api/projects/demo/members",
        {"username": "vera", "role": "admin"},
        content_type="application/json",
    )
    assert refused.status_code == 403
    assert api(operator).delete("/api/projects/demo/members/vera").status_code == 403
    unknown = api(owner).put(
        "/api/projects/demo/members",
        {"username": "nobody", "role": "viewer"},
        content_type="application/json",
    )
    assert unknown.status_code == 400 and "nobody" in unknown.json()["detail"]
    Membership.objects.filter(project=demo, role=Membership.Role.ADMIN).exclude(user=owner).delete()
    last = api(owner).delete("/api/projects/demo/members/olivia")
    assert last.status_code == 400 and "at least one admin" in last.json()["detail"]


def test_the_policy_reads_in_the_order_rules_are_tried(viewer, outsider, demo):
    rules = api(viewer).get("/api/projects/demo/policy").json()["rules"]
    assert rules and [r["position"] for r in rules] == sorted(r["position"] for r in rules)
    assert {r["outcome"] for r in rules} <= {"allow", "deny", "require_approval"}
    first_two = api(viewer).get("/api/projects/demo/policy?limit=2").json()
    rest = api(viewer).get(first_two["next"]).json()
    assert [r["id"] for r in first_two["rules"] + rest["rules"]][: len(rules)] == [
        r["id"] for r in rules
    ][: len(first_two["rules"] + rest["rules"])]
    assert api(viewer).get("/api/projects/demo/policy?cursor=nonsense").status_code == 400
    assert api(outsider).get("/api/projects/demo/policy").status_code == 404


def test_a_runs_steps_and_a_model_calls_messages(owner, viewer, outsider, demo):
    run = start_run(owner, demo, "Add a greeting", "Say hello politely.")

    steps = api(viewer).get(f"/api/runs/{run.pk}/steps").json()

    assert [s["key"] for s in steps["steps"]] == list(
        run.steps.order_by("position").values_list("key", flat=True)
    )
    worked = next(s for s in steps["steps"] if s["agent_runs"])
    attempt = worked["agent_runs"][0]
    assert attempt["profile_version"] == f"software/{attempt['role']} v1"
    assert worked["brief"] and attempt["model_calls"]

    call_id = attempt["model_calls"][0]
    call = api(viewer).get(f"/api/model-calls/{call_id}").json()
    stored = ModelCall.objects.get(pk=call_id)
    assert call["step"] == worked["key"]
    assert call["messages"] == stored.agent_run.messages[: stored.message_count]
    assert call["messages"][0]["role"] == "system"
    assert call["response"] == stored.response and call["response"]

    assert api(outsider).get(f"/api/runs/{run.pk}/steps").status_code == 404
    missing = api(outsider).get(f"/api/model-calls/{call_id}")
    assert missing.status_code == 404 and missing.json() == {"detail": "No such model call."}
    one = api(viewer).get(f"/api/runs/{run.pk}/steps?limit=1").json()
    assert len(one["steps"]) == 1 and one["next"]
