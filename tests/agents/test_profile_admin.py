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
