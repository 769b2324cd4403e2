"""The ModelClient for any OpenAI-compatible Chat Completions endpoint, through the official SDK.

Retrying is left to the SDK on purpose: it already retries connection errors, timeouts, 408,
409, 429 and 5xx with exponential backoff and honours Retry-After / retry-after-ms, and a second
loop here would multiply attempts and ignore what the server asked for. This adapter only
shapes the request, folds the answer (plain or streamed) into a ModelReply, and turns every
failure into a ModelError that says which endpoint failed, how, and whether it was transient.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agents.llm.base import ModelError, ModelReply, ToolRequest

log = logging.getLogger(__name__)

#: Statuses the SDK retries by itself (see openai._base_client._should_retry): when one still
#: surfaces, the retries were spent and the failure is transient.
_RETRIED_STATUSES = frozenset({408, 409, 429})


class _InvalidResponse(Exception):
    """The endpoint answered 2xx with something that is not a usable chat completion."""


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIModelClient:
    """One SDK client per instance; `complete` is safe to call from several threads at once
    (the SDK's HTTP client pools connections and keeps no per-request state)."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        max_retries: int,
        stream: bool,
    ) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.stream = stream
        # Local servers (Ollama, vLLM, llama.cpp) need no key, but the SDK refuses to start
        # without one.
        self._client = openai.OpenAI(
            base_url=base_url or None,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )
        # Resolved once: `chat` is a lazily built property, not worth racing over in threads.
        self._completions = self._client.chat.completions
        #: Shown in the trace; the SDK's resolution (argument, OPENAI_BASE_URL, default).
        self.endpoint: str = str(self._client.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"OpenAIModelClient({self.endpoint!r}, stream={self.stream})"

    def close(self) -> None:
        """Release pooled connections (the shared client normally lives as long as the process)."""
        self._client.close()

    def complete(
        self,
        *,
        model: str,
        messages: list[dict],
        tools: list[dict],
        temperature: float,
    ) -> ModelReply:
        """One chat completion; raises ModelError once the SDK's own retries are spent."""
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": temperature,
        }
        if tools:
            # Some servers reject an empty `tools` list, so it is only sent when there are tools.
            request["tools"] = tools
        try:
            if self.stream:
                return self._complete_streaming(request)
            return self._complete_plain(request)
        except ModelError:
            raise
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise ModelError(
                f"Model endpoint {self.endpoint} did not answer within {self.timeout:g} s"
                f"{self._retried_note()}",
                transient=True,
            ) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise ModelError(
                f"Connection to model endpoint {self.endpoint} failed: {cause}"
                f"{self._retried_note()}",
                transient=True,
            ) from exc
        except openai.APIResponseValidationError as exc:
            raise self._invalid(exc.message) from exc
        except openai.APIError as exc:
            # An error event inside a stream: the SDK does not retry those.
            raise ModelError(
                f"Model endpoint {self.endpoint} reported an error: {exc.message}"
            ) from exc
        except _InvalidResponse as exc:
            raise self._invalid(str(exc)) from exc
        except openai.OpenAIError as exc:
            raise ModelError(f"Model endpoint {self.endpoint} failed: {exc}") from exc
        except Exception as exc:
            # Non-SDK exceptions here come from decoding the body (JSON errors, unexpected
            # shapes): the endpoint answered, but not with a chat completion.
            log.debug("Could not parse the reply of %s", self.endpoint, exc_info=True)
            raise self._invalid(f"{type(exc).__name__}: {exc}") from exc

    # -- plain

    def _complete_plain(self, request: dict[str, Any]) -> ModelReply:
        completion = self._completions.create(**request)
        if not isinstance(completion, ChatCompletion):
            # The SDK hands back the raw text when the body is not JSON.
            raise _InvalidResponse(f"expected a chat completion, got {_preview(completion)}")
        if not completion.choices:
            raise _InvalidResponse("the completion has no choices")
        choice = completion.choices[0]
        message = choice.message
        if message is None:
            raise _InvalidResponse("the first choice has no message")
        content = message.content
        if content is None and getattr(message, "refusal", None):
            content = message.refusal
        if content is not None and not isinstance(content, str):
            raise _InvalidResponse(f"message content is {type(content).__name__}, not text")
        calls = [
            ToolRequest(
                id=_call_id(getattr(call, "id", None)),
                name=_call_name(call),
                arguments=_raw_arguments(getattr(call.function, "arguments", None)),
            )
            for call in message.tool_calls or []
        ]
        input_tokens, output_tokens = _usage(completion.usage)
        return ModelReply(
            content=content,
            tool_calls=calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=completion.model or request["model"],
            finish_reason=choice.finish_reason,
        )

    # -- streamed

    def _complete_streaming(self, request: dict[str, Any]) -> ModelReply:
        stream = self._completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        content: list[str] = []
        calls: dict[int, _PartialCall] = {}
        usage = None
        model = ""
        finish_reason = None
        chunks = 0
        with stream:
            for chunk in stream:
                if not isinstance(chunk, ChatCompletionChunk):
                    raise _InvalidResponse(f"expected a stream chunk, got {_preview(chunk)}")
                chunks += 1
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    if choice.index not in (0, None):
                        continue
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        content.append(delta.content)
                    for call_delta in delta.tool_calls or []:
                        _merge_call_delta(calls, call_delta)
        if not chunks:
            raise _InvalidResponse("the stream ended without a single chunk")
        tool_calls = [
            ToolRequest(
                id=_call_id(partial.id),
                name=partial.name,
                arguments=_raw_arguments("".join(partial.arguments)),
            )
            for _, partial in sorted(calls.items())
        ]
        for call in tool_calls:
            if not call.name:
                raise _InvalidResponse(f"tool call {call.id} has no function name")
        input_tokens, output_tokens = _usage(usage)
        return ModelReply(
            content="".join(content) if content else None,
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model or request["model"],
            finish_reason=finish_reason,
        )

    # -- errors

    def _retried_note(self) -> str:
        return f" (after up to {self.max_retries} retries)" if self.max_retries else ""

    def _status_error(self, exc: openai.APIStatusError) -> ModelError:
        status = exc.status_code
        transient = status in _RETRIED_STATUSES or status >= 500
        detail = _error_detail(exc)
        note = self._retried_note() if transient else ""
        return ModelError(
            f"Model endpoint {self.endpoint} answered HTTP {status}: {detail}{note}",
            transient=transient,
            status=status,
        )

    def _invalid(self, reason: str) -> ModelError:
        return ModelError(f"Model endpoint {self.endpoint} returned an invalid response: {reason}")


def _merge_call_delta(calls: dict[int, _PartialCall], delta: Any) -> None:
    """Fold one streamed tool-call fragment into the call at its index.

    The id and name come in the first fragment, the arguments in pieces after it. A few
    servers omit `index`; then a fragment with a new id starts a call, and one without an id
    continues the last call.
    """
    index = delta.index
    if not isinstance(index, int):
        known = {partial.id for partial in calls.values()}
        starts_call = not calls or (delta.id and delta.id not in known)
        index = len(calls) if starts_call else max(calls)
    partial = calls.setdefault(index, _PartialCall())
    if delta.id and not partial.id:
        partial.id = delta.id
    function = delta.function
    if function is None:
        return
    if function.name and not partial.name:
        partial.name = function.name
    if function.arguments:
        if not isinstance(function.arguments, str):
            raise _InvalidResponse("streamed tool-call arguments are not text")
        partial.arguments.append(function.arguments)


def _call_name(call: Any) -> str:
    function = getattr(call, "function", None)
    name = getattr(function, "name", None)
    if not isinstance(name, str) or not name:
        kind = getattr(call, "type", "?")
        raise _InvalidResponse(f"a tool call of type {kind!r} has no function name")
    return name


def _raw_arguments(arguments: Any) -> str:
    """The arguments exactly as the model wrote them; validating them is the engine's job.

    Some compatible servers send an object instead of a JSON string, and leave the field out
    or empty for tools without parameters; both are turned into the JSON text the engine
    expects. Anything else, even malformed JSON, is passed through untouched.
    """
    if arguments is None or arguments == "":
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


def _call_id(value: Any) -> str:
    # The engine pairs tool results with calls by id; a few local servers leave it out.
    return value if isinstance(value, str) and value else f"call_{uuid.uuid4().hex[:24]}"


def _usage(usage: Any) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    if isinstance(body, str) and body.strip():
        text = " ".join(body.split())
        return text if len(text) <= 200 else text[:199] + "…"
    return exc.message


def _preview(value: Any, limit: int = 200) -> str:
    """A short one-line description of an unexpected body, for the error message."""
    if isinstance(value, str):
        text = " ".join(value.split())
        text = text if len(text) <= limit else text[: limit - 1] + "…"
        return f"non-JSON text {text!r}"
    text = " ".join(repr(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(value).__name__} {text}"
