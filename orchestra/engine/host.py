"""The agent loop's host: starting and continuing agents on behalf of the engine."""

import functools
from pathlib import Path

from agents.host import Decision, Gate, Hold
from agents.llm import client_for, live, model_for, uses_demo_model
from agents.loop import AgentSession, FinalOutput, OutputTool
from agents.models import AgentProfile, AgentRun, ProfileVersion, ToolCall
from agents.profiles import current_version
from agents.teams import profile_for_project
from agents.tools import Risk, Tool, toolset_for
from agents.workspace import GitError, unmark_clean
from approvals import policies
from approvals.checkpoints import open_checkpoint
from approvals.models import Checkpoint
from orchestra.activities import owner_name
from orchestra.engine import budgets, workspaces
from orchestra.engine.shipping import deploy_preview
from orchestra.events import emit
from orchestra.models import Event, Project, Run, Step
from orchestra.prepared import Ahead
from orchestra.writes import Added, insert_later, update_later


def new_agent_run(
    run: Run,
    *,
    step: Step | None,
    purpose: str,
    role: str,
    brief: dict,
    user_message: str,
    attempt: int = 1,
    named_in: Event | None = None,
) -> AgentRun:
    """Create the attempt record holding the exact system prompt and brief the agent sees.
    With `named_in`, an event of this block that names it by its id (`data["agent_run"]`),
    it is written with the block's last statement (`insert_later`): nothing in the block may
    need its id before the block ends."""
    profile, version = _profile_and_version(run, role)
    model = model_for(profile)
    if step is not None and step.model and purpose == AgentRun.Purpose.STEP:
        model = model if uses_demo_model() else step.model  # chosen for this step by hand
    agent_run = AgentRun(
        run=run,
        step=step,
        purpose=purpose,
        role=role,
        model=model,
        attempt=attempt,
        brief=brief,
        messages=[
            {"role": "system", "content": profile.system_prompt},
            {"role": "user", "content": user_message},
        ],
        worker=owner_name(),
        profile_version=version,
    )
    if named_in is None:
        agent_run.save(force_insert=True)
    else:
        insert_later(run, agent_run, named_in, "agent_run")
    agent_run.profile = profile  # spares session_for a second lookup
    return agent_run


@functools.lru_cache(maxsize=512)
def _profile_of_run(
    run_id: int, created_at, project_id: int, role: str
) -> tuple[AgentProfile, ProfileVersion]:
    profile = profile_for_project(Project.objects.get(pk=project_id), role)
    return profile, current_version(profile)


def _profile_and_version(run: Run, role: str) -> tuple[AgentProfile, ProfileVersion]:
    """The role's profile (the project's own, else its team's) and the version it is at, as
    this process first read them for the run: a run's agents keep their profile while it
    runs, an edit applies to the runs started after it, and a step costs no query for it."""
    return _profile_of_run(run.pk, run.created_at, run.project_id, role)


def _profile(run: Run, role: str) -> AgentProfile:
    return _profile_and_version(run, role)[0]


def session_for(
    agent_run: AgentRun,
    *,
    step: Step | None,
    output_tool: OutputTool | None = None,
    on_final=None,
    final_read: Ahead | None = None,
    before_final=None,
) -> AgentSession:
    """The agent's session. A step's agent, and its reviewer, work in the step's git
    worktree; the planner and the reporter read the project's repository. `before_final`
    (the final outcome) runs outside any transaction just before `on_final`'s."""
    run = agent_run.run
    project = run.project
    profile = getattr(agent_run, "profile", None) or _profile(run, agent_run.role)
    worktree = None
    if step is not None and step.worktree:
        workspace = worktree = workspaces.worktree_of(step)
    else:
        workspace = workspaces.repository_for(project)
    # A step's first attempt starts on a worktree as it was made (nothing written in it yet).
    fresh = getattr(agent_run, "first_attempt", False)
    return AgentSession(
        agent_run,
        host=EngineHost(
            project,
            agent_run,
            step,
            before_final,
            fresh=fresh,
            worktree=worktree,
        ),
        project=project,
        step=step,
        client=client_for(profile),
        temperature=profile.temperature,
        toolset=toolset_for(profile.role, profile.allowed_tools),
        turn_limit=profile.turn_limit,
        output_tool=output_tool,
        workspace=workspace,
        on_final=on_final,
        final_read=final_read,
        releases=workspaces.releases_for(project),
        integrated=workspaces.integrated_tree(run) if run.branch else None,
    )


def take_over_agent_run(run: Run, agent_run: AgentRun, *, actor: str) -> AgentRun:
    """This worker carries on an agent whose worker stopped, from its stored conversation,
    and says so (`<purpose>.taken_over`). Caller holds the run lock and the work's activity."""
    previous = agent_run.worker
    agent_run.status = AgentRun.Status.RUNNING
    agent_run.worker = owner_name()
    agent_run.error = ""
    agent_run.finished_at = None
    agent_run.save(update_fields=["status", "worker", "error", "finished_at"])
    emit(
        run,
        f"{agent_run.purpose}.taken_over",
        step=agent_run.step,
        actor=actor,
        data={"agent_run": agent_run.pk, "from": previous, "to": agent_run.worker},
    )
    return agent_run


def gate_command(project: Project, run_id: int, command: str, *, role: str) -> Gate:
    """The policy's verdict on a command the engine itself would run for a run (a step's
    checks), evaluated as a `run_command` call: the same enforcement point as an agent's."""
    return _gate(project, run_id, policies.Call("run_command", {"command": command}, role))


def _gate(project: Project, run_id: int, call: policies.Call) -> Gate:
    verdict = policies.evaluate(project, call, run_id=run_id)
    outcome = "deny" if verdict.denied else "allow" if verdict.allowed else "ask"
    return Gate(outcome, verdict.reason, verdict)


class EngineHost:
    """The agent loop's host for one agent run: the project's policy gates each call,
    checkpoints pause a step, and the step records its usage and what it touched."""

    def __init__(
        self,
        project: Project,
        agent_run: AgentRun,
        step: Step | None,
        ahead=None,
        *,
        fresh: bool = False,
        worktree: Path | None = None,
    ):
        self.project = project
        self.worktree = worktree  # the step's, where its agent or its reviewer works
        self.agent_run = agent_run
        self.step = step
        self.ahead = ahead
        # The step's worktree commit made by `before_final`: its fields, or git's refusal.
        self.committed: dict | GitError | None = None
        # Every path this session's tools could have written in a worktree that was clean when
        # it started (`fresh`): its commit stages these alone, not the whole worktree. None
        # once a tool that may write anywhere (a command) is let through, or when the session
        # did not start on a clean worktree (a revision, a take-over, a resume).
        self.written: set[str] | None = set() if fresh else None

    def gate(self, tool: Tool, arguments: dict) -> Gate:
        self._note_writes(tool, arguments)
        if self.worktree is not None and tool.risk != Risk.READ:
            # Before it may run: the worktree is no longer known to hold its commit alone.
            unmark_clean(self.worktree)
        claims = tuple(self.step.claims) if self.step else ()
        call = policies.Call(tool.name, arguments, self.agent_run.role, claims)
        return _gate(self.project, self.agent_run.run_id, call)

    def _note_writes(self, tool: Tool, arguments: dict) -> None:
        """Before a call may run: what it could write. `write_file` writes its path (a
        failed write may still leave part of it); `apply_patch` changes nothing unless it
        applies, and then says what it changed (`touched`); reads write nothing; any other
        tool may write anywhere."""
        if self.written is None or tool.risk == Risk.READ or tool.name == "apply_patch":
            return
        path = arguments.get("path") if tool.name == "write_file" else None
        if isinstance(path, str) and path:
            self.written.add(path)
        else:
            self.written = None

    def before_final(self, final: FinalOutput) -> None:
        """Outside the transaction that records the final answer: what the session's maker
        asked for (a reviewer's pass is merged), and a step's agent commits its worktree;
        `hand_to_review` records the commit (or the refusal)."""
        self.committed = None
        if self.ahead is not None:
            self.ahead(final)
        step = self.step
        if step is None or self.agent_run.purpose != AgentRun.Purpose.STEP or not step.worktree:
            return
        try:
            fields = workspaces.commit_step(step, changed=self.written)
        except GitError as exc:  # e.g. conflict markers left in a file
            self.committed = exc
            return
        self.committed = {field: getattr(step, field) for field in fields}

    def before_pause(self) -> None:
        """A step's agent waits for a person: its work so far is saved where any worker
        resuming it finds it (a remote worker pushes it; nothing to do otherwise)."""
        step = self.step
        if step is not None and self.agent_run.purpose == AgentRun.Purpose.STEP:
            workspaces.save_progress(step)

    def preview(self, tool: Tool, arguments: dict) -> dict:
        """A deploy's checkpoint shows what would ship: the commit and the files changed
        since the environment's last deploy (or the run's base)."""
        if tool.risk != Risk.DEPLOY or "environment" not in arguments:
            return {}
        try:
            return {"ships": deploy_preview(self.agent_run.run, arguments["environment"])}
        except GitError as exc:
            return {"ships": {"error": f"cannot tell what would ship: {exc}"}}

    def pause(self, run: Run, call: ToolCall, gate: Gate, shown: dict) -> int:
        """Open the checkpoint and park the step. Caller holds the run lock."""
        verdict = gate.detail if isinstance(gate.detail, policies.Verdict) else None
        deploy = call.risk == Risk.DEPLOY
        checkpoint = open_checkpoint(
            run,
            kind=Checkpoint.Kind.DEPLOY if deploy else Checkpoint.Kind.TOOL_CALL,
            verdict=verdict,
            actor=self.agent_run.role,
            step=self.step,
            tool_call=call,
            shown=shown,
        )
        Step.objects.filter(pk=self.step.pk).update(status=Step.Status.AWAITING_APPROVAL)
        return checkpoint.pk

    def decision_for(self, call: ToolCall) -> Decision:
        checkpoint = (
            Checkpoint.objects.select_related("decided_by")
            .filter(tool_call=call)
            .order_by("-pk")
            .first()
        )
        status = {
            Checkpoint.Status.PENDING: "pending",
            Checkpoint.Status.APPROVED: "approved",
            Checkpoint.Status.RESPONDED: "responded",
        }.get(checkpoint.status, "rejected")
        return Decision(
            status,
            checkpoint.pk,
            who=checkpoint.decided_by.get_username() if checkpoint.decided_by else "",
            comment=checkpoint.comment,
            arguments=checkpoint.arguments,
            approved_commit=(checkpoint.shown.get("ships") or {}).get("commit") or "",
        )

    def before_model_call(self) -> Hold:
        """The run's budget decides; a call that goes ahead streams its text to the run's
        pages (see `agents.llm.live`)."""
        hold = budgets.hold_before_model_call(self.agent_run, self.step)
        agent_run = self.agent_run
        key = self.step.key if self.step else ""
        live.listen(live.to_run_pages(agent_run.run_id, agent_run.pk, key, agent_run.role))
        return hold

    def record_usage(self, run: Run, input_tokens: int, output_tokens: int, cost) -> None:
        if self.step is not None:
            update_later(
                run,
                Step,
                self.step.pk,
                input_tokens=Added("input_tokens", input_tokens),
                output_tokens=Added("output_tokens", output_tokens),
                cost_usd=Added("cost_usd", cost),
            )

    def touched(self, run: Run, paths: list[str]) -> None:
        """A step leases what it touches, not only what it claimed: the dispatcher keeps
        other steps off these paths until this one is merged."""
        if self.step is None or not paths:
            return
        # Only this attempt widens the step's lease while it runs: the step as it was loaded
        # for the attempt, widened here, is what the database holds.
        if self.written is not None:
            self.written.update(paths)
        touched = list(self.step.touched or [])
        widened = sorted(set(touched) | set(paths))
        if widened != touched:
            update_later(run, Step, self.step.pk, touched=widened)
            self.step.touched = widened
