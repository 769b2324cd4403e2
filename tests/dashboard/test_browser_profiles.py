"""A project's agent profiles in a real browser: an admin edits the coder's prompt and turn
limit, saves, and finds version 2 with the diff from version 1; a viewer reads the same pages
without a form. Same set-up as test_browser (a real `orchestra up`, Debian Chromium), with a
viewer added to the demo project."""

import re

import pytest
from playwright.sync_api import expect

from tests.dashboard.test_browser import (  # noqa: F401 - fixtures
    ADMIN_PASSWORD,
    browser,
    pytestmark,
    sign_in,
)
from tests.embedded_server import embedded_server

VIEWER = """
from django.contrib.auth import get_user_model
from orchestra.models import Membership, Project
vera = get_user_model().objects.create_user("vera", password="vera-pass-123")
Membership.objects.create(project=Project.objects.get(slug="demo"), user=vera, role="viewer")
"""
PROMPT = "You are the coder. Keep every change small, and test it before you report."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with embedded_server(
        tmp_path_factory.mktemp("profiles"), ORCHESTRA_ADMIN_PASSWORD=ADMIN_PASSWORD
    ) as running:
        running.manage("manage.py", "shell", "-c", VIEWER)
        yield running.base


def coder_row(page):
    return page.locator("#profiles tr[data-role=coder]")


def test_an_admin_saves_a_profile_and_sees_version_2_and_its_diff(browser, server):  # noqa: F811
    page = sign_in(browser, server, "admin", ADMIN_PASSWORD)
    try:
        page.goto("/projects/demo/")
        page.get_by_role("link", name="Agent profiles").click()
        expect(page.get_by_role("heading", name="Agent profiles")).to_be_visible()
        expect(coder_row(page)).to_contain_text("the team's")
        old_limit = coder_row(page).locator("td.num").inner_text().strip()
        assert old_limit != "6"

        coder_row(page).get_by_role("link", name="coder").click()
        expect(page.get_by_role("heading", name="The coder agent")).to_be_visible()
        page.get_by_label("System prompt").fill(PROMPT)
        page.get_by_label("Turn limit").fill("6")
        page.get_by_role("button", name="Save profile").click()

        expect(page.locator("#profile-notice")).to_be_visible()
        history = page.get_by_role("link", name="Version history (v2)")
        expect(history).to_be_visible()
        expect(page.get_by_label("System prompt")).to_have_value(PROMPT)
        expect(page.get_by_label("Turn limit")).to_have_value("6")

        history.click()
        expect(page).to_have_url(re.compile(r"/projects/demo/agents/coder/versions/"))
        expect(
            page.get_by_role("heading", name="Changes from version 1 to version 2")
        ).to_be_visible()
        diff = page.locator("#version-diff")
        expect(diff.locator(".diff-del", has_text=f"turn_limit: {old_limit}")).to_have_count(1)
        expect(diff.locator(".diff-add", has_text="turn_limit: 6")).to_have_count(1)
        expect(diff.locator(".diff-add", has_text=PROMPT)).to_have_count(1)
        versions = page.locator("#versions tbody tr")
        expect(versions).to_have_count(2)
        expect(versions.first).to_contain_text("v2")
        expect(versions.first).to_contain_text("admin")
        expect(versions.first).to_contain_text("current")

        # Comparing a version with itself says so.
        page.get_by_label("From", exact=True).select_option("2")
        page.get_by_role("button", name="Compare").click()
        expect(page.locator("#version-diff")).to_have_text("These two versions are the same.")

        page.get_by_role("link", name="Agent profiles").click()
        expect(coder_row(page)).to_contain_text("this project's")
        expect(coder_row(page).locator("td.num")).to_have_text("6")
        expect(coder_row(page).get_by_role("link", name="v2")).to_be_visible()
    finally:
        page.context.close()


def test_a_viewer_reads_the_profiles_without_a_form(browser, server):  # noqa: F811
    page = sign_in(browser, server, "vera", "vera-pass-123")
    try:
        page.goto("/projects/demo/agents/")
        expect(
            page.get_by_text("Only the project's admins can change its profiles.")
        ).to_be_visible()
        coder_row(page).get_by_role("link", name="coder").click()
        expect(page.get_by_role("heading", name="The coder agent")).to_be_visible()
        expect(page.locator("#profile-read-only")).to_be_visible()
        expect(page.locator("pre.prompt")).not_to_be_empty()
        expect(page.get_by_role("button", name="Save profile")).to_have_count(0)
        expect(page.get_by_label("System prompt")).to_have_count(0)
        expect(page.locator("form.profile-form")).to_have_count(0)
    finally:
        page.context.close()
