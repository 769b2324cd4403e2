"""The agent loop's host: starting and continuing agents on behalf of the engine."""

import os
import socket
import threading
from pathlib import Path

from agents.llm import client_for, model_for
from agents.loop import AgentSession, OutputTool
from agents.models import AgentRun
from agents.teams import profile_for
from agents.tools import toolset_for
from orchestra.engine import workspaces
from orchestra.models import Run, Step


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def new_agent_run(
    run: Run,
    *,
    step: Step | None,
    purpose: str,
    role: str,
    brief: dict,
    user_message: str,
    attempt: int = 1,
) -> AgentRun:
    """Create the attempt record holding the exact system prompt and brief the agent sees."""
    profile = profile_for(run.project, role)
    agent_run = AgentRun.objects.create(
        run=run,
        step=step,
        purpose=purpose,
        role=role,
        model=model_for(profile),
        attempt=attempt,
        brief=brief,
        messages=[
            {"role": "system", "content": profile.system_prompt},
            {"role": "user", "content": user_message},
        ],
        worker=worker_name(),
    )
    agent_run.profile = profile  # spares session_for a second lookup
    return agent_run


def session_for(
    agent_run: AgentRun,
    *,
    step: Step | None,
    output_tool: OutputTool | None = None,
    on_final=None,
) -> AgentSession:
    """The agent's session. A step's agent, and its reviewer, work in the step's git
    worktree; the planner and the reporter read the project's repository."""
    run = agent_run.run
    project = run.project
    profile = getattr(agent_run, "profile", None) or profile_for(project, agent_run.role)
    if step is not None and step.worktree:
        workspace = Path(step.worktree)
    else:
        workspace = workspaces.repository_for(project)
    return AgentSession(
        agent_run,
        project=project,
        step=step,
        client=client_for(profile),
        temperature=profile.temperature,
        toolset=toolset_for(profile.role, profile.allowed_tools),
        turn_limit=profile.turn_limit,
        output_tool=output_tool,
        workspace=workspace,
        on_final=on_final,
        releases=workspaces.releases_for(project),
        integrated=workspaces.integrated_tree(run) if run.branch else None,
    )
