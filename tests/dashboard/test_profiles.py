"""A project's agent profiles in the dashboard: an admin's save is a new version (the team's
profile untouched), a run started after the edit uses it and its trace and step pages name
it, the history shows an escaped diff, and only admins may save."""

import pytest

from agents.models import AgentProfile, AgentRun, ProfileVersion
from orchestra.engine import start_run
from orchestra.models import Run

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/projects/demo/agents/coder/"


def form_of(profile: AgentProfile, **changes) -> dict:
    data = {
        "system_prompt": profile.system_prompt,
        "provider": "",
        "model": profile.model,
        "fallback_provider": "",
        "fallback_model": profile.fallback_model,
        "temperature": profile.temperature,
        "allowed_tools": profile.allowed_tools,
        "turn_limit": profile.turn_limit,
    }
    return data | changes


def team_coder() -> AgentProfile:
    return AgentProfile.objects.get(team="software", role="coder", project__isnull=True)


def test_an_admins_save_is_a_new_version_of_the_projects_own_profile(owner, demo):
    client = client_for(owner)
    team = team_coder()
    assert 'href="/projects/demo/agents/"' in client.get("/projects/demo/").text

    response = client.post(URL, form_of(team, system_prompt="Write <b>small</b> diffs."))

    assert response.status_code == 302, response.content
    own = AgentProfile.objects.get(project=demo, role="coder")
    assert own.system_prompt == "Write <b>small</b> diffs."
    assert team_coder().system_prompt == team.system_prompt  # other projects keep the team's
    versions = list(own.versions.order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].system_prompt == team.system_prompt and versions[0].created_by is None
    assert versions[1].created_by == owner
    assert "Saved the coder profile as version 2." in client.get(URL).text

    client.post(URL, form_of(own, turn_limit=5, allowed_tools=["read_file"]))
    assert own.versions.count() == 3
    assert ProfileVersion.objects.get(profile=own, number=2).turn_limit == team.turn_limit

    page = client.get(URL + "versions/?from=1&to=2")
    assert page.status_code == 200
    assert "Changes from version 1 to version 2" in page.text
    assert "+  Write &lt;b&gt;small&lt;/b&gt; diffs." in page.text  # escaped, never markup
    assert "<b>small</b>" not in page.text
    latest = client.get(URL + "versions/").text  # by default: the latest against the one before
    assert "Changes from version 2 to version 3" in latest
    assert "+turn_limit: 5" in latest
    assert client.get(URL + "versions/?to=9").status_code == 400


def test_a_run_started_after_an_edit_uses_the_new_version_and_its_trace_names_it(owner, demo):
    before = start_run(owner, demo, "Add a greeting", "Say hello politely.")
    first = AgentRun.objects.filter(run=before, role="coder").first()
    assert first.profile_version.profile == team_coder()
    assert first.messages[0]["content"] == team_coder().system_prompt

    client = client_for(owner)
    client.post(URL, form_of(team_coder(), system_prompt="Prefer the smallest change."))
    after = start_run(owner, demo, "Add a farewell", "Say goodbye.")

    agent_run = AgentRun.objects.filter(run=after, role="coder").first()
    assert agent_run.profile_version.number == 2
    assert agent_run.profile_version.profile.project == demo
    assert agent_run.messages[0]["content"] == "Prefer the smallest change."
    # The run started before keeps the version it ran with.
    assert AgentRun.objects.filter(run=before, role="coder").first().profile_version == (
        first.profile_version
    )
    trace = client.get(f"/runs/{after.pk}/trace/").text
    assert f"coder · {agent_run.step.key} #1 · profile demo/coder v2" in trace
    assert "profile software/orchestrator v1" in trace  # roles not edited: the team's
    step = client.get(f"/runs/{after.pk}/steps/{agent_run.step.key}/").text
    assert "profile demo/coder v2" in step
    old_trace = client.get(f"/runs/{before.pk}/trace/").text
    assert "profile software/coder v1" in old_trace
    assert after.status != Run.Status.FAILED


def test_old_agent_runs_without_a_version_still_show(owner, demo):
    run = start_run(owner, demo, "Add a greeting", "Say hello politely.")
    AgentRun.objects.filter(run=run).update(profile_version=None)
    trace = client_for(owner).get(f"/runs/{run.pk}/trace/")
    assert trace.status_code == 200
    assert "profile " not in trace.text.split('aria-label="Waterfall')[1]


def test_bad_input_is_shown_beside_the_field_and_nothing_is_saved(owner, demo):
    client = client_for(owner)
    response = client.post(URL, form_of(team_coder(), system_prompt="  ", turn_limit=0))
    assert response.status_code == 400
    assert 'id="id_system_prompt-errors"' in response.text
    assert 'id="id_turn_limit-errors"' in response.text
    response = client.post(URL, form_of(team_coder(), allowed_tools=["format_disk"]))
    assert response.status_code == 400
    assert "format_disk is not one of the available choices" in response.text
    assert not ProfileVersion.objects.filter(profile__project=demo).exists()
    assert not AgentProfile.objects.filter(project=demo).exists()


def test_only_admins_save_and_outsiders_see_nothing(operator, viewer, outsider, demo):
    data = form_of(team_coder(), system_prompt="Mine now.")
    for user in (operator, viewer):
        client = client_for(user)
        page = client.get(URL)
        assert page.status_code == 200
        assert 'id="profile-read-only"' in page.text
        assert "<form" not in page.text.split('id="profile-title"')[1]
        assert client.post(URL, data).status_code == 403
    outside = client_for(outsider)
    for url in ("/projects/demo/agents/", URL, URL + "versions/"):
        assert outside.get(url).status_code == 404
    assert outside.post(URL, data).status_code == 404
    assert client_for(viewer).get("/projects/demo/agents/nobody/").status_code == 404
    assert not AgentProfile.objects.filter(project=demo).exists()
