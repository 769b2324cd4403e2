"""The scheduling benchmark's printout: one side-by-side table, the per-step counts, the
scale figures, and every target it missed (returned, for --check)."""

from __future__ import annotations

from bench import shapes as plans
from bench.measure import ShapeResult

WIDTH = 104


def _figure(value: float | None, per_step: bool) -> str:
    if value is None:
        return "failed"
    return f"{value:.1f}" if per_step else f"{value:.2f}"


def _langgraph_figure(shape: plans.Shape, wall: float) -> float:
    return wall / len(shape.steps) * 1000 if shape.per_step else wall / shape.critical_path


def print_report(results: dict, shapes: list[plans.Shape]) -> list[str]:
    args = results["args"]
    modes: dict = results["modes"]
    graph = results.get("langgraph")
    missed: list[str] = []
    print()
    print("=" * WIDTH)
    print(f"Orchestra beside LangGraph: medians of {args.repeat} runs per shape, interleaved.")
    print("Figures: wall time / critical path (x), or ms per step for the chain of 50 (0 s steps).")
    print(
        "Orchestra step = a specialist turn calling write_file on its claimed file, its answer,\n"
        "a review turn (the reviewer passes) and the merge into the run branch: REVIEW TURNS\n"
        "AND MERGES ARE INCLUDED. Model streaming on (the default). Repository: "
        f"{results['repository']}."
    )
    print(
        "Windows: run = task created -> run completed (planning, run branch and report in);\n"
        "         dispatch = first step dispatched -> last step completed.\n"
        "Embedded = `orchestra up`, one process, in-process worker, on its default SQLite.\n"
        "Split = `orchestra web` + `orchestra worker` + `orchestra beat`, PostgreSQL, Redis;\n"
        f"        the worker with {args.worker_threads} threads.\n"
        "LangGraph = async StateGraph, one streamed call per node to the same model server."
    )
    print("-" * WIDTH)
    header = (
        f"{'shape':8} {'critical':>8} | {'embedded run / disp':>19} | {'split run / disp':>17} "
        f"| {'LangGraph mem / SQLite':>22} | {'x LangGraph emb / split':>23} | target"
    )
    print(header)
    print("-" * WIDTH)
    for shape in shapes:
        cells = []
        mine: dict[str, float | None] = {}
        for mode in ("embedded", "split"):
            result: ShapeResult | None = modes.get(mode, {}).get("shapes", {}).get(shape.name)
            if result is None:
                cells.append("-")
                continue
            run, dispatch = result.figure("run"), result.figure("dispatch")
            mine[mode] = run
            cells.append(f"{_figure(run, shape.per_step)} / {_figure(dispatch, shape.per_step)}")
            checked = result.figure(args.check_window)
            target = plans.TARGETS[shape.name]
            if checked is None or checked > target:
                missed.append(
                    f"{shape.name} {mode} ({args.check_window} window): "
                    f"{_figure(checked, shape.per_step)} > {target}"
                )
            if result.failures:
                missed.append(f"{shape.name} {mode}: {len(result.failures)} run(s) failed")
        if graph:
            lg = {name: _langgraph_figure(shape, wall) for name, wall in graph[shape.name].items()}
            lg_cell = f"{_figure(lg['memory'], shape.per_step)} / "
            lg_cell += _figure(lg["sqlite"], shape.per_step)
            ratios = " / ".join(
                f"{mine[m] / lg['memory']:.1f}" if mine.get(m) else "-"
                for m in ("embedded", "split")
            )
        else:
            lg_cell, ratios = "not run", "-"
        critical = f"{shape.critical_path * 1000:.0f} ms"
        unit = " ms/step" if shape.per_step else ""
        target = f"<= {plans.TARGETS[shape.name]}{unit}"
        print(
            f"{shape.name:8} {critical:>8} | {cells[0]:>19} | {cells[1]:>17} | {lg_cell:>22} "
            f"| {ratios:>23} | {target}"
        )
    print("-" * WIDTH)
    print("x LangGraph = Orchestra's run window over LangGraph in memory.")
    for mode, outcome in modes.items():
        used = [f"{name} {_cpu(result)}" for name, result in outcome.get("shapes", {}).items()]
        if used:
            print(f"CPU a step, {mode} (all its processes, user + kernel): {', '.join(used)}")
    for mode, outcome in modes.items():
        for shape_result in outcome.get("shapes", {}).values():
            for failure in shape_result.failures[:3]:
                print(f"  {mode}: {failure}")
    if not args.no_costs:
        missed += _print_costs(results.get("costs"))
    if args.scale:
        missed += _print_scale(modes)
    print("-" * WIDTH)
    if missed:
        print(f"Targets missed ({len(missed)}):")
        for line in missed:
            print(f"  MISSED {line}")
    else:
        print("Every target met.")
    print(f"Benchmark took {results['elapsed'] / 60:.1f} min.")
    return missed


def _print_costs(costs: dict | None) -> list[str]:
    print()
    print("Per step (tests/costs.py: a chain's marginal step, review and merge included):")
    if costs is None:
        print("  not measured (see the error above)")
        return ["per-step counts: not measured"]
    print(
        f"  SQL statements {costs['statements']:.1f} (BEGIN/COMMIT counted; target <= "
        f"{plans.STATEMENTS_PER_STEP}) in {costs['round_trips']:.1f} round trips   "
        f"git processes {costs['git']:.1f} "
        f"({costs['git_in_transaction']:.1f} inside a transaction; target <= "
        f"{plans.GIT_PER_STEP})   events {costs['events']:.1f}"
    )
    if "ms" in costs:
        print(
            f"  engine time in process (embedded thread pool, model answering at once) "
            f"{costs['ms']:.0f} ms/step"
        )
    missed = []
    if costs["statements"] > plans.STATEMENTS_PER_STEP:
        missed.append(f"statements per step: {costs['statements']:.1f} > 20")
    if costs["git"] > plans.GIT_PER_STEP:
        missed.append(f"git processes per step: {costs['git']:.1f} > 4")
    return missed


def _cpu(result) -> str:
    used = result.cpu_ms_per_step()
    return "not measured" if used is None else f"{used[0]:.0f} + {used[1]:.0f} ms"


def _print_scale(modes: dict) -> list[str]:
    missed = []
    print()
    wide = plans.wide_fan_out()
    print(
        f"Scale: {len(wide.steps)}-step fan-out against the 20-step one (0.2 s steps, run window):"
    )
    for mode, outcome in modes.items():
        narrow = outcome.get("shapes", {}).get("fan-out")
        narrow_wall = narrow.median("run") if narrow else None
        result = outcome.get("wide")
        wide_wall = result.median("run") if result else None
        if wide_wall is None or narrow_wall is None or result.failures:
            failed = "; ".join(result.failures) if result else ""
            print(f"  {mode:8}  not measured: {failed or 'no 20-step figure'}")
            missed.append(f"{mode}: 200-step fan-out not measured")
            continue
        times = wide_wall / narrow_wall
        over_wide = (wide_wall - wide.critical_path) / len(wide.steps) * 1000
        over_narrow = (narrow_wall - 0.2) / 20 * 1000
        spread = ", ".join(f"{t.run:.1f}" for t in result.timings)
        print(
            f"  {mode:8}  200 steps {wide_wall:6.1f} s, 20 steps {narrow_wall:5.1f} s: "
            f"{times:4.1f}x (target < {plans.WIDE_OVER_NARROW:.0f}x); overhead per step "
            f"{over_wide:.0f} ms at 200, {over_narrow:.0f} ms at 20 (200-step runs: {spread} s)"
        )
        print(
            f"            CPU a step (all its processes, user + kernel): "
            f"{_cpu(result)} at 200, {_cpu(narrow)} at 20"
        )
        if times >= plans.WIDE_OVER_NARROW:
            missed.append(f"{mode}: 200-step fan-out {times:.1f}x the 20-step one")
    small = plans.small()
    print(f"Scale: concurrent {len(small.steps)}-step runs (0.1 s steps), started at once:")
    for mode, outcome in modes.items():
        result = outcome.get("concurrent")
        if result is None:
            continue
        rss = "  ".join(f"{name} {kb / 1024:.0f} MB" for name, kb in outcome["rss"].items())
        connections = outcome.get("connections")
        connections = f"{connections}" if connections is not None else "n/a (SQLite)"
        print(
            f"  {mode:8}  {result.completed}/{result.runs} completed, {result.failed} failed, "
            f"{result.stuck} stuck, {result.unfinished} unfinished at the time limit; "
            f"{result.per_minute:.0f} runs/min over {result.wall:.0f} s; "
            f"run latency p50 {result.p50:.1f} s, p95 {result.p95:.1f} s"
        )
        print(f"  {'':8}  peak RSS {rss}; peak database connections {connections}")
        for error in result.errors:
            print(f"  {'':8}  {error}")
        if result.completed != result.runs:
            missed.append(
                f"{mode}: {result.runs - result.completed} of {result.runs} concurrent runs "
                "did not complete"
            )
    return missed
