"""What each agent is told: the planner's task, a step's brief and inputs."""

import json
import logging

from django.conf import settings

from agents.models import AgentProfile
from orchestra.models import Run, Step

logger = logging.getLogger(__name__)


def planning_message(run: Run) -> str:
    catalogue = [
        {"role": p.role, "does": p.description, "tools": p.allowed_tools}
        for p in AgentProfile.objects.filter(team=run.project.team, project__isnull=True).exclude(
            role="orchestrator"
        )
    ]
    return (
        f"Task: {run.task.title}\n\n"
        f"Description:\n{run.task.description or '(none)'}\n\n"
        f"Project: {run.project.name} (team: {run.project.team})\n"
        f"{run.project.description}\n\n"
        f"Available agents:\n{json.dumps(catalogue, indent=2)}\n\n"
        f"Return the plan by calling `submit_plan`. At most "
        f"{settings.ORCHESTRA_MAX_PLAN_STEPS} steps. Every step needs a brief with "
        "acceptance criteria. Steps that could run at the same time must not claim the same "
        "file or resource."
    )


def step_message(step: Step, dependency_outputs: dict[str, str]) -> str:
    """The agent's whole input: its brief, the outputs it depends on, and review feedback.
    Never the run's history."""
    parts = [
        f"Step: {step.key} — {step.title}",
        "Brief:\n" + json.dumps(step.brief, indent=2),
    ]
    if step.claims:
        parts.append("Files and resources this step may change: " + ", ".join(step.claims))
    for key, output in dependency_outputs.items():
        parts.append(f"Output of step {key}:\n{output}")
    if step.feedback:
        parts.append(f"Your previous output:\n{step.output}")
        parts.append(f"Reviewer feedback to address in this revision:\n{step.feedback}")
    parts.append("When the work is done, answer with your final output as plain text.")
    return "\n\n".join(parts)
