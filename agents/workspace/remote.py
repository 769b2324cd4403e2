"""A worker's own clone of a central repository, reached over git's smart HTTP.

The credential travels as an `Authorization: Bearer` header set through GIT_CONFIG_*
variables: never in the remote URL (which the clone's `.git/config` keeps), never in an
argument list (which a GitError names). Branches of the central repository are fetched into
remote-tracking refs (`refs/remotes/origin/...`); a step branch is pushed back as it is.
"""

from pathlib import Path

from agents.workspace import parking
from agents.workspace.gitcmd import (
    GitError,
    config_environment,
    folder_lock,
    git_output,
    run_git,
)
from agents.workspace.libgit import has_ref, open_repository
from agents.workspace.repository import WITHOUT_REFLOGS, ensure_main_after_clone, head_commit

_NETWORK_TIMEOUT = 900
ORIGIN = "origin"


def credential_environment(token: str) -> dict[str, str]:
    """What git needs in its environment to show `token` to the central repository."""
    return config_environment(("http.extraHeader", f"Authorization: Bearer {token}"))


def clone_repository(url: str, path: Path, token: str) -> Path:
    """Clone `url` into `path` on first use, with a local `main`; idempotent."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with folder_lock(path):  # a worker's threads may all want it first at once
        if (path / ".git").exists():
            return path
        run_git(
            path.parent,
            "clone",
            "--quiet",
            "--no-tags",
            *WITHOUT_REFLOGS,
            "--",
            url,
            str(path),
            env=credential_environment(token),
            timeout=_NETWORK_TIMEOUT,
        )
        ensure_main_after_clone(path)
    return path


def tracking_ref(branch: str) -> str:
    """Where a central branch is fetched to."""
    return f"refs/remotes/{ORIGIN}/{branch}"


def fetch_branches(repo: Path, token: str, *patterns: str) -> None:
    """Fetch the central branches `patterns` (names, or globs like `a/*`) into their
    remote-tracking refs, forced: the central repository is the truth. A name that does not
    exist there is an error; a glob matching nothing is not."""
    refspecs = [f"+refs/heads/{pattern}:{tracking_ref(pattern)}" for pattern in patterns]
    run_git(
        repo,
        "fetch",
        "--quiet",
        "--no-tags",
        ORIGIN,
        *refspecs,
        env=credential_environment(token),
        timeout=_NETWORK_TIMEOUT,
    )


def central_head(repo: Path, branch: str) -> str | None:
    """The last fetched head of the central `branch`, or None when it has none."""
    ref = tracking_ref(branch)
    if not has_ref(open_repository(repo), ref):
        return None
    return head_commit(repo, ref)


def push_branch(repo: Path, branch: str, token: str) -> None:
    """Push the local `branch` to the central repository (no force: a push that would drop
    commits there is refused). A refusal raises a GitError carrying git's own report, which
    names each rejected ref and the central repository's reason."""
    try:
        run_git(
            repo,
            "push",
            "--quiet",
            "--no-verify",
            ORIGIN,
            f"refs/heads/{branch}:refs/heads/{branch}",
            env=credential_environment(token),
            timeout=_NETWORK_TIMEOUT,
        )
    except GitError as exc:
        if not exc.stderr:
            raise  # timed out or did not start: the message says so
        raise GitError(
            f"pushing {branch} to the central repository failed: {exc.stderr}",
            exc.command,
            exc.stderr,
        ) from exc


def reset_worktree(worktree: Path, commit: str) -> None:
    """Make the worktree (its branch, index and files) exactly `commit`: a merge in progress
    and uncommitted or untracked files go."""
    parking.unmark(worktree)
    git_output(worktree, "reset", "--quiet", "--hard", commit)
    git_output(worktree, "clean", "-ffdxq")
