"""An in-process model for engine tests: answers by a function of the conversation, falling
back to the demo model. (The OpenAI adapter itself is tested over real HTTP.)"""

import json
from collections.abc import Callable

from agents.llm.base import ModelReply, ToolRequest
from agents.llm.demo import DemoModel


def call(name: str, arguments, call_id: str = "call_1") -> ToolRequest:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolRequest(call_id, name, raw)


def tool_reply(*calls: ToolRequest, content: str | None = None) -> ModelReply:
    return ModelReply(content=content, tool_calls=list(calls), input_tokens=10, output_tokens=5)


def text_reply(content: str) -> ModelReply:
    return ModelReply(content=content, input_tokens=10, output_tokens=5)


def role_of(messages: list[dict]) -> str:
    system = messages[0]["content"]
    if system.startswith("You are the orchestrator"):
        return "orchestrator"
    if system.startswith("You are the reviewer"):
        return "reviewer"
    return "specialist"


class ScriptedModel:
    """`answer(messages, tool_names)` returns a ModelReply, or None to let the demo answer."""

    endpoint = "scripted"

    def __init__(self, answer: Callable[[list[dict], set[str]], ModelReply | None]):
        self.answer = answer
        self.demo = DemoModel()
        self.requests: list[list[dict]] = []

    def complete(self, *, model, messages, tools, temperature) -> ModelReply:
        self.requests.append([dict(m) for m in messages])
        names = {t["function"]["name"] for t in tools}
        reply = self.answer(messages, names)
        if reply is None:
            return self.demo.complete(
                model=model, messages=messages, tools=tools, temperature=temperature
            )
        return reply
