"""The benchmark's model: the loopback protocol server (tests/llm_server.py), streaming as
the SDK asks by default, answering each role as a real model would in shape.

- the planner submits the shape named in the task's title ("bench:<shape>#<n>");
- a specialist first calls `write_file` on the file its step claims, after its step's
  latency, then answers once the tool's result comes back (two model turns, one tool call);
- the reviewer passes every step (a review turn per step); the reporter writes the report.
Planner, reviewer and reporter answer at once, so the critical path is the specialists'.

It runs as a process of its own (`served`), so that neither the server nor the processes it
answers share an interpreter lock with the benchmark's own client (LangGraph's graphs).
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shapes import Shape, all_shapes, claimed_path  # noqa: E402
from tests.llm_server import ScriptedLLMServer, reply  # noqa: E402


def responder(shapes: dict[str, Shape]):
    latencies: dict[str, float] = {}
    for shape in shapes.values():
        latencies |= shape.latencies

    def respond(body: dict):
        tools = {t["function"]["name"] for t in body.get("tools") or []}
        messages = body["messages"]
        first = next(m["content"] for m in messages if m["role"] == "user")
        if "submit_plan" in tools:
            title = first.split("\n", 1)[0].removeprefix("Task: bench:").split("#")[0].strip()
            return reply(tool_calls=[("submit_plan", shapes[title].plan())])
        if "submit_verdict" in tools:
            return reply(tool_calls=[("submit_verdict", {"verdict": "pass", "feedback": "ok"})])
        if first.startswith("Write the final report"):
            return reply(content="All steps done; each wrote its file.")
        key = first.split("\n", 1)[0].removeprefix("Step: ").split(" ")[0]
        if messages[-1]["role"] == "tool":
            return reply(content=f"{key}: wrote {claimed_path(key)}")
        content = f'"""Written by step {key}."""\n\nVALUE = {json.dumps(key)}\n'
        arguments = {"path": claimed_path(key), "content": content}
        return reply(tool_calls=[("write_file", arguments)], delay=latencies.get(key, 0.0))

    return respond


@contextmanager
def served() -> Iterator[str]:
    """The model server in a child process, answering every shape; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__))], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the model server did not start: {line!r}")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    import signal
    import threading

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    shapes = {shape.name: shape for shape in all_shapes()}
    server = ScriptedLLMServer(responder=responder(shapes))
    # Nothing reads the recorded requests here; thousands of runs would only fill memory.
    server._record = lambda body, headers: None
    with server:
        print(f"READY {server.base_url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
