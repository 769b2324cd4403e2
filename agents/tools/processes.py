"""Commands: every process an agent starts runs without a shell, in the sandbox in force
(agents/sandbox.py), in its own process group, with a minimal environment, resource limits, a
timeout and a cap on the output kept."""

import os
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from agents.sandbox import Limits, NoSandbox, Sandbox, SandboxUnavailable, current_sandbox
from agents.tools.confinement import NO_ARGUMENTS
from agents.tools.registry import Risk, ToolContext, ToolError, register

# --- Running -------------------------------------------------------------------------------


def command_allowlisted(command: str, allowlist: Sequence[str], test_command: str = "") -> bool:
    """Whether `command` starts, token by token, with an allowlist entry or the test command:
    "pytest" allows "pytest -q tests" but not "pytestx". Unparseable commands are not."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return False
    if not tokens:
        return False
    for entry in [*allowlist, test_command]:
        try:
            prefix = shlex.split(entry)
        except ValueError:
            continue
        if prefix and tokens[: len(prefix)] == prefix:
            return True
    return False


def _command_env(context: ToolContext, extra: dict | None = None) -> dict[str, str]:
    """A minimal environment plus the project's own variables: the server's environment (its
    secrets: API keys, database URLs) never reaches an agent's command."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(context.workspace),
        "LANG": "C.UTF-8",
        "TMPDIR": tempfile.gettempdir(),
    }
    env |= {str(name): str(value) for name, value in context.environment.items()}
    env |= extra or {}
    return env


class _Capture:
    """The first and last `limit // 2` bytes of a stream, and a count of the rest: a command
    printing 50 MB costs `limit` bytes, and the end, where test runners summarise, survives."""

    def __init__(self, limit: int):
        self.head_limit = max(limit, 0) // 2
        self.tail_limit = max(limit, 0) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {cut} bytes cut ...]\n" if cut else ""
        text = self.head.decode(errors="replace") + middle + self.tail.decode(errors="replace")
        return text if not text or text.endswith("\n") else text + "\n"


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def output(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


# After the command exits (or is killed), how long its pipes may take to close: only a
# process that left the command's session can hold them longer.
_DRAIN_SECONDS = 2.0


def _kill_group(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the whole group has exited already
        os.killpg(process.pid, signal.SIGKILL)


def _drain(
    selector: selectors.BaseSelector,
    captures: dict[int, _Capture],
    until: float,
    process: subprocess.Popen | None = None,
) -> None:
    """Read the pipes until both close, `until` passes or (if given) `process` exits."""
    while selector.get_map():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        # A short wait: a command can exit while a background child still holds its pipes.
        for key, _ in selector.select(min(remaining, 0.1)):
            chunk = os.read(key.fd, 65536)
            if chunk:
                captures[key.fd].feed(chunk)
            else:
                selector.unregister(key.fd)
        if process is not None and process.poll() is not None:
            return


def _check_program(program: str, cwd: Path, env: dict[str, str], what: str) -> None:
    """Refuse a program that cannot start, in the words Popen would have used: once it is
    wrapped in a sandbox, Popen starts the sandbox, which would only exit 127."""
    if "/" in program:
        path = cwd / program
        if not path.exists():
            raise ToolError(f"{what} not found: {program}")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise ToolError(f"{what} is not executable: {program}")
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise ToolError(f"{what} not found: {program}")


def _run(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    what: str,
    *,
    sandbox: Sandbox | None = None,
    network: bool = False,
    writable: Sequence[Path] = (),
) -> Finished:
    """Run `argv` (no shell) in `sandbox` (none given: unconfined and unlimited, as the
    project's own deploy command runs), in its own session, keeping a capped part of its output.
    On timeout, or once it exits, its whole process group is killed: nothing it started in the
    background outlives the call (in bubblewrap, nothing in its PID namespace does, whatever
    session it moved to)."""
    if not cwd.is_dir():
        raise ToolError(f"{what} refused: its folder {cwd.name!r} does not exist")
    _check_program(argv[0], cwd, env, what)
    sandbox = sandbox or NoSandbox("no sandbox asked for")
    try:
        wrapped = sandbox.wrap(
            argv, cwd, Limits.from_settings(), network=network, writable=writable
        )
    except SandboxUnavailable as exc:
        raise ToolError(f"{what} refused: {exc}") from None
    try:
        process = subprocess.Popen(
            wrapped,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolError(f"{what} not found: {argv[0]}") from None
    except PermissionError:
        raise ToolError(f"{what} is not executable: {argv[0]}") from None
    except OSError as exc:
        raise ToolError(f"{what} could not start: {exc}") from None
    limit = settings.ORCHESTRA_COMMAND_OUTPUT_LIMIT
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    captures = {stdout.fileno(): _Capture(limit), stderr.fileno(): _Capture(limit)}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            for fd in captures:
                selector.register(fd, selectors.EVENT_READ)
            _drain(selector, captures, deadline, process)
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(process)
            _drain(selector, captures, time.monotonic() + _DRAIN_SECONDS)
    finally:
        _kill_group(process)
        process.wait()
        stdout.close()
        stderr.close()
    out, err = captures.values()  # in insertion order: stdout, then stderr
    finished = Finished(process.returncode, out.text(), err.text())
    if timed_out:
        raise ToolError(
            f"{what} timed out after {timeout:g} s (its process group was killed); "
            f"output so far:\n{finished.output()}"
        )
    return finished


def run_in_workspace(context: ToolContext, command: str, what: str) -> Finished:
    """Run `command` (no shell) in the workspace, in the sandbox in force, with the tools'
    environment, limits, timeout and output cap; also what the engine's pre-review checks run
    through. With ORCHESTRA_SANDBOX=bwrap and no working bubblewrap, it refuses."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ToolError(f"cannot parse the {what}: {exc}") from None
    if not argv:
        raise ToolError(f"the {what} is empty")
    try:
        sandbox = current_sandbox()
    except SandboxUnavailable as exc:
        raise ToolError(f"{what} refused: {exc}") from None
    return _run(
        argv,
        context.workspace,
        _command_env(context),
        settings.ORCHESTRA_COMMAND_TIMEOUT,
        what,
        sandbox=sandbox,
        network=context.network or settings.ORCHESTRA_SANDBOX_NETWORK,
    )


def _command_result(finished: Finished) -> str:
    return f"exit code {finished.returncode}\n{finished.output()}"


@register(
    "run_command",
    Risk.EXEC,
    "Run a command (no shell) in the workspace and return its exit code and output.",
    {
        "type": "object",
        "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 2000}},
        "required": ["command"],
        "additionalProperties": False,
    },
)
def run_command(context: ToolContext, arguments: dict) -> str:
    return _command_result(run_in_workspace(context, arguments["command"], "command"))


@register(
    "run_tests",
    Risk.EXEC,
    "Run the project's test command in the workspace and return its exit code and output.",
    NO_ARGUMENTS,
)
def run_tests(context: ToolContext, arguments: dict) -> str:
    if not context.test_command.strip():
        raise ToolError("this project has no test command configured")
    return _command_result(run_in_workspace(context, context.test_command, "test command"))
