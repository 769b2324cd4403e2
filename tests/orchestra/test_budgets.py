"""Budgets over real HTTP: every model call of these runs goes through the SDK to the protocol
test server, which answers as the demo model and reports 100 + 10 tokens a call; the model
costs $1000 per million tokens both ways, so each call costs exactly $0.11."""

from decimal import Decimal

import pytest
from django.test import Client

from agents.llm import reset_clients
from agents.llm.demo import DemoModel
from agents.models import ModelCall, ProjectBudget, RunBudget
from approvals.models import Checkpoint
from orchestra.engine import EngineError, decide_checkpoint, raise_budget, start_run
from orchestra.models import ApiToken, Run, Step
from tests.llm_server import ScriptedLLMServer, reply

pytestmark = pytest.mark.django_db(transaction=True)

CALL = Decimal("0.11")


def priced_demo(body: dict):
    answer = DemoModel().complete(
        model=body["model"],
        messages=body["messages"],
        tools=body.get("tools") or [],
        temperature=0,
    )
    calls = [(c.name, c.arguments, c.id) for c in answer.tool_calls]
    return reply(answer.content, calls, input_tokens=100, output_tokens=10)


@pytest.fixture
def endpoint(settings):
    with ScriptedLLMServer(responder=priced_demo) as server:
        settings.ORCHESTRA_USE_DEMO_MODEL = False
        settings.OPENAI_BASE_URL = server.base_url
        settings.OPENAI_API_KEY = "test-key"
        settings.ORCHESTRA_MODEL = "priced-model"
        settings.ORCHESTRA_PRICES = {"priced-model": (Decimal(1000), Decimal(1000))}
        settings.ORCHESTRA_MODEL_STREAM = False
        reset_clients()
        yield server
        reset_clients()


def pending(run: Run) -> list[Checkpoint]:
    return list(run.checkpoints.filter(status=Checkpoint.Status.PENDING).order_by("pk"))


def approve_tools(run: Run, approver) -> None:
    """Approve pending command, deploy and escalation checkpoints, never a budget one."""
    for _ in range(8):
        waiting = [c for c in pending(run) if c.kind != Checkpoint.Kind.BUDGET]
        if not waiting:
            return
        decide_checkpoint(approver, waiting[0], "approve")


def paused_steps(run: Run) -> set[str]:
    return set(run.steps.filter(status=Step.Status.AWAITING_APPROVAL).values_list("key", flat=True))


def test_a_soft_budget_pauses_every_branch_and_continues_after_a_raise(
    endpoint, demo, owner, approver
):
    run = start_run(owner, demo, "Add a farewell module", budget={"soft_usd": "0.30"})
    run.refresh_from_db()
    [checkpoint] = pending(run)
    assert checkpoint.kind == Checkpoint.Kind.BUDGET
    assert run.cost_usd == 3 * CALL, "the plan and two turns of research, then the pause"
    assert checkpoint.shown["message"] == (
        "This run has spent $0.3300 of $0.3000: continue with a new limit, or stop."
    )
    assert paused_steps(run) == {"research"}
    requests = len(endpoint.requests)

    with pytest.raises(EngineError, match="must be above what the run has spent"):
        raise_budget(owner, checkpoint, soft_usd="0.20")
    checkpoint = raise_budget(owner, checkpoint, soft_usd="0.90", comment="raise to $0.90")
    assert checkpoint.status == Checkpoint.Status.APPROVED
    run.refresh_from_db()
    assert len(endpoint.requests) > requests, "the paused step carried on"
    assert RunBudget.objects.get(run=run).soft_usd == Decimal("0.90")

    # The second crossing finds two branches running side by side: both wait.
    [second] = pending(run)
    assert second.kind == Checkpoint.Kind.BUDGET and second.pk != checkpoint.pk
    assert paused_steps(run) == {"implement", "tests"}
    assert run.cost_usd >= Decimal("0.90")
    calls_at_pause = ModelCall.objects.filter(run=run).count()

    decide_checkpoint(owner, second, "approve", "carry on")  # continue without a soft limit
    approve_tools(run, approver)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert ModelCall.objects.filter(run=run).count() > calls_at_pause
    assert RunBudget.objects.get(run=run).soft_usd is None
    kinds = list(run.events.values_list("kind", flat=True))
    assert kinds.count("budget.raised") == 2
    assert kinds.count("step.paused") == 3


def test_a_hard_limit_fails_the_run_keeping_finished_outputs(endpoint, demo, owner):
    # The plan (1 call), research (3) and its review (1) fit in $0.56; the next step's
    # second call would not.
    run = start_run(owner, demo, "Add a farewell module", budget={"hard_usd": "0.56"})
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error.startswith("The run reached its hard budget: it has spent $0.6600 of")
    assert "the finished steps keep their outputs" in run.error
    steps = {s.key: s for s in run.steps.all()}
    assert steps["research"].status == Step.Status.DONE
    assert steps["research"].output.startswith("Step research done")
    assert run.cost_usd == 6 * CALL
    failed = run.events.get(kind="run.failed")
    assert failed.data["completed_steps"] == ["research"]


def test_stopping_at_the_budget_checkpoint_fails_the_run(endpoint, demo, owner):
    run = start_run(owner, demo, "Add a farewell module", budget={"soft_tokens": "300"})
    [checkpoint] = pending(run)
    assert "330 tokens of 300" in checkpoint.shown["message"]
    decide_checkpoint(owner, checkpoint, "reject", "too dear")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error.startswith("Stopped by olivia at the budget checkpoint (This run has spent")
    assert run.error.endswith(": too dear")


def test_a_spent_monthly_budget_refuses_a_new_task(endpoint, demo, owner):
    ProjectBudget.objects.create(project=demo, month_usd=Decimal("0.50"), run_hard_usd=1)
    first = start_run(owner, demo, "Add a farewell module")
    assert RunBudget.objects.get(run=first).hard_usd == 1, "the project's run default"
    first.refresh_from_db()
    assert first.cost_usd > Decimal("0.50")

    with pytest.raises(EngineError) as refused:
        start_run(owner, demo, "Add a shout helper")
    message = str(refused.value)
    assert message.startswith("Demo has spent $")
    assert "of its monthly budget of $0.50: no new task until" in message

    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")
    response = api.post(
        "/api/tasks", {"project": "demo", "title": "x"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"detail": message}
    assert Run.objects.count() == 1


def test_a_model_without_a_price_is_cost_unknown_never_zero(endpoint, demo, owner, settings):
    settings.ORCHESTRA_MODEL = "unpriced-model"
    run = start_run(owner, demo, "Add a farewell module", budget={"soft_tokens": "300"})
    [checkpoint] = pending(run)
    calls = ModelCall.objects.filter(run=run)
    assert calls and all(c.cost_unknown for c in calls)
    assert checkpoint.shown["unpriced_calls"] == calls.count()
    assert run.events.filter(kind="model.called", data__cost_unknown=True).count() == calls.count()


def test_bad_budgets_are_refused_with_a_message(endpoint, demo, owner):
    for budget, message in [
        ({"soft_usd": "cheap"}, "must be a number"),
        ({"hard_tokens": 0}, "must be above zero"),
        ({"soft_usd": 2, "hard_usd": 1}, "is above the hard one"),
        ({"daily": 1}, "Unknown budget field"),
    ]:
        with pytest.raises(EngineError, match=message):
            start_run(owner, demo, "Add a farewell module", budget=budget)
    assert Run.objects.count() == 0


def test_the_pages_show_the_spend_the_limit_and_the_raise(endpoint, demo, owner):
    run = start_run(owner, demo, "Add a farewell module", budget={"soft_usd": "0.30"})
    [checkpoint] = pending(run)
    pages = Client()
    pages.force_login(owner)

    run_page = pages.get(f"/runs/{run.pk}/").text
    assert '<dd id="run-cost">$0.3300</dd>' in run_page
    assert "$0.3300 of $0.3000 (soft limit)" in run_page
    assert "spent $0.3300 of $0.3000 (soft limit)" in pages.get("/").text

    page = pages.get(f"/approvals/{checkpoint.pk}/").text
    assert "Continue past the budget?" in page
    assert "This run has spent $0.3300 of $0.3000: continue with a new limit, or stop." in page
    assert "Continue with the new limit" in page

    low = pages.post(f"/approvals/{checkpoint.pk}/budget/", {"soft_usd": "0.10"}, follow=True)
    assert "Not accepted: The new limit (0.10) must be above what the run has spent" in low.text
    checkpoint.refresh_from_db()
    assert checkpoint.status == Checkpoint.Status.PENDING

    done = pages.post(f"/approvals/{checkpoint.pk}/budget/", {"soft_usd": "0.90"})
    assert done.status_code == 302 and done["Location"] == f"/runs/{run.pk}/"
    assert "of $0.9000 (soft limit)" in pages.get(f"/runs/{run.pk}/").text


def test_the_api_takes_a_task_budget_and_refuses_a_bad_one(endpoint, demo, owner):
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")
    body = {"project": "demo", "title": "Add a farewell module", "budget": {"soft_usd": "x"}}
    response = api.post("/api/tasks", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The budget's soft_usd must be a number, not 'x'."}

    body["budget"] = {"hard_tokens": 400}
    response = api.post("/api/tasks", body, content_type="application/json")
    assert response.status_code == 201
    run = Run.objects.get(pk=response.json()["run"]["id"])
    assert RunBudget.objects.get(run=run).hard_tokens == 400
    assert run.status == Run.Status.FAILED and "hard budget" in run.error


def test_an_unpriced_run_page_says_cost_unknown(endpoint, demo, owner, settings):
    settings.ORCHESTRA_MODEL = "unpriced-model"
    run = start_run(owner, demo, "Add a farewell module", budget={"hard_tokens": 200})
    pages = Client()
    pages.force_login(owner)
    page = pages.get(f"/runs/{run.pk}/").text
    assert '<dd id="run-cost">cost unknown' in page
    assert "$0<" not in page.split('id="run-cost"')[1][:80]
