"""The quirks of real OpenAI-compatible endpoints, each scripted on the loopback protocol
server and met by the real SDK over real HTTP. No database.

Each test fails without the handling it names: the server answers the way vLLM, Ollama,
LiteLLM, DeepSeek or OpenAI's reasoning models do.
"""

import json
import logging

import pytest

from agents.llm.base import ModelError
from agents.llm.openai_client import OpenAIModelClient
from tests.llm_server import ScriptedLLMServer, garbage, reply

MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Write two files."},
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
            },
        },
    }
]
BOTH = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


def client_of(server: ScriptedLLMServer, *, stream: bool = False, **options) -> OpenAIModelClient:
    return OpenAIModelClient(
        server.base_url, None, timeout=5, max_retries=0, stream=stream, **options
    )


def ask(client: OpenAIModelClient, messages=MESSAGES, tools=TOOLS):
    return client.complete(model="test-model", messages=messages, tools=tools, temperature=0.2)


@BOTH
def test_arguments_sent_as_an_object_become_json_text(stream):
    with ScriptedLLMServer() as server:
        server.script(
            reply(None, [("write_file", {"path": "a.txt", "text": "é"})], object_arguments=True)
        )
        [call] = ask(client_of(server, stream=stream)).tool_calls
    assert isinstance(call.arguments, str)
    assert json.loads(call.arguments) == {"path": "a.txt", "text": "é"}


@BOTH
def test_missing_and_duplicate_call_ids_are_made_unique(stream):
    with ScriptedLLMServer() as server:
        server.script(
            reply(
                None,
                [
                    ("write_file", {"path": "a"}, "call_0"),
                    ("write_file", {"path": "b"}, "call_0"),
                    ("write_file", {"path": "c"}, ""),
                ],
            )
        )
        calls = ask(client_of(server, stream=stream)).tool_calls
    ids = [c.id for c in calls]
    assert ids[0] == "call_0"
    assert len(set(ids)) == 3 and all(ids), ids
    assert [json.loads(c.arguments)["path"] for c in calls] == ["a", "b", "c"]


@BOTH
def test_tool_calls_with_finish_reason_stop_and_content_are_kept(stream):
    with ScriptedLLMServer() as server:
        server.script(
            reply("First a.txt, then b.txt.", [("write_file", {"path": "a"})], finish_reason="stop")
        )
        answer = ask(client_of(server, stream=stream))
    assert answer.finish_reason == "stop"
    assert answer.content == "First a.txt, then b.txt."
    assert [c.name for c in answer.tool_calls] == ["write_file"]
    message = answer.as_message()
    assert message["content"] and message["tool_calls"][0]["function"]["name"] == "write_file"


def test_tool_names_cut_across_stream_deltas_are_joined():
    with ScriptedLLMServer() as server:
        server.script(
            reply(
                None,
                [("write_file", {"path": "a"}), ("write_file", {"path": "b"})],
                split_names=True,
            )
        )
        calls = ask(client_of(server, stream=True)).tool_calls
    assert [c.name for c in calls] == ["write_file", "write_file"]
    assert [json.loads(c.arguments) for c in calls] == [{"path": "a"}, {"path": "b"}]


@BOTH
def test_missing_usage_is_estimated_and_marked_never_zero(stream):
    with ScriptedLLMServer() as server:
        server.script(reply("x" * 400, usage=False), reply("y", input_tokens=7, output_tokens=1))
        client = client_of(server, stream=stream)
        unknown, known = ask(client), ask(client)
    assert unknown.usage_estimated is True
    assert unknown.output_tokens == 100
    assert unknown.input_tokens > 10
    assert (known.input_tokens, known.output_tokens, known.usage_estimated) == (7, 1, False)


@BOTH
def test_reasoning_is_kept_for_the_trace_but_not_sent_back(stream):
    with ScriptedLLMServer(refuse_reasoning_input=True) as server:
        server.script(reply("The answer is 4.", reasoning="2 and 2 make 4."), reply("Done."))
        client = client_of(server, stream=stream)
        answer = ask(client, tools=[])
        follow_up = [*MESSAGES, answer.as_message(), {"role": "user", "content": "Thanks."}]
        assert ask(client, messages=follow_up, tools=[]).content == "Done."
    assert answer.reasoning == "2 and 2 make 4."
    assert answer.for_trace()["reasoning_content"] == "2 and 2 make 4."
    assert "reasoning_content" not in server.requests[1]["messages"][2]


def test_the_developer_role_is_swapped_for_system_where_refused_and_remembered(caplog):
    with ScriptedLLMServer(rejected_roles={"developer"}) as server:
        server.script(reply("one"), reply("two"))
        client = client_of(server, system_role="developer")
        with caplog.at_level(logging.WARNING):
            assert ask(client, tools=[]).content == "one"
        assert ask(client, tools=[]).content == "two"
    roles = [body["messages"][0]["role"] for body in server.requests]
    assert roles == ["developer", "system", "system"], "refused once, then remembered"
    assert "refused the developer role" in caplog.text


def test_the_system_role_is_swapped_for_developer_where_refused():
    with ScriptedLLMServer(rejected_roles={"system"}) as server:
        server.script(reply("ok"))
        assert ask(client_of(server), tools=[]).content == "ok"
    assert [body["messages"][0]["role"] for body in server.requests] == ["system", "developer"]


@pytest.mark.parametrize(
    ("param", "stream", "options"),
    [
        ("parallel_tool_calls", False, {"parallel_tool_calls": True}),
        ("stream_options", True, {}),
    ],
)
def test_an_unsupported_parameter_is_dropped_once_and_remembered(param, stream, options):
    with ScriptedLLMServer(rejected_params={param}) as server:
        server.script(reply("one", [("write_file", {"path": "a"})]), reply("two"))
        client = client_of(server, stream=stream, **options)
        first, second = ask(client), ask(client)
    assert (first.content, second.content) == ("one", "two")
    sent = [param in body for body in server.requests]
    assert sent == [True, False, False], "retried once without it, then never sent again"
    assert client.unsupported == {param}
    if param == "stream_options":
        assert first.usage_estimated, "a stream without stream_options has no usage"


def test_a_refusal_that_names_nothing_optional_is_not_retried():
    server = ScriptedLLMServer(rejected_params={"model"})
    with server, pytest.raises(ModelError) as caught:
        ask(client_of(server))
    assert caught.value.status == 400
    assert len(server.requests) == 1


def test_a_context_length_error_gives_both_numbers():
    with ScriptedLLMServer(context_window=50) as server, pytest.raises(ModelError) as caught:
        ask(client_of(server), messages=[{"role": "user", "content": "word " * 200}])
    message = str(caught.value)
    assert "too long for test-model" in message
    assert "its context window takes 50 tokens" in message
    assert caught.value.transient is False
    asked = int(message.split(" tokens sent")[0].rsplit(" ", 1)[1])
    assert asked > 250, message


@BOTH
def test_an_html_page_says_so_and_points_at_the_base_url(stream):
    page = "<!DOCTYPE html><html><head><title>Open WebUI</title></head><body>app</body></html>"
    with ScriptedLLMServer() as server:
        server.script(garbage(page))
        with pytest.raises(ModelError) as caught:
            ask(client_of(server, stream=stream))
    message = str(caught.value)
    assert "an HTML page ('Open WebUI')" in message
    assert f"is {server.base_url} the API's base URL? It usually ends in /v1" in message
