"""Providers as data, over real HTTP: two providers in one run (each endpoint receiving its own
key), a rate-limited provider falling back with the trace saying who answered, the "Test
connection" button, and keys that appear in no page, API response, event or log line."""

import json
import logging

import pytest
from django.test import Client

from agents.llm.demo import DemoModel
from agents.llm.providers import save_provider
from agents.models import AgentProfile, ModelCall, Provider
from approvals.models import Checkpoint
from orchestra.engine import decide_checkpoint, start_run
from orchestra.models import ApiToken, Event, Run
from tests.llm_server import ScriptedLLMServer, error, reply

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA_KEY = "sk-alpha-7Hq2x9SECRET"
BETA_KEY = "sk-beta-4Zp8w1SECRET"
PLANNING_ROLES = ("orchestrator", "reviewer")
# Rate-limit retries directed by the server: fast, and the SDK honours them.
FAST_RETRY = {"retry-after-ms": "10"}


def demo_over_http(body: dict):
    """Answer as the demo model would, but as a protocol server on the wire."""
    answer = DemoModel().complete(
        model=body["model"],
        messages=body["messages"],
        tools=body.get("tools") or [],
        temperature=body.get("temperature", 0),
    )
    return reply(answer.content, [(c.name, c.arguments, c.id) for c in answer.tool_calls])


def role_asking(body: dict) -> str:
    system = body["messages"][0]["content"]
    for role in ("orchestrator", "reviewer"):
        if system.startswith(f"You are the {role}"):
            return role
    return "specialist"


def approve_until_done(run: Run, approver) -> None:
    for _ in range(6):
        checkpoint = Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING).first()
        if checkpoint is None:
            return
        decide_checkpoint(approver, checkpoint, "approve")


@pytest.fixture
def real_models(settings):
    """No demo model; the environment's default endpoint is a server that must stay idle."""
    with ScriptedLLMServer() as default:
        settings.ORCHESTRA_USE_DEMO_MODEL = False
        settings.OPENAI_BASE_URL = default.base_url
        settings.OPENAI_API_KEY = "sk-default-unused"
        settings.ORCHESTRA_MODEL = "default-model"
        from agents.llm import reset_clients

        reset_clients()
        yield default
        reset_clients()


def use(team: str, roles, provider: Provider, model: str, **fallback) -> None:
    AgentProfile.objects.filter(team=team, role__in=roles).update(
        provider=provider, model=model, **fallback
    )


def test_two_providers_in_one_run_each_with_its_own_key(
    real_models, demo, owner, approver, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ORCHESTRA_TEST_BETA_KEY", BETA_KEY)
    with (
        ScriptedLLMServer(api_key=ALPHA_KEY, responder=demo_over_http) as alpha_server,
        ScriptedLLMServer(api_key=BETA_KEY, responder=demo_over_http) as beta_server,
    ):
        alpha = save_provider(
            owner, Provider(name="alpha", base_url=alpha_server.base_url), api_key=ALPHA_KEY
        )
        beta = Provider.objects.create(
            name="beta",
            base_url=beta_server.base_url,
            api_key_env="ORCHESTRA_TEST_BETA_KEY",
            stream=True,
            prices={"coder-model": [1000, 2000]},
        )
        use("software", PLANNING_ROLES, alpha, "planner-model")
        AgentProfile.objects.filter(team="software").exclude(role__in=PLANNING_ROLES).update(
            provider=beta, model="coder-model"
        )

        run = start_run(owner, demo, "Add a farewell module")
        approve_until_done(run, approver)
        run.refresh_from_db()
        assert run.status == Run.Status.COMPLETED, run.error

    assert real_models.requests == [], "no agent used the environment's default provider"
    assert alpha_server.requests and beta_server.requests
    assert {role_asking(b) for b in alpha_server.requests} == set(PLANNING_ROLES)
    assert {role_asking(b) for b in beta_server.requests} == {"specialist"}
    assert {b["model"] for b in alpha_server.requests} == {"planner-model"}
    assert {b["model"] for b in beta_server.requests} == {"coder-model"}
    assert all(b.get("stream") for b in beta_server.requests)
    assert not any(b.get("stream") for b in alpha_server.requests)
    assert {h["authorization"] for h in alpha_server.request_headers} == {f"Bearer {ALPHA_KEY}"}
    assert {h["authorization"] for h in beta_server.request_headers} == {f"Bearer {BETA_KEY}"}

    calls = ModelCall.objects.filter(run=run).select_related("agent_run")
    by_provider = {(c.provider, c.model, c.endpoint) for c in calls}
    assert by_provider == {
        ("alpha", "planner-model", alpha_server.base_url),
        ("beta", "coder-model", beta_server.base_url),
    }
    assert all(c.agent_run.role not in PLANNING_ROLES for c in calls if c.provider == "beta")
    beta_call = next(c for c in calls if c.provider == "beta")
    expected = (beta_call.input_tokens * 1000 + beta_call.output_tokens * 2000) / 1_000_000
    assert float(beta_call.cost_usd) == pytest.approx(expected), "priced from beta's table"

    assert_no_key_anywhere(run, owner, [alpha, beta], caplog, [ALPHA_KEY, BETA_KEY])


def test_a_rate_limited_provider_falls_back_and_the_trace_says_who_answered(
    real_models, demo, owner, approver
):
    with (
        ScriptedLLMServer(responder=lambda body: error(429, headers=FAST_RETRY)) as busy_server,
        ScriptedLLMServer(responder=demo_over_http) as steady_server,
    ):
        busy = Provider.objects.create(name="busy", base_url=busy_server.base_url, max_retries=1)
        steady = Provider.objects.create(name="steady", base_url=steady_server.base_url)
        AgentProfile.objects.filter(team="software").update(
            provider=busy,
            model="busy-model",
            fallback_provider=steady,
            fallback_model="steady-model",
        )
        run = start_run(owner, demo, "Add a farewell module")
        approve_until_done(run, approver)
        run.refresh_from_db()
        assert run.status == Run.Status.COMPLETED, run.error

    calls = list(ModelCall.objects.filter(run=run))
    assert calls and {(c.provider, c.model) for c in calls} == {("steady", "steady-model")}
    assert all("busy/busy-model" in c.fallback_reason and "429" in c.fallback_reason for c in calls)
    # Every request reached the busy provider twice (one retry) before the fallback.
    assert len(busy_server.requests) == 2 * len(steady_server.requests) == 2 * len(calls)
    assert {b["model"] for b in steady_server.requests} == {"steady-model"}
    event = Event.objects.filter(run=run, kind="model.called").first()
    assert (event.data["provider"], event.data["model"]) == ("steady", "steady-model")

    client = Client()
    client.force_login(owner)
    page = client.get(f"/runs/{run.pk}/calls/{calls[0].pk}/").text
    assert "steady-model from provider steady" in page
    assert "answered by the fallback after the first choice failed" in page


def test_the_connection_test_shows_the_answer_or_the_exact_error(db, owner, viewer):
    with ScriptedLLMServer(api_key=ALPHA_KEY) as server:
        provider = save_provider(
            owner, Provider(name="alpha", base_url=server.base_url), api_key=ALPHA_KEY
        )
        server.script(reply("pong", input_tokens=9, output_tokens=1))
        admin = Client()
        admin.force_login(owner)
        page = admin.post(f"/providers/{provider.pk}/test/", {"model": "probe-model"}).text
        assert "Connected: probe-model answered in" in page
        assert "&#x27;pong&#x27; (9 + 1 tokens, usage reported)" in page
        assert server.requests[-1]["model"] == "probe-model"

        wrong = save_provider(owner, provider, api_key="sk-wrong-key")
        page = admin.post(f"/providers/{wrong.pk}/test/", {"model": "probe-model"}).text
        assert "Failed: Model endpoint" in page and "answered HTTP 401" in page
        assert "Incorrect API key provided: [the key]." in page
        assert "sk-wrong-key" not in page

        missing = admin.post(f"/providers/{provider.pk}/test/", {"model": ""})
        assert missing.status_code == 400 and "This field is required." in missing.text

    outsider = Client()
    outsider.force_login(viewer)
    refused = outsider.get("/providers/")
    assert refused.status_code == 403
    assert "Only a project admin may see and change model providers." in refused.text


def test_bad_provider_input_is_refused_with_a_message(db, owner):
    admin = Client()
    admin.force_login(owner)
    form = {
        "name": "local",
        "kind": "openai-compatible",
        "base_url": "http://127.0.0.1:11434/v1",
        "default_headers": "{}",
        "timeout": "60",
        "max_retries": "1",
        "prices": '{"llama3": [0.1]}',
        "system_role": "system",
    }
    response = admin.post("/providers/", form)
    assert response.status_code == 400
    assert "The price of llama3 must be two non-negative numbers" in response.text
    assert not Provider.objects.exists()

    # A key no ciphertext holds by chance (a two-letter one turned up in one of forty).
    key = "sk-local-provider-key"
    response = admin.post("/providers/", {**form, "prices": '{"llama3": [0, 0]}', "api_key": key})
    assert response.status_code == 302
    stored = Provider.objects.get(name="local")
    assert stored.api_key_encrypted and key not in stored.api_key_encrypted


def assert_no_key_anywhere(run, owner, providers, caplog, keys) -> None:
    """Pages, API responses, events, stored rows and log lines: none holds a key."""
    pages = Client()
    pages.force_login(owner)
    owner.is_staff = owner.is_superuser = True
    owner.save(update_fields=["is_staff", "is_superuser"])
    paths = [
        "/",
        "/providers/",
        f"/runs/{run.pk}/",
        f"/runs/{run.pk}/trace/",
        *[f"/providers/{p.pk}/" for p in providers],
        *[f"/admin/agents/provider/{p.pk}/change/" for p in providers],
        *[f"/runs/{run.pk}/calls/{c}/" for c in run.model_calls.values_list("pk", flat=True)],
        *[f"/runs/{run.pk}/steps/{s}/" for s in run.steps.values_list("key", flat=True)],
    ]
    seen = {path: pages.get(path) for path in paths}
    assert all(r.status_code == 200 for r in seen.values()), {
        p: r.status_code for p, r in seen.items() if r.status_code != 200
    }
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(owner)}")
    for path in [f"/api/runs/{run.pk}", f"/api/runs/{run.pk}/events", "/api/projects"]:
        seen[path] = api.get(path)
        assert seen[path].status_code == 200, path
    texts = {path: r.content.decode() for path, r in seen.items()}
    texts["events"] = json.dumps(list(Event.objects.filter(run=run).values("data")))
    texts["model calls"] = json.dumps(list(ModelCall.objects.filter(run=run).values()), default=str)
    texts["providers"] = json.dumps(list(Provider.objects.values()), default=str)
    texts["logs"] = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert len(caplog.records) > 10, "the run logged (at DEBUG) what it did"
    for key in keys:
        leaks = [where for where, text in texts.items() if key in text]
        assert leaks == [], f"the key appears in {leaks}"
