"""What one step costs the engine: SQL statements, git subprocesses (and how many of them ran
inside a database transaction), events. Shared by the test that pins the figures and by
`make bench`, which prints them.

A chain of N steps is run in process (tasks drained in the calling thread) with a scripted
model: each step writes one file through a tool call, then answers; the reviewer passes it;
the step is merged. The cost per step is the difference between two chain lengths divided
by the difference in steps, so planning, the run branch and the report drop out, and review
and merge are included.
"""

import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

from agents.llm import override_client
from orchestra.engine import start_run
from orchestra.models import Event, Run
from tests.scripted import ScriptedModel, call, role_of, text_reply, tool_reply


@dataclass
class Cost:
    statements: int = 0
    # What the database was sent at once: a query string of two statements is one (the
    # run's lock and a block's first read, `PreparedRead.get`'s `then`).
    round_trips: int = 0
    git: int = 0
    git_in_transaction: int = 0
    events: int = 0
    seconds: float = 0.0
    # With `listed`: each statement as (the project code that issued it, its SQL, shortened).
    listed: Counter | None = None
    committed_by_a_statement: bool = False  # the transaction's COMMIT was in its last query

    def per_step(self, other: "Cost", steps: int) -> "StepCost":
        return StepCost(
            statements=(other.statements - self.statements) / steps,
            round_trips=(other.round_trips - self.round_trips) / steps,
            git=(other.git - self.git) / steps,
            git_in_transaction=(other.git_in_transaction - self.git_in_transaction) / steps,
            events=(other.events - self.events) / steps,
            ms=(other.seconds - self.seconds) / steps * 1000,
        )


@dataclass
class StepCost:
    statements: float
    round_trips: float
    git: float
    git_in_transaction: float
    events: float
    ms: float  # wall time in process, model answering at once: the engine's own time


def chain_plan(length: int, *, chained: bool = True) -> dict:
    """`length` steps, each writing its own file, each after the one before (or, not
    `chained`, all at once)."""
    brief = {"objective": "write", "expected_output": "a file", "acceptance_criteria": ["ok"]}
    return {
        "steps": [
            {
                "key": f"k{i:03d}",
                "title": f"Step {i}",
                "agent": "coder",
                "brief": brief,
                "depends_on": [f"k{i - 1:03d}"] if i and chained else [],
                "claims": [f"out/k{i:03d}.json"],
            }
            for i in range(length)
        ]
    }


def _answer(length: int, *, chained: bool = True):
    """The scripted model of `chain_plan`'s runs: the plan, each step's file and answer, a
    reviewer's pass."""

    def answer(messages, tools):
        if "submit_plan" in tools:
            return tool_reply(call("submit_plan", chain_plan(length, chained=chained), "plan"))
        if "submit_verdict" in tools:
            verdict = {"verdict": "pass", "feedback": "ok"}
            return tool_reply(call("submit_verdict", verdict, "verdict"))
        if role_of(messages) == "specialist":
            key = messages[1]["content"].split("\n", 1)[0].removeprefix("Step: ").split(" ")[0]
            if messages[-1]["role"] == "tool":
                return text_reply(f"{key} written")
            content = json.dumps({"key": key})
            return tool_reply(call("write_file", {"path": f"out/{key}.json", "content": content}))
        return None

    return answer


@contextlib.contextmanager
def _git_counted(cost: Cost):
    """Count git processes where they start: every git command goes through subprocess.run."""
    original = subprocess.run

    def counted(command, *args, **kwargs):
        if command and command[0] == "git":
            cost.git += 1
            if connection.in_atomic_block:
                cost.git_in_transaction += 1
        return original(command, *args, **kwargs)

    subprocess.run = counted
    try:
        yield
    finally:
        subprocess.run = original


_ROOT = Path(__file__).resolve().parents[1]
_OURS = tuple(str(_ROOT / part) for part in ("orchestra", "agents", "approvals"))


def _origin() -> str:
    """The project code that issued the statement: its two innermost frames (the helper that
    sent it, and what called that), e.g. `events._flush < steps._new_attempt`."""
    frames = []
    frame = sys._getframe(2)
    while frame is not None and len(frames) < 2:
        path = frame.f_code.co_filename
        if path.startswith(_OURS):
            name = Path(path).stem
            if f"{name}.{frame.f_code.co_name}" not in frames[-1:]:
                frames.append(f"{name}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(frames) or "(outside the project)"


def _shortened(sql: str) -> str:
    """The SQL with its repeated VALUES groups and column lists folded, to group by."""
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"(\((?:%s|\?)(?:, (?:%s|\?))*\))(?:, \1)+", r"\1, ...", sql)
    sql = re.sub(r"SELECT .*? FROM", "SELECT ... FROM", sql, count=1)
    return sql if len(sql) <= 160 else sql[:157] + "..."


def _listed(cost: Cost, statement: str, count: int = 1) -> None:
    if cost.listed is not None:
        cost.listed[(_origin(), statement)] += count


@contextlib.contextmanager
def _transactions_counted(cost: Cost):
    """BEGIN and COMMIT (or ROLLBACK) are statements too, sent by the driver rather than
    through a cursor: each transaction that ends counts two, or only its BEGIN when its last
    statement carried the COMMIT (`events.locked_run`), counted with that statement."""
    originals = connection.commit, connection.rollback

    def ended(original):
        def end(*args, **kwargs):
            sent = 1 if cost.committed_by_a_statement else 2
            cost.committed_by_a_statement = False
            cost.statements += sent
            cost.round_trips += sent
            what = "BEGIN" if sent == 1 else f"BEGIN ... {original.__name__.upper()}"
            _listed(cost, what, sent)
            return original(*args, **kwargs)

        return end

    connection.commit, connection.rollback = (ended(original) for original in originals)
    try:
        yield
    finally:
        connection.commit, connection.rollback = originals


def run_chain(owner, project, length: int, *, listing: bool = False) -> tuple[Run, Cost]:
    """Run a chain of `length` steps to the end; what it cost (with `listing`, each statement
    and the code that issued it, in `Cost.listed`)."""
    cost = Cost(listed=Counter() if listing else None)

    def count(execute, sql, params, many, context):
        statements = sql.count("; ") + 1  # the SQL compiled from querysets holds no "; "
        cost.statements += statements
        cost.round_trips += 1
        cost.committed_by_a_statement = sql.endswith("; COMMIT")
        if listing:
            _listed(cost, _shortened(sql), statements)
        return execute(sql, params, many, context)

    with (
        override_client(ScriptedModel(_answer(length))),
        connection.execute_wrapper(count),
        _transactions_counted(cost),
        _git_counted(cost),
    ):
        began = time.perf_counter()
        run = start_run(owner, project, f"Chain of {length}")
        cost.seconds = time.perf_counter() - began
    run.refresh_from_db()
    cost.events = Event.objects.filter(run=run).count()
    return run, cost


def step_cost(owner, project, short: int = 2, long: int = 6) -> StepCost:
    """The marginal cost of one step: two chains, the difference."""
    run_chain(owner, project, 1)  # the project's repository is made once, before either
    runs = [run_chain(owner, project, length) for length in (short, long)]
    for run, _cost in runs:
        if run.status != Run.Status.COMPLETED:
            raise AssertionError(f"run {run.pk} ended {run.status}: {run.error}")
    return runs[0][1].per_step(runs[1][1], long - short)


def step_statements(owner, project, short: int = 2, long: int = 6) -> list[tuple[float, str, str]]:
    """The statements of one step, as (times per step, issuing code, SQL): the difference of
    two chains' listings, like `step_cost`, in the order they were first sent."""
    run_chain(owner, project, 1)
    listings = [
        run_chain(owner, project, length, listing=True)[1].listed for length in (short, long)
    ]
    keys = list(listings[1]) + [key for key in listings[0] if key not in listings[1]]
    return [
        ((listings[1][key] - listings[0][key]) / (long - short), *key)
        for key in keys
        if listings[1][key] != listings[0][key]
    ]
