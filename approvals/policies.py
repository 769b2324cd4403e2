"""Which tool calls stop for a human.

Deploys always do. Otherwise the project's `gated_risks` decide, defaulting to `exec`; an
empty list on the project means the default, never "nothing is gated".
"""

from agents.tools import Risk, Tool
from approvals.models import Checkpoint
from orchestra.models import Project

DEFAULT_GATED_RISKS = (Risk.EXEC.value, Risk.DEPLOY.value)


def gated_risks(project: Project) -> set[str]:
    return set(project.gated_risks or DEFAULT_GATED_RISKS) | {Risk.DEPLOY.value}


def checkpoint_kind_for(project: Project, tool: Tool) -> str | None:
    """The checkpoint kind a call to `tool` needs in `project`, or None if it may run."""
    if tool.risk == Risk.DEPLOY:
        return Checkpoint.Kind.DEPLOY
    if tool.risk.value in gated_risks(project):
        return Checkpoint.Kind.TOOL_CALL
    return None
