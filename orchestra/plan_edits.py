"""Plan review edits: an approver's changes to a proposed plan, as pure functions.

An edit list is applied to a copy of the plan; the result is checked like any proposal
(`check_plan`: known agents, existing dependencies, no cycles), and the diff records what
the approver changed, one entry per change. Edits arrive as JSON from people and scripts, so
every value is type-checked before it is used (a list where a step key belongs is refused,
not hashed) and text that cannot be stored is refused (`orchestra.text`).
"""

import copy
from collections.abc import Collection

from orchestra.plans import check_plan
from orchestra.text import json_problem

EDIT_OPS = ("edit_brief", "edit_title", "remove_step", "add_dependency", "remove_dependency")
# More edits than any plan has steps times operations is not a review, it is a flood.
MAX_EDITS = 200


class InvalidEdit(Exception):
    """The edits cannot be applied or the edited plan is not valid; says why."""


def apply_plan_edits(
    plan: dict,
    edits: list,
    *,
    known_agents: set[str],
    max_steps: int,
    known_checks: Collection[str] = ("tests",),
) -> tuple[dict, list[dict]]:
    """The edited plan and its diff. Raises InvalidEdit naming the first bad edit or every
    reason the edited plan is refused."""
    if not isinstance(edits, list) or not edits:
        raise InvalidEdit("edits must be a non-empty list")
    if len(edits) > MAX_EDITS:
        raise InvalidEdit(f"at most {MAX_EDITS} edits at once")
    problem = json_problem(edits)
    if problem:
        raise InvalidEdit(f"edits: {problem}")
    data = copy.deepcopy(plan)
    diff: list[dict] = []
    for index, edit in enumerate(edits, start=1):
        if not isinstance(edit, dict) or not isinstance(edit.get("op"), str):
            raise InvalidEdit(f"edit {index}: op must be one of {', '.join(EDIT_OPS)}")
        if edit["op"] not in EDIT_OPS:
            raise InvalidEdit(f"edit {index}: op must be one of {', '.join(EDIT_OPS)}")
        steps = {step["key"]: step for step in data["steps"]}
        key = edit.get("step")
        if not isinstance(key, str):
            raise InvalidEdit(f"edit {index}: step must be a step key (text)")
        if key not in steps:
            raise InvalidEdit(f"edit {index}: no step {key!r} in the plan")
        diff.append(_apply(data, steps, steps[key], edit, index))
    result = check_plan(
        data, known_agents=known_agents, max_steps=max_steps, known_checks=known_checks
    )
    if not result.ok:
        raise InvalidEdit("the edited plan is not valid: " + "; ".join(result.errors))
    return data, diff


def _apply(data: dict, steps: dict, step: dict, edit: dict, index: int) -> dict:
    op, key = edit["op"], step["key"]
    if op == "edit_brief":
        brief = edit.get("brief")
        if not isinstance(brief, dict):
            raise InvalidEdit(f"edit {index}: brief must be an object")
        before, step["brief"] = step["brief"], brief
        return {"op": op, "step": key, "before": before, "after": brief}
    if op == "edit_title":
        title = edit.get("title")
        if not isinstance(title, str) or not title.strip():
            raise InvalidEdit(f"edit {index}: title must be non-empty text")
        before, step["title"] = step["title"], title.strip()
        return {"op": op, "step": key, "before": before, "after": step["title"]}
    if op == "remove_step":
        if len(data["steps"]) == 1:
            raise InvalidEdit(f"edit {index}: a plan needs at least one step")
        inherited = list(step.get("depends_on", []))
        rewired = []
        data["steps"] = [s for s in data["steps"] if s["key"] != key]
        for other in data["steps"]:
            deps = other.get("depends_on", [])
            if key in deps:
                # Dependents keep waiting for what the removed step waited for.
                merged = [d for d in deps if d != key]
                merged += [d for d in inherited if d not in merged]
                other["depends_on"] = merged
                rewired.append(other["key"])
        return {"op": op, "step": key, "removed": step, "rewired": rewired}
    on = edit.get("on")
    if not isinstance(on, str):
        raise InvalidEdit(f"edit {index}: on must be a step key (text)")
    if on not in steps:
        raise InvalidEdit(f"edit {index}: no step {on!r} to depend on")
    deps = step.setdefault("depends_on", [])
    if op == "add_dependency":
        if on in deps:
            raise InvalidEdit(f"edit {index}: {key!r} already depends on {on!r}")
        deps.append(on)
    else:
        if on not in deps:
            raise InvalidEdit(f"edit {index}: {key!r} does not depend on {on!r}")
        deps.remove(on)
    return {"op": op, "step": key, "on": on}
