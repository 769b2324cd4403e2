"""What a streamed model call costs the calling process's interpreter, by HTTP stack.

Every step of a plan makes three model calls (its specialist's tool call and answer, its
review), and in the embedded mode they share one interpreter with the engine and the web
server: the CPU a call takes in its thread is taken from everything else. This measures it
for the same two requests, as the product's client sends them (the specialist's second turn,
with its tools, answered with text; a review turn answered with a tool call), against the
benchmark's model server in a process of its own (`bench.model.served`):

- `product`: `OpenAIModelClient.complete`, streaming (the default): the openai SDK on httpx;
- `httpx`: the same body posted with a bare `httpx.Client` stream, lines parsed as JSON;
- `http.client`: the same with the standard library's connection, lines parsed as JSON.

The last two are not the product: they show what the layers under the SDK cost. Rounds are
interleaved; medians of their CPU a call (the calling thread's, `time.thread_time`).

Usage: python bench/model_calls.py [--calls 200] [--rounds 5]
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402

from agents.llm.openai_client import OpenAIModelClient  # noqa: E402
from agents.loop.outcomes import OutputTool  # noqa: E402
from agents.tools.registry import REGISTRY, toolset_for  # noqa: E402
from bench.model import served  # noqa: E402
from bench.shapes import claimed_path  # noqa: E402
from orchestra.engine.review import VERDICT_SCHEMA  # noqa: E402


def requests() -> list[tuple[list[dict], list[dict]]]:
    """(messages, tools) of a specialist's second turn and of a review turn."""
    step = "Step: k001 — write the module\n\nBrief: " + "Write the module and its test. " * 20
    specialist = [
        {"role": "system", "content": "You are the backend specialist. " * 30},
        {"role": "user", "content": step},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "write_file",
                        "arguments": json.dumps({"path": claimed_path("k001"), "content": "x"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote 1 line"},
    ]
    review = [
        {"role": "system", "content": "You review a specialist's output. " * 30},
        {"role": "user", "content": "Review the output of step k001 — " + step},
    ]
    verdict = OutputTool("submit_verdict", "Submit the review verdict.", VERDICT_SCHEMA)
    tools = [tool.as_openai() for tool in toolset_for("backend", list(REGISTRY)).values()]
    return [(specialist, tools), (review, [verdict.as_openai()])]


def product(base_url: str) -> Callable[[list[dict], list[dict]], None]:
    client = OpenAIModelClient(base_url, "bench", timeout=30, max_retries=0, stream=True)

    def call(messages: list[dict], tools: list[dict]) -> None:
        client.complete(model="bench", messages=messages, tools=tools, temperature=0)

    return call


def _body(messages: list[dict], tools: list[dict]) -> dict:
    body = {"model": "bench", "messages": messages, "stream": True, "temperature": 0}
    body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = tools
    return body


def bare_httpx(base_url: str) -> Callable[[list[dict], list[dict]], None]:
    client = httpx.Client(base_url=base_url, headers={"Authorization": "Bearer bench"})

    def call(messages: list[dict], tools: list[dict]) -> None:
        content = json.dumps(_body(messages, tools))
        headers = {"Content-Type": "application/json"}
        with client.stream("POST", "/chat/completions", content=content, headers=headers) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])

    return call


def standard_library(base_url: str) -> Callable[[list[dict], list[dict]], None]:
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}

    def call(messages: list[dict], tools: list[dict]) -> None:
        content = json.dumps(_body(messages, tools)).encode()
        connection.request("POST", f"{url.path}/chat/completions", content, headers)
        response = connection.getresponse()
        if response.status != 200:
            raise SystemExit(f"the model server answered {response.status}")
        for line in response:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                json.loads(line[6:])

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls a stack makes a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bodies = requests()
    with served() as base_url:
        stacks = {
            "product": product(base_url),
            "httpx": bare_httpx(base_url),
            "http.client": standard_library(base_url),
        }
        cpu: dict[str, list[float]] = {name: [] for name in stacks}
        wall: dict[str, list[float]] = {name: [] for name in stacks}
        for call in stacks.values():  # connections open, first-call costs paid
            for messages, tools in bodies:
                call(messages, tools)
        for _round in range(args.rounds):
            for name, call in stacks.items():
                began, used = time.perf_counter(), time.thread_time()
                for n in range(args.calls):
                    call(*bodies[n % len(bodies)])
                cpu[name].append((time.thread_time() - used) / args.calls * 1000)
                wall[name].append((time.perf_counter() - began) / args.calls * 1000)
    print(f"A streamed model call, medians of {args.rounds} interleaved rounds of {args.calls}")
    print("(a specialist's answer after its tool call, and a review's tool call, in turn):")
    baseline = statistics.median(cpu["product"])
    for name in stacks:
        used = statistics.median(cpu[name])
        print(
            f"  {name:12s} {used:5.2f} ms CPU a call (calling thread), "
            f"{statistics.median(wall[name]):5.2f} ms wall; {used / baseline:4.0%} of the product's"
        )


if __name__ == "__main__":
    main()
