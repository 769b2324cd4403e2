"""The ModelClient for any OpenAI-compatible Chat Completions endpoint, through the official SDK.

Retrying is left to the SDK on purpose: it already retries connection errors, timeouts, 408,
409, 429 and 5xx with exponential backoff and honours Retry-After / retry-after-ms, and a second
loop here would multiply attempts and ignore what the server asked for. This adapter only
shapes the request, folds the answer (plain or streamed) into a ModelReply, and turns every
failure into a ModelError that says which endpoint failed, how, and whether it was transient.

The quirks of real endpoints (see `agents.llm.quirks`) are absorbed here: a parameter or
system role an endpoint refuses is dropped or swapped, retried once, and remembered for the
life of the client (one client per provider); missing or duplicate tool-call ids get fresh
ones; a missing usage is estimated and marked so; reasoning is kept for the trace only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from agents.llm import live, quirks
from agents.llm.base import ModelError, ModelReply, ToolRequest

log = logging.getLogger(__name__)

#: Statuses the SDK retries by itself (see openai._base_client._should_retry): when one still
#: surfaces, the retries were spent and the failure is transient.
_RETRIED_STATUSES = frozenset({408, 409, 429})


class _InvalidResponse(Exception):
    """The endpoint answered 2xx with something that is not a usable chat completion."""


#: How many refusals (a parameter, a role) one call may adapt to before it gives up.
_MAX_ADAPTATIONS = 2


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
        name: str = "",
        default_headers: dict[str, str] | None = None,
        stream_usage: bool = True,
        parallel_tool_calls: bool | None = None,
        system_role: str = "system",
        prices: dict[str, tuple[Decimal, Decimal]] | None = None,
    ) -> None:
        """`stream_usage`: ask for usage in streams (`stream_options`); `parallel_tool_calls`:
        sent as given when tools are offered (None: not sent); `system_role`: "system", or
        "developer" for models that want it; `prices`: USD per million tokens (input,
        output) by model, from the provider's table."""
        self.name = name
        self.prices = prices or {}
        # Only to scrub it from the endpoints' error messages (some echo it, masked or not).
        self._key = api_key or ""
        self.timeout = timeout
        self.max_retries = max_retries
        self.stream = stream
        self.stream_usage = stream_usage
        self.parallel_tool_calls = parallel_tool_calls
        self.system_role = system_role
        #: Parameters this endpoint refused once; never sent again by this client.
        self.unsupported: set[str] = set()
        # Local servers (Ollama, vLLM, llama.cpp) need no key, but the SDK refuses to start
        # without one.
        self._client = openai.OpenAI(
            base_url=base_url or None,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers or None,
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
        """One chat completion; raises ModelError once the SDK's own retries are spent.

        A 400 that refuses an optional parameter or the system role is answered by sending
        the request again without it (or with the other role), at most twice per call."""
        for adaptations in range(_MAX_ADAPTATIONS + 1):
            request = self._request(model, messages, tools, temperature)
            try:
                return self._send(request)
            except ModelError as exc:
                if exc.status != 400 or adaptations == _MAX_ADAPTATIONS:
                    raise self._scrubbed(exc) from exc.__cause__
                if not self._adapt(exc.detail, request):
                    raise self._scrubbed(exc) from exc.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    def _scrubbed(self, exc: ModelError) -> ModelError:
        if not self._key or self._key not in str(exc) + exc.detail:
            return exc
        return ModelError(
            str(exc).replace(self._key, "[the key]"),
            transient=exc.transient,
            status=exc.status,
            detail=exc.detail.replace(self._key, "[the key]"),
        )

    def _request(
        self, model: str, messages: list[dict], tools: list[dict], temperature: float
    ) -> dict[str, Any]:
        if self.system_role != "system":
            messages = [
                {**m, "role": self.system_role} if m.get("role") in quirks.SYSTEM_ROLES else m
                for m in messages
            ]
        request: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if tools:
            # Some servers reject an empty `tools` list, so it is only sent when there are tools.
            request["tools"] = tools
            if self.parallel_tool_calls is not None:
                request["parallel_tool_calls"] = self.parallel_tool_calls
        if self.stream:
            request["stream"] = True
            if self.stream_usage:
                request["stream_options"] = {"include_usage": True}
        for name in self.unsupported:
            request.pop(name, None)
        return request

    def _adapt(self, detail: str, request: dict[str, Any]) -> bool:
        """Learn from a 400: True when the next attempt will differ."""
        param = quirks.unsupported_param(detail, request)
        if param is not None:
            self.unsupported.add(param)
            log.warning("%s refused `%s`; it is not sent to it again", self.endpoint, param)
            return True
        role = quirks.other_system_role(detail, self.system_role)
        if role is not None and any(m.get("role") == self.system_role for m in request["messages"]):
            log.warning("%s refused the %s role; using %s", self.endpoint, self.system_role, role)
            self.system_role = role
            return True
        return False

    def _send(self, request: dict[str, Any]) -> ModelReply:
        try:
            if self.stream:
                return self._complete_streaming(request)
            return self._complete_plain(request)
        except ModelError:
            raise
        except openai.APIStatusError as exc:
            raise self._status_error(exc, request) from exc
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
        completion = self._completions.create(**_as_sent(request))
        if not isinstance(completion, ChatCompletion):
            # The SDK hands back the raw text when the body is not JSON.
            raise _InvalidResponse(f"expected a chat completion, got {self._preview(completion)}")
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
            (getattr(call, "id", None), _call_name(call), getattr(call.function, "arguments", None))
            for call in message.tool_calls or []
        ]
        return self._reply(
            request,
            content=content,
            calls=calls,
            usage=completion.usage,
            model=completion.model,
            finish_reason=choice.finish_reason,
            reasoning=_reasoning(message),
        )

    # -- streamed

    def _complete_streaming(self, request: dict[str, Any]) -> ModelReply:
        # The SDK sends the request (retries, errors, headers as ever); the stream's events
        # are read here. The SDK's own iterator builds a typed object per chunk, which cost
        # about 0.15 ms a chunk, three times the parsing: a 500-chunk reply spent 75 ms of
        # the interpreter on it, with every agent of the process streaming beside it.
        with self._completions.with_streaming_response.create(**_as_sent(request)) as response:
            kind = response.headers.get("content-type", "")
            if "html" in kind:
                body = response.read().decode("utf-8", "replace")
                raise _InvalidResponse(f"expected a stream, got {self._preview(body)}")
            content: list[str] = []
            reasoning: list[str] = []
            calls: dict[int, _PartialCall] = {}
            usage = None
            model = ""
            finish_reason = None
            chunks = 0
            lines = response.iter_lines()
            for data in _event_data(lines):
                if data.startswith("[DONE]"):
                    for _rest in lines:  # read to the end: the connection goes back to the pool
                        pass
                    break
                chunk = _chunk(data, response.http_request)
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
                        live.text(delta.content)
                    thought = _reasoning(delta)
                    if thought:
                        reasoning.append(thought)
                    for call_delta in delta.tool_calls or []:
                        _merge_call_delta(calls, call_delta)
        if not chunks:
            raise _InvalidResponse("the stream ended without a single chunk")
        for partial in calls.values():
            if not partial.name:
                raise _InvalidResponse(f"tool call {partial.id} has no function name")
        return self._reply(
            request,
            content="".join(content) if content else None,
            calls=[(p.id, p.name, "".join(p.arguments)) for _, p in sorted(calls.items())],
            usage=usage,
            model=model,
            finish_reason=finish_reason,
            reasoning="".join(reasoning) or None,
        )

    def _reply(
        self,
        request: dict[str, Any],
        *,
        content: str | None,
        calls: list[tuple[Any, str, Any]],
        usage: Any,
        model: str | None,
        finish_reason: str | None,
        reasoning: str | None,
    ) -> ModelReply:
        """The reply, whichever way it came: ids made unique, arguments as JSON text, and
        the usage estimated (and marked so) when the endpoint sent none."""
        tool_calls = []
        seen: set[str] = set()
        for call_id, name, arguments in calls:
            unique = _call_id(call_id if call_id not in seen else None)
            seen.add(unique)
            tool_calls.append(
                ToolRequest(id=unique, name=name, arguments=_raw_arguments(arguments))
            )
        counted = _usage(usage)
        if counted is None:
            produced = (content or "") + "".join(c.name + c.arguments for c in tool_calls)
            counted = (quirks.request_tokens(request), quirks.estimate_tokens(produced))
        price = self.prices.get(request["model"])
        cost = None
        if price is not None:
            cost = (counted[0] * price[0] + counted[1] * price[1]) / Decimal(1_000_000)
        return ModelReply(
            content=content,
            tool_calls=tool_calls,
            input_tokens=counted[0],
            output_tokens=counted[1],
            model=model or request["model"],
            cost_usd=cost,
            finish_reason=finish_reason,
            usage_estimated=_usage(usage) is None,
            reasoning=reasoning,
            provider=self.name,
            endpoint=self.endpoint,
        )

    # -- errors

    def _retried_note(self) -> str:
        return f" (after up to {self.max_retries} retries)" if self.max_retries else ""

    def _status_error(self, exc: openai.APIStatusError, request: dict[str, Any]) -> ModelError:
        status = exc.status_code
        transient = status in _RETRIED_STATUSES or status >= 500
        detail = _error_detail(exc)
        page = quirks.html_page(exc.body) if isinstance(exc.body, str) else None
        shown = quirks.html_hint(page, self.endpoint) if page else detail
        note = self._retried_note() if transient else ""
        message = f"Model endpoint {self.endpoint} answered HTTP {status}: {shown}{note}"
        overflow = quirks.context_overflow(detail) if status in (400, 413, 422) else None
        if overflow is not None:
            asked, limit = overflow
            asked_text = (
                f"{asked} tokens"
                if asked
                else f"about {quirks.request_tokens(request)} tokens by Orchestra's estimate"
            )
            limit_text = f"{limit} tokens" if limit else "a limit the endpoint did not give"
            message = (
                f"The conversation is too long for {request['model']} at {self.endpoint}: "
                f"{asked_text} sent, its context window takes {limit_text} (HTTP {status}: "
                f"{detail})"
            )
        return ModelError(message, transient=transient, status=status, detail=detail)

    def _invalid(self, reason: str) -> ModelError:
        return ModelError(f"Model endpoint {self.endpoint} returned an invalid response: {reason}")

    def _preview(self, value: Any) -> str:
        """A short description of an unexpected body, for the error message."""
        page = quirks.html_page(value) if isinstance(value, str) else None
        return quirks.html_hint(page, self.endpoint) if page else _preview(value)


def _as_sent(request: dict[str, Any]) -> dict[str, Any]:
    """`create`'s arguments for the body `request`: `stream` as an argument (the SDK acts on
    it), the rest as `extra_body`, which the SDK sends as given. Passed as arguments, every
    message and tool is first walked against the SDK's typed definitions, to send the same
    body: 1.7 ms of the interpreter for a call of 4 messages, 11 ms for 42, on every call of a
    conversation as it grows. `messages` and `model` stay arguments, as `create` requires,
    empty and omitted (the body's own replace them): the model's definition lists every
    model name the SDK knows, hashed again at each call (50 against 11 us a call)."""
    body = dict(request)
    arguments: dict[str, Any] = {"model": openai.omit, "messages": []}
    if "stream" in body:
        arguments["stream"] = body.pop("stream")
    arguments["extra_body"] = body
    return arguments


def _event_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event in `lines`, in order (fields other than `data`,
    and comments, are skipped: a chat stream names no events)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _chunk(data: str, request: Any) -> _Fields:
    """One streamed chunk, read by attribute as the SDK's typed chunk is; an error sent in
    the stream raises as the SDK's iterator raises it."""
    try:
        parsed = json.loads(data)
    except ValueError:
        raise _InvalidResponse(f"expected a stream chunk, got {_preview(data)}") from None
    if not isinstance(parsed, dict):
        raise _InvalidResponse(f"expected a stream chunk, got {_preview(parsed)}")
    error = parsed.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "An error occurred during streaming"
        raise openai.APIError(message=message, request=request, body=error)
    return _Fields(parsed)


class _Fields:
    """A JSON object read by attribute (a missing field is None), its objects and lists of
    objects likewise: what the reading code expects of the SDK's typed chunks."""

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        value = self._data.get(name)
        if isinstance(value, dict):
            return _Fields(value)
        if isinstance(value, list):
            return [_Fields(item) if isinstance(item, dict) else item for item in value]
        return value


def _merge_call_delta(calls: dict[int, _PartialCall], delta: Any) -> None:
    """Fold one streamed tool-call fragment into the call at its index.

    The id and name come in the first fragment, the arguments in pieces after it (some
    servers cut the name too, or send the arguments as one object). A few servers omit
    `index`; then a fragment with a new id starts a call, and one without an id continues
    the last call.
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
    # Most servers send the whole name once; some cut it like the arguments, a few repeat it.
    if function.name and function.name != partial.name:
        partial.name += function.name
    arguments = getattr(function, "arguments", None)
    if arguments:
        partial.arguments.append(_raw_arguments(arguments))


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
    if isinstance(arguments, _Fields):  # an object in a streamed chunk, as it came
        arguments = arguments._data
    return json.dumps(arguments)


def _call_id(value: Any) -> str:
    # The engine pairs tool results with calls by id; a few local servers leave it out.
    return value if isinstance(value, str) and value else f"call_{uuid.uuid4().hex[:24]}"


def _usage(usage: Any) -> tuple[int, int] | None:
    """(input, output) tokens as the endpoint counted them; None when it did not say."""
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


def _reasoning(message: Any) -> str | None:
    """A reasoning model's thinking: `reasoning_content` (DeepSeek, vLLM, LiteLLM) or
    `reasoning` (OpenRouter, Ollama); extra fields the SDK keeps as they came."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str) and value:
            return value
    return None


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
