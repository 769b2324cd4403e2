"""What the agent loop asks of whoever runs it: the loop's only way out of the agents layer.

The loop decides nothing about policy, checkpoints or steps. For each tool call it asks its
host for a `Gate` (allow, deny, or ask a person); to pause it hands the recorded call to
`pause`; on resume it asks for the `Decision` taken; with every model call it reports usage
(which also renews the lease on its unit of work); after a write it reports the paths
touched. The engine implements this (`orchestra.engine.host`); tests may script it.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from agents.models import ToolCall
from agents.tools import Tool
from orchestra.models import Run

if TYPE_CHECKING:
    from agents.loop.outcomes import FinalOutput


@dataclass(frozen=True)
class Gate:
    """The policy's answer for one call: `allow`, `deny` or `ask` (a person decides).
    `detail` is the host's own record of why, handed back to `pause`."""

    outcome: Literal["allow", "deny", "ask"]
    reason: str
    detail: object = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    @property
    def denied(self) -> bool:
        return self.outcome == "deny"


@dataclass(frozen=True)
class Decision:
    """What a person (or the clock) decided about a paused call. `arguments` are the
    approved arguments when they were edited, else None."""

    status: Literal["pending", "approved", "rejected", "responded"]
    checkpoint_id: int
    who: str = ""
    comment: str = ""
    arguments: dict | None = None
    # For a deploy: the commit the person saw and approved shipping.
    approved_commit: str = ""


@dataclass(frozen=True)
class Hold:
    """The host's word before a model call: go on (nothing set), wait for a person at
    `checkpoint_id` (a spending limit was reached), or `stop` for the given reason."""

    checkpoint_id: int | None = None
    stop: str = ""


class Host(Protocol):
    def gate(self, tool: Tool, arguments: dict) -> Gate:
        """The policy's verdict for running `tool` with `arguments` now."""

    def preview(self, tool: Tool, arguments: dict) -> dict:
        """What a person deciding about this call should also see (e.g. what a deploy
        ships), merged into what the checkpoint shows. Outside any transaction."""

    def before_final(self, final: "FinalOutput") -> None:
        """The agent is about to give `final` as its answer: work the host must do outside any
        transaction before it is recorded (the engine commits the step's worktree, and merges
        a step its reviewer passes)."""

    def before_pause(self) -> None:
        """The agent is about to wait for a person: work the host must do outside any
        transaction first (a remote worker saves the step's work so far)."""

    def pause(self, run: Run, call: ToolCall, gate: Gate, shown: dict) -> int:
        """Ask a person about `call` (recorded, awaiting approval): returns the checkpoint's
        id. Inside the caller's `locked_run`."""

    def decision_for(self, call: ToolCall) -> Decision:
        """The latest decision about `call`."""

    def before_model_call(self) -> Hold:
        """Whether the agent may ask the model now (its run's budget)."""

    def record_usage(self, run: Run, input_tokens: int, output_tokens: int, cost) -> None:
        """A model call's usage; renews the lease. Inside the caller's `locked_run` or
        `recording` block (`run`)."""

    def touched(self, run: Run, paths: list[str]) -> None:
        """Paths a successful write changed. Inside the block that records the call
        (`run`)."""
