"""Runs on git: a branch per run, a worktree per step, the merge queue and its conflicts,
claims keeping steps apart, tools confined to the worktree, checks before review, and a
deploy that ships the integrated commit only once a human approved it."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from agents import workspace as git
from agents.llm import override_client
from agents.llm.demo import GREETING_TESTS, GREETING_V2
from agents.models import AgentRun, ToolCall
from agents.sandbox import sandbox_status
from agents.tools.registry import REGISTRY
from agents.workspace.parking import known_clean, parked_dir
from approvals.models import Checkpoint, PolicyRule
from orchestra.engine import decide_checkpoint, start_run
from orchestra.engine.host import EngineHost
from orchestra.engine.workspaces import releases_for, repository_for
from orchestra.models import Plan, Project, Run, Step
from tests.scripted import ScriptedModel, call, role_of, text_reply, tool_reply

pytestmark = pytest.mark.django_db(transaction=True)

STEP_KEY = re.compile(r"^Step: (?P<key>[a-z0-9_-]+) — ")
DEMO_STEPS = ["research", "implement", "tests", "verify", "deploy"]


def spec(key: str, **extra) -> dict:
    return {
        "key": key,
        "title": f"Step {key}",
        "agent": "coder",
        "brief": {
            "objective": f"Do {key}.",
            "expected_output": "A summary.",
            "acceptance_criteria": ["It is done"],
        },
        **extra,
    }


def scripted_run(plan: dict, agents: dict) -> ScriptedModel:
    """The orchestrator submits `plan`; the agent of step `key` plays `agents[key](message,
    results)`, which returns the next tool call as (name, arguments) or the final text.
    Reviewers and the report are the demo model's (it passes every step but `implement`)."""

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", plan, "call_plan"))
        if role_of(messages) != "specialist":
            return None
        message = next(m["content"] for m in messages if m["role"] == "user")
        key = STEP_KEY.match(message)["key"]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        move = agents[key](message, results)
        if isinstance(move, str):
            return text_reply(move)
        name, arguments = move
        return tool_reply(call(name, arguments, f"call_{key}_{len(results) + 1}"))

    return ScriptedModel(answer)


def writes_then_answers(path: str, content: str, answer: str):
    """An agent (see `scripted_run`) that writes `path` with the file tool, then answers."""

    def agent(message, results):
        if not results:
            return "write_file", {"path": path, "content": content}
        return answer

    return agent


def reads_then_writes(read: str, write: str, content, answer: str):
    """An agent (see `scripted_run`) that reads `read` with the file tool, writes `write`
    with `content(what the read returned)` (the tool's error when there was no such file),
    then answers."""

    def agent(message, results):
        if not results:
            return "read_file", {"path": read}
        if len(results) == 1:
            return "write_file", {"path": write, "content": content(results[0])}
        return answer

    return agent


def pending(run: Run) -> Checkpoint:
    [checkpoint] = Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING)
    return checkpoint


def releases(project) -> list[str]:
    folder = releases_for(project) / "demo"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("release-"))


def allow_every_write(project) -> None:
    PolicyRule.objects.create(project=project, position=0, tool="write_file", outcome="allow")


def steps_at_once(project, cap: int) -> None:
    project.concurrency_cap = cap
    project.save(update_fields=["concurrency_cap"])


def completed_run(owner, project, plan: dict, agents: dict, title: str) -> Run:
    """The run of `plan` by the scripted `agents`, to its end; it completed."""
    with override_client(scripted_run(plan, agents)):
        run = start_run(owner, project, title)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    return run


def commit_on_main(project, relative: str, text: str) -> None:
    repo = repository_for(project)
    (repo / relative).write_text(text)
    git.commit_all(repo, f"Add {relative}")


# --- the demo run ------------------------------------------------------------------------
def test_the_demo_run_merges_each_step_once_and_ships_the_integrated_commit(demo, owner, approver):
    repo = repository_for(demo)
    initial = git.head_commit(repo, "main")
    run = start_run(owner, demo, "Add a greeting module")
    assert pending(run).kind == Checkpoint.Kind.TOOL_CALL
    decide_checkpoint(approver, pending(run), "approve")
    assert pending(run).kind == Checkpoint.Kind.DEPLOY
    decide_checkpoint(approver, pending(run), "approve")

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    steps = {s.key: s for s in run.steps.all()}
    assert sorted(steps) == sorted(DEMO_STEPS)
    for step in steps.values():
        assert step.head_commit and step.merged_commit, step.key
        assert step.branch == f"orchestra/run-{run.pk}-steps/{step.key}"
    subjects = git.log_subjects(repo, run.branch)
    merges = [s for s in subjects if s.startswith("Merge step ")]
    assert sorted(merges) == sorted(f"Merge step {k}: {steps[k].title}" for k in DEMO_STEPS)
    assert run.head_commit == git.head_commit(repo, run.branch) == steps["deploy"].merged_commit

    assert git.file_at(repo, run.branch, "src/greeting.py") == GREETING_V2
    assert git.file_at(repo, run.branch, "tests/test_greeting.py") == GREETING_TESTS
    assert git.file_at(repo, run.branch, "notes/research.md").startswith("# Research")

    # The deploy shipped what was integrated when it ran: the run head its step started from.
    assert releases(demo) == ["release-0001"]
    release = releases_for(demo) / "demo" / "release-0001"
    shipped = json.loads((release / "RELEASE.json").read_text())
    assert shipped["commit"] == steps["deploy"].base_commit == steps["verify"].merged_commit
    assert (release / "src" / "greeting.py").read_text() == GREETING_V2

    assert git.head_commit(repo, "main") == initial == run.base_commit
    assert git.log_subjects(repo, "main") == [git.INITIAL_COMMIT_MESSAGE]


def test_nothing_is_deployed_before_the_deploy_is_approved(demo, owner, approver):
    run = start_run(owner, demo, "Ship only when approved")
    decide_checkpoint(approver, pending(run), "approve")
    deploy = pending(run)
    assert deploy.kind == Checkpoint.Kind.DEPLOY
    assert releases(demo) == []
    assert ToolCall.objects.get(run=run, tool="deploy").status == ToolCall.Status.AWAITING_APPROVAL
    assert not list((releases_for(demo) / ".receipts").glob("*.json"))

    decide_checkpoint(approver, deploy, "approve")
    assert releases(demo) == ["release-0001"]
    assert ToolCall.objects.get(run=run, tool="deploy").status == ToolCall.Status.SUCCEEDED


# --- the merge queue -----------------------------------------------------------------------
def test_a_merge_conflict_goes_back_to_the_agent_who_keeps_both_changes(demo, owner, approver):
    # Every write waits for a person: both steps start from the same base, and b's is
    # approved first, so b merges first (its reviewer's worker merges it at once) and a,
    # approved after, conflicts.
    PolicyRule.objects.create(
        project=demo, position=0, tool="write_file", outcome=PolicyRule.Outcome.REQUIRE_APPROVAL
    )
    commit_on_main(demo, "shared.txt", "header\nline: base\nfooter\n")
    resolved = "header\nline: from a\nline: from b\nfooter\n"
    seen_by_resolver: list[str] = []

    def writer(key):
        def play(message, results):
            if "conflicted" not in message:  # the first round: change the shared line
                if not results:
                    content = f"header\nline: from {key}\nfooter\n"
                    return "write_file", {"path": "shared.txt", "content": content}
                return f"{key} changed the line"
            if not results:
                return "read_file", {"path": "shared.txt"}
            if len(results) == 1:
                seen_by_resolver.append(results[0])
                return "write_file", {"path": "shared.txt", "content": resolved}
            return f"{key} kept both lines"

        return play

    def reader(message, results):
        return ("read_file", {"path": "shared.txt"}) if not results else results[0]

    plan = {"steps": [spec("a"), spec("b"), spec("c", depends_on=["a", "b"])]}
    agents = {"a": writer("a"), "b": writer("b"), "c": reader}
    with override_client(scripted_run(plan, agents)):
        run = start_run(owner, demo, "Both edit one line")
        first_writes = Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING)
        waiting = {checkpoint.step.key: checkpoint for checkpoint in first_writes}
        assert sorted(waiting) == ["a", "b"]
        decide_checkpoint(approver, waiting["b"], "approve")
        decide_checkpoint(approver, waiting["a"], "approve")
        decide_checkpoint(approver, pending(run), "approve")  # a's write that keeps both

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    [conflict] = run.events.filter(kind="merge.conflict")
    assert conflict.step.key == "a"
    assert conflict.data["files"] == ["shared.txt"]
    loser = conflict.step
    winner = run.steps.get(key="b" if loser.key == "a" else "a")
    assert loser.merge_rounds == 1 and winner.merge_rounds == 0
    assert "shared.txt" in loser.feedback
    assert "<<<<<<<" in loser.feedback and ">>>>>>>" in loser.feedback
    assert "line: from a" in loser.feedback and "line: from b" in loser.feedback
    revision = loser.agent_runs.get(purpose=AgentRun.Purpose.STEP, attempt=2)
    assert "<<<<<<<" in revision.messages[1]["content"]
    [read] = seen_by_resolver
    assert "<<<<<<<" in read and "line: from a" in read and "line: from b" in read

    verdicts = run.events.filter(kind="review.verdict", step=loser).order_by("seq")
    assert [(v.data["attempt"], v.data["verdict"]) for v in verdicts] == [(1, "pass"), (2, "pass")]
    merged = run.events.filter(kind="step.merged").order_by("seq")
    assert [e.step.key for e in merged] == [winner.key, loser.key, "c"]
    assert merged[0].seq < conflict.seq < merged[1].seq

    repo = repository_for(demo)
    assert git.file_at(repo, run.branch, "shared.txt") == resolved
    assert run.steps.get(key="c").output == resolved  # c started from both merged


def test_two_steps_claiming_one_file_run_one_after_the_other(demo, owner):
    first = writes_then_answers("shared.txt", "from a\n", "a wrote")

    second = reads_then_writes(
        "shared.txt",
        "shared.txt",
        lambda before: ("" if before.startswith("error:") else before) + "from b\n",
        "b appended",
    )

    plan = {
        "steps": [spec("a", claims=["shared.txt"]), spec("b", claims=["shared.txt"])],
    }
    run = completed_run(owner, demo, plan, {"a": first, "b": second}, "Same claim")
    plan_record = run.plans.get(status=Plan.Status.ACCEPTED)
    assert plan_record.added_orderings == [["a", "b", "shared.txt"]]
    a, b = run.steps.get(key="a"), run.steps.get(key="b")
    assert b.depends_on == ["a"]
    assert a.finished_at <= b.started_at  # the running intervals do not overlap
    assert b.base_commit == a.merged_commit  # b started from a's merged work
    a_merged = run.events.get(kind="step.merged", step=a)
    b_dispatched = run.events.get(kind="step.dispatched", step=b)
    assert a_merged.seq < b_dispatched.seq
    assert not run.events.filter(kind="merge.conflict").exists()
    assert run.events.filter(kind="step.merged").count() == 2
    repo = repository_for(demo)
    assert git.file_at(repo, run.branch, "shared.txt") == "from a\nfrom b\n"


def test_a_step_without_dependencies_starts_from_the_run_base(demo, owner):
    """One step at a time: b starts after a merged, yet from the run's base, as it would
    have with a free slot; what it sees does not depend on when a slot freed."""
    steps_at_once(demo, 1)
    seen = []

    def b_writes(read: str) -> str:
        seen.append(read)
        return "from b\n"

    b = reads_then_writes("a.txt", "b.txt", b_writes, "b wrote")

    plan = {"steps": [spec("a", claims=["a.txt"]), spec("b", claims=["b.txt"])]}
    agents = {"a": writes_then_answers("a.txt", "from a\n", "a wrote"), "b": b}
    run = completed_run(owner, demo, plan, agents, "Independent")
    a, b_step = run.steps.get(key="a"), run.steps.get(key="b")
    assert a.finished_at <= b_step.started_at
    assert a.merged_commit != run.base_commit
    assert b_step.base_commit == run.base_commit
    assert seen[0].startswith("error:")  # a.txt is not in b's worktree
    repo = repository_for(demo)
    assert git.file_at(repo, run.branch, "a.txt") == "from a\n"
    assert git.file_at(repo, run.branch, "b.txt") == "from b\n"
    assert not run.events.filter(kind="merge.conflict").exists()


@pytest.mark.parametrize(("setting", "parked"), [(1, 3), (5, 3), (0, 0)])
def test_a_repository_keeps_as_many_worktrees_parked_as_its_project_runs_at_once(
    demo, owner, approver, settings, setting, parked
):
    """Three steps at once (each write waits for a person, so all three have their worktree):
    the shelf keeps all three, for the next plan as wide to take instead of checking the
    repository out again, though the setting allows fewer (or as many or more); 0 still
    turns parking off."""
    settings.ORCHESTRA_PARKED_WORKTREES = setting
    steps_at_once(demo, 3)
    PolicyRule.objects.create(
        project=demo, position=0, tool="write_file", outcome=PolicyRule.Outcome.REQUIRE_APPROVAL
    )
    keys = ["a", "b", "c"]
    plan = {"steps": [spec(key, claims=[f"{key}.txt"]) for key in keys]}
    agents = {key: writes_then_answers(f"{key}.txt", key, f"{key} wrote") for key in keys}
    with override_client(scripted_run(plan, agents)):
        run = start_run(owner, demo, "Three at once")
        waiting = list(Checkpoint.objects.filter(run=run, status=Checkpoint.Status.PENDING))
        assert len(waiting) == 3
        for checkpoint in waiting:
            decide_checkpoint(approver, checkpoint, "approve")

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    shelf = parked_dir(repository_for(demo))
    assert len(os.listdir(shelf) if shelf.is_dir() else []) == parked
    assert not any(Path(step.worktree).exists() for step in run.steps.all())


def test_a_step_without_dependencies_whose_claim_was_merged_starts_from_the_run_head(demo, owner):
    """a claimed nothing but wrote notes.txt; b, claiming it, waits for a's merge and then
    starts from the run head, which holds a's notes.txt: no conflict round."""
    allow_every_write(demo)
    steps_at_once(demo, 1)

    b = reads_then_writes("notes.txt", "notes.txt", lambda read: read + "from b\n", "b appended")

    plan = {"steps": [spec("a"), spec("b", claims=["notes.txt"])]}
    agents = {"a": writes_then_answers("notes.txt", "from a\n", "a wrote"), "b": b}
    run = completed_run(owner, demo, plan, agents, "Claimed after it was written")
    a, b_step = run.steps.get(key="a"), run.steps.get(key="b")
    assert b_step.base_commit == a.merged_commit != run.base_commit
    assert not run.events.filter(kind="merge.conflict").exists()
    repo = repository_for(demo)
    assert git.file_at(repo, run.branch, "notes.txt") == "from a\nfrom b\n"


# --- confinement ---------------------------------------------------------------------------
def test_paths_leading_out_of_the_worktree_are_refused(demo, owner, tmp_path):
    # Even with every write allowed by the policy, the tools themselves refuse.
    allow_every_write(demo)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    link_target = tmp_path / "link-target.txt"
    repository_for(demo)  # the workspaces folder, inside tmp_path, exists before the run
    before = sorted(p.name for p in tmp_path.iterdir())
    attempts = [
        ("write_file", "../outside.txt", "'..' would lead out of the workspace"),
        ("read_file", "../../../../outside/secret.txt", "'..' would lead out of the workspace"),
        ("write_file", str(tmp_path / "absolute.txt"), "it is absolute"),
        ("read_file", str(outside / "secret.txt"), "it is absolute"),
        ("write_file", ".git/config", "'.git' holds the repository's own data"),
        ("read_file", ".git/config", "'.git' holds the repository's own data"),
        ("write_file", "linked/planted.txt", "resolves outside the workspace"),
        ("read_file", "linked/secret.txt", "resolves outside the workspace"),
        ("write_file", "escape.txt", "resolves outside the workspace"),
    ]
    worktree_files: dict[str, str] = {}

    def escaper(message, results):
        if not results:
            # The worktree exists once the step started: plant the links now.
            worktree = Path(Step.objects.get(key="escape").worktree)
            (worktree / "linked").symlink_to(outside, target_is_directory=True)
            (worktree / "escape.txt").symlink_to(link_target)
            worktree_files[".git"] = (worktree / ".git").read_text()
            worktree_files["path"] = str(worktree)
        if len(results) < len(attempts):
            tool, path, _ = attempts[len(results)]
            arguments = {"path": path}
            if tool == "write_file":
                arguments["content"] = "planted"
            return tool, arguments
        return "every path was refused"

    plan = {"steps": [spec("escape", claims=["inside.txt"])]}
    with override_client(scripted_run(plan, {"escape": escaper})):
        run = start_run(owner, demo, "Escape the worktree")

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    calls = list(
        ToolCall.objects.filter(run=run, agent_run__purpose=AgentRun.Purpose.STEP).order_by("pk")
    )
    assert [(c.tool, c.arguments["path"]) for c in calls] == [(t, p) for t, p, _ in attempts]
    for record, (_, path, reason) in zip(calls, attempts, strict=True):
        assert record.status == ToolCall.Status.FAILED, path
        assert record.result.startswith(f"error: path {path!r} refused"), record.result
        assert reason in record.result, record.result
        assert "top secret" not in record.result
        event = run.events.get(kind="tool.called", data__tool_call=record.pk)
        assert event.data["status"] == "failed" and reason in event.data["result"]

    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new beside the test
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not link_target.exists()
    worktree = Path(worktree_files["path"])
    assert not (worktree.parent / "outside.txt").exists()
    assert not worktree.exists()  # a completed run's worktrees are removed; its branch stays
    assert git.log_subjects(repository_for(demo), run.branch)[0].startswith("Merge step escape")


# --- checks before review ------------------------------------------------------------------
CHECK = (
    "python3 -c \"import os, sys; ok = os.path.exists('fixed.txt'); "
    "print('fixed.txt is there' if ok else 'fixed.txt is missing'); sys.exit(0 if ok else 1)\""
)


def test_a_failing_check_sends_the_step_back_before_any_review(demo, owner):
    def fixer(message, results):
        if "Reviewer feedback to address" not in message:
            return "nothing to change, I think"
        if not results:
            return "write_file", {"path": "fixed.txt", "content": "fixed\n"}
        return "wrote fixed.txt"

    Project.objects.filter(pk=demo.pk).update(checks={"fixed": CHECK})
    step = spec("fix", claims=["fixed.txt"])
    step["brief"]["checks"] = ["fixed"]
    model = scripted_run({"steps": [step]}, {"fix": fixer})
    with override_client(model):
        run = start_run(owner, demo, "Checks first")

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    fix = run.steps.get(key="fix")
    assert fix.attempts == 2 and fix.revisions == 1
    checks = run.events.filter(kind="step.checks").order_by("seq")
    assert [(e.data["attempt"], e.data["passed"]) for e in checks] == [(1, False), (2, True)]
    assert "fixed.txt is missing" in checks[0].data["results"][0]["output"]
    sent_back = run.events.get(kind="review.verdict", data__attempt=1)
    assert sent_back.actor == "checks" and sent_back.data["verdict"] == "revise"
    assert "fixed.txt is missing" in sent_back.data["feedback"]
    second = fix.agent_runs.get(purpose=AgentRun.Purpose.STEP, attempt=2)
    assert "fixed.txt is missing" in second.messages[1]["content"]

    # The reviewer saw only the attempt whose checks passed, with their results.
    [review] = fix.agent_runs.filter(purpose=AgentRun.Purpose.REVIEW)
    assert review.attempt == 2
    reviewer_inputs = [r for r in model.requests if role_of(r) == "reviewer"]
    assert reviewer_inputs
    for messages in reviewer_inputs:
        text = messages[1]["content"]
        assert "Output (attempt 2)" in text
        assert "Checks:\n- `" + CHECK + "`: passed" in text
        assert "fixed.txt is there" in text


def test_a_path_a_step_touched_is_leased_until_it_merges(demo, owner, approver):
    """Step `a` claimed nothing but wrote notes.txt, then waits for a human; step `c`, which
    claims notes.txt, becomes ready meanwhile and is held back until `a` merged."""
    PolicyRule.objects.create(project=demo, position=0, tool="write_file", outcome="allow")
    plan = {
        "steps": [
            spec("a"),
            spec("d"),
            spec("c", depends_on=["d"], claims=["notes.txt"]),
        ]
    }

    def a(message, results):
        if not results:
            return ("write_file", {"path": "notes.txt", "content": "from a\n"})
        if len(results) == 1:
            return ("run_command", {"command": "true"})
        return "a done"

    c = reads_then_writes("notes.txt", "notes.txt", lambda read: read + "from c\n", "c done")

    agents = {"a": a, "d": lambda message, results: "d done", "c": c}
    with override_client(scripted_run(plan, agents)):
        run = start_run(owner, demo, "Leases widen")
        steps = {s.key: s for s in run.steps.all()}
        assert steps["a"].status == Step.Status.AWAITING_APPROVAL
        assert steps["a"].touched == ["notes.txt"]
        assert steps["d"].status == Step.Status.DONE
        assert steps["c"].status == Step.Status.PENDING  # ready, but notes.txt is leased
        decide_checkpoint(approver, Checkpoint.objects.get(run=run, status="pending"), "approve")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED
    tree = git.file_at(repository_for(demo), run.branch, "notes.txt")
    assert tree == "from a\nfrom c\n"  # c started from a's merged work


def test_a_merge_git_cannot_make_goes_to_a_human_not_into_a_loop(demo, owner):
    """The step's branch vanishes between review and merge: not a conflict, so no agent round;
    the step waits for a human with git's message, and the run branch is untouched."""
    plan = {"steps": [spec("lost", claims=["lost.txt"])]}

    def lost(message, results):
        if not results:
            return ("write_file", {"path": "lost.txt", "content": "x\n"})
        return "done"

    model = scripted_run(plan, {"lost": lost})
    demo_answer = model.answer

    def answer(messages, tools):
        if "submit_verdict" in tools:
            step = Step.objects.get(key="lost")
            subprocess.run(
                ["git", "update-ref", "-d", f"refs/heads/{step.branch}"],
                cwd=repository_for(demo),
                check=True,
            )
        return demo_answer(messages, tools)

    model.answer = answer
    with override_client(model):
        run = start_run(owner, demo, "Lose the branch")
    step = run.steps.get(key="lost")
    assert step.status == Step.Status.AWAITING_APPROVAL
    failed = run.events.get(kind="merge.failed")
    assert "lost" in failed.data["error"]
    escalation = Checkpoint.objects.get(run=run, kind="escalation", status="pending")
    assert "Merging the step's branch failed" in escalation.shown["reason"]
    run.refresh_from_db()
    assert git.head_commit(repository_for(demo), run.branch) == run.base_commit


def test_a_plan_cannot_carry_a_command_of_its_own(demo, owner, tmp_path):
    """A plan names the project's checks; a command in their place is refused when the plan
    is validated (the orchestrator is read-only, and so is everything it proposes)."""
    planted = tmp_path / "planted"
    step = spec("fix", claims=["fixed.txt"])
    step["brief"]["checks"] = [f"touch {planted}"]
    model = scripted_run({"steps": [step]}, {"fix": lambda message, results: "done"})
    with override_client(model):
        run = start_run(owner, demo, "Checks that are commands")

    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert not planted.exists()
    refused = run.plans.filter(status=Plan.Status.REJECTED)
    assert refused.exists() and not run.plans.exclude(status=Plan.Status.REJECTED).exists()
    assert "does not define" in refused.first().errors[0]
    # The refusal quotes the command as the plan gave it (long ones cut short).
    assert f"touch {planted}"[:60] in refused.first().errors[0]
    assert not run.steps.exists()


def test_checks_without_a_sandbox_wait_for_a_person(demo, owner, approver, settings):
    """Where no sandbox is in force, a check would run unconfined on the host: it does not
    run; a person decides whether the step passes without it."""
    from agents import sandbox

    settings.ORCHESTRA_SANDBOX = "none"
    sandbox.reset_sandbox()
    try:
        Project.objects.filter(pk=demo.pk).update(checks={"fixed": CHECK})
        step = spec("fix", claims=["fixed.txt"])
        step["brief"]["checks"] = ["fixed"]
        model = scripted_run({"steps": [step]}, {"fix": lambda message, results: "done"})
        with override_client(model):
            run = start_run(owner, demo, "Checks with no sandbox")
            checkpoint = pending(run)
            assert checkpoint.kind == Checkpoint.Kind.ESCALATION
            assert "unconfined" in checkpoint.shown["reason"]
            [result] = run.steps.get(key="fix").checks[0]["results"]
            assert result["output"] == "not run" and "fixed.txt" not in result["output"]
            decide_checkpoint(approver, checkpoint, "approve")
    finally:
        sandbox.reset_sandbox()
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error


def test_a_first_attempt_commits_the_paths_its_tools_wrote_and_a_command_stages_all(
    demo, owner, monkeypatch
):
    if not sandbox_status()["confined"]:
        pytest.skip(f"a command runs alone only in a sandbox: {sandbox_status().get('reason')}")
    allow_every_write(demo)
    PolicyRule.objects.create(project=demo, position=0, tool="run_command", outcome="allow")
    staged = {}  # worktree folder -> what its commit was told may have changed
    original = git.commit_all

    def commit_all(worktree, message, **options):
        staged[Path(worktree).name] = options.get("changed")
        return original(worktree, message, **options)

    monkeypatch.setattr(git, "commit_all", commit_all)
    script = "open('made.txt', 'w').write('made by a command\\n')"

    files = writes_then_answers("notes/a.txt", "a\n", "a written")

    def command(message, results):
        if not results:
            return "run_command", {"command": f'python3 -c "{script}"'}
        return "the command wrote"

    plan = {"steps": [spec("files", claims=["notes/a.txt"]), spec("command")]}
    with override_client(scripted_run(plan, {"files": files, "command": command})):
        run = start_run(owner, demo, "What a commit stages")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    assert staged == {"files": {"notes/a.txt"}, "command": None}
    repo = repository_for(demo)
    assert git.file_at(repo, run.branch, "notes/a.txt") == "a\n"
    assert git.file_at(repo, run.branch, "made.txt") == "made by a command\n"
    assert run.steps.get(key="command").touched == ["made.txt"]


def test_what_a_check_leaves_in_a_worktree_never_reaches_the_next_step(demo, owner):
    """A first attempt written by the file tools alone is committed by name and its worktree
    known clean; a check then runs a command in it, which may write anything. The worktree,
    parked once the step merged, is cleaned when the next step takes it."""
    if not sandbox_status()["confined"]:
        pytest.skip(f"checks run only in a sandbox: {sandbox_status().get('reason')}")
    allow_every_write(demo)
    leave = "python3 -c \"open('left-by-check.txt', 'w').write('left\\\\n')\""
    Project.objects.filter(pk=demo.pk).update(checks={"leave": leave})
    seen = {}

    first = writes_then_answers("a.txt", "a\n", "a written")

    def second(message, results):
        worktree = Path(Step.objects.filter(key="second").latest("pk").worktree)
        seen["files"] = sorted(p.name for p in worktree.iterdir())
        return "looked"

    step = spec("first", claims=["a.txt"])
    step["brief"]["checks"] = ["leave"]
    plan = {"steps": [step, spec("second", depends_on=["first"])]}
    with override_client(scripted_run(plan, {"first": first, "second": second})):
        run = start_run(owner, demo, "What a check leaves")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED, run.error
    [checks] = run.steps.get(key="first").checks
    assert checks["results"][0]["passed"], checks
    assert "a.txt" in seen["files"] and "left-by-check.txt" not in seen["files"]


def test_a_tool_that_may_write_takes_the_clean_mark_off_before_it_runs(demo_run, tmp_path):
    repo = repository_for(demo_run.project)
    base = git.head_commit(repo, "main")
    worktree = git.add_worktree(repo, tmp_path / "w", git.step_branch_name(99, "w"), base)
    (worktree / "a.txt").write_text("a\n")
    head = git.commit_all(worktree, "a", changed={"a.txt"})
    assert known_clean(worktree) == head
    agent_run = AgentRun.objects.filter(run=demo_run).first()
    host = EngineHost(demo_run.project, agent_run, None, worktree=worktree)

    host.gate(REGISTRY["read_file"], {"path": "a.txt"})
    assert known_clean(worktree) == head
    host.gate(REGISTRY["run_command"], {"command": "true"})  # whatever the policy says
    assert known_clean(worktree) == ""
