"""What a step costs the engine is pinned: a change that adds statements or git processes to
a step's path (its attempt, tool call, review and merge) fails here, and git never runs
inside a database transaction. `make bench` prints the same figures."""

import pytest
from django.db import connection

from agents.models import AgentRun
from tests.costs import run_chain, step_cost

pytestmark = pytest.mark.django_db(transaction=True)

# Measured per step of a chain on each database, BEGIN and COMMIT counted; on PostgreSQL a
# locked block's first read goes with the lock, three times a step.
STATEMENTS = {"postgresql": 20, "sqlite": 60}
ROUND_TRIPS = {"postgresql": 17, "sqlite": 60}
# A step starts no git process: its worktree, refs, commit, touched paths, merge and removal
# are done in process (libgit2); a run starts two (its branch, the one prune at its end).
# A merge where both sides changed the same paths, and worktrees libgit2 refuses, still go
# to git.
GIT = 0


def test_a_step_costs_what_it_did_and_no_more(demo, owner):
    cost = step_cost(owner, demo)
    assert cost.statements <= STATEMENTS[connection.vendor], cost
    assert cost.round_trips <= ROUND_TRIPS[connection.vendor], cost
    assert cost.git <= GIT, cost
    assert cost.git_in_transaction == 0, cost


def test_the_stored_conversation_is_appended_turn_by_turn(demo, owner):
    run, _cost = run_chain(owner, demo, 1)
    coder = AgentRun.objects.get(run=run, purpose=AgentRun.Purpose.STEP)
    assert [m["role"] for m in coder.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert coder.messages[2]["tool_calls"][0]["function"]["name"] == "write_file"
    assert coder.messages[3]["content"].endswith("characters to out/k000.json")
    assert coder.messages[4]["content"] == "k000 written"
    assert coder.turns == 2


def test_the_listing_names_every_statement_it_counts(demo, owner):
    """`bench/step_costs.py --statements` lists what the count counts, each statement with
    the code that issued it."""
    _run, cost = run_chain(owner, demo, 1, listing=True)
    assert sum(cost.listed.values()) == cost.statements
    origins = {origin for origin, _sql in cost.listed}
    assert any(origin.startswith("events.locked_run") for origin in origins), origins
    assert "(outside the project)" not in origins, origins
