"""The agent loop: an explicit state machine over a conversation stored in the database.

A turn returns exactly one of `FinalOutput`, `RunAgain`, `NeedsApproval`, `Paused` (the run
was paused by hand; a step's agent stops between turns) or `Failed`. The
conversation is saved after every change, so a paused agent (waiting for a human) holds no
worker: `AgentSession(...).run()` on the same AgentRun, in any process, days later, carries
on from the first tool call that has no answer yet. Policy, checkpoints and the step belong to
the loop's host (`agents.host.Host`); the loop records its own model and tool calls.

The package by job: `outcomes` (what a turn returns, and cost), `session` (`AgentSession`:
the state machine, the conversation, model calls), `calls` (tool calls: gate, run, record)
and `pauses` (approvals: pause, and resume from a recorded call).
"""

from agents.loop.outcomes import (
    SIDE_EFFECTS,
    Failed,
    FinalOutput,
    NeedsApproval,
    Outcome,
    OutputTool,
    Paused,
    RunAgain,
    TurnOutcome,
    closing_fields,
    cost_of,
)
from agents.loop.session import AgentSession

__all__ = [
    "SIDE_EFFECTS",
    "AgentSession",
    "Failed",
    "FinalOutput",
    "NeedsApproval",
    "Outcome",
    "OutputTool",
    "Paused",
    "RunAgain",
    "TurnOutcome",
    "closing_fields",
    "cost_of",
]
