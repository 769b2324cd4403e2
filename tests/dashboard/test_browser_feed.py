"""The live feed shows the server's words, in a real browser: each event pushed over the
WebSocket lands as the line the server rendered for it, the same line a reload of the page
shows, down to the character. Same server and browser set-up as test_browser (a real
`orchestra up`, Debian Chromium)."""

import json

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

EDITED = {"command": "python3 -c \"print('edited from the feed test')\""}

# Each feed line by seq: its markup (without the class live.js adds) and its text.
LINES = """
() => Object.fromEntries([...document.querySelectorAll('#feed li[data-seq]')].map(li => {
  const copy = li.cloneNode(true);
  copy.classList.remove('fresh');
  if (!copy.classList.length) copy.removeAttribute('class');
  return [li.dataset.seq, {html: copy.outerHTML, text: copy.textContent}];
}))
"""


def test_pushed_lines_read_exactly_as_the_reloaded_page(browser, server):  # noqa: F811
    page = sign_in(browser, server, "admin", ADMIN_PASSWORD)
    try:
        run_id = create_task(page, "Lines in the server's words")
        page.evaluate("window.__sameDocument = true")
        expect(status(page)).to_have_text("awaiting approval", timeout=LONG)

        # Decide in a second tab: the run page in the first hears of it over its socket.
        other = page.context.new_page()
        other.goto(f"/runs/{run_id}/")
        open_pending_checkpoint(other, "run_command")
        other.get_by_label("Arguments (JSON)").fill(json.dumps(EDITED))
        other.get_by_role("button", name="Edit and approve").click()
        other.close()

        decided = page.locator("#feed li.fresh[data-kind='approval.decided']")
        expect(decided).to_have_count(1, timeout=LONG)
        expect(decided.locator(".what")).to_contain_text("approved with edited arguments")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        pushed = {
            seq: line
            for seq, line in page.evaluate(LINES).items()
            if page.locator(f"#feed li.fresh[data-seq='{seq}']").count()
        }
        assert len(pushed) >= 2, "no events arrived over the socket"

        page.reload()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        served = page.evaluate(LINES)
        for seq, line in pushed.items():
            assert served.get(seq) == line, f"event #{seq} reads differently after a reload"
    finally:
        page.context.close()
