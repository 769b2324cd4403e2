"""The plan shapes every benchmark runs, Orchestra's and LangGraph's alike.

A shape is a list of steps in dependency order, each with the model latency its specialist
waits for. Step keys carry their shape's letter, so a model that sees only a step's key
(the loopback server's responder) knows its latency.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    key: str
    depends_on: tuple[str, ...] = ()
    latency: float = 0.0


@dataclass(frozen=True)
class Shape:
    name: str
    steps: tuple[Step, ...]
    #: Say so in the output: the chain is measured per step, the others as a ratio.
    per_step: bool = False
    latencies: dict[str, float] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "latencies", {s.key: s.latency for s in self.steps})

    @property
    def critical_path(self) -> float:
        """The sum of latencies along the longest path: the least any scheduler can take."""
        finish: dict[str, float] = {}
        for step in self.steps:  # listed in dependency order
            start = max((finish[d] for d in step.depends_on), default=0.0)
            finish[step.key] = start + step.latency
        return max(finish.values())

    def plan(self) -> dict:
        """What the planner submits: each step claims the one file it writes."""
        return {"steps": [plan_step(step) for step in self.steps]}


def plan_step(step: Step) -> dict:
    brief = {
        "objective": f"bench {step.key}",
        "expected_output": f"src/bench/{step.key}.py written",
        "acceptance_criteria": ["the file exists"],
    }
    return {
        "key": step.key,
        "title": f"Write {step.key}",
        "agent": "coder",
        "brief": brief,
        "depends_on": list(step.depends_on),
        "claims": [claimed_path(step.key)],
    }


def claimed_path(key: str) -> str:
    return f"src/bench/{key}.py"


def fan_out(width: int = 20, latency: float = 0.2, letter: str = "f") -> Shape:
    steps = tuple(Step(f"{letter}{i:03d}", (), latency) for i in range(width))
    return Shape("fan-out" if width == 20 else f"fan-out {width}", steps)


def diamond(depth: int = 5, width: int = 4, latency: float = 0.1) -> Shape:
    """Every step of a layer depends on every step of the layer before."""
    steps: list[Step] = []
    previous: tuple[str, ...] = ()
    for layer in range(depth):
        current = tuple(f"d{layer}w{w}" for w in range(width))
        steps += [Step(key, previous, latency) for key in current]
        previous = current
    return Shape("diamond", tuple(steps))


def skewed() -> Shape:
    """A chain of five 100 ms steps beside one 500 ms step: a superstep barrier costs 1.8x."""
    chain = [Step("s0", (), 0.1)] + [Step(f"s{i}", (f"s{i - 1}",), 0.1) for i in range(1, 5)]
    return Shape("skewed", (*chain, Step("slong", (), 0.5)))


def chain(length: int = 50) -> Shape:
    steps = [Step("k00")] + [Step(f"k{i:02d}", (f"k{i - 1:02d}",)) for i in range(1, length)]
    return Shape("chain", tuple(steps), per_step=True)


def small(latency: float = 0.1) -> Shape:
    """Five steps, one fanning out to three that join again: the concurrent-runs plan."""
    first, last = Step("v0", (), latency), Step("v4", ("v1", "v2", "v3"), latency)
    middle = tuple(Step(f"v{i}", ("v0",), latency) for i in (1, 2, 3))
    return Shape("five", (first, *middle, last))


def four_shapes() -> list[Shape]:
    return [fan_out(), diamond(), skewed(), chain()]


def all_shapes() -> list[Shape]:
    return [*four_shapes(), wide_fan_out(), small()]


def wide_fan_out() -> Shape:
    """The scale check: 200 steps of the fan-out's latency, against its 20."""
    return fan_out(200, letter="g")


#: Targets (issue "Speed"): ratio to the critical path, or milliseconds per chain step.
TARGETS = {"fan-out": 1.25, "diamond": 1.15, "skewed": 1.10, "chain": 15.0}
STATEMENTS_PER_STEP = 20
GIT_PER_STEP = 4
WIDE_OVER_NARROW = 10.0
