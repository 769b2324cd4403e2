"""The tools agents call: confinement, search, patches, commands, tests and deploys.

Each tool runs through the registry on a real folder (a git repository where git matters),
with real processes.
"""

import json
import os
import select
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agents.tools import (
    REGISTRY,
    ToolContext,
    ToolError,
    command_allowlisted,
    confined_path,
    deploy_receipt,
    patch_paths,
    patch_preview,
    write_diff,
)

PYTHON = shlex.quote(sys.executable)


def call(context: ToolContext, name: str, **arguments) -> str:
    tool = REGISTRY[name]
    assert tool.schema_errors(arguments) == []
    return tool.func(context, arguments)


def git(folder: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=folder, check=True, capture_output=True, text=True
    ).stdout.strip()


def init_repo(folder: Path) -> None:
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "agent@example.test")
    git(folder, "config", "user.name", "Agent")


@pytest.fixture
def workspace(tmp_path) -> Path:
    folder = tmp_path / "workspace"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text("def greet():\n    return 'hello'\n")
    (folder / "README.md").write_text("# Demo\nSay hello.\n")
    return folder


@pytest.fixture
def context(workspace) -> ToolContext:
    return ToolContext(workspace=workspace, run_id=7, step_key="implement", environment={})


# --- Confinement ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("../outside.txt", "'..' would lead out of the workspace"),
        ("a/../../x", "'..' would lead out of the workspace"),
        ("/etc/passwd", "it is absolute"),
        (".git/config", "'.git' holds the repository's own data"),
        ("src/.git/hooks/pre-commit", "'.git' holds the repository's own data"),
        ("", "it is empty"),
    ],
)
def test_confined_path_refuses_paths_out_of_the_workspace_or_into_git(workspace, relative, reason):
    with pytest.raises(ToolError, match="refused") as refused:
        confined_path(workspace, relative)
    assert reason in str(refused.value)


def test_confined_path_refuses_a_symlink_that_leads_out(workspace, tmp_path):
    (tmp_path / "secret.txt").write_text("server secret")
    (workspace / "link.txt").symlink_to(tmp_path / "secret.txt")
    (workspace / "linked").symlink_to(tmp_path)
    for relative in ["link.txt", "linked/secret.txt"]:
        with pytest.raises(ToolError, match="resolves outside the workspace"):
            confined_path(workspace, relative)


def test_confined_path_refuses_a_symlink_into_git(workspace):
    init_repo(workspace)
    (workspace / "config-link").symlink_to(workspace / ".git" / "config")
    with pytest.raises(ToolError, match="resolves into '.git'"):
        confined_path(workspace, "config-link")


def test_confined_path_accepts_paths_inside(workspace):
    assert confined_path(workspace, "src/app.py") == (workspace / "src" / "app.py").resolve()
    assert confined_path(workspace, "src/./app.py").is_file()


def test_read_and_write_tools_go_through_confinement(context):
    with pytest.raises(ToolError, match="'..' would lead out"):
        call(context, "read_file", path="../x")
    with pytest.raises(ToolError, match="'.git' holds"):
        call(context, "write_file", path=".git/config", content="[core]\n")
    assert not (context.workspace / ".git").exists()


def test_list_files_does_not_follow_symlinks_out_of_the_workspace(context, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not yours")
    (context.workspace / "escape").symlink_to(outside)
    (context.workspace / "escape.txt").symlink_to(outside / "private.txt")
    init_repo(context.workspace)

    listing = call(context, "list_files").splitlines()

    assert listing == ["README.md", "src/app.py"]
    assert call(context, "list_files", folder="src") == "src/app.py"


# --- search_text ---------------------------------------------------------------------------


def test_search_text_finds_literal_text_case_sensitively(context):
    (context.workspace / "src" / "other.py").write_text("x = 1\nprint('hello' + '(')\n")
    result = call(context, "search_text", pattern="'hello'")
    assert result.splitlines() == [
        "src/app.py:2:     return 'hello'",
        "src/other.py:2: print('hello' + '(')",
    ]
    assert call(context, "search_text", pattern="HELLO") == "(no matches)"
    # Literal: regex characters mean themselves.
    assert call(context, "search_text", pattern="+ '('") == "src/other.py:2: print('hello' + '(')"


def test_search_text_with_a_regex_in_a_folder(context):
    result = call(context, "search_text", pattern=r"^def \w+\(", regex=True, folder="src")
    assert result == "src/app.py:1: def greet():"


def test_search_text_reports_an_invalid_regex(context):
    with pytest.raises(ToolError, match=r"invalid regular expression '\(unclosed': missing \)"):
        call(context, "search_text", pattern="(unclosed", regex=True)


def test_search_text_cuts_results_and_skips_git_binary_and_large_files(context):
    init_repo(context.workspace)
    (context.workspace / "many.txt").write_text("needle\n" * 10)
    (context.workspace / "blob.bin").write_bytes(b"needle\0binary")
    (context.workspace / "big.txt").write_text("needle " + "x" * 1_100_000)
    (context.workspace / "long.txt").write_text("needle" + "y" * 1000)
    (context.workspace / ".git" / "needle").write_text("needle")

    result = call(context, "search_text", pattern="needle", max_results=3)
    assert result.splitlines() == [
        "long.txt:1: needle" + "y" * 294,
        "many.txt:1: needle",
        "many.txt:2: needle",
        "[results cut at 3: 8 more not shown; narrow the pattern or the folder]",
        "[1 files over 1 MB not searched]",
    ]


# --- apply_patch ---------------------------------------------------------------------------

GREETING_PATCH = """\
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,2 @@
 def greet():
-    return 'hello'
+    return 'hello, world'
diff --git a/docs/new.md b/docs/new.md
new file mode 100644
--- /dev/null
+++ b/docs/new.md
@@ -0,0 +1 @@
+New page.
"""


def test_apply_patch_applies_a_diff_in_a_repository(context):
    init_repo(context.workspace)
    git(context.workspace, "add", "-A")
    git(context.workspace, "commit", "-qm", "start")

    result = call(context, "apply_patch", patch=GREETING_PATCH)

    assert result == "applied the patch; changed:\nsrc/app.py (+1 -1)\ndocs/new.md (+1 -0)"
    assert "hello, world" in (context.workspace / "src" / "app.py").read_text()
    assert (context.workspace / "docs" / "new.md").read_text() == "New page.\n"
    assert patch_preview(context.workspace, {"patch": GREETING_PATCH}) == GREETING_PATCH


def test_apply_patch_works_outside_a_repository(context):
    call(context, "apply_patch", patch=GREETING_PATCH.rstrip("\n"))
    assert (context.workspace / "docs" / "new.md").is_file()


def test_apply_patch_that_does_not_apply_reports_gits_message(context):
    stale = GREETING_PATCH.replace("-    return 'hello'", "-    return 'bye'")
    with pytest.raises(ToolError) as failed:
        call(context, "apply_patch", patch=stale)
    assert str(failed.value).startswith("patch does not apply: error: patch failed: src/app.py:1")
    # All or nothing: the new file of the same patch was not created.
    assert not (context.workspace / "docs").exists()


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("a/../x", "b/../x", "'..' would lead out"),
        ("a/src/app.py", "b/src/../../x", "'..' would lead out"),
        ("/dev/null", "b//tmp/x", "it is absolute"),
        ("a/.git/config", "b/.git/config", "'.git' holds"),
    ],
)
def test_apply_patch_refuses_paths_out_of_the_workspace(context, tmp_path, old, new, reason):
    patch = f"--- {old}\n+++ {new}\n@@ -0,0 +1 @@\n+escaped\n"
    with pytest.raises(ToolError, match="patch refused") as refused:
        call(context, "apply_patch", patch=patch)
    assert reason in str(refused.value)
    assert not (tmp_path / "x").exists()


def test_apply_patch_refuses_a_path_through_a_symlink_out(context, tmp_path):
    (tmp_path / "outside").mkdir()
    (context.workspace / "out").symlink_to(tmp_path / "outside")
    patch = "--- /dev/null\n+++ b/out/x.txt\n@@ -0,0 +1 @@\n+escaped\n"
    with pytest.raises(ToolError, match="resolves outside the workspace"):
        call(context, "apply_patch", patch=patch)
    assert not (tmp_path / "outside" / "x.txt").exists()


def test_apply_patch_refuses_a_rename_out_and_a_symlink(context):
    rename = "diff --git a/README.md b/x\nsimilarity index 100%\nrename from README.md\n"
    with pytest.raises(ToolError, match="'..' would lead out"):
        call(context, "apply_patch", patch=rename + "rename to ../x\n")
    link = (
        "diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n"
        "@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n"
    )
    with pytest.raises(ToolError, match="symbolic link"):
        call(context, "apply_patch", patch=link)
    assert (context.workspace / "README.md").is_file()


def test_patch_paths_names_every_file_and_skips_hunk_bodies():
    patch = GREETING_PATCH + (
        "diff --git a/old.sql b/new.sql\nsimilarity index 90%\nrename from old.sql\n"
        "rename to new.sql\n--- a/old.sql\n+++ b/new.sql\n@@ -1,2 +1,1 @@\n"
        "--- a/not-a-header\n select 1;\n"
        'diff --git "a/with space" "b/with space"\n--- "a/with space"\n+++ "b/with space"\n'
    )
    assert patch_paths(patch) == [
        "src/app.py",
        "docs/new.md",
        "old.sql",
        "new.sql",
        "with space",
    ]


# --- run_command, run_tests ----------------------------------------------------------------


def test_run_command_runs_without_a_shell_in_the_workspace(context):
    result = call(context, "run_command", command="ls src '*'")
    assert result.startswith("exit code 2\n--- stdout\nsrc:\napp.py\n--- stderr\n")
    assert "cannot access '*'" in result


def test_run_command_reports_an_unknown_command(context):
    with pytest.raises(ToolError, match="command not found: no-such-program"):
        call(context, "run_command", command="no-such-program --help")


def test_run_command_environment_is_minimal_and_never_the_servers(context, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://orchestra:hunter2@db/orchestra")
    context = ToolContext(
        workspace=context.workspace,
        run_id=7,
        step_key="implement",
        environment={"PROJECT_FLAG": "on"},
    )

    result = call(context, "run_command", command="env")

    assert "sk-server-secret" not in result
    assert "hunter2" not in result
    stdout = result.split("--- stdout\n")[1].split("--- stderr")[0]
    variables = dict(line.split("=", 1) for line in stdout.splitlines())
    assert set(variables) == {"PATH", "HOME", "LANG", "TMPDIR", "PROJECT_FLAG"}
    assert variables["HOME"] == str(context.workspace)
    assert variables["PROJECT_FLAG"] == "on"


def _exits_soon(pid: int) -> bool:
    """Whether the process exits within a few seconds (rather than the 30 s its command
    sleeps): a killed process has closed its pipes a moment before it is marked exited."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], 5)[0])
    finally:
        os.close(handle)


@pytest.fixture
def unconfined(settings):
    """These tests read a PID the command prints and look for it on the host: only
    meaningful outside the sandbox's own PID namespace (tests/agents/test_sandbox.py has the
    sandboxed versions)."""
    from agents.sandbox import reset_sandbox

    settings.ORCHESTRA_SANDBOX = "none"
    reset_sandbox()
    yield
    reset_sandbox()


def test_run_command_timeout_kills_the_whole_process_group(context, settings, unconfined):
    settings.ORCHESTRA_COMMAND_TIMEOUT = 0.5
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"command timed out after 0.5 s") as timed_out:
        call(context, "run_command", command="sh -c 'sleep 30 & echo $!; wait'")
    assert time.monotonic() - started < 5
    background = int(str(timed_out.value).split("--- stdout\n")[1].split()[0])
    assert _exits_soon(background)


def test_run_command_kills_what_a_finished_command_left_in_the_background(context, unconfined):
    started = time.monotonic()
    result = call(context, "run_command", command="sh -c 'sleep 30 & echo $!'")
    assert time.monotonic() - started < 5
    assert result.startswith("exit code 0\n")
    assert _exits_soon(int(result.split("--- stdout\n")[1].split()[0]))


def test_run_command_keeps_the_start_and_end_of_a_huge_output(context, settings):
    settings.ORCHESTRA_COMMAND_OUTPUT_LIMIT = 1000
    script = "import sys; sys.stdout.write('begin' + 'x' * 5_000_000 + 'end')"
    result = call(context, "run_command", command=f'{PYTHON} -c "{script}"')
    stdout = result.split("--- stdout\n")[1].split("--- stderr\n")[0]
    assert stdout.startswith("begin")
    assert stdout.endswith("end\n")
    assert f"[... {5_000_008 - 1000} bytes cut ...]" in stdout
    assert len(result) < 1200


def test_run_tests_runs_the_projects_test_command(context):
    with pytest.raises(ToolError, match="this project has no test command configured"):
        call(context, "run_tests")
    configured = ToolContext(
        workspace=context.workspace,
        run_id=7,
        step_key="implement",
        environment={"SUITE": "unit"},
        test_command=f"{PYTHON} -c \"import os; print('ran', os.environ['SUITE'])\"",
    )
    assert call(configured, "run_tests") == "exit code 0\n--- stdout\nran unit\n--- stderr\n"


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("pytest", True),
        ("pytest -q tests", True),
        ("pytestx", False),
        ("pytes", False),
        ("git status --short", True),
        ("git push origin main", False),
        ("make test", True),
        ("make  test -j4", True),
        ("make deploy", False),
        ("'unclosed", False),
        ("", False),
    ],
)
def test_command_allowlisted_matches_whole_tokens(command, allowed):
    allowlist = ["pytest", "git status", "git diff", "'unclosed"]
    assert command_allowlisted(command, allowlist, test_command="make test") is allowed


def test_command_allowlisted_without_a_test_command():
    assert not command_allowlisted("make test", [], test_command="")
    assert command_allowlisted("ruff check .", ("ruff check",))


# --- deploy --------------------------------------------------------------------------------


@pytest.fixture
def integrated(tmp_path):
    """A repository with one commit and a function that exports it, as the engine would."""
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "main.py").write_text("print('v1')\n")
    init_repo(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    commit = git(repo, "rev-parse", "HEAD")

    def export(folder: Path) -> str:
        archive = subprocess.run(
            ["git", "archive", "HEAD"], cwd=repo, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        return commit

    export.commit = commit
    return export


def deploy_context(context, integrated, tmp_path, key, **extra) -> ToolContext:
    return ToolContext(
        workspace=context.workspace,
        run_id=7,
        step_key="ship",
        environment={},
        idempotency_key=key,
        releases=tmp_path / "releases",
        integrated=integrated,
        **extra,
    )


def test_deploy_without_an_integrated_commit_is_refused(context):
    with pytest.raises(ToolError, match="deploy needs the run's integrated commit"):
        call(context, "deploy", environment="staging")


def test_deploy_copies_numbered_releases_once_per_key(context, integrated, tmp_path):
    releases = tmp_path / "releases"
    first = deploy_context(context, integrated, tmp_path, "run-7-call-1")

    result = call(first, "deploy", environment="staging", note="first cut")

    assert result == f"deployed commit {integrated.commit[:12]} to staging as release-0001"
    release = releases / "staging" / "release-0001"
    assert (release / "app" / "main.py").read_text() == "print('v1')\n"
    assert json.loads((release / "RELEASE.json").read_text()) == {
        "commit": integrated.commit,
        "key": "run-7-call-1",
        "run": 7,
        "step": "ship",
        "environment": "staging",
        "note": "first cut",
    }
    assert deploy_receipt(releases, "run-7-call-1") == {
        "key": "run-7-call-1",
        "commit": integrated.commit,
        "environment": "staging",
        "result": result,
    }

    again = call(first, "deploy", environment="staging")
    assert again == "already deployed (receipt found): " + result
    assert sorted(p.name for p in (releases / "staging").iterdir()) == ["release-0001"]

    second = deploy_context(context, integrated, tmp_path, "run-7-call-2")
    assert call(second, "deploy", environment="staging").endswith("as release-0002")
    assert deploy_receipt(releases, "another key") is None


DEPLOY_SCRIPT = """
import json, os, pathlib, shutil, sys
env = os.environ
target = pathlib.Path(env['ORCHESTRA_RELEASES']) / env['ORCHESTRA_ENVIRONMENT'] / 'current'
shutil.copytree('.', target)
(target / 'deployed.json').write_text(json.dumps({
    name: env.get(name, '') for name in
    ['ORCHESTRA_COMMIT', 'ORCHESTRA_DEPLOY_KEY', 'ORCHESTRA_RECEIPT', 'PROJECT_TOKEN', 'HOME',
     'OPENAI_API_KEY']
}))
print('shipped to', target.name)
"""


def test_deploy_runs_the_projects_deploy_command_in_the_export(
    context, integrated, tmp_path, monkeypatch, settings, request
):
    from agents.sandbox import reset_sandbox

    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-secret")
    # The command runs in the sandbox: its script's folder is one it may read.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "deploy.py").write_text(DEPLOY_SCRIPT)
    settings.ORCHESTRA_SANDBOX_READ_ONLY = [str(tmp_path / "scripts")]
    reset_sandbox()
    request.addfinalizer(reset_sandbox)
    shipping = deploy_context(
        context,
        integrated,
        tmp_path,
        "run-7-call-3",
        deploy_command=f"{PYTHON} {tmp_path / 'scripts' / 'deploy.py'}",
    )
    shipping = replace(shipping, environment={"PROJECT_TOKEN": "t0k"})

    result = call(shipping, "deploy", environment="production")

    short = integrated.commit[:12]
    assert result == f"deployed commit {short} to production with the deploy command: " + (
        "shipped to current"
    )
    current = tmp_path / "releases" / "production" / "current"
    assert (current / "app" / "main.py").is_file()
    seen = json.loads((current / "deployed.json").read_text())
    receipt_name = seen.pop("ORCHESTRA_RECEIPT")
    assert seen == {
        "ORCHESTRA_COMMIT": integrated.commit,
        "ORCHESTRA_DEPLOY_KEY": "run-7-call-3",
        "PROJECT_TOKEN": "t0k",
        "HOME": str(context.workspace),
        "OPENAI_API_KEY": "",
    }
    assert json.loads(Path(receipt_name).read_text())["result"] == result
    assert call(shipping, "deploy", environment="production").startswith("already deployed")


def test_deploy_keeps_a_receipt_the_deploy_command_wrote(context, integrated, tmp_path):
    script = (
        "import json, os; json.dump({'key': os.environ['ORCHESTRA_DEPLOY_KEY'], "
        "'result': 'rolled out v1 to 3 hosts'}, open(os.environ['ORCHESTRA_RECEIPT'], 'w'))"
    )
    shipping = deploy_context(
        context, integrated, tmp_path, "k", deploy_command=f'{PYTHON} -c "{script}"'
    )
    assert call(shipping, "deploy", environment="production") == "rolled out v1 to 3 hosts"
    assert deploy_receipt(tmp_path / "releases", "k") == {
        "key": "k",
        "result": "rolled out v1 to 3 hosts",
    }


def test_a_failing_deploy_command_is_an_error_and_leaves_no_receipt(context, integrated, tmp_path):
    failing = deploy_context(
        context,
        integrated,
        tmp_path,
        "run-7-call-4",
        deploy_command=f"{PYTHON} -c \"import sys; print('no route to host'); sys.exit(1)\"",
    )
    with pytest.raises(ToolError, match="deploy command failed with exit code 1") as failed:
        call(failing, "deploy", environment="production")
    assert "no route to host" in str(failed.value)
    assert deploy_receipt(tmp_path / "releases", "run-7-call-4") is None


def test_the_export_folder_is_removed_after_a_deploy(context, integrated, tmp_path):
    folders = []

    def export(folder: Path) -> str:
        folders.append(folder)
        return integrated(folder)

    call(deploy_context(context, export, tmp_path, "k2"), "deploy", environment="staging")
    assert folders and not folders[0].exists()


# --- Approval previews ---------------------------------------------------------------------


def test_write_diff_shows_the_change_and_refusals(workspace):
    diff = write_diff(workspace, {"path": "README.md", "content": "# Demo\nSay hi.\n"})
    assert "-Say hello.\n+Say hi.\n" in diff
    assert write_diff(workspace, {"path": "../x", "content": ""}).startswith("(no diff: path")


def test_tools_are_registered_with_their_risk():
    risks = {name: tool.risk.value for name, tool in REGISTRY.items()}
    assert (
        risks.items()
        >= {
            "list_files": "read",
            "read_file": "read",
            "search_text": "read",
            "write_file": "write",
            "apply_patch": "write",
            "run_command": "exec",
            "run_tests": "exec",
            "deploy": "deploy",
        }.items()
    )


DEPLOY_PROBE = """
import os, pathlib, sys
secret, escaped = sys.argv[1], sys.argv[2]
folder = pathlib.Path(os.environ['ORCHESTRA_RELEASES']) / os.environ['ORCHESTRA_ENVIRONMENT']
folder.mkdir(parents=True, exist_ok=True)
(folder / 'current.txt').write_text('shipped')
said = []
for name, attempt in [('read', lambda: open(secret).read()),
                      ('write', lambda: open(escaped, 'w').write('out'))]:
    try:
        said.append(f'{name} worked: {attempt()}')
    except OSError as exc:
        said.append(f'{name} refused ({type(exc).__name__})')
print('; '.join(said))
"""


def test_the_deploy_command_is_confined_to_its_releases(
    context, integrated, tmp_path, settings, request
):
    """The deploy command runs the shipped tree's code: in the sandbox it writes its
    releases and nothing else of the host, and reads none of the server's files."""
    from agents.sandbox import reset_sandbox, sandbox_status

    reset_sandbox()
    request.addfinalizer(reset_sandbox)
    if not sandbox_status()["confined"]:
        pytest.skip(f"no sandbox here: {sandbox_status().get('reason')}")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "probe.py").write_text(DEPLOY_PROBE)
    settings.ORCHESTRA_SANDBOX_READ_ONLY = [str(tmp_path / "scripts")]
    reset_sandbox()
    secret = tmp_path / "server-secret.txt"
    secret.write_text("s3cret")
    escaped = tmp_path / "escaped.txt"
    probe = shlex.join([sys.executable, str(tmp_path / "scripts" / "probe.py")])
    shipping = deploy_context(
        context,
        integrated,
        tmp_path,
        "probe",
        deploy_command=f"{probe} {shlex.quote(str(secret))} {shlex.quote(str(escaped))}",
    )

    result = call(shipping, "deploy", environment="production")

    assert (tmp_path / "releases" / "production" / "current.txt").read_text() == "shipped"
    assert "read refused (FileNotFoundError)" in result, result
    assert not escaped.exists()  # whatever it wrote stayed in the sandbox's own /tmp
    assert deploy_receipt(tmp_path / "releases", "probe")["result"] == result


def test_a_deploy_ships_only_the_commit_that_was_approved(context, integrated, tmp_path):
    approved = deploy_context(
        context, integrated, tmp_path, "pinned", approved_commit=integrated.commit
    )
    assert "as release-0001" in call(approved, "deploy", environment="staging")

    moved = deploy_context(context, integrated, tmp_path, "moved", approved_commit="0" * 40)
    with pytest.raises(ToolError, match="not the 000000000000 that was approved") as refused:
        call(moved, "deploy", environment="staging")
    assert "nothing was shipped" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "releases" / "staging").iterdir()) == ["release-0001"]
    assert deploy_receipt(tmp_path / "releases", "moved") is None
