"""The dashboard in a real browser against a real server, as people use it.

One `orchestra up` process (the embedded default: SQLite, in-process worker and channel
layer, the demo model slowed to 0.3 s a call so phases are watchable) serves the whole module
on a free port; headless Debian Chromium drives it through Playwright. Waits are Playwright's
auto-waiting expectations, plus a MutationObserver where a state lasts only a moment (it
records every DOM change, so nothing depends on polling luck).

Screenshots land in artifacts/ (gitignored) for a person to look at.
"""

import json
import re
from pathlib import Path

import pytest

from tests.embedded_server import embedded_server

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
ADMIN_PASSWORD = "correct-horse-battery"
LONG = 30_000  # ms: a whole demo run stage on a busy two-core machine

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install -e .[dev])"
    ),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing: `apt-get install chromium` (no browser is downloaded)",
    ),
]

USERS = """
from django.contrib.auth import get_user_model
from orchestra.models import Membership, Project
User = get_user_model()
demo = Project.objects.get(slug="demo")
grace = User.objects.create_user("grace", password="grace-pass-123")
Membership.objects.create(project=demo, user=grace, role="approver")
User.objects.create_user("mallory", password="mallory-pass-123")
"""

# Installed before any page script: records every phase the run page shows and whether two
# given steps were ever drawn running at the same time.
RECORDER = """
window.__seen = {phases: [], together: false};
const look = () => {
  const current = document.querySelector('#run-phases [aria-current]');
  const phase = current && current.dataset.phase;
  const phases = window.__seen.phases;
  if (phase && phases[phases.length - 1] !== phase) phases.push(phase);
  const running = [...document.querySelectorAll('.graph-lr [data-status=running]')]
    .map(n => n.dataset.step);
  if (running.includes('implement') && running.includes('tests')) window.__seen.together = true;
};
document.addEventListener('DOMContentLoaded', () => {
  look();
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true,
                                                     attributes: true});
});
"""


# --- the server and the browser -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    with embedded_server(
        tmp, ORCHESTRA_DEMO_LATENCY="0.3", ORCHESTRA_ADMIN_PASSWORD=ADMIN_PASSWORD
    ) as running:
        running.manage("manage.py", "shell", "-c", USERS)
        yield running.base


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module", autouse=True)
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    for name in (
        "run-page",
        "run-page-phone",
        "approval-page",
        "trace",
        "metrics",
        "metrics-phone",
    ):
        (ARTIFACTS / f"{name}.png").unlink(missing_ok=True)
    return ARTIFACTS


def sign_in(browser, base, username, password, viewport=(1280, 800)):
    context = browser.new_context(
        base_url=base, viewport={"width": viewport[0], "height": viewport[1]}
    )
    context.set_default_timeout(LONG)
    page = context.new_page()
    page.goto("/runs/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/runs/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Run history")).to_be_visible()
    return page


@pytest.fixture
def admin(browser, server):
    page = sign_in(browser, server, "admin", ADMIN_PASSWORD)
    yield page
    page.context.close()


def create_task(page, title: str, description: str = "") -> int:
    page.goto("/projects/demo/")
    page.get_by_label("Title").fill(title)
    page.get_by_label("Description").fill(description)
    page.get_by_role("button", name="Create task").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    return int(re.search(r"/runs/(\d+)/", page.url)[1])


def status(page):
    return page.locator("#run-status")


def mark_page(page) -> None:
    """Tag the document: a reload would lose the tag."""
    page.evaluate("window.__sameDocument = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def feed_seqs(page) -> list[int]:
    return page.locator("#feed li").evaluate_all("els => els.map(e => Number(e.dataset.seq))")


def api_seqs(page, run_id: int) -> list[int]:
    response = page.request.get(f"/api/runs/{run_id}/events?after=0&limit=5000")
    assert response.ok, response.text()
    return [event["seq"] for event in response.json()["events"]]


def open_pending_checkpoint(page, text: str) -> None:
    """From the run page, follow the header's link to the checkpoint waiting for a human."""
    page.locator("#run-header .callout").get_by_role("link", name=re.compile(text)).click()
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()


def cancel(page, run_id: int) -> None:
    page.goto(f"/runs/{run_id}/")
    page.get_by_role("button", name="Cancel").click()
    expect(status(page)).to_have_text("cancelled")


# --- 1. a task runs live ------------------------------------------------------------------------
def test_a_new_task_goes_through_the_phases_live_with_parallel_steps(admin):
    page = admin
    page.add_init_script(RECORDER)
    page.goto("/projects/demo/")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator(".errorlist")).to_have_text("A task needs a title.")  # inline, no run

    run_id = create_task(page, "Watch it live", "Greet people by name.")
    mark_page(page)
    expect(page.locator(".tag.demo")).to_have_text("Demo model")
    page.wait_for_function(
        "() => ['plan', 'dispatch', 'review'].every((p, i) => window.__seen.phases[i] === p)",
        timeout=LONG,
    )
    page.wait_for_function("() => window.__seen.together", timeout=LONG)
    expect(page.locator("#run-phases [aria-current=step]")).to_contain_text("Review")
    expect(page.locator("#feed li[data-kind='step.started']").first).to_be_visible()
    assert_not_reloaded(page)

    page.get_by_role("button", name="Cancel").click()
    expect(status(page)).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    assert run_id


# --- 2. approve through the inbox, edit arguments, deploy, report -------------------------------
def test_approve_from_the_inbox_with_edited_arguments_then_deploy(admin, artifacts):
    page = admin
    run_id = create_task(page, "Ship the greeting", "Add greet(name) and deploy it.")
    expect(status(page)).to_have_text("awaiting approval", timeout=LONG)
    badge = page.locator("#approvals-badge .count")
    expect(badge).to_have_attribute("data-count", "1")
    expect(page.locator(".graph-lr [data-step=verify]")).to_have_attribute(
        "data-status", "awaiting_approval"
    )
    page.screenshot(path=artifacts / "run-page.png", full_page=True)
    assert no_horizontal_overflow(page)

    page.locator("#approvals-badge").click()
    expect(page.get_by_role("heading", name="Approvals")).to_be_visible()
    page.locator(f"tr[data-run='{run_id}']").get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Approve a tool call")).to_be_visible()
    expect(page.locator("#shown-arguments")).to_contain_text("python3 -m compileall -q src tests")
    page.screenshot(path=artifacts / "approval-page.png", full_page=True)
    assert no_horizontal_overflow(page)

    arguments = page.get_by_label("Arguments (JSON)")
    arguments.fill('{"cmd": "ls"}')
    page.get_by_role("button", name="Edit and approve").click()
    expect(page.locator("#arguments-errors")).to_contain_text("do not fit the tool")
    edited = {"command": "python3 -m unittest discover -s tests"}
    arguments.fill(json.dumps(edited))
    page.get_by_role("button", name="Edit and approve").click()

    expect(page).to_have_url(re.compile(rf"/runs/{run_id}/$"))
    expect(page.locator(".messages")).to_contain_text("Approved with edited arguments.")
    mark_page(page)
    # The run moves on by itself: verify is reviewed, the deploy asks for approval.
    expect(page.locator(".graph-lr [data-step=verify]")).to_have_attribute(
        "data-status", "done", timeout=LONG
    )
    expect(page.locator(".graph-lr [data-step=deploy]")).to_have_attribute(
        "data-status", "awaiting_approval", timeout=LONG
    )
    assert_not_reloaded(page)

    open_pending_checkpoint(page, "Deploy")
    expect(page.get_by_role("heading", name="Approve a deploy")).to_be_visible()
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}/$"))
    mark_page(page)
    expect(status(page)).to_have_text("completed", timeout=LONG)
    expect(
        page.locator("#run-report").get_by_role("heading", name="Report: Ship the greeting")
    ).to_be_visible()
    expect(page.locator("#run-phases .phase.done")).to_have_count(4)
    expect(badge).to_have_attribute("data-count", "0")
    assert_not_reloaded(page)

    page.goto(f"/runs/{run_id}/steps/verify/")
    expect(page.locator("#step-live")).to_contain_text("run with arguments edited by admin")

    page.goto(f"/runs/{run_id}/trace/")
    expect(page.locator(".wf-row[data-kind=wait]")).to_have_count(2)
    expect(page.locator(".wf-row[data-kind=wait]").first).to_contain_text("approved by admin")
    page.screenshot(path=artifacts / "trace.png", full_page=True)
    assert no_horizontal_overflow(page)
    page.locator(".wf-row[data-kind=model_call] a").first.click()
    expect(page.get_by_role("heading", name=re.compile("Messages sent"))).to_be_visible()

    # The same pages at phone width.
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in [(f"/runs/{run_id}/", "run-page-phone"), (f"/runs/{run_id}/trace/", "")]:
        page.goto(path)
        assert no_horizontal_overflow(page), path
        if name:
            page.screenshot(path=artifacts / f"{name}.png", full_page=True)


# --- 3. reject with a comment; the agent reacts -------------------------------------------------
def test_a_rejected_command_reaches_the_agent(admin):
    page = admin
    run_id = create_task(page, "Reject the command")
    expect(status(page)).to_have_text("awaiting approval", timeout=LONG)
    open_pending_checkpoint(page, "run_command")
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page.locator("#comment-errors")).to_contain_text("Say why you reject it")
    page.get_by_label("Comment").fill("No commands on Fridays.")
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}/$"))

    page.locator("#run-steps").get_by_role("link", name="Run the test suite").click()
    conversation = page.locator("#step-live")
    # The step page is live too: the agent's answer arrives without a reload.
    expect(conversation).to_contain_text("rejected by admin: No commands on Fridays.")
    expect(conversation).to_contain_text("a human rejected my request", timeout=LONG)
    checkpoints = page.locator("section[aria-labelledby=checkpoints-title]")
    expect(checkpoints).to_contain_text("rejected")
    expect(checkpoints).to_contain_text("admin")
    cancel(page, run_id)


# --- 4. two approvers, one checkpoint -----------------------------------------------------------
def test_two_approvers_click_approve_and_one_is_told_it_was_decided(browser, server, admin):
    run_id = create_task(admin, "Two approvers")
    expect(status(admin)).to_have_text("awaiting approval", timeout=LONG)
    open_pending_checkpoint(admin, "run_command")
    grace = sign_in(browser, server, "grace", "grace-pass-123")
    try:
        grace.goto(admin.url)
        expect(grace.get_by_role("button", name="Approve", exact=True)).to_be_visible()

        admin.get_by_role("button", name="Approve", exact=True).click()
        expect(admin).to_have_url(re.compile(rf"/runs/{run_id}/$"))
        grace.get_by_role("button", name="Approve", exact=True).click()
        expect(grace.locator("#already-decided")).to_have_text(
            "This checkpoint was already approved by admin."
        )
        expect(grace.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
    finally:
        grace.context.close()
    cancel(admin, run_id)


# --- 5. outsiders -------------------------------------------------------------------------------
def test_an_outsider_cannot_see_the_run_its_checkpoint_or_its_socket(browser, server, admin):
    run_id = create_task(admin, "Not for mallory")
    expect(status(admin)).to_have_text("awaiting approval", timeout=LONG)
    checkpoint_url = (
        admin.locator("#run-header .callout").get_by_role("link").first.get_attribute("href")
    )
    mallory = sign_in(browser, server, "mallory", "mallory-pass-123")
    try:
        assert mallory.goto(f"/runs/{run_id}/").status == 404
        assert mallory.goto(checkpoint_url).status == 404
        assert mallory.goto(f"/runs/{run_id}/trace/").status == 404
        mallory.goto("/")
        expect(mallory.locator("main")).not_to_contain_text("Not for mallory")
        socket_code = """runId => new Promise(resolve => {
            const ws = new WebSocket(`ws://${location.host}/ws/runs/${runId}/?after=0`);
            let frames = 0;
            ws.onmessage = () => { frames += 1; };
            ws.onclose = event => resolve({code: event.code, frames});
        })"""
        assert mallory.evaluate(socket_code, run_id) == {"code": 4403, "frames": 0}
    finally:
        mallory.context.close()
    cancel(admin, run_id)


# --- 6. a dropped socket loses and repeats nothing ----------------------------------------------
def test_dropping_the_socket_mid_run_leaves_every_event_exactly_once(admin):
    page = admin
    run_id = create_task(page, "Drop the socket")
    mark_page(page)
    for at_least in (3, 15, 30):
        page.wait_for_function(
            """n => window.orchestraLive && window.orchestraLive.lastSeq >= n
                   && window.orchestraLive.socket
                   && window.orchestraLive.socket.readyState === WebSocket.OPEN""",
            arg=at_least,
        )
        page.evaluate("() => window.orchestraLive.socket.close()")
        expect(page.locator("#live-status")).not_to_have_attribute("data-state", "live")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(status(page)).to_have_text("awaiting approval", timeout=LONG)
    # The run is paused for a human: its log is complete, and the feed must equal it.
    expected = api_seqs(page, run_id)
    assert expected == list(range(1, len(expected) + 1))
    expect(page.locator("#feed li")).to_have_count(len(expected))
    assert feed_seqs(page) == expected
    assert_not_reloaded(page)
    cancel(page, run_id)


# --- 7. metrics ---------------------------------------------------------------------------------
def test_the_metrics_page_charts_the_runs_so_far(admin, artifacts):
    """Counts at least one run of its own; after the tests above it has all of theirs too
    (completed, cancelled), which makes the screenshot worth looking at."""
    page = admin
    cancel(page, create_task(page, "Counted in the metrics"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Metrics").click()
    expect(page.get_by_role("heading", name="Metrics", exact=True)).to_be_visible()
    runs = page.locator("#projects-table tr[data-key=Demo] [data-col=runs]")
    expect(runs).not_to_have_text("0")
    expect(page.locator("#runs-chart .seg-cancelled").first).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("Runs per day by outcome"))).to_be_visible()
    mark_page(page)
    page.get_by_label("Period").select_option("30d")
    expect(page).to_have_url(re.compile(r"/metrics/\?period=30d"))
    expect(page.locator("#runs-chart .column")).to_have_count(31)
    assert_not_reloaded(page)  # htmx swapped the results in
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=artifacts / "metrics.png", full_page=True)
    assert no_horizontal_overflow(page)
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.locator("#runs-chart")).to_be_visible()
    assert no_horizontal_overflow(page)
    page.screenshot(path=artifacts / "metrics-phone.png", full_page=True)
