"""The small interface every model sits behind: one chat completion, with tools.

Messages and tool definitions use the Chat Completions wire format (plain dicts), so the
conversation the engine stores is exactly what the model was sent.
"""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ToolRequest:
    """A tool call the model asked for; `arguments` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ModelReply:
    content: str | None
    tool_calls: list[ToolRequest] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    finish_reason: str | None = None

    def as_message(self) -> dict:
        """The assistant message to append to the conversation."""
        message: dict = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


class ModelError(Exception):
    """The model could not answer. `transient` errors were already retried by the client."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


class ModelClient(Protocol):
    #: Shown in the trace: "demo" or the endpoint's base URL.
    endpoint: str

    def complete(
        self,
        *,
        model: str,
        messages: list[dict],
        tools: list[dict],
        temperature: float,
    ) -> ModelReply:
        """One chat completion. Raises ModelError on failure (after bounded retries)."""
        ...
