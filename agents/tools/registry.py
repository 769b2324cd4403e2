"""The registry: tools as callables with a JSON schema for their arguments and a risk level.

Which tools an agent gets is decided here, not in a prompt: the orchestrator and the reviewer
only ever receive `read` tools, whatever their profile lists, and the agent loop refuses any
call to a tool outside the agent's set.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orchestra.schema import schema_errors


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    EXEC = "exec"
    DEPLOY = "deploy"


# Roles that plan, judge or report: they never change anything.
READ_ONLY_ROLES = frozenset({"orchestrator", "reviewer"})


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the tool's result."""


@dataclass(frozen=True)
class ToolContext:
    workspace: Path  # the step's git worktree: the cwd of every command
    run_id: int
    step_key: str
    environment: dict  # extra env vars for commands (never the server's env)
    test_command: str = ""
    deploy_command: str = ""  # empty: the built-in release copy
    command_allowlist: tuple[str, ...] = ()
    idempotency_key: str = ""  # of the current call
    network: bool = False  # whether the project lets its commands reach the network
    # The commit a person approved shipping (shown at the deploy's checkpoint): a deploy
    # refuses to ship any other.
    approved_commit: str = ""
    releases: Path | None = None  # root folder of releases and deploy receipts
    # Exports the run branch's integrated tree into the folder, returns its commit sha.
    integrated: Callable[[Path], str] | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    risk: Risk
    parameters: dict
    func: Callable[[ToolContext, dict], str]

    def schema_errors(self, arguments: object) -> list[str]:
        """Every way `arguments` breaks this tool's schema, as readable sentences."""
        return schema_errors(self.parameters, arguments)

    def as_openai(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


REGISTRY: dict[str, Tool] = {}


def register(name: str, risk: Risk, description: str, parameters: dict):
    def decorator(func: Callable[[ToolContext, dict], str]):
        REGISTRY[name] = Tool(name, description, risk, parameters, func)
        return func

    return decorator


def toolset_for(role: str, allowed: list[str]) -> dict[str, Tool]:
    """The tools an agent in `role` may call: its allowed list, filtered by risk for the
    read-only roles. Unknown names are ignored."""
    tools = {name: REGISTRY[name] for name in allowed if name in REGISTRY}
    if role in READ_ONLY_ROLES:
        tools = {name: tool for name, tool in tools.items() if tool.risk == Risk.READ}
    return tools
