"""The pictures' geometry (plan graph and trace waterfall) and the event one-liners."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from orchestra.dashboard import present, svg


def step(key, depends_on=(), status="pending"):
    return SimpleNamespace(
        key=key, title=key.title(), agent_role="coder", status=status, depends_on=list(depends_on)
    )


DEMO = [
    step("research", status="done"),
    step("implement", ["research"], "running"),
    step("tests", ["research"], "running"),
    step("verify", ["implement", "tests"]),
    step("deploy", ["verify"]),
]


def test_layers_follow_dependencies_left_to_right():
    graph = svg.layout_plan(DEMO, "lr")
    x = {n.key: n.x for n in graph.nodes}
    assert x["research"] < x["implement"] == x["tests"] < x["verify"] < x["deploy"]
    y = {n.key: n.y for n in graph.nodes}
    assert y["implement"] != y["tests"]
    assert {(e.source, e.target) for e in graph.edges} == {
        ("research", "implement"),
        ("research", "tests"),
        ("implement", "verify"),
        ("tests", "verify"),
        ("verify", "deploy"),
    }
    assert all(n.x + n.w <= graph.width and n.y + n.h <= graph.height for n in graph.nodes)
    done_edges = {(e.source, e.target) for e in graph.edges if e.done}
    assert done_edges == {("research", "implement"), ("research", "tests")}


def test_top_to_bottom_swaps_the_axes():
    graph = svg.layout_plan(DEMO, "tb")
    y = {n.key: n.y for n in graph.nodes}
    assert y["research"] < y["implement"] == y["tests"] < y["verify"] < y["deploy"]
    assert graph.width < graph.height


def test_a_cycle_or_unknown_dependency_cannot_hang_the_layout():
    graph = svg.layout_plan([step("a", ["b"]), step("b", ["a"]), step("c", ["ghost"])])
    assert len(graph.nodes) == 3


def test_an_empty_plan_has_an_empty_graph():
    graph = svg.layout_plan([])
    assert graph.nodes == [] and graph.edges == []


def test_waterfall_places_spans_on_one_axis():
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    spans = [
        svg.Span("agent_run", "a", t0, t0 + timedelta(seconds=10)),
        svg.Span("model_call", "m", t0 + timedelta(seconds=5), t0 + timedelta(seconds=5.001)),
        svg.Span("wait", "w", t0 + timedelta(seconds=10), None),
    ]
    fall = svg.waterfall(spans, start=t0, now=t0 + timedelta(seconds=20))
    assert (spans[0].left, spans[0].width) == (0, 50)
    assert spans[1].left == 25 and spans[1].width == svg.MIN_WIDTH
    assert spans[2].open_ended and spans[2].left == 50 and spans[2].width == 50
    assert spans[2].elapsed == timedelta(seconds=10)
    assert [t.label for t in fall.ticks] == ["0s", "5s", "10s", "15s", "20s"]
    assert fall.tick_width == 25


def test_describe_event_reads_well():
    assert present.describe_event("phase.changed", {"phase": "review"}) == "now in review"
    assert present.describe_event(
        "approval.decided",
        {"checkpoint": 3, "decision": "reject", "comment": "no", "edited_arguments": None},
    ) == ("checkpoint #3 rejected: no")
    assert present.describe_event("tool.called", {"tool": "ls", "status": "awaiting_approval"}) == (
        "ls → awaiting approval"
    )
    assert len(present.describe_event("run.failed", {"error": "x" * 500})) == 160
    assert present.describe_event("something.new", {"a": 1}) == ""


def test_humanized_durations():
    assert present.humanize_duration(0.4123) == "412 ms"
    assert present.humanize_duration(timedelta(seconds=3.21)) == "3.2 s"
    assert present.humanize_duration(245) == "4 min 05 s"
    assert present.humanize_duration(None) == "—"
