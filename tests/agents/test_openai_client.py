"""The OpenAI adapter against a real HTTP server, through the real SDK (no mocks).

Retries, Retry-After, timeouts and SSE parsing all happen inside the SDK and its HTTP stack, so
only real requests show whether the adapter's settings and error mapping hold. No database.
"""

import json
import time

import pytest

from agents.llm.base import ModelError, ModelReply
from agents.llm.openai_client import OpenAIModelClient
from tests.llm_server import ScriptedLLMServer, error, garbage, reply, slow
from tests.loopback import LoopbackServer, QuietHandler

MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Say hello."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Write a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                "required": ["path", "text"],
            },
        },
    }
]
# Server-directed backoff of 20 ms: keeps retry tests fast without touching SDK internals.
# (`Retry-After: 0` would not do: the SDK only honours positive values and otherwise falls
# back to its own ~0.5 s exponential backoff.)
FAST_RETRY = {"retry-after-ms": "20"}


@pytest.fixture
def server():
    with ScriptedLLMServer() as running:
        yield running


def make_client(
    server: ScriptedLLMServer, *, stream: bool = False, max_retries: int = 1, timeout: float = 5
) -> OpenAIModelClient:
    return OpenAIModelClient(
        server.base_url, None, timeout=timeout, max_retries=max_retries, stream=stream
    )


def ask(client: OpenAIModelClient, tools: list[dict] | None = None) -> ModelReply:
    return client.complete(
        model="test-model", messages=MESSAGES, tools=tools or [], temperature=0.2
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_content_reply_with_usage(server, stream):
    server.script(reply("Hello there, operator!", input_tokens=21, output_tokens=6))

    answer = ask(make_client(server, stream=stream))

    assert answer.content == "Hello there, operator!"
    assert answer.tool_calls == []
    assert (answer.input_tokens, answer.output_tokens) == (21, 6)
    assert answer.model == "test-model"
    assert answer.finish_reason == "stop"
    [sent] = server.requests
    assert sent["model"] == "test-model"
    assert sent["messages"] == MESSAGES
    assert sent["temperature"] == 0.2
    assert "tools" not in sent, "an empty tool list is not sent"
    if stream:
        assert sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True}
    else:
        assert not sent.get("stream")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_calls_are_parsed(server, stream):
    server.script(
        reply(
            "Writing both files.",
            [
                ("write_file", {"path": "a.txt", "text": "alpha"}, "call_a"),
                ("write_file", '{"path": "b.txt", "text": "beta"}', "call_b"),
            ],
            input_tokens=40,
            output_tokens=12,
        )
    )

    answer = ask(make_client(server, stream=stream), TOOLS)

    assert answer.content == "Writing both files."
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_a", "write_file", '{"path": "a.txt", "text": "alpha"}'),
        ("call_b", "write_file", '{"path": "b.txt", "text": "beta"}'),
    ]
    assert answer.finish_reason == "tool_calls"
    assert (answer.input_tokens, answer.output_tokens) == (40, 12)
    assert server.requests[0]["tools"] == TOOLS
    # The reply goes back into the conversation in wire format.
    assert answer.as_message()["tool_calls"][1]["function"]["name"] == "write_file"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_malformed_tool_arguments_are_passed_through_raw(server, stream):
    broken = '{"path": "a.txt", "text": "unterminated'
    server.script(reply(None, [("write_file", broken, "call_1")]))

    answer = ask(make_client(server, stream=stream), TOOLS)

    assert answer.content is None
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_1", "write_file", broken)
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_rate_limit_is_retried_after_retry_after(server, stream):
    server.script(error(429, headers={"Retry-After": "1"}), reply("after the wait"))

    started = time.monotonic()
    answer = ask(make_client(server, stream=stream, max_retries=1))
    elapsed = time.monotonic() - started

    assert answer.content == "after the wait"
    assert len(server.requests) == 2
    assert elapsed >= 0.9, f"Retry-After: 1 was not honoured ({elapsed:.2f} s)"
    assert [h.get("x-stainless-retry-count") for h in server.request_headers] == ["0", "1"]


def test_server_errors_are_retried_then_fail_as_transient(server):
    server.script(*[error(500, headers=FAST_RETRY) for _ in range(3)])

    with pytest.raises(ModelError) as caught:
        ask(make_client(server, max_retries=2))

    assert caught.value.transient is True
    assert caught.value.status == 500
    assert "500" in str(caught.value)
    assert server.base_url in str(caught.value)
    assert len(server.requests) == 3, "max_retries=2 means three attempts"


def test_server_error_then_success_is_invisible_to_the_caller(server):
    server.script(error(503, headers=FAST_RETRY), reply("recovered"))

    assert ask(make_client(server, stream=True)).content == "recovered"
    assert len(server.requests) == 2


def test_bad_request_fails_at_once(server):
    server.script(error(400, {"error": {"message": "model 'test-model' does not exist"}}))

    with pytest.raises(ModelError) as caught:
        ask(make_client(server, max_retries=2))

    assert caught.value.transient is False
    assert caught.value.status == 400
    assert "HTTP 400" in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert server.base_url in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("stream", "item"),
    [
        (False, garbage()),
        (False, garbage("{this is not json", content_type="application/json")),
        (
            False,
            garbage('{"id": "x", "object": "chat.completion"}', content_type="application/json"),
        ),
        (True, garbage()),
        (True, garbage("data: {truncated\n\n", content_type="text/event-stream")),
    ],
    ids=["html", "bad-json", "no-choices", "stream-html", "stream-bad-json"],
)
def test_garbage_body_is_an_invalid_response(server, stream, item):
    server.script(item)

    with pytest.raises(ModelError) as caught:
        ask(make_client(server, stream=stream))

    assert "returned an invalid response" in str(caught.value)
    assert server.base_url in str(caught.value)
    assert caught.value.transient is False
    assert len(server.requests) == 1


def test_slow_response_times_out(server):
    server.script(slow(3), slow(3))

    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        ask(make_client(server, timeout=0.3, max_retries=1))
    elapsed = time.monotonic() - started

    assert caught.value.transient is True
    assert "did not answer within 0.3 s" in str(caught.value)
    assert len(server.requests) == 2, "the SDK retries a timeout once"
    assert elapsed < 2.5


def test_unreachable_endpoint_is_transient():
    with ScriptedLLMServer() as gone:
        url = gone.base_url
    client = OpenAIModelClient(url, "", timeout=1, max_retries=0, stream=False)

    with pytest.raises(ModelError) as caught:
        ask(client)

    assert caught.value.transient is True
    assert url in str(caught.value)


def test_endpoint_and_keyless_local_servers(server):
    server.script(reply("ok"))
    client = OpenAIModelClient(server.base_url + "/", "", timeout=5, max_retries=0, stream=False)

    assert client.endpoint == server.base_url
    assert ask(client).content == "ok"
    assert server.request_headers[0]["authorization"] == "Bearer not-needed"


class _RawStream(LoopbackServer):
    """Answers every completion with the same server-sent event stream, byte for byte."""

    body = b""

    class Handler(QuietHandler):
        def do_POST(self):
            self.read_body()
            self.answer(200, self.server.owner.body, "text/event-stream")


def _streamed(body: str) -> ModelReply:
    with _RawStream() as raw:
        raw.body = body.encode()
        client = OpenAIModelClient(raw.origin + "/v1", "", timeout=5, max_retries=0, stream=True)
        return client.complete(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=[], temperature=0
        )


def _chunk(**delta) -> str:
    return json.dumps({"model": "m", "choices": [{"index": 0, "delta": delta}]})


def test_a_stream_is_read_as_server_sent_events_whatever_their_layout():
    # A comment, a field without its space, an event named, data cut over two lines (joined
    # with a newline), CRLF line ends, usage in the last chunk.
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    body = (
        ": keep-alive\n\n"
        f"data:{_chunk(content='Hel')}\n\n"
        f"event: message\ndata: {_chunk(content='lo')}\r\n\r\n"
        'data: {"model": "m", "choices": [{"index": 0,\n'
        'data: "delta": {"content": "!"}, "finish_reason": "stop"}]}\n\n'
        f"data: {usage}\n\ndata: [DONE]\n\n"
    )
    reply = _streamed(body)
    assert reply.content == "Hello!"
    assert reply.finish_reason == "stop"
    assert (reply.input_tokens, reply.output_tokens, reply.usage_estimated) == (3, 2, False)


def test_an_error_inside_a_stream_is_the_endpoints_error():
    body = (
        f"data: {_chunk(content='Hal')}\n\n"
        'data: {"error": {"message": "overloaded, try later"}}\n\n'
    )
    with pytest.raises(ModelError, match="reported an error: overloaded, try later"):
        _streamed(body)


@pytest.mark.parametrize(
    "body, why",
    [
        ("data: {not json\n\n", "expected a stream chunk, got non-JSON text '{not json'"),
        ("data: [1, 2]\n\n", "expected a stream chunk"),
        ("data: [DONE]\n\n", "the stream ended without a single chunk"),
    ],
)
def test_a_stream_that_is_not_chunks_is_an_invalid_response(body, why):
    with pytest.raises(ModelError, match="invalid response") as raised:
        _streamed(body)
    assert why in str(raised.value)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_body_sent_is_the_conversation_as_given(server, stream):
    """The SDK sends the body as built (not walked against its types): every message of a
    conversation with tool calls and results, and nothing else."""
    server.script(reply("Done."))
    conversation = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "write_file", "arguments": '{"path": "a.txt"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "written: a.txt ✓"},
    ]
    make_client(server, stream=stream).complete(
        model="test-model", messages=conversation, tools=TOOLS, temperature=0.2
    )
    [sent] = server.requests
    expected = {"model": "test-model", "messages": conversation, "temperature": 0.2}
    expected["tools"] = TOOLS
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert sent == expected
