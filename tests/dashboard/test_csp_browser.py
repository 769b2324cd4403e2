"""The Content-Security-Policy in a real browser: the dashboard pages, the live run page (its
WebSocket and htmx) and the API docs (Swagger UI) work with it and trigger no violation.

Headless Debian Chromium through Playwright against one `orchestra up` process; every CSP
violation the browser reports (a `securitypolicyviolation` event) is collected and must be
none.
"""

import re

import pytest

from tests.dashboard.test_browser import (  # noqa: F401 - the same skip reasons
    ADMIN_PASSWORD,
    CHROMIUM,
    pytestmark,
)
from tests.embedded_server import embedded_server

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - test_browser's pytestmark skips this module
    sync_playwright = None

# Installed before any page script: records every violation the page reports.
RECORDER = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csp")
    expect.set_options(timeout=15_000)
    with (
        embedded_server(tmp, ORCHESTRA_ADMIN_PASSWORD=ADMIN_PASSWORD) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(base_url=server.base)
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.goto("/login/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name=re.compile("sign in", re.IGNORECASE)).click()
        expect(page).not_to_have_url(re.compile("/login/"))
        yield page
        browser.close()


def violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def test_dashboard_pages_raise_no_violation(page):
    for path in ("/", "/projects/demo/", "/approvals/", "/runs/", "/metrics/"):
        response = page.goto(path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        assert violations(page) == [], path


def test_a_live_run_page_streams_under_the_policy(page):
    page.goto("/projects/demo/")
    page.get_by_label("Title").fill("Policy check")
    page.get_by_role("button", name="Create task").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    # The demo run reaches its first checkpoint over the live feed (WebSocket + htmx swaps).
    expect(page.get_by_text("awaiting approval", exact=False).first).to_be_visible(timeout=60_000)
    assert violations(page) == []


def test_api_docs_render_from_vendored_files(page):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto("/api/docs")
    assert response.status == 200
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Orchestra API")
    expect(page.locator(".opblock").first).to_be_visible()
    assert violations(page) == []
    base = page.url.split("/api/")[0]
    assert all(url.startswith(base) for url in requested), requested


def test_an_injected_inline_script_is_blocked_and_reported(page):
    """What the policy is for, and proof that the recorder above would see a violation."""
    page.goto("/")
    page.evaluate(
        """() => {
        window.__ran = false;
        const script = document.createElement('script');
        script.textContent = 'window.__ran = true';
        document.body.appendChild(script);
    }"""
    )
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__ran") is False
    assert any(v.startswith("script-src") for v in violations(page))
