"""What a turn of the agent loop returns, and what a model call costs.

A turn returns exactly one of `FinalOutput`, `RunAgain`, `NeedsApproval`, `Paused` or `Failed`;
`AgentSession.run` returns an `Outcome` (a turn outcome other than `RunAgain`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from agents.models import AgentRun
from agents.tools import Risk


@dataclass(frozen=True)
class FinalOutput:
    content: str
    data: dict | None = None


@dataclass(frozen=True)
class RunAgain:
    pass


@dataclass(frozen=True)
class NeedsApproval:
    checkpoint_id: int


@dataclass(frozen=True)
class Paused:
    """The run was paused by hand: the step's agent stops at this turn boundary, its
    conversation stored, and carries on from it when the run is resumed."""


@dataclass(frozen=True)
class Failed:
    error: str
    cancelled: bool = False


Outcome = FinalOutput | NeedsApproval | Paused | Failed


def closing_fields(outcome: FinalOutput | Failed) -> dict:
    """The AgentRun fields an attempt that ended with `outcome` is closed with."""
    if isinstance(outcome, FinalOutput):
        status, detail = AgentRun.Status.COMPLETED, {"final_output": outcome.content[:20_000]}
    elif outcome.cancelled:
        status, detail = AgentRun.Status.CANCELLED, {"error": outcome.error}
    else:
        status, detail = AgentRun.Status.FAILED, {"error": outcome.error}
    return {
        "status": status,
        "outcome": {"kind": type(outcome).__name__, **detail},
        "error": detail.get("error", ""),
        "finished_at": timezone.now(),
    }


# Calls whose effects reach past the worktree: recorded before they run, never run twice.
SIDE_EFFECTS = (Risk.EXEC, Risk.DEPLOY)
TurnOutcome = Outcome | RunAgain


@dataclass(frozen=True)
class OutputTool:
    """A tool through which the agent hands back structured output (a plan, a verdict).

    `check` returns the reasons the output is unacceptable; they go back to the model, at most
    `max_invalid` times, then the agent fails naming the last reasons.
    """

    name: str
    description: str
    parameters: dict
    check: Callable[[dict], list[str]] | None = None
    max_invalid: int = 3

    def as_openai(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def cost_of(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    prices = settings.ORCHESTRA_PRICES.get(model)
    if prices is None:
        return Decimal("0")
    per_million = Decimal(1_000_000)
    return (Decimal(input_tokens) * prices[0] + Decimal(output_tokens) * prices[1]) / per_million


def priced(reply, model: str, input_tokens: int, output_tokens: int) -> tuple[Decimal, bool]:
    """What a call cost, and whether that is known: the answering provider's price table
    first, then ORCHESTRA_PRICES. A model priced nowhere costs "unknown" (0 in the sums)."""
    if reply is not None and reply.cost_usd is not None:
        return reply.cost_usd, True
    known = reply is None or model in settings.ORCHESTRA_PRICES
    return cost_of(model, input_tokens, output_tokens), known
