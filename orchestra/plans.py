"""The plan format and its validation: pure functions, no database.

The orchestrator hands back a plan through the `submit_plan` tool. `check_plan` lists every
reason a plan cannot run (unknown agents, missing or cyclic dependencies, too many steps);
steps that could run at the same time and claim the same resource are not an error: the
engine orders them (earlier in the plan first) and records the ordering it added.
"""

from collections.abc import Collection
from dataclasses import dataclass, field

from orchestra.schema import schema_errors

STEP_KEY_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"

PLAN_SCHEMA: dict = {
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "summary": {"type": "string", "maxLength": 4000},
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["key", "title", "agent", "brief"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string", "pattern": STEP_KEY_PATTERN},
                    "title": {"type": "string", "minLength": 1, "maxLength": 300},
                    "agent": {"type": "string", "minLength": 1, "maxLength": 64},
                    "brief": {
                        "type": "object",
                        "required": ["objective", "expected_output", "acceptance_criteria"],
                        "properties": {
                            "objective": {"type": "string", "minLength": 1, "maxLength": 8000},
                            "context": {"type": "string", "maxLength": 8000},
                            "inputs": {"type": "array", "items": {"type": "string"}},
                            "expected_output": {"type": "string", "maxLength": 4000},
                            "constraints": {
                                "type": "array",
                                "items": {"type": "string", "maxLength": 2000},
                            },
                            "acceptance_criteria": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "maxLength": 2000},
                            },
                            # Names of the project's checks, run in the step's worktree
                            # before review ("tests" is the project's test command).
                            "checks": {
                                "type": "array",
                                "items": {"type": "string", "minLength": 1, "maxLength": 500},
                                "maxItems": 20,
                            },
                        },
                    },
                    "depends_on": {
                        "type": "array",
                        "items": {"type": "string"},
                        "uniqueItems": True,
                    },
                    "claims": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": 500},
                        "uniqueItems": True,
                    },
                },
            },
        },
    },
}


@dataclass
class PlanCheck:
    errors: list[str] = field(default_factory=list)
    # (earlier_key, later_key, resource): orderings the engine adds for shared claims.
    orderings: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_plan(
    plan: object,
    *,
    known_agents: set[str],
    max_steps: int,
    known_checks: Collection[str] = ("tests",),
) -> PlanCheck:
    """Every reason `plan` cannot run, and the orderings needed to keep claims apart. A step's
    checks must name checks the project defines (`known_checks`): a plan never carries a
    command of its own."""
    result = PlanCheck()
    shape_errors = schema_errors(PLAN_SCHEMA, plan, root="plan")
    if shape_errors:
        result.errors = shape_errors[:20]
        return result
    steps = plan["steps"]
    if len(steps) > max_steps:
        result.errors.append(f"the plan has {len(steps)} steps; at most {max_steps} are allowed")
    keys = [step["key"] for step in steps]
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            result.errors.append(f"step key {key!r} is used more than once")
        seen.add(key)
    for step in steps:
        if step["agent"] not in known_agents:
            result.errors.append(
                f"step {step['key']!r} is assigned to unknown agent {step['agent']!r}; "
                f"available agents: {', '.join(sorted(known_agents))}"
            )
        for check in step["brief"].get("checks", []):
            if check not in known_checks:
                result.errors.append(
                    f"step {step['key']!r} asks for the check {check[:80]!r}, which this "
                    "project does not define; checks name the project's checks ("
                    + (", ".join(sorted(known_checks)) or "none defined")
                    + "), never commands"
                )
        for dependency in step.get("depends_on", []):
            if dependency == step["key"]:
                result.errors.append(f"step {step['key']!r} depends on itself")
            elif dependency not in seen:
                result.errors.append(
                    f"step {step['key']!r} depends on {dependency!r}, which is not in the plan"
                )
    if result.errors:
        return result
    graph = {step["key"]: list(step.get("depends_on", [])) for step in steps}
    cycle = find_cycle(graph)
    if cycle:
        result.errors.append("the dependencies form a cycle: " + " -> ".join(cycle))
        return result
    result.orderings = order_shared_claims(steps, graph)
    return result


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first node repeated at the end), or None."""
    visiting, done = set(), set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        visiting.add(node)
        path.append(node)
        for dependency in graph.get(node, []):
            if dependency in visiting:
                return path[path.index(dependency) :] + [dependency]
            if dependency not in done:
                found = visit(dependency)
                if found:
                    return found
        visiting.discard(node)
        done.add(node)
        path.pop()
        return None

    for node in graph:
        if node not in done:
            found = visit(node)
            if found:
                return found
    return None


def ancestors(graph: dict[str, list[str]]) -> dict[str, set[str]]:
    """Every step's transitive dependencies (the graph must be acyclic)."""
    memo: dict[str, set[str]] = {}

    def of(node: str) -> set[str]:
        if node not in memo:
            found: set[str] = set()
            for dependency in graph.get(node, []):
                found.add(dependency)
                found |= of(dependency)
            memo[node] = found
        return memo[node]

    for node in graph:
        of(node)
    return memo


def order_shared_claims(steps: list[dict], graph: dict[str, list[str]]) -> list[tuple]:
    """Add a dependency between any two steps that could overlap in time and claim the same
    resource (the earlier in the plan goes first). Mutates `graph` and the steps'
    `depends_on`; edges always point from later to earlier in plan order, so no cycle forms."""
    added: list[tuple[str, str, str]] = []
    by_key = {step["key"]: step for step in steps}
    for later_index, later in enumerate(steps):
        for earlier in steps[:later_index]:
            shared = sorted(set(earlier.get("claims", [])) & set(later.get("claims", [])))
            if not shared:
                continue
            reach = ancestors(graph)
            if earlier["key"] in reach[later["key"]] or later["key"] in reach[earlier["key"]]:
                continue
            graph[later["key"]].append(earlier["key"])
            by_key[later["key"]]["depends_on"] = graph[later["key"]]
            added.append((earlier["key"], later["key"], shared[0]))
    return added
