"""The read tools are bounded: a regular expression cannot hold a worker, a huge file is
not read whole, and a search that matches everywhere returns a page of results and says how
many it left out."""

import os
import time

import pytest

from agents.tools import REGISTRY, ToolContext, ToolError
from agents.tools.files import READ_MAX_BYTES


def call(context: ToolContext, name: str, **arguments) -> str:
    tool = REGISTRY[name]
    assert tool.schema_errors(arguments) == []
    return tool.func(context, arguments)


@pytest.fixture
def context(tmp_path) -> ToolContext:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return ToolContext(workspace=workspace, run_id=1, step_key="s1", environment={})


def timed(function, *arguments, **keywords):
    started = time.monotonic()
    try:
        return function(*arguments, **keywords), time.monotonic() - started
    except ToolError as exc:
        return exc, time.monotonic() - started


# --- search_text: time ---------------------------------------------------------------------


def test_a_catastrophic_regex_returns_a_clear_error_within_the_limit(context, settings):
    settings.ORCHESTRA_SEARCH_TIMEOUT = 1
    # Backtracking tries every split of the a's between the two branches: 2^40 paths.
    (context.workspace / "evil.txt").write_text("a" * 40 + "!\n")

    outcome, took = timed(call, context, "search_text", pattern="(a|aa)+$", regex=True)

    assert isinstance(outcome, ToolError)
    assert str(outcome) == "the pattern took longer than 1 s; simplify it"
    assert took < 10


def test_the_pattern_from_the_report_returns(context, settings):
    """`(a+)+$` on 33 characters never returned with the standard library's re."""
    (context.workspace / "evil.txt").write_text("a" * 33 + "!\n")
    outcome, took = timed(call, context, "search_text", pattern="(a+)+$", regex=True)
    assert outcome == "(no matches)" or isinstance(outcome, ToolError)
    assert took < 10


def test_the_limit_is_for_the_whole_search_not_each_file(context, settings):
    settings.ORCHESTRA_SEARCH_TIMEOUT = 1
    for number in range(20):
        (context.workspace / f"evil{number:02}.txt").write_text("a" * 40 + "!\n")

    outcome, took = timed(call, context, "search_text", pattern="(a|aa)+$", regex=True)

    assert isinstance(outcome, ToolError) and "took longer than 1 s" in str(outcome)
    assert took < 10  # not 20 files x 1 s


def test_counted_repeats_that_would_take_minutes_to_compile_are_refused(context):
    (context.workspace / "a.txt").write_text("aaa\n")
    outcome, took = timed(
        call, context, "search_text", pattern="(?:(?:a{1000}){1000}){100}", regex=True
    )
    assert isinstance(outcome, ToolError)
    assert "counted repeats ({n}) multiply to more than 100000" in str(outcome)
    assert took < 10
    # Ordinary counts stay usable.
    (context.workspace / "sha.txt").write_text("commit " + "ab12" * 10 + "\n")
    found = call(context, "search_text", pattern=r"\b[0-9a-f]{40}\b", regex=True)
    assert found == "sha.txt:1: commit " + "ab12" * 10


def test_results_found_before_the_limit_stand_when_only_the_count_runs_out(context, settings):
    settings.ORCHESTRA_SEARCH_TIMEOUT = 1
    (context.workspace / "a.txt").write_text("needle\n" * 3 + "a" * 40 + "!\n")

    outcome, took = timed(
        call, context, "search_text", pattern="needle|(a|aa)+$", regex=True, max_results=3
    )

    assert outcome.splitlines() == [
        "a.txt:1: needle",
        "a.txt:2: needle",
        "a.txt:3: needle",
        "[results cut at 3; the search stopped after 1 s, so how many more there are is "
        "unknown; narrow the pattern or the folder]",
    ]
    assert took < 10


# --- search_text: size ---------------------------------------------------------------------


def test_many_matches_are_cut_with_a_count_of_the_rest(context):
    (context.workspace / "a.txt").write_text("needle\n" * 700)
    (context.workspace / "b.txt").write_text("x\nneedle\n" * 300)

    default = call(context, "search_text", pattern="needle").splitlines()
    assert len(default) == 101
    assert default[99] == "a.txt:100: needle"
    assert default[100] == (
        "[results cut at 100: 900 more not shown; narrow the pattern or the folder]"
    )

    most = call(context, "search_text", pattern="ne+dle", regex=True, max_results=500)
    assert most.splitlines()[-1] == (
        "[results cut at 500: 500 more not shown; narrow the pattern or the folder]"
    )
    assert REGISTRY["search_text"].schema_errors({"pattern": "x", "max_results": 501})


def test_matched_lines_are_clipped(context):
    (context.workspace / "long.txt").write_text("needle" + "y" * 100_000 + "\n")
    assert call(context, "search_text", pattern="needle") == "long.txt:1: needle" + "y" * 294


# --- read_file -----------------------------------------------------------------------------


def test_a_huge_file_is_read_only_up_to_the_cap(context, settings):
    huge = context.workspace / "huge.log"
    with huge.open("wb") as file:
        file.write(b"first line\n")
        file.truncate(10 * 1024**3)  # 10 GB, sparse: reading it whole would never finish

    outcome, took = timed(call, context, "read_file", path="huge.log")

    assert isinstance(outcome, str) and outcome.startswith("first line\n")
    assert outcome.endswith(
        f"\n[the file has {10 * 1024**3} bytes; only its first {READ_MAX_BYTES} were read]"
    )
    assert len(outcome) < settings.ORCHESTRA_TOOL_OUTPUT_LIMIT + 200
    assert took < 10


def test_a_file_at_the_cap_is_read_whole_then_clipped_to_the_output_limit(context, settings):
    settings.ORCHESTRA_TOOL_OUTPUT_LIMIT = 2 * READ_MAX_BYTES
    (context.workspace / "exact.txt").write_text("z" * READ_MAX_BYTES)
    assert call(context, "read_file", path="exact.txt") == "z" * READ_MAX_BYTES

    settings.ORCHESTRA_TOOL_OUTPUT_LIMIT = 100
    clipped = call(context, "read_file", path="exact.txt")
    assert clipped == "z" * 100 + f"\n[... {READ_MAX_BYTES - 100} more characters cut]"


def test_read_file_refuses_what_is_not_a_regular_file(context):
    os.mkfifo(context.workspace / "pipe")  # opening it would wait for a writer forever
    with pytest.raises(ToolError, match="no file at 'pipe'"):
        call(context, "read_file", path="pipe")
