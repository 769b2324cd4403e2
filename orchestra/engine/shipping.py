"""What a deploy would ship, for the person who approves it.

`deploy_preview` answers with the commit the deploy exports (the run branch's integrated
head) and what changed since what the environment runs now: the commit of the project's last
successful deploy there, or the run's base commit when nothing was deployed there yet.
Read-only git; nothing here runs inside a transaction.
"""

import re

from agents import workspace as git
from agents.models import ToolCall
from agents.tools.deploy import deploy_receipt
from orchestra.engine import workspaces
from orchestra.models import Project, Run

MAX_FILES = 300  # listed on the page; the totals and the full diff count every file
MAX_LOG = 20
MAX_DIFF = 500_000  # characters of a full diff shown
SHA = re.compile(r"[0-9a-f]{7,40}")
_HEX_WORD = re.compile(r"\b[0-9a-f]{7,40}\b")
_STATUS = {"A": "added", "M": "modified", "D": "deleted", "T": "type changed"}


def deploy_preview(run: Run, environment: str) -> dict:
    """What deploying `run` to `environment` ships (JSON-safe, for `checkpoint.shown`):

    {"environment", "commit", "base", "base_is_last_deploy", "commits": [{"sha",
    "subject"}], "commit_count", "files": [{"path", "status", "added", "deleted"}],
    "file_count", "insertions", "deletions"}; `added`/`deleted` are None for a binary file.
    Raises `git.GitError` when the repository cannot be read."""
    repo = workspaces.repository_for(run.project)
    commit = workspaces.run_head(run)
    last = last_deployed_commit(run.project, environment)
    base = last or run.base_commit or commit
    files = _changed_files(repo, base, commit)
    log = _git(repo, "log", "--topo-order", "--format=%H %s", "-z", f"{base}..{commit}")
    commits = [
        dict(zip(("sha", "subject"), (entry.split(" ", 1) + [""])[:2], strict=True))
        for entry in git.nul_separated(log)
    ]
    return {
        "environment": environment,
        "commit": commit,
        "base": base,
        "base_is_last_deploy": bool(last),
        "commits": commits[:MAX_LOG],
        "commit_count": len(commits),
        "files": files[:MAX_FILES],
        "file_count": len(files),
        "insertions": sum(f["added"] or 0 for f in files),
        "deletions": sum(f["deleted"] or 0 for f in files),
    }


def last_deployed_commit(project: Project, environment: str) -> str | None:
    """The commit the project's latest successful deploy to `environment` shipped, or None.

    Deploys are the succeeded `deploy` tool calls; each one's receipt (written under its
    idempotency key) holds the full sha; without one (a receipt a project's deploy command
    wrote its own way), the short sha the result names. A commit the repository does not
    have does not count: the next older deploy does."""
    calls = ToolCall.objects.filter(
        run__project=project,
        tool="deploy",
        status=ToolCall.Status.SUCCEEDED,
        arguments__environment=environment,
    ).order_by("-finished_at", "-pk")
    repo = releases = None
    for call in calls[:50]:
        if repo is None:
            repo = workspaces.repository_for(project)
            releases = workspaces.releases_for(project)
        receipt = deploy_receipt(releases, call.idempotency_key) or {}
        named = [receipt.get("commit")]
        named += _HEX_WORD.findall(str(receipt.get("result") or call.result or ""))
        for candidate in named:
            if sha := commit_in(repo, candidate):
                return sha
    return None


def commit_in(repo, sha: str) -> str | None:
    """The full sha if `sha` (hex, 7 to 40 digits) names a commit of `repo`, else None."""
    if not isinstance(sha, str) or not SHA.fullmatch(sha):
        return None
    try:
        return git.head_commit(repo, sha)
    except git.GitError:
        return None


def run_commit(run: Run, sha: str) -> str | None:
    """`commit_in` the run's project repository."""
    return commit_in(workspaces.repository_for(run.project), sha)


def diff_between(run: Run, base: str, commit: str) -> str:
    """The unified diff from `base` to `commit` (full shas of the run's repository), capped
    for display with a note saying how much was cut."""
    repo = workspaces.repository_for(run.project)
    diff = _git(repo, "diff", "--no-color", "--no-ext-diff", "--no-renames", base, commit)
    return git.capped(diff, MAX_DIFF, "diff")


def _changed_files(repo, base: str, commit: str) -> list[dict]:
    statuses = git.nul_separated(
        _git(repo, "diff", "--name-status", "--no-renames", "-z", base, commit)
    )
    status_of = {
        path: _STATUS.get(code[:1], code)
        for code, path in zip(statuses[0::2], statuses[1::2], strict=False)
    }
    files = []
    numstat = _git(repo, "diff", "--numstat", "--no-renames", "-z", base, commit)
    for entry in git.nul_separated(numstat):
        added, deleted, path = entry.split("\t", 2)
        files.append(
            {
                "path": path,
                "status": status_of.get(path, "modified"),
                "added": int(added) if added.isdigit() else None,
                "deleted": int(deleted) if deleted.isdigit() else None,
            }
        )
    return sorted(files, key=lambda f: f["path"])


def _git(repo, *args: str) -> str:
    # The git helpers of agents.workspace run git in a clean environment and raise GitError;
    # these reads have no public wrapper there yet.
    return git.git_output(repo, *args)
