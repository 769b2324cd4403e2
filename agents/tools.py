"""The tool registry: callables with a JSON schema for their arguments and a risk level.

Which tools an agent gets is decided here, not in a prompt: the orchestrator and the reviewer
only ever receive `read` tools, whatever their profile lists, and the agent loop refuses any
call to a tool outside the agent's set.
"""

import difflib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jsonschema
from django.conf import settings


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    EXEC = "exec"
    DEPLOY = "deploy"


# Roles that plan, judge or report: they never change anything.
READ_ONLY_ROLES = frozenset({"orchestrator", "reviewer"})


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the tool's result."""


def schema_errors(schema: dict, value: object, root: str = "arguments") -> list[str]:
    """Every way `value` breaks the JSON `schema`, as "path: reason" sentences in path order."""
    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or root}: {error.message}"
        for error in sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], e.message))
    ]


@dataclass(frozen=True)
class ToolContext:
    workspace: Path
    run_id: int
    step_key: str
    environment: dict


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


def confined_path(workspace: Path, relative: str) -> Path:
    """Resolve `relative` inside `workspace`, refusing absolute paths, `..` and symlinks
    that lead out."""
    if not relative or relative.strip() == "":
        raise ToolError("path is empty")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ToolError(f"path {relative!r} is absolute; use a path inside the workspace")
    if ".." in candidate.parts:
        raise ToolError(f"path {relative!r} leaves the workspace")
    root = workspace.resolve()
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise ToolError(f"path {relative!r} resolves outside the workspace")
    return resolved


def _clip(text: str) -> str:
    limit = settings.ORCHESTRA_TOOL_OUTPUT_LIMIT
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


PATH_ARG = {"type": "string", "minLength": 1, "maxLength": 500}


@register(
    "list_files",
    Risk.READ,
    "List the files in the workspace (or under a folder of it).",
    {
        "type": "object",
        "properties": {"folder": PATH_ARG},
        "additionalProperties": False,
    },
)
def list_files(context: ToolContext, arguments: dict) -> str:
    root = context.workspace.resolve()
    base = confined_path(context.workspace, arguments["folder"]) if "folder" in arguments else root
    if not base.is_dir():
        raise ToolError(f"{arguments.get('folder')!r} is not a folder")
    names = sorted(
        str(path.relative_to(root))
        for path in base.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts
    )
    return "\n".join(names[:500]) or "(no files)"


@register(
    "read_file",
    Risk.READ,
    "Read a text file from the workspace.",
    {
        "type": "object",
        "properties": {"path": PATH_ARG},
        "required": ["path"],
        "additionalProperties": False,
    },
)
def read_file(context: ToolContext, arguments: dict) -> str:
    path = confined_path(context.workspace, arguments["path"])
    if not path.is_file():
        raise ToolError(f"no file at {arguments['path']!r}")
    return _clip(path.read_text(errors="replace"))


@register(
    "write_file",
    Risk.WRITE,
    "Create or replace a text file in the workspace.",
    {
        "type": "object",
        "properties": {
            "path": PATH_ARG,
            "content": {"type": "string", "maxLength": 200_000},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
def write_file(context: ToolContext, arguments: dict) -> str:
    path = confined_path(context.workspace, arguments["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(arguments["content"])
    return f"wrote {len(arguments['content'])} characters to {arguments['path']}"


def write_diff(workspace: Path, arguments: dict) -> str:
    """The unified diff `write_file` with these arguments would make: shown to approvers."""
    try:
        path = confined_path(workspace, arguments["path"])
    except ToolError as exc:
        return f"(no diff: {exc})"
    old = path.read_text(errors="replace") if path.is_file() else ""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            arguments["content"].splitlines(keepends=True),
            "/dev/null" if not path.exists() else f"a/{arguments['path']}",
            f"b/{arguments['path']}",
        )
    )


@register(
    "run_command",
    Risk.EXEC,
    "Run a command (no shell) in the workspace and return its exit code and output.",
    {
        "type": "object",
        "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 2000}},
        "required": ["command"],
        "additionalProperties": False,
    },
)
def run_command(context: ToolContext, arguments: dict) -> str:
    try:
        argv = shlex.split(arguments["command"])
    except ValueError as exc:
        raise ToolError(f"cannot parse the command: {exc}") from None
    # A minimal environment: the server's secrets never reach an agent's command.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(context.workspace),
        "LANG": "C.UTF-8",
    }
    try:
        completed = subprocess.run(
            argv,
            cwd=context.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=settings.ORCHESTRA_COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ToolError(
            f"command timed out after {settings.ORCHESTRA_COMMAND_TIMEOUT:g} s"
        ) from None
    return _clip(
        f"exit code {completed.returncode}\n--- stdout\n{completed.stdout}"
        f"--- stderr\n{completed.stderr}"
    )


@register(
    "deploy",
    Risk.DEPLOY,
    "Ship the workspace to a named environment (copies it into a numbered release).",
    {
        "type": "object",
        "properties": {
            "environment": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"},
            "note": {"type": "string", "maxLength": 2000},
        },
        "required": ["environment"],
        "additionalProperties": False,
    },
)
def deploy(context: ToolContext, arguments: dict) -> str:
    workspace = context.workspace.resolve()
    releases = workspace.parent / f"{workspace.name}-releases" / arguments["environment"]
    releases.mkdir(parents=True, exist_ok=True)
    number = len([p for p in releases.iterdir() if p.is_dir()]) + 1
    target = releases / f"release-{number:04d}"
    shutil.copytree(workspace, target, ignore=shutil.ignore_patterns(".git"))
    (target / "RELEASE.json").write_text(
        json.dumps({"run": context.run_id, "step": context.step_key, **arguments}, indent=2)
    )
    return f"deployed release {number} to {arguments['environment']}"
