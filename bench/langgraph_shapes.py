"""The same plan shapes as LangGraph graphs, for a side-by-side figure in one run.

Each step is an async node of a StateGraph; a step with several dependencies joins them
(`add_edge([a, b], c)` waits for both). A node's "model" is the same loopback protocol server
the engine talks to, through the same SDK (AsyncOpenAI, streaming): one call per node, which
the server answers after the step's latency. Compiled once per shape and checkpointer, then
invoked on a fresh thread per repetition; the figure is the wall time of `ainvoke`.

Run alone: python bench/langgraph_shapes.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shapes import Shape, four_shapes  # noqa: E402

CHECKPOINTERS = ("memory", "sqlite")


class State(TypedDict):
    outputs: Annotated[dict, operator.or_]


def build(shape: Shape, client):
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(State)
    dependents = {step.key: 0 for step in shape.steps}
    for step in shape.steps:
        graph.add_node(step.key, node(step.key, client))
        for dependency in step.depends_on:
            dependents[dependency] += 1
        if not step.depends_on:
            graph.add_edge(START, step.key)
        elif len(step.depends_on) == 1:
            graph.add_edge(step.depends_on[0], step.key)
        else:
            graph.add_edge(list(step.depends_on), step.key)
    for key, count in dependents.items():
        if not count:
            graph.add_edge(key, END)
    return graph


def node(key: str, client):
    async def step(state: State) -> dict:
        stream = await client.chat.completions.create(
            model="bench",
            messages=[{"role": "user", "content": f"Step: {key} — write\n\nBrief: bench"}],
            stream=True,
        )
        parts = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.tool_calls:
                parts += [c.function.arguments or "" for c in chunk.choices[0].delta.tool_calls]
        return {"outputs": {key: "".join(parts)}}

    return step


async def measure(shapes: list[Shape], model_url: str, repeat: int) -> dict[str, dict]:
    """{shape: {checkpointer: median seconds}} over `repeat` runs after one warm-up each."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=model_url, api_key="bench", max_retries=0)
    results: dict[str, dict] = {shape.name: {} for shape in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncSqliteSaver.from_conn_string(str(Path(tmp) / "graph.sqlite")) as sqlite:
            savers = {"memory": InMemorySaver(), "sqlite": sqlite}
            for shape in shapes:
                for name, saver in savers.items():
                    graph = build(shape, client).compile(checkpointer=saver)
                    walls = []
                    for index in range(repeat + 1):  # the first is a warm-up
                        config = {
                            "configurable": {"thread_id": f"{shape.name}-{name}-{index}"},
                            "recursion_limit": 10 * len(shape.steps),
                        }
                        began = time.perf_counter()
                        state = await graph.ainvoke({"outputs": {}}, config)
                        walls.append(time.perf_counter() - began)
                        if len(state["outputs"]) != len(shape.steps):
                            raise AssertionError(f"{shape.name}: not every node ran")
                    results[shape.name][name] = statistics.median(walls[1:])
    await client.close()
    return results


def run(shapes: list[Shape], model_url: str, repeat: int) -> dict[str, dict]:
    return asyncio.run(measure(shapes, model_url, repeat))


def main() -> None:
    from bench.model import served

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shapes = four_shapes()
    with served() as model_url:
        results = run(shapes, model_url, args.repeat)
    for shape in shapes:
        walls = results[shape.name]
        figures = "  ".join(f"{name} {walls[name] * 1000:7.1f} ms" for name in CHECKPOINTERS)
        if shape.per_step:
            per = "  ".join(
                f"{name} {walls[name] / len(shape.steps) * 1000:5.2f} ms/step"
                for name in CHECKPOINTERS
            )
            print(f"{shape.name:8} {figures}   {per}")
        else:
            ratios = " / ".join(f"{walls[n] / shape.critical_path:.2f}" for n in CHECKPOINTERS)
            print(f"{shape.name:8} {figures}   ratio {ratios}")


if __name__ == "__main__":
    main()
