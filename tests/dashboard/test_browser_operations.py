"""Operating a run by hand in a real browser: the run page's Pause and Resume buttons, with
the page following live. The embedded server and Chromium of `test_browser`."""

import re

import pytest

from tests.dashboard.test_browser import (  # noqa: F401 - fixtures used by name
    ADMIN_PASSWORD,
    browser,
    create_task,
    server,
    sign_in,
    status,
    sync_playwright,
)

if sync_playwright is not None:
    from playwright.sync_api import expect

pytestmark = pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed")


def test_pause_then_resume_from_the_run_page(browser, server):  # noqa: F811
    page = sign_in(browser, server, "admin", ADMIN_PASSWORD)
    try:
        run_id = create_task(page, "Add a pausing module")
        running = page.locator(".graph-lr [data-status=running]")
        expect(running.first).to_be_visible()  # a step's agent is at work
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#run-paused")).to_contain_text("Paused by admin")
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        # Running steps stop after their model call; nothing new starts.
        expect(running).to_have_count(0)
        feed = page.locator("#feed")
        expect(feed.locator("[data-kind='run.paused']")).to_have_count(1)
        pending = page.locator(".graph-lr [data-status=pending]")
        expect(pending.first).to_be_visible()

        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_role("button", name="Pause")).to_be_visible()
        expect(feed.locator("[data-kind='run.resumed']")).to_have_count(1)
        # The run carries on to its first checkpoint, followed live.
        expect(status(page)).to_have_text(re.compile("awaiting approval"), timeout=60_000)
        page.get_by_role("button", name="Cancel").click()
        expect(status(page)).to_have_text("cancelled")
        assert page.url.endswith(f"/runs/{run_id}/")
    finally:
        page.context.close()
