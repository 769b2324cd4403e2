"""The sandbox of agents' commands (agents/sandbox.py), with real processes.

An agent writes a test file into its worktree and runs it through the free test command (or
`run_command`): inside bubblewrap it cannot read the server's secrets (its environment, other
processes' /proc/<pid>/environ), its database or the rest of the data folder, cannot write
outside its worktree, cannot reach the network, and nothing it starts outlives its timeout.
The same file run unconfined shows each of those leaks, so the assertions can fail. Without a
sandbox, the approval policy gives no command a free pass.
"""

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from django.template import Context, Template
from django.test import Client

from agents import workspace as git
from agents.sandbox import SandboxUnavailable, current_sandbox, reset_sandbox, sandbox_status
from agents.tools import REGISTRY, ToolContext, ToolError
from approvals.models import Checkpoint, PolicyRule
from approvals.policies import Call, evaluate
from orchestra.models import Run, Task

PYTHON = shlex.quote(sys.executable)
SECRET = "orchestra-admin-password-" + uuid.uuid4().hex
DATABASE_ROW = "the-database-row-" + uuid.uuid4().hex

# What the agent's "test" tries; it prints one JSON line of what it managed.
ESCAPE = r"""
import json, os, socket, subprocess, sys

secret, database, outside, data_dir, port = sys.argv[1:6]
report = {"env_secret": secret in json.dumps(dict(os.environ))}
pids = [name for name in os.listdir("/proc") if name.isdigit()]
environs = b""
for pid in pids:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environs += handle.read()
    except OSError:
        pass
report["proc_secret"] = secret.encode() in environs
report["pids"] = sorted(int(pid) for pid in pids)
report["my_pid"] = os.getpid()
try:
    with open("/proc/1/cmdline", "rb") as handle:
        report["pid1"] = handle.read().split(b"\0")[0].decode()
except OSError as exc:
    report["pid1"] = repr(exc)
try:
    with open(database) as handle:
        report["database"] = handle.read()
except OSError as exc:
    report["database"] = type(exc).__name__
report["data_dir"] = os.path.isdir(data_dir) and sorted(os.listdir(data_dir))
wrote = []
for target in (outside, os.path.join(data_dir, "escape.txt")):
    try:
        with open(target, "w") as handle:
            handle.write("escaped")
        wrote.append(target)
    except OSError:
        pass
report["wrote"] = wrote
try:
    with open("inside.txt", "w") as handle:
        handle.write("fine")
    report["wrote_inside"] = True
except OSError:
    report["wrote_inside"] = False
try:
    socket.create_connection(("127.0.0.1", int(port)), timeout=3).close()
    report["network"] = "connected"
except OSError as exc:
    report["network"] = type(exc).__name__
status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
report["git_status"] = status.returncode
with open("/proc/self/limits") as handle:
    report["limits"] = handle.read()
print(json.dumps(report))
"""


def call(context: ToolContext, name: str, **arguments) -> str:
    tool = REGISTRY[name]
    assert tool.schema_errors(arguments) == []
    return tool.func(context, arguments)


def stdout_of(result: str) -> str:
    return result.split("--- stdout\n")[1].split("--- stderr\n")[0]


@pytest.fixture
def sandboxed(settings):
    """Bubblewrap in force, or the test is skipped saying why it cannot run here."""
    settings.ORCHESTRA_SANDBOX = "auto"
    settings.ORCHESTRA_SANDBOX_NETWORK = False
    reset_sandbox()
    status = sandbox_status()
    if not status["confined"]:
        pytest.skip(f"bubblewrap cannot sandbox commands on this machine: {status['reason']}")
    yield settings
    reset_sandbox()


@pytest.fixture
def unconfined(settings):
    settings.ORCHESTRA_SANDBOX = "none"
    reset_sandbox()
    yield settings
    reset_sandbox()


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    """The server's data folder: a database file and the workspaces, as in production."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "orchestra.sqlite3").write_text(DATABASE_ROW)
    settings.DATA_DIR = data
    settings.ORCHESTRA_WORKSPACES = data / "workspaces"
    return data


@pytest.fixture
def worktree(data_dir) -> Path:
    """A step's worktree, as the engine makes it: a project repository and a linked worktree."""
    repo = git.ensure_repository(data_dir / "workspaces" / "demo")
    (repo / "PRIVATE.md").write_text("the repository's own checkout\n")
    path = data_dir / "workspaces" / "demo-worktrees" / "run-1" / "impl"
    git.add_worktree(repo, path, "orchestra/run-1-steps/impl", git.head_commit(repo, "main"))
    (path / "test_escape.py").write_text(ESCAPE)
    return path


@pytest.fixture
def server_process():
    """A process of the server's with the admin password in its environment, as daphne or a
    worker would have it: readable in /proc/<pid>/environ by anything on the host."""
    process = subprocess.Popen(
        ["sleep", "120"], env={"PATH": os.defpath, "ORCHESTRA_ADMIN_PASSWORD": SECRET}
    )
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def listener():
    """A TCP server on the host's loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def escape_attempt(worktree, data_dir, listener, tool: str, monkeypatch) -> dict:
    monkeypatch.setenv("ORCHESTRA_ADMIN_PASSWORD", SECRET)
    outside = worktree.parent / "escape.txt"
    arguments = [SECRET, data_dir / "orchestra.sqlite3", outside, data_dir]
    command = shlex.join([sys.executable, "test_escape.py", *map(str, arguments)])
    command += f" {listener.getsockname()[1]}"
    context = ToolContext(
        workspace=worktree, run_id=1, step_key="impl", environment={}, test_command=command
    )
    if tool == "run_tests":
        result = call(context, "run_tests")
    else:
        result = call(context, "run_command", command=command)
    assert result.startswith("exit code 0\n"), result
    return json.loads(stdout_of(result).strip().splitlines()[-1])


def accepted_a_connection(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize("tool", ["run_tests", "run_command"])
def test_a_test_file_cannot_escape_the_sandbox(
    sandboxed, worktree, data_dir, server_process, listener, tool, monkeypatch
):
    report = escape_attempt(worktree, data_dir, listener, tool, monkeypatch)

    # (a) No secret: not in its environment, not in any /proc/<pid>/environ it can see,
    # and the host's processes are invisible: its own PID namespace, bwrap as its PID 1.
    assert report["env_secret"] is False
    assert report["proc_secret"] is False
    assert len(report["pids"]) <= 5 and max(report["pids"]) < 10, report["pids"]
    assert report["my_pid"] in report["pids"]
    assert report["pid1"].endswith("bwrap")
    # (b) The database and the rest of the data folder are not there.
    assert report["database"] == "FileNotFoundError"
    assert DATABASE_ROW not in json.dumps(report)
    assert report["data_dir"] == ["workspaces"]  # only the path down to the worktree
    # (c) It writes its worktree and nothing else of the host (what it wrote elsewhere, if
    # anything, went to the sandbox's own /tmp, gone with it).
    assert report["wrote_inside"] is True
    assert (worktree / "inside.txt").read_text() == "fine"
    assert not (worktree.parent / "escape.txt").exists()
    assert not (data_dir / "escape.txt").exists()
    # (d) No network: the host's loopback server is out of reach.
    assert report["network"] in {"ConnectionRefusedError", "OSError", "TimeoutError"}
    assert not accepted_a_connection(listener)
    # Its repository's git folder is readable (read-only): `git status` works.
    assert report["git_status"] == 0
    assert "PRIVATE.md" not in json.dumps(report)
    assert "Max processes             256" in report["limits"]
    assert "Max core file size        0" in report["limits"]


def test_the_same_file_unconfined_shows_every_leak(
    unconfined, worktree, data_dir, server_process, listener, monkeypatch
):
    """The control: what the sandbox is for. Run on the host, the file reads the server
    process's password and the database, writes beside its worktree and reaches the server.
    (Its own environment stays clean: the minimal environment held before the sandbox.)"""
    report = escape_attempt(worktree, data_dir, listener, "run_command", monkeypatch)

    assert report["env_secret"] is False
    assert report["proc_secret"] is True
    assert report["database"] == DATABASE_ROW
    assert (worktree.parent / "escape.txt").read_text() == "escaped"
    assert report["network"] == "connected"
    assert accepted_a_connection(listener)


def test_the_repository_config_is_hidden_and_the_git_pointer_read_only(sandboxed, worktree):
    """A clone's remote URL may carry a token; a swapped `.git` would point the server's own
    git (run outside the sandbox in this folder) at a config of the agent's making."""
    common = worktree.parent.parent.parent / "demo" / ".git"
    (common / "config").write_text(
        (common / "config").read_text() + '[remote "origin"]\n\turl = https://x:tok3n@h/r\n'
    )
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})

    shown = call(context, "run_command", command=f"cat {common / 'config'}")
    replaced = call(context, "run_command", command="sh -c 'echo gitdir: /tmp > .git'")

    assert shown.startswith("exit code 0\n") and "tok3n" not in shown
    assert "Read-only file system" in replaced
    assert (worktree / ".git").read_text().startswith("gitdir: ")
    assert git.head_commit(worktree)  # the server's git still finds its repository


def host_processes_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(name))
        except (OSError, ValueError):
            continue
    return found


def test_a_timeout_kills_everything_the_command_started(sandboxed, worktree):
    """Children, and a grandchild that left the process group (setsid) and was orphaned:
    the PID namespace dies with the sandbox, so none survives."""
    marker = "orchestra-marker-" + uuid.uuid4().hex
    forker = (
        "import os, subprocess, sys, time\n"
        "marker = sys.argv[1]\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(300)', marker]\n"
        "for _ in range(3):\n"
        "    subprocess.Popen(sleeper)\n"
        "escapee = 'import os, sys, time\\nos.setsid()\\nif os.fork() == 0:\\n"
        "    time.sleep(300)\\n'\n"
        "subprocess.Popen([sys.executable, '-c', escapee, marker])\n"
        "print('started', flush=True)\n"
        "time.sleep(300)\n"
    )
    (worktree / "test_forks.py").write_text(forker)
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})
    sandboxed.ORCHESTRA_COMMAND_TIMEOUT = 3

    with pytest.raises(ToolError, match="timed out after 3 s") as timed_out:
        call(context, "run_command", command=f"{PYTHON} test_forks.py {marker}")

    assert "started" in str(timed_out.value)
    deadline = time.monotonic() + 5
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel tears the namespace down after bwrap dies
    assert host_processes_with(marker) == []


def test_nothing_outlives_a_finished_command(sandboxed, worktree):
    """What a command leaves running in the background dies with it, even in a new session."""
    marker = "orchestra-marker-" + uuid.uuid4().hex
    leaver = (
        "import subprocess, sys\n"
        "code = 'import os, time\\nos.setsid()\\ntime.sleep(300)'\n"
        "subprocess.Popen([sys.executable, '-c', code, sys.argv[1]])\n"
        "print('left one behind')\n"
    )
    (worktree / "test_leaves.py").write_text(leaver)
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})

    result = call(context, "run_command", command=f"{PYTHON} test_leaves.py {marker}")

    assert result.startswith("exit code 0\n--- stdout\nleft one behind\n"), result
    deadline = time.monotonic() + 5
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(marker) == []


def test_a_program_missing_or_not_executable_is_named(sandboxed, worktree):
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})
    (worktree / "script.sh").write_text("echo hi\n")
    with pytest.raises(ToolError, match="command not found: no-such-program"):
        call(context, "run_command", command="no-such-program")
    with pytest.raises(ToolError, match=r"command is not executable: ./script.sh"):
        call(context, "run_command", command="./script.sh")


def test_a_folder_holding_the_servers_data_is_never_a_commands_folder(sandboxed, data_dir):
    context = ToolContext(workspace=data_dir, run_id=1, step_key="impl", environment={})
    with pytest.raises(ToolError, match="holds the server's own data"):
        call(context, "run_command", command="ls")


def test_the_network_is_there_when_the_setting_allows_it(sandboxed, worktree, listener):
    sandboxed.ORCHESTRA_SANDBOX_NETWORK = True
    port = listener.getsockname()[1]
    script = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})

    result = call(context, "run_command", command=f'{PYTHON} -c "{script}"')

    assert result.startswith("exit code 0\n"), result
    assert accepted_a_connection(listener)


def test_the_network_is_there_for_a_project_that_allows_it(sandboxed, worktree, listener):
    port = listener.getsockname()[1]
    script = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
    closed = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})
    opened = replace(closed, network=True)

    assert not call(closed, "run_command", command=f'{PYTHON} -c "{script}"').startswith(
        "exit code 0\n"
    )
    assert not accepted_a_connection(listener)
    result = call(opened, "run_command", command=f'{PYTHON} -c "{script}"')
    assert result.startswith("exit code 0\n"), result
    assert accepted_a_connection(listener)


# --- Which sandbox, and what it means for the policy --------------------------------------------


def test_status_names_the_sandbox_in_force(sandboxed):
    assert sandbox_status() == {
        "name": "bubblewrap",
        "confined": True,
        "required": False,
        "network": False,
    }


def test_status_without_a_sandbox_says_why(unconfined):
    status = sandbox_status()
    assert status["name"] == "none" and status["confined"] is False
    assert "ORCHESTRA_SANDBOX=none" in status["reason"]


def test_a_required_sandbox_that_cannot_run_refuses_every_command(settings, worktree, monkeypatch):
    """ORCHESTRA_SANDBOX=bwrap where bwrap is missing: loud, and nothing runs unconfined."""
    settings.ORCHESTRA_SANDBOX = "bwrap"
    monkeypatch.setenv("PATH", "/no-bwrap-here")
    reset_sandbox()
    context = ToolContext(workspace=worktree, run_id=1, step_key="impl", environment={})

    with pytest.raises(SandboxUnavailable, match="bwrap is not installed"):
        current_sandbox()
    with pytest.raises(ToolError, match="command refused: ORCHESTRA_SANDBOX=bwrap, but"):
        call(context, "run_command", command="/usr/bin/touch ran.txt")
    assert not (worktree / "ran.txt").exists()
    status = sandbox_status()
    assert status["confined"] is False and status["required"] is True


@pytest.mark.django_db
def test_without_a_sandbox_the_free_commands_need_a_person(unconfined, demo):
    PolicyRule.objects.create(
        project=demo, position=1, tool="run_command", arguments={"command": "rm *"}, outcome="deny"
    )
    demo.command_allowlist = ["ls"]
    demo.save(update_fields=["command_allowlist"])

    tests = evaluate(demo, Call("run_tests", {}, "coder"))
    listing = evaluate(demo, Call("run_command", {"command": "ls -la"}, "coder"))
    removal = evaluate(demo, Call("run_command", {"command": "rm -rf /"}, "coder"))
    reading = evaluate(demo, Call("read_file", {"path": "README.md"}, "coder"))

    assert tests.outcome == "require_approval"
    assert "unconfined on the host" in tests.reason
    assert listing.outcome == "require_approval" and "unconfined" in listing.reason
    assert removal.outcome == "deny"  # a deny still wins
    assert reading.outcome == "allow"  # only commands lose their free pass


@pytest.mark.django_db
def test_inside_the_sandbox_the_test_command_stays_free(sandboxed, demo):
    assert evaluate(demo, Call("run_tests", {}, "coder")).outcome == "allow"


@pytest.mark.django_db
def test_healthz_names_the_sandbox_and_none_by_choice_is_healthy(unconfined):
    unconfined.ORCHESTRA_EMBEDDED_WORKER = "thread"
    response = Client().get("/healthz")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True
    assert report["sandbox"]["ok"] is True
    assert report["sandbox"]["name"] == "none" and report["sandbox"]["confined"] is False


@pytest.mark.django_db
def test_healthz_fails_when_the_required_sandbox_cannot_run(settings, monkeypatch):
    settings.ORCHESTRA_EMBEDDED_WORKER = "thread"
    settings.ORCHESTRA_SANDBOX = "bwrap"
    monkeypatch.setenv("PATH", "/no-bwrap-here")
    reset_sandbox()
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["sandbox"]["ok"] is False
    assert "bwrap is not installed" in response.json()["sandbox"]["reason"]


def test_the_template_tag_gives_the_status(unconfined):
    template = "{% load dashboard %}{% sandbox_status as s %}{{ s.name }} {{ s.confined }}"
    rendered = Template(template).render(Context())
    assert rendered == "none False"


@pytest.fixture
def waiting_command(demo, owner) -> Checkpoint:
    task = Task.objects.create(project=demo, title="Run a command", created_by=owner)
    run = Run.objects.create(task=task, project=demo)
    return Checkpoint.objects.create(
        run=run,
        kind=Checkpoint.Kind.TOOL_CALL,
        shown={"tool": "run_command", "risk": "exec", "arguments": {"command": "make"}},
    )


@pytest.mark.django_db
def test_the_pages_say_when_commands_run_unconfined(unconfined, waiting_command, owner):
    client = Client()
    client.force_login(owner)
    run_page = client.get(f"/runs/{waiting_command.run_id}/").text
    approval_page = client.get(f"/approvals/{waiting_command.pk}/").text

    assert "No sandbox: commands run unconfined on the host and each needs a person" in run_page
    assert 'id="unconfined-warning"' in approval_page
    assert "this command would run unconfined on the host" in approval_page


@pytest.mark.django_db
def test_the_pages_say_when_commands_run_in_the_sandbox(sandboxed, waiting_command, owner):
    client = Client()
    client.force_login(owner)
    run_page = client.get(f"/runs/{waiting_command.run_id}/").text
    approval_page = client.get(f"/approvals/{waiting_command.pk}/").text

    assert "Commands run in a bubblewrap sandbox, without network." in run_page
    assert "unconfined-warning" not in approval_page
