"""The small interface every model sits behind: one chat completion, with tools.

Messages and tool definitions use the Chat Completions wire format (plain dicts), so the
conversation the engine stores is exactly what the model was sent.
"""

from dataclasses import dataclass, field
from decimal import Decimal
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
    #: The endpoint sent no usage: the token counts are Orchestra's estimate, never zero.
    usage_estimated: bool = False
    #: A reasoning model's thinking: kept in the trace, never sent back to the model.
    reasoning: str | None = None
    #: Who answered: the provider's name and base URL ("" when the client is the only one).
    provider: str = ""
    endpoint: str = ""
    #: Set when a fallback answered: the model asked of it, and why the first choice failed.
    fallback_model: str = ""
    fallback_reason: str = ""
    #: Priced from the answering provider's table; None: priced from ORCHESTRA_PRICES.
    cost_usd: Decimal | None = None

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

    def for_trace(self) -> dict:
        """What the trace keeps of the reply: the message, and the reasoning beside it."""
        message = self.as_message()
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        return message


class ModelError(Exception):
    """The model could not answer. `transient` errors were already retried by the client."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        status: int | None = None,
        detail: str = "",
    ):
        super().__init__(message)
        self.transient = transient
        self.status = status
        #: The endpoint's own words, for recognising what it refused.
        self.detail = detail


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


def served_by(reply: ModelReply | None, client: ModelClient) -> dict:
    """The trace fields of a model call that say who answered, and how its usage is known."""
    return {
        "endpoint": (reply.endpoint if reply else "") or client.endpoint,
        "provider": (reply.provider if reply else "") or getattr(client, "name", ""),
        "usage_estimated": bool(reply and reply.usage_estimated),
        "fallback_reason": reply.fallback_reason if reply else "",
    }
