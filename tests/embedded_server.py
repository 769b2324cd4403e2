"""A real `orchestra up` process with the embedded default, for end-to-end and browser tests.

It runs with nothing configured, as a newcomer's would: DATABASE_URL, REDIS_URL and the model
endpoint are removed from its environment even when the test run itself has them (CI)."""

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
CONFIGURED_ONLY = (
    "DATABASE_URL",
    "REDIS_URL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ORCHESTRA_EMBEDDED_WORKER",
)


@dataclass(frozen=True)
class EmbeddedServer:
    base: str
    env: dict
    process: subprocess.Popen
    log: Path

    def manage(self, *argv: str) -> str:
        """Run a command (`orchestra.cli` by default) against the server's database."""
        return subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def token(self, username: str = "admin") -> str:
        return self.manage("-m", "orchestra.cli", "token", username).strip().splitlines()[-1]


@contextmanager
def embedded_server(data_dir: Path, **settings: str) -> Iterator[EmbeddedServer]:
    """Start `orchestra up` on a free port with `settings` as environment variables; wait
    until /healthz answers; stop it afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED_ONLY}
    env |= {
        "ORCHESTRA_DATA_DIR": str(data_dir / "var"),
        "PYTHONUNBUFFERED": "1",
        # A test's server stops with its runs mid-way: its engine's tasks get 3 s, not 10.
        "ORCHESTRA_STOP_GRACE": "3",
        **settings,
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = data_dir / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(log_path.read_text())
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(serving, 90, "`orchestra up` to serve /healthz", every=0.1)
        yield EmbeddedServer(base, env, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(20)  # the engine's running tasks get ORCHESTRA_STOP_GRACE
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                "`orchestra up` did not stop within 20 s of SIGTERM; its log ends:\n"
                + log_path.read_text()[-4000:]
            ) from None
