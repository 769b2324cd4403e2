"""Pause and resume with the parts split: a real `orchestra worker` process runs the steps and
calls the loopback OpenAI-protocol server over HTTP; the operator pauses through the API in
this process while a step's model call is in flight (the server holds its answer until the
pause is recorded)."""

import threading

import pytest
from django.test import Client

from orchestra.engine import start_run
from orchestra.models import ApiToken, Run, Step
from tests.llm_server import ScriptedLLMServer, reply

from .conftest import start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BRIEF = {"objective": "x", "expected_output": "y", "acceptance_criteria": ["z"]}
PLAN = {
    "steps": [
        {"key": "research", "title": "Research", "agent": "researcher", "brief": BRIEF},
        {
            "key": "implement",
            "title": "Implement",
            "agent": "researcher",
            "depends_on": ["research"],
            "brief": BRIEF,
        },
    ]
}


class Gate:
    """Holds the answer to `research`'s model call until the test releases it."""

    def __init__(self):
        self.in_flight = threading.Event()
        self.release = threading.Event()

    def respond(self, body: dict):
        messages = body["messages"]
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        first_user = messages[1]["content"]
        if "submit_plan" in tools:
            return reply("Planned.", [("submit_plan", PLAN, "plan")])
        if "submit_verdict" in tools:
            return reply("Fine.", [("submit_verdict", {"verdict": "pass", "feedback": "ok"})])
        if first_user.startswith("Write the final report"):
            return reply("Report: research and implement done.")
        if first_user.startswith("Step: research"):
            self.in_flight.set()
            assert self.release.wait(60), "the test never released the call"
        return reply(first_user.split(" ", 2)[1] + " done")


@pytest.fixture
def gate(processes):
    gate = Gate()
    with ScriptedLLMServer(responder=gate.respond) as server:
        processes.env.update(
            ORCHESTRA_USE_DEMO_MODEL="0",
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY="test-key",
            ORCHESTRA_MODEL="gpt-4o-mini",
        )
        start_worker(processes)
        yield gate
        gate.release.set()


def test_pause_while_a_step_is_mid_call_stops_dispatch_and_resume_completes(
    demo, owner, operator, gate
):
    operator_api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(operator)}")
    run = start_run(owner, demo, "Pause over the wire")
    assert gate.in_flight.wait(60), "research's model call never arrived"

    response = operator_api.post(f"/api/runs/{run.pk}/pause")
    assert response.status_code == 200, response.json()
    gate.release.set()

    # The call in flight finishes: research is reviewed, merged and done. Its merge is where
    # dispatch would start `implement`; paused, it does not.
    wait_until(
        lambda: Step.objects.get(run=run, key="research").status == Step.Status.DONE,
        60,
        "research to finish its call, review and merge",
    )
    run.refresh_from_db()
    assert run.is_paused and run.status == Run.Status.RUNNING
    implement = run.steps.get(key="implement")
    assert implement.status == Step.Status.PENDING and implement.attempts == 0
    paused = run.events.get(kind="run.paused")
    assert paused.actor == "oscar" and paused.data["running"] == ["research"]
    after = run.events.filter(seq__gt=paused.seq).values_list("kind", flat=True)
    assert "step.completed" in after and "step.dispatched" not in after

    response = operator_api.post(f"/api/runs/{run.pk}/resume")
    assert response.status_code == 200, response.json()
    wait_until(lambda: Run.objects.get(pk=run.pk).is_terminal, 60, "the resumed run to end")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert run.steps.get(key="implement").output == "implement done"
    resumed = run.events.get(kind="run.resumed")
    dispatched = run.events.get(kind="step.dispatched", step__key="implement")
    assert dispatched.seq > resumed.seq
