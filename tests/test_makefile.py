"""`make up` installs only what serving needs and says what it is doing; the test and lint
tools come with `make test` / `make lint`. Read from make's own dry run (`-n -B`: every
command the target would run, none run)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target: str) -> str:
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_make_up_installs_only_what_serving_needs_and_shows_progress():
    commands = dry_run("up")
    assert "install --progress-bar on -e . " in commands
    assert "[dev]" not in commands
    assert "--quiet -e" not in commands  # pip's progress is shown, not silenced
    assert "==> Installing what serving needs" in commands
    assert commands.strip().splitlines()[-1].startswith(".venv/bin/orchestra up")


def test_make_test_and_lint_install_the_dev_tools():
    for target in ("test", "lint"):
        assert '-e ".[dev]"' in dry_run(target), target
