"""What a step's git costs: milliseconds and `git` processes per step, on the demo repository
and on a repository of 10,000 files.

A chain of steps is played against the workspace library in the order the engine calls it:
the step's worktree is cut from the run branch head (`prepare_worktree`), its agent writes one
file (not timed), the work is committed (the file named, as a first attempt written by the
file tools names what it wrote) and what it touched listed (`commit_step`), the step
branch is merged into the run branch and the new head read (`merge_step`); at the run's end
every worktree is removed (`remove_worktrees`: parked, up to ORCHESTRA_PARKED_WORKTREES, for
later runs to take), its time shared among the steps. The chain runs `--runs` times, so the
later runs show a step on parked worktrees. No database,
no model: git alone. Each repository is a clone (packed, as a project's repository is) made
in a temporary folder and deleted after.

Usage: python bench/git_cost.py [--steps 20] [--files 10000] [--runs 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestra.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from agents import workspace as git  # noqa: E402
from agents.teams import STARTER_FILES  # noqa: E402

PHASES = ("worktree", "commit", "merge", "removal")


class Meter:
    """Wall time per phase and the git processes started (every git command goes through
    subprocess.run)."""

    def __init__(self) -> None:
        self.seconds = {phase: [] for phase in PHASES}
        self.processes = 0
        self._run = subprocess.run

    def __enter__(self) -> "Meter":
        def counted(command, *args, **kwargs):
            if command and command[0] == "git":
                self.processes += 1
            return self._run(command, *args, **kwargs)

        subprocess.run = counted
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run = self._run

    def timed(self, phase: str, work: Callable):
        start = time.perf_counter()
        result = work()
        self.seconds[phase].append(time.perf_counter() - start)
        return result


def large_files(count: int) -> dict[str, str]:
    """`count` small source files, 100 to a folder."""
    return {
        f"pkg{index // 100:03d}/module{index % 100:02d}.py": f"VALUE = {index}\n"
        for index in range(count)
    }


def chain(root: Path, files: dict[str, str], steps: int, runs: int) -> list[tuple[dict, float]]:
    """Per run of a chain: median ms per phase of a step, and git processes per step. Each
    run's worktrees are removed as the engine removes them (parked, up to the setting), so
    the runs after the first take parked worktrees."""
    # A clone, as a project with a repository has: its objects arrive packed.
    source = git.ensure_repository(root / "source", seed_files=files)
    repo = git.ensure_repository(root / "repo", source=f"file://{source}")
    return [chain_run(repo, root / f"run-{run}", run, steps) for run in range(1, runs + 1)]


def chain_run(repo: Path, worktrees: Path, run: int, steps: int) -> tuple[dict, float]:
    run_branch, _ = git.start_run_branch(repo, run)
    paths = []
    with Meter() as meter:
        for index in range(steps):
            key = f"k{index:03d}"
            branch = git.step_branch_name(run, key)
            path = worktrees / key

            def prepare(branch=branch, path=path):
                base = git.head_commit(repo, run_branch)
                git.add_worktree(repo, path, branch, base)
                return base

            base = meter.timed("worktree", prepare)
            (path / "out").mkdir(exist_ok=True)
            (path / "out" / f"{key}-{run}.json").write_text(f'{{"key": "{key}"}}\n')

            def commit(path=path, base=base, key=key):
                # A first attempt written by the file tools names what it wrote, as the
                # engine does (`EngineHost.written`): the worktree is not walked.
                written = {f"out/{key}-{run}.json"}
                head = git.commit_all(
                    path, f"{key}: Step (attempt 1)", allow_empty=True, changed=written
                )
                touched = git.changed_between(path, base, head)
                assert touched == [f"out/{key}-{run}.json"], touched

            meter.timed("commit", commit)

            def merge(branch=branch, key=key):
                outcome = git.merge_step(
                    repo, run_branch, branch, worktrees / "_merge", f"Merge step {key}"
                )
                assert outcome.ok and outcome.commit == git.head_commit(repo, run_branch)

            meter.timed("merge", merge)
            paths.append(path)

        def remove():
            git.remove_worktrees(
                repo, [*paths, worktrees / "_merge"], park=settings.ORCHESTRA_PARKED_WORKTREES
            )

        meter.timed("removal", remove)
    figures = {phase: statistics.median(meter.seconds[phase]) * 1000 for phase in PHASES[:3]}
    figures["removal"] = meter.seconds["removal"][0] * 1000 / steps
    return figures, meter.processes / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps in each chain")
    parser.add_argument("--files", type=int, default=10_000, help="files in the large repo")
    parser.add_argument("--runs", type=int, default=2, help="runs of the chain, one after another")
    options = parser.parse_args()
    repositories = {
        "demo": STARTER_FILES["software"],
        f"{options.files} files": large_files(options.files),
    }
    print(
        f"git per step, {options.runs} runs of a chain of {options.steps} (median ms; removal is "
        f"the run's end / steps; {settings.ORCHESTRA_PARKED_WORKTREES} worktrees parked at most)"
    )
    print(f"{'repository':<14}{'run':>4}" + "".join(f"{p:>10}" for p in PHASES), end="")
    print(f"{'total':>10}{'git':>6}")
    for name, files in repositories.items():
        with tempfile.TemporaryDirectory(prefix="orchestra-git-cost-") as folder:
            results = chain(Path(folder), files, options.steps, options.runs)
        for run, (figures, processes) in enumerate(results, 1):
            cells = "".join(f"{figures[p]:>10.1f}" for p in PHASES)
            print(f"{name:<14}{run:>4}{cells}{sum(figures.values()):>10.1f}{processes:>6.1f}")


if __name__ == "__main__":
    main()
