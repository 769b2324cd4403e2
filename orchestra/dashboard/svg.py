"""Geometry for the server-rendered pictures: the plan's dependency graph and the trace
waterfall. Pure functions over plain data; the templates draw the shapes, so every label
goes through Django's autoescaping."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

NODE_W = 188
NODE_H = 62
GAP_ALONG = 56  # between layers, in the direction of the arrows
GAP_ACROSS = 18  # between nodes of one layer
MARGIN = 10


@dataclass(frozen=True)
class Node:
    key: str
    title: str
    agent: str
    status: str
    x: int
    y: int
    w: int = NODE_W
    h: int = NODE_H

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    d: str
    done: bool


@dataclass
class Graph:
    direction: str
    width: int
    height: int
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def _layers(keys: Sequence[str], deps: dict[str, list[str]]) -> dict[str, int]:
    """Longest-path layering: a step sits one layer right of its deepest dependency.
    Unknown dependencies are ignored and a cycle (the engine refuses them) cannot loop."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(key: str) -> int:
        if key in layer:
            return layer[key]
        if key in visiting:
            return 0
        visiting.add(key)
        parents = [d for d in deps.get(key, []) if d in deps]
        layer[key] = 1 + max((depth(p) for p in parents), default=-1)
        visiting.discard(key)
        return layer[key]

    for key in keys:
        depth(key)
    return layer


def layout_plan(steps: Iterable, direction: str = "lr") -> Graph:
    """Lay out steps (objects with key, title, agent_role, status, depends_on, in plan order)
    as a layered graph, arrows pointing from a dependency to the step that waits on it.

    `direction` is "lr" (layers left to right, for wide screens) or "tb" (top to bottom, for
    narrow ones)."""
    steps = list(steps)
    deps = {s.key: list(s.depends_on or []) for s in steps}
    layer_of = _layers([s.key for s in steps], deps)
    layers: dict[int, list] = {}
    for step in steps:
        layers.setdefault(layer_of[step.key], []).append(step)

    # One barycentre pass: order a layer by the mean slot of its dependencies, so edges
    # cross less; plan order breaks ties.
    slot: dict[str, float] = {}
    for index in sorted(layers):
        order = {step.key: n for n, step in enumerate(layers[index])}

        def weight(item, order=order) -> tuple[float, int]:
            parents = [slot[d] for d in deps[item.key] if d in slot]
            mean = sum(parents) / len(parents) if parents else order[item.key]
            return (mean, order[item.key])

        layers[index].sort(key=weight)
        for position, step in enumerate(layers[index]):
            slot[step.key] = position

    widest = max((len(m) for m in layers.values()), default=0)
    nodes: dict[str, Node] = {}
    for index, members in layers.items():
        # Centre each layer across the widest one.
        offset = (widest - len(members)) * (_across(direction) + GAP_ACROSS) / 2
        for position, step in enumerate(members):
            along = MARGIN + index * (_along(direction) + GAP_ALONG)
            across = MARGIN + offset + position * (_across(direction) + GAP_ACROSS)
            x, y = (along, across) if direction == "lr" else (across, along)
            nodes[step.key] = Node(
                key=step.key,
                title=step.title,
                agent=step.agent_role,
                status=step.status,
                x=round(x),
                y=round(y),
            )

    edges = []
    for step in steps:
        for parent in deps[step.key]:
            if parent in nodes:
                source = nodes[parent]
                edges.append(
                    Edge(
                        source=parent,
                        target=step.key,
                        d=_curve(source, nodes[step.key], direction),
                        done=source.status == "done",
                    )
                )

    n_layers = len(layers)
    along_size = 2 * MARGIN + n_layers * _along(direction) + max(n_layers - 1, 0) * GAP_ALONG
    across_size = 2 * MARGIN + widest * _across(direction) + max(widest - 1, 0) * GAP_ACROSS
    width, height = (along_size, across_size) if direction == "lr" else (across_size, along_size)
    return Graph(direction, width, height, list(nodes.values()), edges)


def _along(direction: str) -> int:
    return NODE_W if direction == "lr" else NODE_H


def _across(direction: str) -> int:
    return NODE_H if direction == "lr" else NODE_W


def _curve(a: Node, b: Node, direction: str) -> str:
    """A cubic Bézier from the exit side of `a` to the entry side of `b` (arrow head room)."""
    if direction == "lr":
        x1, y1, x2, y2 = a.x + a.w, a.cy, b.x - 6, b.cy
        bend = (x2 - x1) / 2
        c1, c2 = (x1 + bend, y1), (x2 - bend, y2)
    else:
        x1, y1, x2, y2 = a.cx, a.y + a.h, b.cx, b.y - 6
        bend = (y2 - y1) / 2
        c1, c2 = (x1, y1 + bend), (x2, y2 - bend)
    p0, p1, p2, p3 = (f"{x:.0f},{y:.0f}" for x, y in [(x1, y1), c1, c2, (x2, y2)])
    return f"M{p0} C{p1} {p2} {p3}"


# --- the trace waterfall --------------------------------------------------------------------
@dataclass
class Span:
    """One bar of the waterfall; `left` and `width` are percentages of the shared axis."""

    kind: str  # agent_run | model_call | tool_call | wait
    label: str
    start: datetime
    end: datetime | None
    depth: int = 0
    status: str = ""
    detail: str = ""
    url: str = ""
    tokens: int | None = None
    cost: object = None
    # The agent run a span folds under ("agent-run-<pk>"), also set on that run's own span.
    group: str = ""
    # A tool call's input and output, shown when its span is opened.
    arguments: str = ""
    result: str = ""
    open_ended: bool = False
    open_for: timedelta = timedelta(0)
    left: float = 0.0
    width: float = 0.0

    @property
    def duration(self) -> timedelta | None:
        return self.end - self.start if self.end else None

    @property
    def elapsed(self) -> timedelta:
        """The duration, or for an open span the time so far (set by `waterfall`)."""
        return self.duration if self.end else self.open_for


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass
class Waterfall:
    start: datetime
    end: datetime
    spans: list[Span]
    ticks: list[Tick]
    tick_width: float  # percent of the axis between two ticks, for the grid lines

    @property
    def total(self) -> timedelta:
        return self.end - self.start


MIN_WIDTH = 0.4  # percent: the shortest call is still visible


def waterfall(spans: list[Span], start: datetime, now: datetime) -> Waterfall:
    """Place spans on one time axis from `start` to the latest end (open spans end `now`)."""
    for span in spans:
        if span.end is None:
            span.open_ended = True
            span.open_for = max(now - span.start, timedelta(0))
    ends = [span.end or now for span in spans] or [now]
    end = max([start, *ends, *(s.start for s in spans)])
    total = max((end - start).total_seconds(), 0.001)
    for span in spans:
        offset = (span.start - start).total_seconds()
        length = ((span.end or now) - span.start).total_seconds()
        span.left = round(min(max(offset / total * 100, 0), 100 - MIN_WIDTH), 3)
        span.width = round(min(max(length / total * 100, MIN_WIDTH), 100 - span.left), 3)
    step = _tick_step(total)
    return Waterfall(
        start=start,
        end=end,
        spans=spans,
        ticks=_ticks(total, step),
        tick_width=round(step / total * 100, 3),
    )


def _tick_step(total_seconds: float, most: int = 6) -> float:
    """A round interval (1, 2 or 5 times a power of ten seconds) giving at most `most` ticks."""
    raw = total_seconds / most
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _ticks(total_seconds: float, step: float) -> list[Tick]:
    ticks = []
    value = 0.0
    while value <= total_seconds + 1e-9:
        ticks.append(Tick(left=round(value / total_seconds * 100, 3), label=_seconds(value)))
        value += step
    return ticks


def _seconds(value: float) -> str:
    if value >= 60:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    if value >= 1 or value == 0:
        return f"{value:g}s"
    return f"{value * 1000:.0f}ms"
