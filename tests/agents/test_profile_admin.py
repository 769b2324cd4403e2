"""Profile versions in the Django admin: listed, shown under their profile, each with the diff
from the version before it, and never added, changed or deleted there."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import AgentProfile, ProfileVersion
from agents.profiles import save_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "r@example.test", "pw"))
    return client


@pytest.fixture
def edited(demo, owner) -> AgentProfile:
    """The demo's coder, saved twice by its admin: versions 1 (the team's) to 3."""
    save_profile(owner, demo, "coder", system_prompt="Write small, tested changes.")
    save_profile(owner, demo, "coder", turn_limit=7)
    return AgentProfile.objects.get(project=demo, role="coder")


def test_the_version_list_names_number_author_date_and_model(staff, edited):
    page = staff.get("/admin/agents/profileversion/")
    assert page.status_code == 200
    text = page.text
    for number in (1, 2, 3):
        assert f'<td class="field-number">{number}</td>' in text
    assert f">{edited}</a>" in text  # each row opens the version
    assert '<td class="field-created_by nowrap">olivia</td>' in text
    assert "field-created_at" in text and "field-model" in text
    assert 'href="/admin/agents/profileversion/add/"' not in text


def test_a_version_shows_its_prompt_and_the_diff_from_the_one_before(staff, edited):
    second = ProfileVersion.objects.get(profile=edited, number=2)
    page = staff.get(f"/admin/agents/profileversion/{second.pk}/change/")
    assert page.status_code == 200
    text = page.text
    assert "Changes from the previous version" in text
    assert "--- version 1" in text and "+++ version 2" in text
    assert "+  Write small, tested changes." in text
    assert 'name="_save"' not in text and "/delete/" not in text
    first = ProfileVersion.objects.get(profile=edited, number=1)
    assert "--- nothing" in staff.get(f"/admin/agents/profileversion/{first.pk}/change/").text
    third = ProfileVersion.objects.get(profile=edited, number=3)
    third_text = staff.get(f"/admin/agents/profileversion/{third.pk}/change/").text
    assert "+turn_limit: 7" in third_text


def test_the_profile_page_lists_its_versions_read_only(staff, edited):
    page = staff.get(f"/admin/agents/agentprofile/{edited.pk}/change/")
    assert page.status_code == 200
    text = page.text
    assert "Profile versions" in text
    for version in ProfileVersion.objects.filter(profile=edited):
        assert f"/admin/agents/profileversion/{version.pk}/change/" in text
    assert 'name="versions-0-number"' not in text  # shown, not an input
    assert 'name="versions-TOTAL_FORMS"' in text


def test_versions_are_registered_read_only(rf, staff):
    request = rf.get("/admin/")
    request.user = get_user_model().objects.get(username="root")
    model_admin = admin.site._registry[ProfileVersion]
    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def change_form(staff: Client, profile: AgentProfile, **changes) -> dict:
    """The admin's change form of `profile` as a staff user would send it back: every field
    (and the version inline's management form) as shown, then `changes`."""
    page = staff.get(f"/admin/agents/agentprofile/{profile.pk}/change/")
    assert page.status_code == 200
    data = {}
    forms = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for field in form:
            value = field.value()
            data[field.html_name] = "" if value is None else value
    data["allowed_tools"] = page.context["adminform"].form["allowed_tools"].value()
    data.update(changes)
    data["_save"] = "Save"
    return data


def test_a_save_in_the_admin_records_the_next_version_by_its_author(staff, edited):
    url = f"/admin/agents/agentprofile/{edited.pk}/change/"
    root = get_user_model().objects.get(username="root")

    response = staff.post(url, change_form(staff, edited, turn_limit=9, model="bigger-model"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    latest = edited.versions.order_by("-number").first()
    assert latest.number == 4 and latest.created_by == root
    assert latest.turn_limit == 9 and latest.model == "bigger-model"
    assert AgentProfile.objects.get(pk=edited.pk).turn_limit == 9
    page = staff.get(f"/admin/agents/profileversion/{latest.pk}/change/").text
    assert "+turn_limit: 9" in page and "+model: bigger-model" in page


def test_a_save_in_the_admin_that_changes_nothing_records_no_version(staff, edited):
    url = f"/admin/agents/agentprofile/{edited.pk}/change/"
    response = staff.post(url, change_form(staff, edited))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert [v.number for v in edited.versions.order_by("number")] == [1, 2, 3]
    # Nor does a description, which is not part of a version.
    staff.post(url, change_form(staff, edited, description="Writes the code."))
    assert AgentProfile.objects.get(pk=edited.pk).description == "Writes the code."
    assert edited.versions.count() == 3


def test_a_dashboard_save_that_changes_nothing_records_no_version(owner, demo, edited):
    version = save_profile(owner, demo, "coder", turn_limit=7)
    assert version.number == 3 and edited.versions.count() == 3
