"""A model's text while it streams: every streamed piece reaches the listener, throttled to
at most ten sends a second, each send the whole text so far. Over real HTTP, no database."""

import time

from agents.llm import live
from agents.llm.openai_client import OpenAIModelClient
from tests.llm_server import ScriptedLLMServer, reply

TEXT = "".join(f"word{i} " for i in range(200))


def ask(server: ScriptedLLMServer, *, stream: bool) -> str | None:
    client = OpenAIModelClient(server.base_url, None, timeout=10, max_retries=0, stream=stream)
    answer = client.complete(
        model="m", messages=[{"role": "user", "content": "Go."}], tools=[], temperature=0
    )
    return answer.content


def test_every_streamed_piece_reaches_the_listener_in_order():
    pieces: list[str] = []
    with ScriptedLLMServer() as server:
        server.script(reply(TEXT, pieces=40), reply(TEXT))
        live.listen(pieces.append)
        try:
            assert ask(server, stream=True) == TEXT
            streamed = len(pieces)
            assert ask(server, stream=False) == TEXT
        finally:
            live.listen(None)
    assert streamed == 40 and "".join(pieces) == TEXT
    assert len(pieces) == 40, "an answer that is not streamed sends nothing live"


def test_sends_are_throttled_to_ten_a_second_each_the_text_so_far():
    sent: list[str] = []
    with ScriptedLLMServer() as server:
        server.script(reply(TEXT, pieces=100, chunk_delay=0.01))
        live.listen(live.Throttled(sent.append, interval=0.1))
        started = time.monotonic()
        try:
            assert ask(server, stream=True) == TEXT
        finally:
            live.listen(None)
        elapsed = time.monotonic() - started
    assert elapsed > 0.9, "100 pieces 10 ms apart"
    assert 2 <= len(sent) <= elapsed / 0.1 + 1, (len(sent), elapsed)
    assert all(TEXT.startswith(text) for text in sent)
    assert all(len(a) < len(b) for a, b in zip(sent, sent[1:], strict=False))
