"""The central repositories over git's smart HTTP: a real git client against a live server.

Only a live worker credential opens them; a push may only create or update the project's step
branches, and the reason for a refusal comes back; the token never lands in the clone."""

import urllib.error
import urllib.request

import pytest

from agents import workspace as git
from agents.workspace.repository import ref_exists
from orchestra.credentials import issue_worker_token, revoke_worker_token
from orchestra.engine.workspaces import cut_run_branch, repository_for
from orchestra.models import Plan, Run, Step, Task, WorkerCredential

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def central(demo, live_server):
    """The demo project's central repository with a run of one step, served live."""
    task = Task.objects.create(project=demo, title="Remote work")
    run = Run.objects.create(task=task, project=demo)
    plan = Plan.objects.create(run=run, version=1)
    Step.objects.create(run=run, plan=plan, key="build", title="Build", agent_role="coder")
    run.branch, run.base_commit = cut_run_branch(run)
    run.save(update_fields=["branch", "base_commit"])
    return run, f"{live_server.url}/git/{demo.slug}.git"


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url)  # noqa: S310 - the test's own live server
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def post_push(
    url: str, token: str, commands: list[str], capabilities: str = "report-status"
) -> tuple[int, str, str]:
    """A receive-pack request whose command list is `commands` ("old new ref"), then a few
    bytes standing for the pack. Returns the status, the content type and the body."""
    lines = []
    for index, command in enumerate(commands):
        line = (command + (f"\0{capabilities}" if index == 0 else "") + "\n").encode()
        lines.append(b"%04x" % (len(line) + 4) + line)
    body = b"".join(lines) + b"0000" + b"PACK" + bytes(100_000)
    request = urllib.request.Request(  # noqa: S310
        f"{url}/git-receive-pack",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-git-receive-pack-request",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            body = response.read().decode(errors="replace")
            return response.status, response.headers["Content-Type"], body
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def pkt_lines(data: str) -> list[str]:
    """The payloads of the pkt-lines in `data`, up to the first flush."""
    lines = []
    while (size := int(data[:4], 16)) != 0:
        lines.append(data[4:size])
        data = data[size:]
    return lines


def report(url: str, token: str, commands: list[str]) -> list[str]:
    """The report-status of a receive-pack request that asked for one (not in a side band)."""
    status, content_type, body = post_push(url, token, commands)
    assert status == 200 and content_type == "application/x-git-receive-pack-result"
    return [line.rstrip("\n") for line in pkt_lines(body)]


def test_only_a_live_worker_credential_opens_the_repository(central):
    _run, url = central
    refs = f"{url}/info/refs?service=git-upload-pack"
    token = issue_worker_token("box-1")

    status, _, body = get(refs)
    assert status == 401 and "worker credential is required" in body
    status, _, body = get(refs, "orcw_not-a-real-token")
    assert status == 401 and "unknown or revoked" in body

    status, content_type, _ = get(refs, token)
    assert status == 200
    assert content_type == "application/x-git-upload-pack-advertisement"
    assert WorkerCredential.objects.get(name="box-1").last_used_at is not None

    revoke_worker_token("box-1")
    status, _, body = get(refs, token)
    assert status == 401 and "unknown or revoked" in body
    # Only the smart protocol: no file of the repository is served as it is.
    status, _, _ = get(f"{url}/HEAD", issue_worker_token("box-2"))
    assert status == 404


def test_a_worker_clones_fetches_and_pushes_its_step_branch(central, tmp_path):
    run, url = central
    token = issue_worker_token("box-1")
    clone = git.clone_repository(url, tmp_path / "box-1" / "demo", token)
    assert token not in (clone / ".git" / "config").read_text()

    git.fetch_branches(clone, token, run.branch, f"{run.branch}-steps/*")
    assert git.central_head(clone, run.branch) == run.base_commit
    branch = git.step_branch_name(run.pk, "build")
    assert git.central_head(clone, branch) is None
    worktree = git.add_worktree(clone, tmp_path / "box-1" / "wt", branch, run.base_commit)
    (worktree / "built.txt").write_text("built remotely\n")
    commit = git.commit_all(worktree, "build: Build")
    git.push_branch(worktree, branch, token)

    central_repo = repository_for(run.project)
    assert git.head_commit(central_repo, branch) == commit
    assert git.file_at(central_repo, branch, "built.txt") == "built remotely\n"
    # The run branch and main did not move.
    assert git.head_commit(central_repo, run.branch) == run.base_commit


def test_a_refused_git_push_fails_and_git_prints_the_reason(central, tmp_path, caplog):
    run, url = central
    token = issue_worker_token("box-1")
    clone = git.clone_repository(url, tmp_path / "box-1" / "demo", token)
    (clone / "sneaky.txt").write_text("not reviewed\n")
    git.commit_all(clone, "straight to main")
    central_repo = repository_for(run.project)
    main_before = git.head_commit(central_repo, "main")

    with pytest.raises(git.GitError) as refused:
        git.push_branch(clone, "main", token)
    reason = "workers may push only step branches"
    assert "[remote rejected] main -> main" in refused.value.stderr
    assert reason in refused.value.stderr and reason in str(refused.value)
    assert str(refused.value).startswith("pushing main to the central repository failed: ")
    # Refused by the protocol, not by HTTP (git would say "The requested URL returned error: 403").
    assert "returned error" not in refused.value.stderr
    assert git.head_commit(central_repo, "main") == main_before
    logged = [r.getMessage() for r in caplog.records if r.name == "orchestra.gitserve"]
    assert any("box-1" in m and "refs/heads/main" in m and reason in m for m in logged)


def test_pushes_to_anything_but_a_step_branch_are_refused_with_the_reason(central, tmp_path):
    run, url = central
    token = issue_worker_token("box-1")
    central_repo = repository_for(run.project)
    main_before = git.head_commit(central_repo, "main")
    old, new, zero = run.base_commit, "1" * 40, "0" * 40

    main = report(url, token, [f"{old} {new} refs/heads/main"])
    assert main[0] == "unpack ok"
    assert main[1].startswith("ng refs/heads/main refusing to update refs/heads/main: ")
    assert "workers may push only step branches" in main[1]
    assert "(a run branch)" in report(url, token, [f"{old} {new} refs/heads/{run.branch}"])[1]
    step_ref = f"refs/heads/{run.branch}-steps/build"
    assert "never delete" in report(url, token, [f"{old} {zero} {step_ref}"])[1]
    nope = report(url, token, [f"{zero} {new} refs/heads/{run.branch}-steps/nope"])
    assert "has no step 'nope'" in nope[1]
    # One refused command refuses the whole push; every ref is reported.
    both = report(url, token, [f"{zero} {new} {step_ref}", f"{old} {new} refs/heads/main"])
    assert both[1] == f"ng {step_ref} not pushed: another ref of this push was refused"
    assert both[2].startswith("ng refs/heads/main refusing")
    assert git.head_commit(central_repo, "main") == main_before
    assert not ref_exists(central_repo, step_ref)


def test_the_report_goes_in_the_side_band_the_client_asked_for(central):
    run, url = central
    token = issue_worker_token("box-1")
    command = f"{run.base_commit} {'1' * 40} refs/heads/main"
    status, _, body = post_push(url, token, [command], "report-status side-band-64k agent=x")
    assert status == 200
    packets = pkt_lines(body)
    assert all(packet.startswith("\x01") for packet in packets)
    inner = pkt_lines("".join(packet[1:] for packet in packets))
    assert inner[0] == "unpack ok\n" and inner[1].startswith("ng refs/heads/main refusing")
    # A client that asked for no report gets the reason as text.
    status, content_type, body = post_push(url, token, [command], "agent=x")
    assert status == 403 and content_type.startswith("text/plain")
    assert "workers may push only step branches" in body


def test_the_cli_issues_lists_and_revokes_worker_credentials(db, capsys):
    from orchestra.cli import main

    assert main(["worker-token", "add", "box-1"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("orcw_")
    assert WorkerCredential.objects.get(name="box-1").digest != token
    assert main(["worker-token", "add", "box-1"]) == 2
    assert "already has a credential" in capsys.readouterr().err

    assert main(["worker-token", "list"]) == 0
    assert "box-1\tactive" in capsys.readouterr().out
    assert main(["worker-token", "revoke", "box-1"]) == 0
    assert main(["worker-token", "list"]) == 0
    assert "box-1\trevoked" in capsys.readouterr().out
    assert main(["worker-token", "revoke", "nobody"]) == 2
    assert "no worker credential named 'nobody'" in capsys.readouterr().err
