"""Team templates shipped with Orchestra; `seed_team` copies one into AgentProfile rows."""

from agents.models import AgentProfile
from orchestra.models import Project

ORCHESTRATOR_PROMPT = (
    "You are the orchestrator of a team of specialist agents. You plan, you never do the "
    "work yourself: you have no tools that change anything. Split the task into steps for "
    "the available agents, give each step a self-contained brief (objective, context, "
    "expected output, constraints, acceptance criteria), the steps it depends on, and the "
    "files or resources it will touch. Steps that do not depend on each other run in "
    "parallel. When asked for a report, integrate the reviewed step outputs into a concise "
    "final report that names each step."
)
REVIEWER_PROMPT = (
    "You are the reviewer. Check the output of one step against its acceptance criteria and "
    "return a verdict through the submit_verdict tool: pass, revise (with precise feedback) "
    "or escalate (when a human must decide). Be strict about the criteria, not about style."
)

TEAMS: dict[str, list[dict]] = {
    "software": [
        {
            "role": "orchestrator",
            "description": "Plans the work and writes the final report.",
            "system_prompt": ORCHESTRATOR_PROMPT,
            "allowed_tools": ["list_files", "read_file", "search_text"],
            "temperature": 0.1,
        },
        {
            "role": "researcher",
            "description": "Reads the codebase and gathers facts.",
            "system_prompt": "You are a research engineer. Read the workspace, report facts "
            "with file references, and write notes only where your brief says so.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
            ],
        },
        {
            "role": "coder",
            "description": "Writes and tests code in the workspace.",
            "system_prompt": "You are a software engineer. Make the change your brief asks "
            "for, only in the files it claims, and run the tests.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
                "run_command",
                "run_tests",
            ],
        },
        {
            "role": "reviewer",
            "description": "Checks each output against its acceptance criteria.",
            "system_prompt": REVIEWER_PROMPT,
            "allowed_tools": ["list_files", "read_file", "search_text"],
            "temperature": 0.0,
        },
        {
            "role": "deployer",
            "description": "Ships the integrated result.",
            "system_prompt": "You are the release engineer. Deploy only what your brief "
            "names, to the environment it names, and report the release.",
            "allowed_tools": ["list_files", "read_file", "search_text", "deploy"],
        },
    ],
    "content": [
        {
            "role": "orchestrator",
            "description": "Plans the work and writes the final report.",
            "system_prompt": ORCHESTRATOR_PROMPT,
            "allowed_tools": ["list_files", "read_file", "search_text"],
            "temperature": 0.1,
        },
        {
            "role": "researcher",
            "description": "Collects sources and facts.",
            "system_prompt": "You are a researcher. Collect facts with their sources and "
            "write them as notes.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
            ],
        },
        {
            "role": "writer",
            "description": "Drafts the piece from the research.",
            "system_prompt": "You are a writer. Draft clear prose from the research you are "
            "handed, in the voice and length your brief asks for.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
            ],
        },
        {
            "role": "editor",
            "description": "Tightens and corrects the draft.",
            "system_prompt": "You are an editor. Correct facts, tighten the prose, keep the "
            "author's voice.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
            ],
        },
        {
            "role": "formatter",
            "description": "Produces the final formatted document.",
            "system_prompt": "You are a formatter. Turn the edited text into the output "
            "format your brief names.",
            "allowed_tools": [
                "list_files",
                "read_file",
                "search_text",
                "write_file",
                "apply_patch",
            ],
        },
        {
            "role": "reviewer",
            "description": "Checks each output against its acceptance criteria.",
            "system_prompt": REVIEWER_PROMPT,
            "allowed_tools": ["list_files", "read_file", "search_text"],
            "temperature": 0.0,
        },
    ],
}


# What a new project's repository starts with, and the commands its tools run.
DEPLOY_SCRIPT = '''"""Ship this tree; Orchestra's deploy tool runs it from the integrated commit.

Copies the tree into $ORCHESTRA_RELEASES/$ORCHESTRA_ENVIRONMENT/release-NNNN. The same deploy
key ships once, and the receipt tells Orchestra the release exists even if its worker stops.
"""

import json
import os
import shutil
from pathlib import Path

environment = os.environ["ORCHESTRA_ENVIRONMENT"]
commit = os.environ.get("ORCHESTRA_COMMIT", "")
key = os.environ.get("ORCHESTRA_DEPLOY_KEY", "")
releases = Path(os.environ["ORCHESTRA_RELEASES"]) / environment
releases.mkdir(parents=True, exist_ok=True)
made = sorted(releases.glob("release-*"))
target = next(
    (r for r in made if key and json.loads((r / "RELEASE.json").read_text()).get("key") == key),
    None,
)
if target is None:
    target = releases / f"release-{len(made) + 1:04d}"
    shutil.copytree(".", target)
    meta = {"commit": commit, "key": key, "environment": environment}
    (target / "RELEASE.json").write_text(json.dumps(meta, indent=2))
result = f"released {target.name} of {commit[:10]} to {environment}"
if os.environ.get("ORCHESTRA_RECEIPT"):
    receipt = {"key": key, "commit": commit, "environment": environment, "result": result}
    Path(os.environ["ORCHESTRA_RECEIPT"]).write_text(json.dumps(receipt))
print(result)
'''

STARTER_FILES: dict[str, dict[str, str]] = {
    "software": {
        "README.md": "# Workspace\n\nThe team's repository: src/ holds the code, tests/ its "
        "unittest suite; deploy.py ships the integrated tree.\n",
        "deploy.py": DEPLOY_SCRIPT,
        "src/__init__.py": "",
        "tests/__init__.py": "",
        ".gitignore": "__pycache__/\n*.pyc\n",
    },
    "content": {
        "README.md": "# Workspace\n\nNotes, drafts and the final piece.\n",
    },
}
TEAM_COMMANDS: dict[str, dict[str, str]] = {
    "software": {
        "test_command": "python3 -m unittest discover -s tests -t . -v",
        "deploy_command": "python3 deploy.py",
    },
    "content": {},
}


def seed_team(team: str) -> list[AgentProfile]:
    """Create the team's profiles that do not exist yet; edited profiles are left alone."""
    profiles = []
    for spec in TEAMS[team]:
        profile, _ = AgentProfile.objects.get_or_create(
            team=team,
            project=None,
            role=spec["role"],
            defaults={
                "description": spec["description"],
                "system_prompt": spec["system_prompt"],
                "allowed_tools": spec["allowed_tools"],
                "temperature": spec.get("temperature", 0.2),
            },
        )
        profiles.append(profile)
    return profiles


class UnknownAgent(Exception):
    pass


def profile_for_team(team: str, role: str) -> AgentProfile:
    """The team's own profile for `role`, the one every project starts on."""
    profile = AgentProfile.objects.filter(team=team, role=role, project__isnull=True).first()
    if profile is None:
        raise UnknownAgent(f"the {team} team has no {role!r} agent")
    return profile


def profile_for_project(project: Project, role: str) -> AgentProfile:
    """The profile a run of `project` uses for `role`: the project's own, edited by its
    admins, else its team's."""
    own = AgentProfile.objects.filter(project=project, role=role).first()
    return own if own is not None else profile_for_team(project.team, role)


def known_roles(project: Project) -> set[str]:
    """Roles a plan may assign steps to: every agent of the team except the orchestrator."""
    return set(
        AgentProfile.objects.filter(team=project.team, project__isnull=True)
        .exclude(role="orchestrator")
        .values_list("role", flat=True)
    )
