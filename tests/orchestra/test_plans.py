"""Plan validation: pure functions, every refusal names its reason."""

from orchestra.plans import check_plan

AGENTS = {"researcher", "coder", "reviewer"}


def step(key, agent="coder", depends_on=(), claims=()):
    return {
        "key": key,
        "title": key.title(),
        "agent": agent,
        "brief": {"objective": "do", "expected_output": "x", "acceptance_criteria": ["ok"]},
        "depends_on": list(depends_on),
        "claims": list(claims),
    }


def check(*steps, max_steps=10):
    return check_plan({"steps": list(steps)}, known_agents=AGENTS, max_steps=max_steps)


def test_valid_plan_passes():
    result = check(step("a"), step("b", depends_on=["a"]))
    assert result.ok and result.orderings == []


def test_cycle_is_refused_with_its_path():
    result = check(
        step("a", depends_on=["c"]), step("b", depends_on=["a"]), step("c", depends_on=["b"])
    )
    assert not result.ok
    assert "cycle" in result.errors[0]
    assert "a -> c -> b -> a" in result.errors[0] or "->" in result.errors[0]


def test_unknown_agent_is_named():
    result = check(step("a", agent="wizard"))
    assert any("unknown agent 'wizard'" in e for e in result.errors)


def test_missing_dependency_and_self_dependency():
    result = check(step("a", depends_on=["ghost"]), step("b", depends_on=["b"]))
    assert any("'ghost', which is not in the plan" in e for e in result.errors)
    assert any("depends on itself" in e for e in result.errors)


def test_too_many_steps():
    result = check(*[step(f"s{i}") for i in range(4)], max_steps=3)
    assert any("at most 3" in e for e in result.errors)


def test_duplicate_keys_and_schema_errors():
    assert any("more than once" in e for e in check(step("a"), step("a")).errors)
    bad = check_plan({"steps": [{"key": "Bad Key!"}]}, known_agents=AGENTS, max_steps=5)
    assert not bad.ok and any("steps/0" in e for e in bad.errors)
    assert not check_plan("not a plan", known_agents=AGENTS, max_steps=5).ok


def test_concurrent_steps_sharing_a_claim_are_ordered():
    plan = [step("a", claims=["src/x.py"]), step("b", claims=["src/x.py"]), step("c", claims=["y"])]
    result = check(*plan)
    assert result.ok
    assert result.orderings == [("a", "b", "src/x.py")]
    assert plan[1]["depends_on"] == ["a"]
    assert plan[2]["depends_on"] == []


def test_ordered_steps_sharing_a_claim_need_nothing():
    result = check(step("a", claims=["f"]), step("b", depends_on=["a"], claims=["f"]))
    assert result.ok and result.orderings == []
