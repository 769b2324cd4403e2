"""The sandbox every process an agent causes runs in: `run_command`, `run_tests`, the engine's
checks — anything that executes workspace code.

Two backends behind one small interface:

- `Bubblewrap` (`bwrap`, Debian package `bubblewrap`): the command gets its own user, PID,
  IPC, UTS, cgroup and network namespaces, no capabilities, an empty root with read-only
  system folders, a minimal /etc, the Python runtime, a private /tmp, and exactly one
  writable folder: the step's worktree. The server's processes (their /proc/<pid>/environ),
  its data folder (the SQLite database, other projects' repositories) and the network are
  out of sight.
- `NoSandbox`: the command runs unconfined on the host, as the server's user. The approval
  policy then gives no command a free pass (approvals/policies.py).

`current_sandbox()` picks one from `ORCHESTRA_SANDBOX` (auto | bwrap | none); whether bwrap
works here is checked once per process and remembered. `sandbox_status()` says which is in
force, for /healthz, the pages and the policy.
"""

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MODES = ("auto", "bwrap", "none")

# Read-only inside the sandbox, where they exist. Symlinks (merged /usr: /bin -> usr/bin) are
# recreated as symlinks.
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs need of /etc, and nothing else of it: no machine secrets, no server config.
ETC_ENTRIES = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
    "/etc/os-release",
    "/etc/debian_version",
)
# Name resolution, only when the sandbox shares the host's network.
ETC_NETWORK_ENTRIES = ("/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf")

PROBE_TIMEOUT = 10.0
# The sandbox's own /tmp: a fresh tmpfs per command, never the host's.
SANDBOX_TMP = "/tmp"  # noqa: S108


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run the command (ORCHESTRA_SANDBOX=bwrap and bubblewrap does not
    work here, or the folder would expose the server's data): it does not run at all."""


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits inside the sandbox; 0 means no limit."""

    cpu_seconds: int = 0
    memory_mb: int = 0
    processes: int = 0

    @classmethod
    def from_settings(cls) -> "Limits":
        return cls(
            cpu_seconds=settings.ORCHESTRA_SANDBOX_CPU_SECONDS,
            memory_mb=settings.ORCHESTRA_SANDBOX_MEMORY_MB,
            processes=settings.ORCHESTRA_SANDBOX_PROCESSES,
        )

    def prlimit_options(self, *, processes: bool) -> list[str]:
        """Options of util-linux `prlimit`: CPU seconds, address space, processes, no core
        files. `processes=False` leaves the process count alone (see NoSandbox.wrap)."""
        options = ["--core=0"]
        if self.cpu_seconds:
            options.append(f"--cpu={self.cpu_seconds}")
        if self.memory_mb:
            options.append(f"--as={self.memory_mb * 1024 * 1024}")
        if processes and self.processes:
            options.append(f"--nproc={self.processes}")
        return options


class Sandbox(ABC):
    """Turns a command into the command that runs it confined (or not)."""

    name: str
    confined: bool
    reason: str = ""  # why not confined, in plain words

    @abstractmethod
    def wrap(
        self,
        argv: Sequence[str],
        workspace: Path,
        limits: Limits,
        *,
        network: bool = False,
        writable: Sequence[Path] = (),
    ) -> list[str]:
        """The argv to start instead of `argv`, run with cwd `workspace` and the command's
        own (minimal) environment; `writable` are further folders it may write (a deploy's
        releases)."""

    def status(self) -> dict:
        status: dict = {"name": self.name, "confined": self.confined}
        if not self.confined:
            status["reason"] = self.reason
        return status


class NoSandbox(Sandbox):
    """The command runs on the host as the server's user; only the limits apply."""

    name = "none"
    confined = False

    def __init__(self, reason: str, prlimit: str | None = None):
        self.reason = reason
        self.prlimit = prlimit

    def wrap(
        self,
        argv: Sequence[str],
        workspace: Path,
        limits: Limits,
        *,
        network: bool = False,
        writable: Sequence[Path] = (),
    ) -> list[str]:
        if not self.prlimit:
            return list(argv)
        # No process-count limit here: outside a user namespace of its own, RLIMIT_NPROC
        # counts every process and thread of the server's user, workers included.
        return [self.prlimit, *limits.prlimit_options(processes=False), "--", *argv]


class Bubblewrap(Sandbox):
    """Runs the command under bubblewrap. See the module docstring for what it sees."""

    name = "bubblewrap"
    confined = True

    def __init__(
        self,
        binary: str,
        prlimit: str,
        env: str,
        read_only: Sequence[Path] = (),
        hidden: Sequence[Path] = (),
    ):
        self.binary = binary
        self.prlimit = prlimit
        self.env = env
        self.read_only = tuple(read_only)
        # Folders that no read-only bind may contain (the data folder, the checkout): a
        # runtime or git path that would expose them is left out.
        self.hidden = tuple(hidden)

    def wrap(
        self,
        argv: Sequence[str],
        workspace: Path,
        limits: Limits,
        *,
        network: bool = False,
        writable: Sequence[Path] = (),
    ) -> list[str]:
        workspace = Path(os.path.abspath(workspace))
        if not self._visible(workspace.resolve()):
            raise SandboxUnavailable(
                f"{workspace} holds the server's own data and cannot be a command's folder"
            )
        args = [
            self.binary,
            "--unshare-all",
            *(["--share-net"] if network else []),
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            # Before any bind: a worktree or runtime under /tmp is bound on top of it.
            "--tmpfs",
            SANDBOX_TMP,
        ]
        args += _system_binds()
        for entry in (*ETC_ENTRIES, *(ETC_NETWORK_ENTRIES if network else ())):
            args += ["--ro-bind-try", entry, entry]
        for path in self._runtime_paths():
            args += ["--ro-bind", str(path), str(path)]
        for path in self.read_only:
            args += ["--ro-bind-try", str(path), str(path)]
        args += self._workspace_binds(workspace)
        for path in writable:
            path = Path(os.path.abspath(path))
            if not self._visible(path.resolve()):
                raise SandboxUnavailable(f"{path} holds the server's own data")
            args += ["--bind", str(path.resolve()), str(path)]
        args += [
            "--remount-ro",
            "/",
            "--chdir",
            str(workspace),
            "--setenv",
            "TMPDIR",
            SANDBOX_TMP,
            "--",
            # bwrap always sets PWD; the command gets exactly the environment it was given.
            self.env,
            "-u",
            "PWD",
            self.prlimit,
            # Set inside the sandbox's own user namespace, so the process count is the
            # sandbox's alone, not every process of the server's user.
            *limits.prlimit_options(processes=True),
            "--",
            *argv,
        ]
        return args

    def _visible(self, path: Path) -> bool:
        """Whether binding `path` keeps the hidden folders hidden."""
        return not any(hidden == path or hidden.is_relative_to(path) for hidden in self.hidden)

    def _runtime_paths(self) -> list[Path]:
        """The Python runtime (some checks and tests run `sys.executable`): its base prefix and
        the virtualenv folder itself, when they are outside the system folders."""
        paths = []
        for raw in {sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix}:
            path = Path(raw).resolve()
            if not path.is_dir() or _under_system_folder(path) or not self._visible(path):
                continue
            paths.append(path)
        return _outermost(paths)

    def _workspace_binds(self, workspace: Path) -> list[str]:
        """The worktree read-write at its own path; its repository's git folders read-only, so
        `git status` works and nothing else of the repository is visible; the worktree's
        `.git` pointer read-only, so the server's own git never follows a swapped one."""
        dot_git = workspace / ".git"
        binds = [(workspace, "--bind")]
        binds += [(path, "--ro-bind") for path in _git_dirs(dot_git) if self._visible(path)]
        # Shallowest first: a deeper bind lands on top of the one that contains it.
        binds.sort(key=lambda bind: len(bind[0].parts))
        args = []
        for path, option in binds:
            args += [option, str(path.resolve()), str(path)]
            if option == "--ro-bind" and (path / "config").is_file():
                # A clone's remote URL may carry a token; git runs fine on an empty config.
                args += ["--ro-bind", _empty_file(), str(path / "config")]
        if dot_git.is_file() and not dot_git.is_symlink():
            args += ["--ro-bind", str(dot_git), str(dot_git)]
        return args


_empty_path = ""


def _empty_file() -> str:
    """An empty, read-only regular file of this process's own (/dev/null cannot stand in: a
    user namespace cannot open device nodes it did not mount). Made again if a cleaner of
    the temporary folder took it."""
    global _empty_path
    if not os.path.isfile(_empty_path):
        handle, path = tempfile.mkstemp(prefix="orchestra-sandbox-empty-")
        os.close(handle)
        os.chmod(path, 0o444)
        _empty_path = path
    return _empty_path


def _system_binds() -> list[str]:
    args = []
    for folder in SYSTEM_FOLDERS:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    return args


def _under_system_folder(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in SYSTEM_FOLDERS)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` without those inside another of them, shallowest first."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


def _looks_like_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _git_dirs(dot_git: Path) -> list[Path]:
    """The git folders a worktree's `.git` leads to. A linked worktree's `.git` is a file
    "gitdir: <its admin folder in the repository>": that folder and the repository's common
    git folder count, and only when git's back-pointer (`<admin folder>/gitdir`) names this
    very `.git`, so a forged pointer cannot show another repository. A plain repository's
    `.git` folder counts as itself. A symlinked `.git` is never followed."""
    if dot_git.is_symlink():
        return []
    if dot_git.is_dir():
        return [dot_git]
    try:
        pointer = dot_git.read_text(errors="replace").strip()
    except OSError:
        return []
    if not pointer.startswith("gitdir:"):
        return []
    gitdir = (dot_git.parent / pointer.removeprefix("gitdir:").strip()).resolve()
    try:
        back = Path((gitdir / "gitdir").read_text(errors="replace").strip())
    except OSError:
        return []
    if (gitdir / back).resolve() != dot_git.resolve() or not (gitdir / "HEAD").is_file():
        return []
    try:
        common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
    except OSError:
        return []
    if not _looks_like_git_dir(common):
        return []
    return _outermost([gitdir, common])


# --- Choosing --------------------------------------------------------------------------------


def _hidden_folders() -> list[Path]:
    """What no bind may contain: the data folder, the checkout (settings, .env), the
    workspaces root (every project's repository) and the SQLite database's folder."""
    hidden = [settings.DATA_DIR, settings.BASE_DIR, settings.ORCHESTRA_WORKSPACES]
    database = str(settings.DATABASES["default"].get("NAME") or "")
    if os.path.isabs(database):
        hidden.append(Path(database).parent)
    return [Path(os.path.abspath(path)).resolve() for path in hidden]


@functools.lru_cache(maxsize=4)
def _probe(binary: str, prlimit: str, env: str) -> str:
    """Run `true` in a bare sandbox once: "" when bwrap works here, else why not (in bwrap's
    own words: no user namespaces, /proc cannot be mounted, ...). Cached per process;
    `reset_sandbox()` forgets."""
    sandbox = Bubblewrap(binary, prlimit, env)
    with tempfile.TemporaryDirectory(prefix="orchestra-sandbox-probe-") as folder:
        try:
            result = subprocess.run(
                sandbox.wrap(["true"], Path(folder), Limits()),
                cwd=folder,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"bwrap did not finish a trial command within {PROBE_TIMEOUT:g} s"
        except OSError as exc:
            return f"bwrap could not start: {exc}"
    if result.returncode == 0:
        return ""
    said = result.stderr.decode(errors="replace").strip().splitlines()
    detail = said[-1] if said else f"exit code {result.returncode}"
    return f"bwrap cannot create its sandbox here ({detail})"


def reset_sandbox() -> None:
    """Forget whether bwrap works (tests; after installing bubblewrap)."""
    _probe.cache_clear()


def current_sandbox() -> Sandbox:
    """The sandbox commands run in now, by `ORCHESTRA_SANDBOX`:

    - "none": no sandbox, by choice.
    - "auto": bubblewrap when it works here, else no sandbox (saying why).
    - "bwrap": bubblewrap, or `SandboxUnavailable` when it cannot run: nothing runs unconfined.

    The settings are read on every call; only the trial run of bwrap is remembered.
    """
    mode = settings.ORCHESTRA_SANDBOX
    if mode not in MODES:
        raise ImproperlyConfigured(f"ORCHESTRA_SANDBOX must be one of {', '.join(MODES)}")
    prlimit = shutil.which("prlimit")
    if mode == "none":
        return NoSandbox("the sandbox is turned off (ORCHESTRA_SANDBOX=none)", prlimit)
    binary, env = shutil.which("bwrap"), shutil.which("env")
    if binary is None:
        problem = "bwrap is not installed (Debian package bubblewrap)"
    elif prlimit is None or env is None:
        problem = "prlimit or env is missing (Debian packages util-linux and coreutils)"
    else:
        problem = _probe(binary, prlimit, env)
        if not problem:
            read_only = [Path(path) for path in settings.ORCHESTRA_SANDBOX_READ_ONLY]
            return Bubblewrap(binary, prlimit, env, read_only, _hidden_folders())
    if mode == "bwrap":
        raise SandboxUnavailable(f"ORCHESTRA_SANDBOX=bwrap, but {problem}")
    return NoSandbox(f"no working sandbox: {problem}", prlimit)


def sandbox_status() -> dict:
    """Which sandbox is in force, for /healthz, the pages and the approval policy:
    {"name", "confined", "required", "network"}, and "reason" when not confined.
    `network`: whether commands can reach the network (always, unconfined)."""
    try:
        sandbox = current_sandbox()
    except SandboxUnavailable as exc:  # required, and broken: nothing runs
        status = {"name": "bubblewrap", "confined": False, "reason": str(exc), "network": False}
    else:
        status = sandbox.status()
        status["network"] = not sandbox.confined or settings.ORCHESTRA_SANDBOX_NETWORK
    status["required"] = settings.ORCHESTRA_SANDBOX == "bwrap"
    return status
