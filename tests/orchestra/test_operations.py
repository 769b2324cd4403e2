"""A run operated by hand, through the real engine with a scripted model: paused while a
step is mid-call and resumed, a failed step retried, a run forked at a step, a report sent
back by a person."""

import pytest
from django.test import Client

from agents.llm import override_client
from agents.models import AgentRun, ModelCall
from orchestra.engine import pause_run, resume_run, start_run
from orchestra.models import ApiToken, Run, Step
from tests.scripted import ScriptedModel, call, role_of, text_reply, tool_reply

pytestmark = pytest.mark.django_db(transaction=True)

BRIEF = {"objective": "x", "expected_output": "y", "acceptance_criteria": ["z"]}
PLAN = {
    "steps": [
        {"key": "research", "title": "Research", "agent": "researcher", "brief": BRIEF},
        {"key": "notes", "title": "Notes", "agent": "researcher", "brief": BRIEF},
        {
            "key": "implement",
            "title": "Implement",
            "agent": "coder",
            "depends_on": ["research", "notes"],
            "brief": {**BRIEF, "objective": "Write greeting.py"},
        },
    ]
}


def step_of(messages) -> str:
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    return first_user.split("Step: ", 1)[1].split(" ", 1)[0] if "Step: " in first_user else ""


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user)}")


def kinds_after(run: Run, seq: int) -> list[str]:
    return list(run.events.filter(seq__gt=seq).order_by("seq").values_list("kind", flat=True))


def test_pause_parks_a_step_mid_call_and_resume_carries_it_on_to_completion(demo, owner, operator):
    """The operator pauses while `research`'s model call is in flight: the call's answer is
    kept and its tool call answered, then the step parks at the turn boundary; `notes`, ready
    but not started, does not start; nothing is dispatched. Resume carries `research` on in
    the same conversation and the run completes."""

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", PLAN, "plan"))
        if role_of(messages) != "specialist":
            return None
        key = step_of(messages)
        if key == "research" and len(messages) == 2:
            # Mid-call: the model has the request; a person pauses the run now.
            pause_run(operator, Run.objects.get(task__title="Pause me"))
            return tool_reply(call("list_files", {"path": "."}, "look"))
        return text_reply(f"{key} done")

    model = ScriptedModel(answer)
    with override_client(model):
        run = start_run(owner, demo, "Pause me")
        run.refresh_from_db()
        assert run.is_paused and run.paused_by == "oscar"
        research = run.steps.get(key="research")
        assert research.status == Step.Status.PAUSED
        agent_run = research.agent_runs.get(purpose=AgentRun.Purpose.STEP)
        assert agent_run.status == AgentRun.Status.PAUSED
        # The call in flight finished and was recorded; its tool call was answered; no
        # further call was made for the step.
        assert ModelCall.objects.filter(agent_run=agent_run).count() == 1
        assert [m["role"] for m in agent_run.messages] == ["system", "user", "assistant", "tool"]
        notes = run.steps.get(key="notes")
        assert notes.status == Step.Status.READY and notes.attempts == 0
        assert not notes.agent_runs.exists()
        assert run.steps.get(key="implement").status == Step.Status.PENDING
        paused = run.events.get(kind="run.paused")
        assert paused.actor == "oscar" and paused.data["running"] == ["research"]
        after_pause = kinds_after(run, paused.seq)
        assert "step.dispatched" not in after_pause and "step.started" not in after_pause
        assert "step.paused" in after_pause
        calls_while_paused = len(model.requests)

        resumed = resume_run(operator, run)
    assert not resumed.is_paused
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert len(model.requests) > calls_while_paused
    agent_run.refresh_from_db()
    # Carried on in the same attempt and conversation, not started again.
    assert agent_run.status == AgentRun.Status.COMPLETED
    assert run.steps.get(key="research").attempts == 1
    assert [m["role"] for m in agent_run.messages][:5] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    event = run.events.get(kind="run.resumed")
    assert event.actor == "oscar" and set(event.data["steps"]) == {"research", "notes"}
    assert run.events.filter(kind="step.resumed", step__key="research").exists()


def test_pause_and_resume_over_the_api_with_their_refusals(demo, owner, operator, viewer):
    run = start_run(owner, demo, "Operate over the API")  # waits at its first checkpoint
    path = f"/api/runs/{run.pk}"
    response = api(viewer).post(f"{path}/pause")
    assert response.status_code == 403, response.json()
    response = api(operator).post(f"{path}/resume")
    assert response.status_code == 409
    assert response.json()["detail"] == "The run is not paused."
    response = api(operator).post(f"{path}/pause")
    assert response.status_code == 200, response.json()
    assert response.json()["paused_by"] == "oscar"
    response = api(operator).post(f"{path}/pause")
    assert response.status_code == 409 and "already paused" in response.json()["detail"]
    response = api(operator).post(f"{path}/resume")
    assert response.status_code == 200 and response.json()["paused_at"] is None
    response = api(operator).post("/api/runs/999999/pause")
    assert response.status_code == 404


def test_the_run_page_pauses_and_resumes_with_buttons(demo, owner, operator, viewer):
    run = start_run(owner, demo, "Buttons")
    page = f"/runs/{run.pk}/"
    browser = Client()
    browser.force_login(viewer)
    assert ">Pause</button>" not in browser.get(page).content.decode()
    browser.force_login(operator)
    assert ">Pause</button>" in browser.get(page).content.decode()
    response = browser.post(f"/runs/{run.pk}/pause/", follow=True)
    html = response.content.decode()
    assert "The run is paused" in html and "Paused by oscar" in html
    assert ">Resume</button>" in html and ">Pause</button>" not in html
    html = browser.post(f"/runs/{run.pk}/pause/", follow=True).content.decode()
    assert "The run is already paused (by oscar)." in html
    html = browser.post(f"/runs/{run.pk}/resume/", follow=True).content.decode()
    assert "The run was resumed." in html and ">Pause</button>" in html


def test_a_retried_failed_step_completes_its_run(demo, owner, operator, viewer):
    """`implement` fails on both its attempts and the run fails; the operator retries it over
    the API: one fresh attempt, the run running again, then completed, with the steps that
    had completed left as they were."""
    broken = {"implement": True}

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", PLAN, "plan"))
        if role_of(messages) != "specialist":
            return None
        key = step_of(messages)
        return text_reply("" if broken.get(key) else f"{key} done")

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Retry me")
        run.refresh_from_db()
        assert run.status == Run.Status.FAILED
        implement = run.steps.get(key="implement")
        assert implement.status == Step.Status.FAILED and implement.attempts == 2
        research_calls = ModelCall.objects.filter(agent_run__step__key="research").count()
        path = f"/api/runs/{run.pk}/steps"
        assert api(viewer).post(f"{path}/implement/retry").status_code == 403
        response = api(operator).post(f"{path}/research/retry")
        assert response.status_code == 409
        assert response.json()["detail"] == "Step 'research' did not fail (it is done)."
        response = api(operator).post(f"{path}/nothing/retry")
        assert response.status_code == 404 and "no step 'nothing'" in response.json()["detail"]

        broken["implement"] = False
        response = api(operator).post(f"{path}/implement/retry")
    assert response.status_code == 200, response.json()
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert run.error == "" and run.report
    implement.refresh_from_db()
    assert implement.status == Step.Status.DONE and implement.attempts == 3
    assert implement.output == "implement done"
    assert ModelCall.objects.filter(agent_run__step__key="research").count() == research_calls
    retried = run.events.get(kind="run.retried")
    assert retried.actor == "oscar" and "empty reply" in retried.data["error"]
    assert run.events.filter(kind="run.failed").count() == 1
    # Done now: nothing to retry.
    response = api(operator).post(f"{path}/implement/retry")
    assert response.status_code == 409 and "this run is completed" in response.json()["detail"]


def test_the_run_page_offers_retry_on_a_failed_step(demo, owner, operator):
    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", PLAN, "plan"))
        if role_of(messages) == "specialist" and step_of(messages) == "notes":
            return text_reply("")
        return None

    with override_client(ScriptedModel(answer)):
        run = start_run(owner, demo, "Retry button")
    browser = Client()
    browser.force_login(operator)
    html = browser.get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/runs/{run.pk}/steps/notes/retry/"' in html
    assert "steps/research/retry" not in html


FILES = {"research": "notes.md", "implement": "greeting.py", "docs": "docs.md"}
FORK_PLAN = {
    "steps": [
        {
            "key": "research",
            "title": "Research",
            "agent": "coder",
            "claims": ["notes.md"],
            "brief": BRIEF,
        },
        {
            "key": "implement",
            "title": "Implement",
            "agent": "coder",
            "depends_on": ["research"],
            "claims": ["greeting.py"],
            "brief": {**BRIEF, "objective": "Greet in English"},
        },
        {
            "key": "docs",
            "title": "Docs",
            "agent": "coder",
            "depends_on": ["research"],
            "claims": ["docs.md"],
            "brief": BRIEF,
        },
    ]
}


def writing_steps(messages, tools):
    """Each step writes its file (the implement step what its brief asks for), then ends."""
    if "submit_plan" in tools:
        return tool_reply(call("submit_plan", FORK_PLAN, "plan"))
    if role_of(messages) == "reviewer":
        # `docs` goes back once, so in the parent it merges after `implement`.
        first = "Review the output of step docs" in messages[1]["content"]
        verdict = {
            "verdict": "revise" if first and "attempt 1" in messages[1]["content"] else "pass",
            "feedback": "Say more.",
        }
        return tool_reply(call("submit_verdict", verdict, "verdict"))
    if role_of(messages) != "specialist":
        return None
    key = step_of(messages)
    if any(m["role"] == "tool" for m in messages):
        return text_reply(f"{key} done")
    content = f"{key}\n"
    if key == "implement":
        french = "Greet in French" in messages[1]["content"]
        content = "print('Bonjour')\n" if french else "print('Hello')\n"
    return tool_reply(call("write_file", {"path": FILES[key], "content": content}, "write"))


def test_a_fork_at_implement_reuses_research_without_a_model_call_and_completes(
    demo, owner, operator
):
    from agents import workspace as git
    from orchestra.engine.workspaces import repository_for

    model = ScriptedModel(writing_steps)
    with override_client(model):
        parent = start_run(owner, demo, "Greet someone")
        parent.refresh_from_db()
        assert parent.status == Run.Status.COMPLETED, parent.error
        before = len(model.requests)
        response = api(operator).post(
            f"/api/runs/{parent.pk}/fork",
            {"step": "implement", "brief": {"objective": "Greet in French"}, "model": "gpt-4.1"},
            content_type="application/json",
        )
    assert response.status_code == 201, response.json()
    assert response.json()["parent"] == parent.pk
    fork = Run.objects.get(pk=response.json()["id"])
    assert fork.parent == parent and fork.forked_at_step == "implement"
    assert fork.task_id == parent.task_id
    assert fork.status == Run.Status.COMPLETED, fork.error

    asked = [step_of(r) for r in model.requests[before:] if role_of(r) == "specialist"]
    assert "research" not in asked and "docs" not in asked and "implement" in asked
    research, docs = fork.steps.get(key="research"), fork.steps.get(key="docs")
    parent_research = parent.steps.get(key="research")
    assert research.reused_from == parent_research and docs.reused_from is not None
    assert not research.agent_runs.exists() and not docs.agent_runs.exists()
    assert research.output == parent_research.output
    # The fork's branch started from the parent's after research's merge, so that merged
    # commit is the fork's own; docs (merged after implement in the parent) merged again.
    assert research.merged_commit == parent_research.merged_commit
    assert docs.merged_commit != parent.steps.get(key="docs").merged_commit
    implement = fork.steps.get(key="implement")
    assert implement.brief["objective"] == "Greet in French" and implement.reused_from is None
    assert implement.attempts >= 1 and implement.status == Step.Status.DONE
    # The edited model is the step's agent's; its reviewer keeps its own.
    models = dict(implement.agent_runs.values_list("purpose", "model").distinct())
    assert models["step"] == "gpt-4.1" and models["review"] != "gpt-4.1"
    repo = repository_for(demo)
    head = git.head_commit(repo, fork.branch)
    assert git.file_at(repo, head, "greeting.py") == "print('Bonjour')\n"
    assert git.file_at(repo, head, "notes.md") == "research\n"
    assert git.file_at(repo, head, "docs.md") == "docs\n"
    parent_head = git.head_commit(repo, parent.branch)
    assert git.file_at(repo, parent_head, "greeting.py") == "print('Hello')\n"
    diff = {change["field"]: change for change in fork.plans.get().diff}
    assert diff["brief"]["after"]["objective"] == "Greet in French"
    assert diff["model"]["after"] == "gpt-4.1" and set(diff) == {"brief", "model"}
    assert parent.events.get(kind="run.forked").data == {"fork": fork.pk, "step": "implement"}
    reused = fork.events.filter(kind="step.reused").values_list("step__key", flat=True)
    assert set(reused) == {"research", "docs"}


def test_fork_refusals(demo, owner, operator):
    running = start_run(owner, demo, "Still waiting")  # at its first checkpoint
    client = api(operator)

    def fork(run_id, body):
        response = client.post(f"/api/runs/{run_id}/fork", body, content_type="application/json")
        return response.status_code, response.json()["detail"]

    status, detail = fork(running.pk, {"step": "implement"})
    assert status == 409 and "completed, failed or stopped run can be forked" in detail
    with override_client(ScriptedModel(writing_steps)):
        done = start_run(owner, demo, "Done")
    assert fork(done.pk, {"step": "nothing"}) == (404, f"Run {done.pk} has no step 'nothing'.")
    status, detail = fork(done.pk, {"step": "implement", "agent": "wizard"})
    assert status == 400 and "unknown agent 'wizard'" in detail
    status, detail = fork(done.pk, {"step": "implement", "brief": "  "})
    assert (status, detail) == (400, "The edited brief is empty.")
    status, detail = fork(done.pk, {"step": "implement", "model": "gpt 4"})
    assert status == 400 and "no spaces" in detail
    assert not Run.objects.filter(parent=done).exists()


def test_the_run_page_forks_with_a_form(demo, owner, operator):
    with override_client(ScriptedModel(writing_steps)):
        parent = start_run(owner, demo, "Fork from the page")
        browser = Client()
        browser.force_login(operator)
        html = browser.get(f"/runs/{parent.pk}/").content.decode()
        assert ">Fork</button>" in html and '<option value="implement">' in html
        html = browser.post(
            f"/runs/{parent.pk}/fork/", {"step": "implement", "agent": "wizard"}, follow=True
        ).content.decode()
        assert "unknown agent &#x27;wizard&#x27;" in html
        response = browser.post(
            f"/runs/{parent.pk}/fork/",
            {"step": "docs", "objective": "Document the French greeting"},
            follow=True,
        )
    fork = Run.objects.get(parent=parent)
    assert response.redirect_chain[-1][0] == f"/runs/{fork.pk}/"
    html = response.content.decode()
    assert f"Forked from run #{parent.pk} at step docs." in html
    assert f'forked from <a href="/runs/{parent.pk}/">run #{parent.pk}</a> at step docs' in html
    assert fork.steps.get(key="docs").brief["objective"] == "Document the French greeting"
    assert fork.steps.get(key="implement").reused_from is not None
    assert html.count('title="Taken as it was from the parent run') == 2  # research, implement
    # A reused step has no attempt of its own: its page and the fork's trace still show.
    assert browser.get(f"/runs/{fork.pk}/steps/research/").status_code == 200
    assert browser.get(f"/runs/{fork.pk}/trace/").status_code == 200
    fork.refresh_from_db()
    diff = browser.get(f"/runs/{fork.pk}/diff/?from={fork.base_commit}&to={fork.head_commit}")
    assert diff.status_code == 200 and "docs.md" in diff.content.decode()


def test_report_approval_sends_the_report_back_once_with_a_comment_then_completes(
    demo, owner, approver
):
    """With report approval on, the written report waits at a "report" checkpoint with the
    run still reporting; sent back with a comment, the orchestrator writes it once more with
    the comment in hand; approved, it is published and the run completes."""
    from approvals.errors import InvalidDecision
    from approvals.models import Checkpoint
    from orchestra.engine import decide_checkpoint

    demo.requires_report_approval = True
    demo.save(update_fields=["requires_report_approval"])

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", PLAN, "plan"))
        if messages[1]["content"].startswith("Write the final report"):
            if "sent it back with this comment" in messages[1]["content"]:
                return text_reply("Report v2: research, notes and implement, with sources.")
            return text_reply("Report v1.")
        if role_of(messages) == "specialist":
            return text_reply(f"{step_of(messages)} done")
        return None

    model = ScriptedModel(answer)
    with override_client(model):
        run = start_run(owner, demo, "Report for approval")
        run.refresh_from_db()
        assert run.status == Run.Status.REPORTING and run.report == "Report v1."
        checkpoint = Checkpoint.objects.get(run=run, kind=Checkpoint.Kind.REPORT)
        assert checkpoint.status == "pending" and checkpoint.shown["report"] == "Report v1."
        assert not run.events.filter(kind="run.completed").exists()
        browser = Client()
        browser.force_login(approver)
        page = browser.get(f"/approvals/{checkpoint.pk}/").content.decode()
        assert (
            "Approve the report" in page
            and '<pre class="report-body" id="shown-report">Report v1.' in page
        )
        with pytest.raises(InvalidDecision, match="needs a comment"):
            decide_checkpoint(approver, checkpoint, "reject")
        decide_checkpoint(approver, checkpoint, "reject", "Name the sources.")

        run.refresh_from_db()
        assert run.status == Run.Status.REPORTING
        writes = [r for r in model.requests if r[1]["content"].startswith("Write the final")]
        assert len(writes) == 2  # written once more, not looping
        assert "ada sent it back with this comment:\nName the sources." in writes[1][1]["content"]
        assert "Your previous report:\n\nReport v1." in writes[1][1]["content"]
        second = Checkpoint.objects.get(run=run, kind=Checkpoint.Kind.REPORT, status="pending")
        assert second.shown["round"] == 2 and second.shown["report"].startswith("Report v2")
        decide_checkpoint(approver, second, "approve")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and run.finished_at
    assert run.report.startswith("Report v2")
    kinds = list(run.events.order_by("seq").values_list("kind", flat=True))
    assert kinds.count("report.written") == 2 and kinds.count("report.sent_back") == 1
    assert kinds[-2:] == ["report.published", "run.completed"]
    assert AgentRun.objects.filter(run=run, purpose=AgentRun.Purpose.REPORT).count() == 2


def test_a_fork_gets_the_project_run_limits_and_is_refused_past_its_budget(demo, owner, operator):
    from decimal import Decimal

    from agents.models import ProjectBudget, RunBudget

    with override_client(ScriptedModel(writing_steps)):
        parent = start_run(owner, demo, "Within budget")
        budget = ProjectBudget.objects.create(project=demo, run_hard_usd=Decimal("5"))
        response = api(operator).post(
            f"/api/runs/{parent.pk}/fork", {"step": "docs"}, content_type="application/json"
        )
        assert response.status_code == 201, response.json()
        assert RunBudget.objects.get(run_id=response.json()["id"]).hard_usd == Decimal("5")
        budget.month_tokens = 100  # already spent by the two runs
        budget.save(update_fields=["month_tokens"])
        response = api(operator).post(
            f"/api/runs/{parent.pk}/fork", {"step": "docs"}, content_type="application/json"
        )
    assert response.status_code == 409 and "monthly budget" in response.json()["detail"]
    assert Run.objects.filter(parent=parent).count() == 1


def test_a_step_stopped_at_a_checkpoint_is_retried_and_asks_again(demo, owner, operator, approver):
    from approvals.models import Checkpoint
    from orchestra.engine import decide_checkpoint

    run = start_run(owner, demo, "Stop then retry")
    checkpoint = Checkpoint.objects.get(run=run, status="pending")
    decide_checkpoint(approver, checkpoint, "reject_stop", "Not this command.")
    run.refresh_from_db()
    assert run.status == Run.Status.STOPPED
    step = Step.objects.get(pk=checkpoint.step_id)
    assert step.status == Step.Status.FAILED
    html = Client()
    html.force_login(operator)
    assert f"steps/{step.key}/retry/" in html.get(f"/runs/{run.pk}/").content.decode()

    response = api(operator).post(f"/api/runs/{run.pk}/steps/{step.key}/retry")
    assert response.status_code == 200, response.json()
    run.refresh_from_db()
    assert not run.is_terminal and run.stopped_by is None and run.error == ""
    step.refresh_from_db()
    assert step.attempts == 2 and step.status == Step.Status.AWAITING_APPROVAL
    again = Checkpoint.objects.get(run=run, status="pending")
    assert again.pk != checkpoint.pk and again.step_id == step.pk


def test_the_cli_pauses_resumes_retries_and_forks(demo, owner, operator, viewer, capsys):
    from orchestra import cli

    run = start_run(owner, demo, "From a terminal")  # waits at its first checkpoint
    assert cli.main(["pause", str(run.pk), "--user", "vera"]) == 2
    assert "may not" in capsys.readouterr().err
    assert cli.main(["pause", str(run.pk), "--user", "oscar"]) == 0
    assert f"Run {run.pk} is now paused." in capsys.readouterr().out
    assert cli.main(["pause", str(run.pk), "--user", "oscar"]) == 2
    assert "already paused (by oscar)" in capsys.readouterr().err
    assert cli.main(["resume", str(run.pk), "--user", "oscar"]) == 0
    assert Run.objects.get(pk=run.pk).paused_at is None
    assert cli.main(["retry", str(run.pk), "verify", "--user", "oscar"]) == 2
    assert "failed or stopped run" in capsys.readouterr().err
    with override_client(ScriptedModel(writing_steps)):
        done = start_run(owner, demo, "Done before")
        capsys.readouterr()
        argv = ["fork", str(done.pk), "implement", "--objective", "Greet in French"]
        assert cli.main([*argv, "--user", "oscar"]) == 0
    fork = Run.objects.get(parent=done)
    out = capsys.readouterr().out
    assert f"Run {fork.pk} forked from run {done.pk} at step implement." in out
    assert f"Run {fork.pk} is now completed." in out
    assert cli.main(["fork", "999999", "implement"]) == 2
    assert "no run 999999 that admin can see" in capsys.readouterr().err
