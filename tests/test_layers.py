"""The layers' direction is enforced: `lint-imports` (run by `make lint`) passes on the code as
it is and fails on a copy with one reversed import."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestra", "agents", "approvals")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_layers_hold_and_a_reversed_import_is_refused(tmp_path):
    tree = _copy(tmp_path)
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "Contracts: 2 kept, 0 broken." in kept.stdout

    # The agents layer reaching up into the engine: what the contracts exist to stop.
    teams = tree / "agents" / "teams.py"
    teams.write_text(teams.read_text() + "\nfrom orchestra.engine import start_run  # noqa\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "agents is not allowed to import orchestra.engine" in broken.stdout
    assert "agents.teams -> orchestra.engine" in broken.stdout
