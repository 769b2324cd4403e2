"""Streamed tokens on the run page, in a real browser: an `orchestra up` process whose model is
the protocol test server, streaming a step's answer in twelve pieces 0.4 s apart.

The page must show the text growing while the model call is still going, then drop it when
the call's `model.called` event (the final message, stored once) arrives.
"""

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard.test_browser import CHROMIUM, sign_in
from tests.embedded_server import embedded_server
from tests.llm_server import ScriptedLLMServer, reply

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]

PASSWORD = "correct-horse-battery"
STORY = (
    "Once upon a time a farewell module was written, one careful line after another, "
    "tested twice and reviewed once, until at last it said goodbye properly. THE END."
)
PLAN = {
    "summary": "One step that writes.",
    "steps": [
        {
            "key": "story",
            "title": "Tell the story",
            "agent": "researcher",
            "brief": {
                "objective": "Tell the story of the module.",
                "expected_output": "The story.",
                "acceptance_criteria": ["It ends"],
            },
        }
    ],
}
# Records, from before any page script runs, every text the live box shows and when, and
# when the step's model.called event arrives.
RECORDER = """
window.__live = {texts: [], calledAt: null};
document.addEventListener('orc:live-text', e => {
  const live = e.detail.live;
  if (live.step === 'story') window.__live.texts.push({t: performance.now(), text: live.text});
});
document.addEventListener('orc:event', e => {
  const ev = e.detail;
  if (ev.kind === 'model.called' && ev.step === 'story' && window.__live.calledAt === null)
    window.__live.calledAt = performance.now();
});
"""


def respond(body: dict):
    tools = {t["function"]["name"] for t in body.get("tools") or []}
    if "submit_plan" in tools:
        return reply(None, [("submit_plan", PLAN)])
    if "submit_verdict" in tools:
        return reply(None, [("submit_verdict", {"verdict": "pass", "feedback": "Good."})])
    if body["messages"][1]["content"].startswith("Write the final report"):
        return reply("# Report\n\nThe story was told.")
    return reply(STORY, pieces=12, chunk_delay=0.4)


@pytest.fixture(scope="module")
def model():
    with ScriptedLLMServer(responder=respond) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, model):
    with embedded_server(
        tmp_path_factory.mktemp("live-text"),
        ORCHESTRA_ADMIN_PASSWORD=PASSWORD,
        OPENAI_BASE_URL=model.base_url,
        OPENAI_API_KEY="sk-live-text-test",
        ORCHESTRA_MODEL="story-model",
        ORCHESTRA_MODEL_STREAM="1",
    ) as running:
        yield running


def test_streamed_tokens_appear_on_the_run_page_before_the_call_ends(server, model):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = sign_in(browser, server.base, "admin", PASSWORD)
        page.context.add_init_script(RECORDER)
        page.goto("/projects/demo/")
        page.get_by_label("Title").fill("Tell the farewell story")
        page.get_by_role("button", name="Create task").click()
        expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
        run_id = int(re.search(r"/runs/(\d+)/", page.url)[1])

        live = page.locator("#live-text")
        expect(live).to_be_visible(timeout=30_000)
        expect(live).to_contain_text("researcher is writing")
        expect(live.locator("pre")).to_contain_text("Once upon")
        shown_while_streaming = live.locator("pre").text_content()
        # The story is done (model.called arrived): the live box is gone, the output stays.
        expect(live).to_be_hidden(timeout=30_000)
        seen = page.evaluate("window.__live")
        browser.close()

    assert "THE END" not in shown_while_streaming, "the text was shown before the call ended"
    texts = [entry["text"] for entry in seen["texts"]]
    assert len(texts) >= 4, texts
    assert all(STORY.startswith(text) for text in texts), "each frame is the text so far"
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:], strict=False))
    assert seen["calledAt"] is not None
    assert seen["texts"][0]["t"] < seen["calledAt"] - 1000, "text arrived a second before"
    # About 5 s of streaming, at most 10 frames a second.
    span = (seen["texts"][-1]["t"] - seen["texts"][0]["t"]) / 1000
    assert len(texts) <= span * 10 + 2

    token = server.token()
    request = urllib.request.Request(  # noqa: S310 - loopback test server
        f"{server.base}/api/runs/{run_id}/events?limit=500",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        events = json.loads(response.read())["events"]
    stored = json.dumps(events)
    assert stored.count("one careful line after another") <= 2, "final text stored, not frames"
    kinds = {event["kind"] for event in events}
    assert not any("text" in kind or "delta" in kind for kind in kinds), kinds
