"""A loopback server that speaks the OpenAI Chat Completions protocol, for tests and benchmarks.

The model adapter is only trustworthy if it is exercised by the real SDK over real HTTP: retries,
Retry-After, timeouts, streaming and broken bodies are all decided inside the SDK and its HTTP
stack, so mocking the SDK would test nothing that matters. This server lets a test script what
the "model" answers, item by item, and records every request body it received.

Standard library only, so it also runs as a separate process for benchmarks, from any
interpreter and without the project on the path::

    python tests/llm_server.py --port 0 --latency-ms 200 --mode echo

prints ``READY http://127.0.0.1:PORT/v1`` once it listens, then serves until SIGINT/SIGTERM.

In process::

    with ScriptedLLMServer() as server:
        server.script(reply("hi", input_tokens=3, output_tokens=1), error(429))
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

try:
    from tests.loopback import LoopbackHTTPServer, LoopbackServer, QuietHandler
except ImportError:  # run as a script: this directory is on the path, the project may not be
    from loopback import LoopbackHTTPServer, LoopbackServer, QuietHandler

__all__ = [
    "Error",
    "Garbage",
    "Item",
    "Reply",
    "Responder",
    "ScriptedLLMServer",
    "error",
    "garbage",
    "make_responder",
    "reply",
    "slow",
]

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MODELS_PATHS = ("/v1/models", "/models")


# --- What the server can answer -----------------------------------------------------------


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    #: Sent verbatim, so tests can hand the client malformed JSON on purpose.
    arguments: str
    #: None: the server numbers calls itself (call_1, call_2, ... per server).
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A successful completion (streamed as SSE when the request asks for `stream: true`)."""

    content: str | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    #: None: estimated from the request / reply size (about 4 characters a token).
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: Seconds to wait before the response headers (time to first token).
    delay: float = 0.0
    #: None: "tool_calls" when there are tool calls, else "stop".
    finish_reason: str | None = None
    #: None: echo the request's model.
    model: str | None = None
    #: Quirks of real endpoints, one switch each:
    #: tool-call arguments sent as a JSON object instead of a JSON string (some local servers);
    object_arguments: bool = False
    #: no `usage` at all, even when the request asked for it (servers that ignore
    #: stream_options);
    usage: bool = True
    #: a reasoning model's `reasoning_content` next to the answer (DeepSeek, vLLM, LiteLLM);
    reasoning: str | None = None
    #: streamed tool-call names cut across deltas too, not only the arguments.
    split_names: bool = False
    #: Streaming: content in this many pieces (None: three), this many seconds apart.
    pieces: int | None = None
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class Error:
    """An HTTP error status with a JSON (or raw text) body and optional extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Garbage:
    """A 200 whose body is not a chat completion (a proxy's HTML page, truncated JSON...)."""

    body: str = "<html><body>502 Bad Gateway (not JSON)</body></html>"
    content_type: str = "text/html"
    delay: float = 0.0


Item = Reply | Error | Garbage
#: Answers a request body when the script queue is empty; a bare str is short for reply(str).
Responder = Callable[[dict], "Item | str"]


def reply(
    content: str | None = None,
    tool_calls: Iterable[tuple] = (),
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    delay: float = 0.0,
    finish_reason: str | None = None,
    model: str | None = None,
    object_arguments: bool = False,
    usage: bool = True,
    reasoning: str | None = None,
    split_names: bool = False,
    pieces: int | None = None,
    chunk_delay: float = 0.0,
) -> Reply:
    """A completion. `tool_calls` items are ``(name, args)`` or ``(name, args, id)``; `args` is
    a dict (JSON-encoded here) or a raw string sent exactly as given; an id of "" is left out
    of the wire format altogether. The last four switches are quirks (see `Reply`)."""
    calls = []
    for call in tool_calls:
        name, arguments, *rest = call
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ScriptedToolCall(name, raw, rest[0] if rest else None))
    return Reply(
        content=content,
        tool_calls=tuple(calls),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        delay=delay,
        finish_reason=finish_reason,
        model=model,
        object_arguments=object_arguments,
        usage=usage,
        reasoning=reasoning,
        split_names=split_names,
        pieces=pieces,
        chunk_delay=chunk_delay,
    )


def error(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    delay: float = 0.0,
) -> Error:
    """An HTTP error. `body`: dict/list (sent as JSON), str (sent as is) or None for an
    OpenAI-style ``{"error": {...}}``. `headers` e.g. ``{"Retry-After": "1"}``."""
    return Error(status=status, body=body, headers=dict(headers or {}), delay=delay)


def garbage(
    body: str = Garbage.body, *, content_type: str = Garbage.content_type, delay: float = 0.0
) -> Garbage:
    """A 200 with a body that is not a chat completion (use content_type="application/json" to
    claim JSON and send something else)."""
    return Garbage(body=body, content_type=content_type, delay=delay)


def slow(seconds: float, content: str | None = "slow ok") -> Reply:
    """A reply that only starts after `seconds`, to trip client timeouts."""
    return reply(content, delay=seconds)


# --- Bench responders ----------------------------------------------------------------------


def _echo_responder(latency: float) -> Responder:
    def respond(body: dict) -> Item:
        return reply("ok", delay=latency)

    return respond


#: Bench modes: name -> factory(latency_seconds) -> responder. Add modes here.
RESPONDER_FACTORIES: dict[str, Callable[[float], Responder]] = {
    "echo": _echo_responder,
}


def make_responder(mode: str, *, latency: float = 0.0) -> Responder:
    """The deterministic responder for a bench `mode`, answering after `latency` seconds.

    Benchmarks drive the engine end to end against this server, so a mode must answer from the
    request alone (no script), identically on every run."""
    try:
        factory = RESPONDER_FACTORIES[mode]
    except KeyError:
        known = ", ".join(sorted(RESPONDER_FACTORIES))
        raise ValueError(f"unknown mode {mode!r} (known: {known})") from None
    return factory(latency)


# --- Wire format ---------------------------------------------------------------------------


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _split(text: str, pieces: int = 3) -> list[str]:
    """Cut `text` into up to `pieces` non-empty parts, as a streaming model would."""
    if not text:
        return []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _arguments(item: Reply, raw: str) -> Any:
    """The arguments as sent: the JSON text, or the object it encodes for `object_arguments`."""
    return json.loads(raw) if item.object_arguments else raw


def _wire_call(call_id: str, function: dict, *, index: int | None = None) -> dict:
    """A tool call in the wire format; an empty id is left out, as some local servers do."""
    call: dict[str, Any] = {} if index is None else {"index": index}
    if call_id:
        call["id"] = call_id
    return {**call, "type": "function", "function": function}


def _error_body(status: int, message: str, kind: str = "scripted_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


# --- The server ------------------------------------------------------------------------------


class _Server(LoopbackHTTPServer):
    # Stopping must not wait for handlers still sleeping in a scripted delay.
    block_on_close = False
    # Benchmarks open many connections at once; the default backlog of 5 would reset some.
    request_queue_size = 256
    owner: ScriptedLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, pooled connections at exit) are normal here."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        if self.owner._stopping.is_set() and isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(QuietHandler):
    # Keep-alive, as real endpoints do: the SDK pools connections.
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedLLM/1.0"
    server: _Server
    # Idle keep-alive connections give up their thread eventually.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Small SSE writes must not wait for delayed ACKs (Nagle adds ~40 ms per event).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    # -- request handling

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in MODELS_PATHS:
            data = {"object": "list", "data": [{"id": "scripted", "object": "model"}]}
            self._send_json(200, data)
        else:
            self._send_json(404, _error_body(404, f"no route for GET {path}", "not_found"))

    def do_POST(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path not in CHAT_PATHS:
            self._send_json(404, _error_body(404, f"no route for POST {path}", "not_found"))
            return
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise ValueError("the request body is not a JSON object")
        except ValueError as exc:
            self._send_json(400, _error_body(400, f"invalid JSON body: {exc}", "invalid_request"))
            return
        owner._record(body, dict(self.headers.items()))
        refusal = owner._refusal(body, self.headers.get("Authorization", ""))
        if refusal is not None:
            self._send_error_item(refusal)
            return
        item = owner._next_item(body)
        if isinstance(item, str):
            # The owner could not produce an item; fail loudly and tell the SDK not to retry.
            self._send_json(
                500, _error_body(500, item, "scripted_server_error"), {"x-should-retry": "false"}
            )
            return
        if item.delay and owner._stopping.wait(item.delay):
            self.close_connection = True
            return
        try:
            if isinstance(item, Error):
                self._send_error_item(item)
            elif isinstance(item, Garbage):
                self._send_raw(200, item.body.encode(), item.content_type)
            elif body.get("stream"):
                self._send_stream(item, body)
            else:
                self._send_json(200, owner._completion(item, body))
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (timeout); nothing left to tell it.
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- response writers

    def _send_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(data).encode(), "application/json", headers)

    def _send_error_item(self, item: Error) -> None:
        if item.body is None:
            data = json.dumps(_error_body(item.status, f"scripted HTTP {item.status}")).encode()
            content_type = "application/json"
        elif isinstance(item.body, str):
            data, content_type = item.body.encode(), "text/plain"
        else:
            data, content_type = json.dumps(item.body).encode(), "application/json"
        self._send_raw(item.status, data, content_type, item.headers)

    def _send_stream(self, item: Reply, body: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, event in enumerate(self.server.owner._stream_events(item, body)):
            if index and item.chunk_delay and self.server.owner._stopping.wait(item.chunk_delay):
                return
            self._write_chunk(f"data: {event}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


class ScriptedLLMServer(LoopbackServer):
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers what the test scripted.

    Answers come from the queue filled by `script(...)`, in order, one per request (retries
    included: a 429 then a reply is two items); when the queue is empty, from `responder`
    (``fn(request_body) -> item``); otherwise the request fails with a 500 that says so.
    Every chat request body is recorded in `requests` before it is answered.

    Like real endpoints, it can refuse requests before the script is consulted (the refusal
    uses no scripted item): `api_key` answers 401 to any other bearer key; `rejected_params`
    answers 400 "Unrecognized request argument supplied: <name>" (vLLM, older Azure and
    LiteLLM); `rejected_roles` answers 400 to a message in such a role ("developer" on most
    local servers, "system" on OpenAI's o1-mini); `context_window` answers vLLM's 400 when the
    request is estimated longer; `refuse_reasoning_input` answers DeepSeek's 400 when a
    message carries `reasoning_content` back.
    """

    Handler = _Handler
    server_class = _Server
    thread_name = "scripted-llm"
    poll_interval = 0.05

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        responder: Responder | None = None,
        api_key: str | None = None,
        rejected_params: Iterable[str] = (),
        rejected_roles: Iterable[str] = (),
        context_window: int | None = None,
        refuse_reasoning_input: bool = False,
    ) -> None:
        super().__init__(host, port)
        self.responder: Responder | None = responder
        self.api_key = api_key
        self.rejected_params = frozenset(rejected_params)
        self.rejected_roles = frozenset(rejected_roles)
        self.context_window = context_window
        self.refuse_reasoning_input = refuse_reasoning_input
        self._lock = threading.Lock()
        self._queue: deque[Item] = deque()
        self._requests: list[dict] = []
        self._headers: list[dict[str, str]] = []
        self._errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()

    # -- lifecycle

    def start(self) -> ScriptedLLMServer:
        """Bind and serve in a daemon thread; the port is known when this returns."""
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        """Stop serving, wake handlers sleeping in a delay and drop open connections."""
        if self._httpd is None:
            return
        self._stopping.set()
        super().stop()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    close = stop

    @property
    def base_url(self) -> str:
        """What to give the SDK as base_url, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting

    def script(self, *items: Item | str) -> ScriptedLLMServer:
        """Queue answers, consumed one per request in order; a str is short for reply(str)."""
        with self._lock:
            self._queue.extend(reply(i) if isinstance(i, str) else i for i in items)
        return self

    @property
    def pending(self) -> int:
        """Scripted items not consumed yet (a test can assert its script was used up)."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[dict]:
        """A snapshot of the chat request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of those requests (same order), e.g. to see x-stainless-retry-count."""
        with self._lock:
            return list(self._headers)

    @property
    def errors(self) -> list[str]:
        """Why requests got the "nothing scripted"/responder-failed 500, for test messages."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget the queue, recorded requests and errors (the responder stays)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._headers.clear()
            self._errors.clear()

    # -- used by the handler

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, body: dict, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(body)
            self._headers.append({k.lower(): v for k, v in headers.items()})

    def _refusal(self, body: dict, authorization: str) -> Error | None:
        """The error a strict endpoint answers before looking at the script, if any."""
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            # Like OpenAI's, the message quotes the key it was given.
            given = authorization.removeprefix("Bearer ")
            message = f"Incorrect API key provided: {given}."
            return error(401, _error_body(401, message, "invalid_api_key"))
        for name in sorted(self.rejected_params & body.keys()):
            message = f"Unrecognized request argument supplied: {name}"
            return error(400, _error_body(400, message, "invalid_request_error"))
        messages = body.get("messages") or []
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role in self.rejected_roles:
                text = (
                    f"Unsupported value: 'messages[{index}].role' does not support '{role}' "
                    "with this model."
                )
                return error(400, _error_body(400, text, "invalid_request_error"))
            if self.refuse_reasoning_input and "reasoning_content" in (message or {}):
                text = "The reasoning_content is an intermediate result; remove it from input."
                return error(400, _error_body(400, text, "invalid_request_error"))
        if self.context_window is not None:
            asked = _estimate_tokens(json.dumps(messages) + json.dumps(body.get("tools") or []))
            if asked > self.context_window:
                text = (
                    f"This model's maximum context length is {self.context_window} tokens. "
                    f"However, you requested {asked} tokens ({asked} in the messages, 0 in "
                    "the completion). Please reduce the length of the messages or completion."
                )
                return error(400, _error_body(400, text, "BadRequestError"))
        return None

    def _next_item(self, body: dict) -> Item | str:
        """The next answer, or a str explaining why there is none."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self.responder
        if responder is None:
            problem = (
                "ScriptedLLMServer: nothing scripted for this request and no responder set "
                f"(request #{len(self.requests)})"
            )
        else:
            try:
                item = responder(body)
            except Exception as exc:
                problem = f"ScriptedLLMServer: responder raised {type(exc).__name__}: {exc}"
            else:
                if isinstance(item, str):
                    return reply(item)
                if isinstance(item, Reply | Error | Garbage):
                    return item
                problem = f"ScriptedLLMServer: responder returned {type(item).__name__}"
        with self._lock:
            self._errors.append(problem)
        return problem

    def _materialize(self, item: Reply, body: dict) -> tuple[list[tuple[str, str, str]], int, int]:
        """Tool calls with ids assigned, and the token counts to report."""
        with self._lock:
            calls = [
                (f"call_{next(self._ids)}" if c.id is None else c.id, c.name, c.arguments)
                for c in item.tool_calls
            ]
        prompt = item.input_tokens
        if prompt is None:
            prompt = _estimate_tokens(json.dumps(body.get("messages", [])))
        completion = item.output_tokens
        if completion is None:
            produced = (item.content or "") + "".join(name + args for _, name, args in calls)
            completion = _estimate_tokens(produced)
        return calls, prompt, completion

    def _envelope(self, item: Reply, body: dict, obj: str) -> dict:
        return {
            "id": f"chatcmpl-scripted-{next(self._ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": item.model or body.get("model") or "scripted",
        }

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _completion(self, item: Reply, body: dict) -> dict:
        calls, prompt, completion = self._materialize(item, body)
        message: dict[str, Any] = {"role": "assistant", "content": item.content}
        if item.reasoning is not None:
            message["reasoning_content"] = item.reasoning
        if calls:
            message["tool_calls"] = [
                _wire_call(cid, {"name": name, "arguments": _arguments(item, args)})
                for cid, name, args in calls
            ]
        answer = {
            **self._envelope(item, body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": item.finish_reason or ("tool_calls" if calls else "stop"),
                }
            ],
        }
        if item.usage:
            answer["usage"] = self._usage(prompt, completion)
        return answer

    def _stream_events(self, item: Reply, body: dict) -> Iterator[str]:
        """The SSE `data:` payloads of a streamed reply, ending with [DONE]."""
        calls, prompt, completion = self._materialize(item, body)
        include_usage = item.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        envelope = self._envelope(item, body, "chat.completion.chunk")

        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            data: dict[str, Any] = {
                **envelope,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                data["usage"] = None
            return json.dumps(data)

        yield chunk({"role": "assistant", "content": "" if item.content is not None else None})
        for piece in _split(item.reasoning or ""):
            yield chunk({"reasoning_content": piece})
        for piece in _split(item.content or "", item.pieces or 3):
            yield chunk({"content": piece})
        for index, (cid, name, args) in enumerate(calls):
            names = _split(name, 2) if item.split_names else [name]
            first = _wire_call(cid, {"name": names[0], "arguments": ""}, index=index)
            yield chunk({"tool_calls": [first]})
            for rest in names[1:]:
                yield chunk({"tool_calls": [{"index": index, "function": {"name": rest}}]})
            if item.object_arguments:
                function = {"arguments": _arguments(item, args)}
                yield chunk({"tool_calls": [{"index": index, "function": function}]})
                continue
            for piece in _split(args):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, item.finish_reason or ("tool_calls" if calls else "stop"))
        if include_usage:
            yield json.dumps({**envelope, "choices": [], "usage": self._usage(prompt, completion)})
        yield "[DONE]"


# --- Standalone process ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve a bench responder until SIGINT/SIGTERM; print READY <base_url> once listening."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each reply")
    parser.add_argument("--mode", default="echo", choices=sorted(RESPONDER_FACTORIES))
    args = parser.parse_args(argv)

    responder = make_responder(args.mode, latency=args.latency_ms / 1000.0)
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ScriptedLLMServer(args.host, args.port, responder=responder) as server:
        print(f"READY {server.base_url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
