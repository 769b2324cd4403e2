"""Deploys: releases, their receipts, and a deploy that runs at most once per key."""

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from agents.sandbox import SandboxUnavailable, current_sandbox
from agents.tools.files import (
    SEARCH_LINE_CHARS,
)
from agents.tools.processes import (
    _command_env,
    _run,
)
from agents.tools.registry import Risk, ToolContext, ToolError, register

# --- Deploying -----------------------------------------------------------------------------

RECEIPTS_FOLDER = ".receipts"


def _receipt_path(releases: Path, key: str) -> Path:
    return releases / RECEIPTS_FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def deploy_receipt(releases: Path, key: str) -> dict | None:
    """The receipt of the deploy made under idempotency `key`, or None if there is none. A
    file that is not a receipt for `key` (unreadable, another key, no result) counts as none."""
    try:
        receipt = json.loads(_receipt_path(releases, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(receipt, dict) or receipt.get("key") != key:
        return None
    if not isinstance(receipt.get("result"), str):
        return None
    return receipt


def _write_receipt(releases: Path, receipt: dict) -> None:
    """Write the receipt atomically: a reader sees the whole receipt or none."""
    path = _receipt_path(releases, receipt["key"])
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".receipt-", suffix=".tmp", delete=False
    ) as handle:
        json.dump(receipt, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


@contextmanager
def _deploy_lock(releases: Path, key: str) -> Iterator[None]:
    """Hold the lock of deploys under `key` (a flock on a file beside its receipt), so two
    workers retrying the same call deploy once: the second finds the first one's receipt."""
    lock = _receipt_path(releases, key).with_suffix(".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _next_release(folder: Path) -> Path:
    """Create and return the next numbered release folder (mkdir is the atomic claim)."""
    numbers = [
        int(path.name[len("release-") :])
        for path in folder.iterdir()
        if re.fullmatch(r"release-\d+", path.name)
    ]
    number = max(numbers, default=0) + 1
    while True:
        target = folder / f"release-{number:04d}"
        try:
            target.mkdir()
        except FileExistsError:
            number += 1
        else:
            return target


def _copy_release(context: ToolContext, arguments: dict, export: Path, commit: str) -> str:
    assert context.releases is not None
    environment = arguments["environment"]
    folder = context.releases / environment
    folder.mkdir(parents=True, exist_ok=True)
    target = _next_release(folder)
    try:
        # symlinks=True: a link in the tree stays a link, never a copy of what it points to.
        shutil.copytree(
            export,
            target,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git"),
        )
        release = {
            "commit": commit,
            "key": context.idempotency_key,
            "run": context.run_id,
            "step": context.step_key,
            "environment": environment,
            "note": arguments.get("note", ""),
        }
        (target / "RELEASE.json").write_text(json.dumps(release, indent=2) + "\n")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ToolError(f"copying the release failed: {exc}") from None
    return f"deployed commit {commit[:12]} to {environment} as {target.name}"


def _deploy_with_command(context: ToolContext, arguments: dict, export: Path, commit: str) -> str:
    assert context.releases is not None
    environment = arguments["environment"]
    try:
        argv = shlex.split(context.deploy_command)
    except ValueError as exc:
        raise ToolError(f"cannot parse the deploy command: {exc}") from None
    env = _command_env(
        context,
        {
            "ORCHESTRA_ENVIRONMENT": environment,
            "ORCHESTRA_COMMIT": commit,
            "ORCHESTRA_DEPLOY_KEY": context.idempotency_key,
            "ORCHESTRA_RELEASES": str(context.releases),
            "ORCHESTRA_RECEIPT": str(_receipt_path(context.releases, context.idempotency_key)),
        },
    )
    try:
        sandbox = current_sandbox()
    except SandboxUnavailable as exc:
        raise ToolError(f"deploy command refused: {exc}") from None
    # It runs the shipped tree's code: confined like any command, writing only the releases
    # (its receipt included), with the network a deploy usually needs unless turned off.
    finished = _run(
        argv,
        export,
        env,
        settings.ORCHESTRA_DEPLOY_TIMEOUT,
        "deploy command",
        sandbox=sandbox,
        network=settings.ORCHESTRA_DEPLOY_NETWORK or context.network,
        writable=[context.releases],
    )
    if finished.returncode != 0:
        raise ToolError(
            f"deploy command failed with exit code {finished.returncode}\n{finished.output()}"
        )
    said = [line for line in finished.stdout.splitlines() if line.strip()]
    release = f": {said[-1][:SEARCH_LINE_CHARS]}" if said else ""
    return f"deployed commit {commit[:12]} to {environment} with the deploy command{release}"


@register(
    "deploy",
    Risk.DEPLOY,
    "Ship the run's integrated commit to a named environment.",
    {
        "type": "object",
        "properties": {
            "environment": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,39}$"},
            "note": {"type": "string", "maxLength": 2000},
        },
        "required": ["environment"],
        "additionalProperties": False,
    },
)
def deploy(context: ToolContext, arguments: dict) -> str:
    """Deploy once per idempotency key: a receipt under `releases/.receipts` records each
    deploy, and a call whose key has one returns the recorded result without doing anything."""
    if context.integrated is None:
        raise ToolError("deploy needs the run's integrated commit")
    if context.releases is None:
        raise ToolError("deploy needs a releases folder for its receipts")
    if not context.idempotency_key:
        raise ToolError("deploy needs the call's idempotency key")
    releases, key = context.releases, context.idempotency_key
    (releases / RECEIPTS_FOLDER).mkdir(parents=True, exist_ok=True)
    with _deploy_lock(releases, key):
        if receipt := deploy_receipt(releases, key):
            return "already deployed (receipt found): " + receipt["result"]
        with tempfile.TemporaryDirectory(
            prefix="orchestra-deploy-", ignore_cleanup_errors=True
        ) as folder:
            export = Path(folder)
            try:
                commit = context.integrated(export)
            except (OSError, subprocess.SubprocessError) as exc:
                raise ToolError(f"cannot export the run's integrated commit: {exc}") from None
            if not commit:
                raise ToolError("the run has no integrated commit to deploy")
            if context.approved_commit and commit != context.approved_commit:
                raise ToolError(
                    f"the run's integrated commit is now {commit[:12]}, not the "
                    f"{context.approved_commit[:12]} that was approved; nothing was shipped"
                )
            if context.deploy_command:
                result = _deploy_with_command(context, arguments, export, commit)
            else:
                result = _copy_release(context, arguments, export, commit)
        # A deploy command may write its own receipt (at $ORCHESTRA_RECEIPT); it stands.
        if receipt := deploy_receipt(releases, key):
            return receipt["result"]
        receipt = {"key": key, "commit": commit, "environment": arguments["environment"]}
        _write_receipt(releases, receipt | {"result": result})
    return result
