"""The approval form never drops an edit, in a real browser: once the arguments box is edited
only "Edit and approve" is on (plain approvals off, with a visible hint), a plain approve
posted anyway is refused beside the box, and "Edit and approve" runs the edited arguments.
Same server and browser set-up as test_browser (a real `orchestra up`, Debian Chromium)."""

import json
import re
import time

from playwright.sync_api import expect

from tests.dashboard.test_browser import (  # noqa: F401 - fixtures
    ADMIN_PASSWORD,
    LONG,
    browser,
    create_task,
    open_pending_checkpoint,
    pytestmark,
    server,
    sign_in,
    status,
)

PROPOSED = {"command": "python3 -m compileall -q src tests"}
EDITED = {"command": "python3 -c \"print('edited in the browser')\""}


def finished_command(page, run_id: int) -> dict:
    """The `tool.called` event of the run's finished `run_command`, once there is one."""
    deadline = time.monotonic() + LONG / 1000
    while time.monotonic() < deadline:
        response = page.request.get(f"/api/runs/{run_id}/events?after=0&limit=5000")
        assert response.ok, response.text()
        for event in response.json()["events"]:
            data = event.get("data") or {}
            if event["kind"] == "tool.called" and data.get("tool") == "run_command":
                return data
        time.sleep(0.2)
    raise AssertionError("the command never ran")


def test_an_edited_box_only_approves_the_edit_and_the_edit_runs(browser, server):  # noqa: F811
    page = sign_in(browser, server, "admin", ADMIN_PASSWORD)
    try:
        run_id = create_task(page, "Edit in the browser")
        expect(status(page)).to_have_text("awaiting approval", timeout=LONG)
        open_pending_checkpoint(page, "run_command")

        approve = page.get_by_role("button", name="Approve", exact=True)
        for_run = page.get_by_role("button", name="Approve for this run")
        edit = page.get_by_role("button", name="Edit and approve")
        hint = page.locator("#edited-hint")
        box = page.get_by_label("Arguments (JSON)")
        expect(approve).to_be_enabled()
        expect(for_run).to_be_enabled()
        expect(edit).to_be_disabled()
        expect(hint).to_be_hidden()

        box.fill(json.dumps(EDITED))
        expect(approve).to_be_disabled()
        expect(for_run).to_be_disabled()
        expect(edit).to_be_enabled()
        expect(hint).to_be_visible()
        expect(hint).to_contain_text("only “Edit and approve” runs your edit")

        # Other spacing of the same JSON is no edit.
        box.fill(json.dumps(PROPOSED, indent=4))
        expect(approve).to_be_enabled()
        expect(edit).to_be_disabled()
        expect(hint).to_be_hidden()

        # A plain approve posted with an edited box (a page without the script) is refused
        # beside the box, and the re-shown page still holds the edit with Approve off.
        box.fill(json.dumps(EDITED))
        page.evaluate("document.querySelector('[data-plain-approve]').disabled = false")
        approve.click()
        expect(page.locator("#arguments-errors")).to_contain_text("decide edit")
        assert json.loads(box.input_value()) == EDITED
        expect(approve).to_be_disabled()
        expect(hint).to_be_visible()

        edit.click()
        expect(page).to_have_url(re.compile(rf"/runs/{run_id}/$"))
        expect(page.locator(".messages")).to_contain_text("Approved with edited arguments.")
        ran = finished_command(page, run_id)
        assert ran["arguments"] == EDITED
        assert ran["status"] == "succeeded", ran
        assert "edited in the browser" in ran["result"]
        assert "compileall" not in ran["result"]
    finally:
        page.context.close()
