"""Repositories and branches: create or clone a repository, name and cut branches, read.

Reading means the files and history at a commit, without a checkout.
"""

import io
import re
import tarfile
from pathlib import Path, PurePosixPath

import pygit2

from agents.workspace import libgit
from agents.workspace.gitcmd import (
    GitError,
    decoded,
    folder_lock,
    git_output,
    nul_separated,
    repository_lock,
    run_git,
    succeeds,
)

MAIN_BRANCH = "main"
STEP_KEY_PATTERN = re.compile(r"[a-z0-9_-]+")
INITIAL_COMMIT_MESSAGE = "Initial commit"
_CLONE_TIMEOUT = 900
# A repository Orchestra makes (initialises or clones) keeps no reflogs, said in its own
# configuration: each step made a reflog file (and its folder) for its branch and added a
# line to its run branch's and to its worktree's HEAD's, which a parked worktree carries from
# run to run without bound; each was a few more files written in the step's git work. A run's
# history is its commits and its trace. A repository that was there already is left as it is.
REFLOGS_OFF = ("core.logAllRefUpdates", "false")
WITHOUT_REFLOGS = ("--config", "=".join(REFLOGS_OFF))  # `git clone`'s option for it


# -- Names -------------------------------------------------------------------------------------


def run_branch_name(run_id: int) -> str:
    """The branch a run integrates its steps into: `orchestra/run-<id>`."""
    return f"orchestra/run-{int(run_id)}"


def step_branch_name(run_id: int, step_key: str) -> str:
    """A step's own branch: `orchestra/run-<id>-steps/<step-key>`.

    Not `orchestra/run-<id>/<step-key>`: git stores branches as paths, so the run branch
    `orchestra/run-<id>` cannot also be a folder holding branches below it.
    """
    if not STEP_KEY_PATTERN.fullmatch(step_key):
        raise ValueError(f"Step key {step_key!r} must match [a-z0-9_-]+.")
    return f"{run_branch_name(run_id)}-steps/{step_key}"


# -- Repositories and branches ------------------------------------------------------------------


def ensure_repository(
    path: Path, source: str = "", seed_files: dict[str, str] | None = None
) -> Path:
    """Make sure `path` holds a git repository with a `main` branch; return `path`.

    Idempotent: an existing repository is returned as it is. Otherwise, with `source` (a local
    path or a clone URL) the repository is cloned and a local `main` is created if the clone's
    default branch has another name (from `origin/main` if the source has one, else at the
    clone's HEAD) and checked out. Without `source`, a repository is initialised on `main`:
    an existing non-empty folder is committed as it is, an empty or missing one receives
    `seed_files` (relative path -> text; a README.md when there are none). The first commit
    is "Initial commit".
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with folder_lock(path):
        return _ensure_repository(path, source, seed_files)


def _ensure_repository(path: Path, source: str, seed_files: dict[str, str] | None) -> Path:
    """`ensure_repository` under its folder's lock: `path` exists."""
    if (path / ".git").exists():
        git_output(path, "rev-parse", "--git-dir")  # fails loudly on a broken repository
        return path
    if source:
        run_git(
            path.parent,
            "clone",
            "--quiet",
            *WITHOUT_REFLOGS,
            "--",
            source,
            str(path),
            timeout=_CLONE_TIMEOUT,
        )
        ensure_main_after_clone(path)
        return path
    has_files = any(path.iterdir())
    git_output(path, "init", "--quiet", "--initial-branch", MAIN_BRANCH)
    git_output(path, "config", *REFLOGS_OFF)  # `init` wrote "true"
    if not has_files:
        _write_seed_files(path, seed_files or {"README.md": f"# {path.name}\n"})
    git_output(path, "add", "--all")
    git_output(path, "commit", "--quiet", "--allow-empty", "--message", INITIAL_COMMIT_MESSAGE)
    return path


def ensure_main_after_clone(path: Path) -> None:
    main_ref = f"refs/heads/{MAIN_BRANCH}"
    if ref_exists(path, main_ref):
        return
    if ref_exists(path, f"refs/remotes/origin/{MAIN_BRANCH}"):
        git_output(path, "checkout", "--quiet", "-b", MAIN_BRANCH, f"origin/{MAIN_BRANCH}")
    elif succeeds(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"):
        git_output(path, "checkout", "--quiet", "-b", MAIN_BRANCH)
    else:  # an empty source: start `main` with the initial commit
        git_output(path, "symbolic-ref", "HEAD", main_ref)
        _write_seed_files(path, {"README.md": f"# {path.name}\n"})
        git_output(path, "add", "--all")
        git_output(path, "commit", "--quiet", "--message", INITIAL_COMMIT_MESSAGE)


def _write_seed_files(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or ".git" in parts:
            raise ValueError(f"Seed file path {relative!r} must be relative and inside the repo.")
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def ref_exists(repo: Path, ref: str) -> bool:
    """Whether the full ref name `ref` exists (read in process)."""
    return libgit.has_ref(libgit.open_repository(repo), ref)


def head_commit(repo: Path, ref: str = "HEAD") -> str:
    """The full sha of the commit `ref` names (a branch, a sha, HEAD...), read in process.

    What libgit2 cannot resolve goes to `git rev-parse`: its answer, or its own error message.
    """
    try:
        return str(libgit.commit_of(libgit.open_repository(repo), ref).id)
    except GitError:
        return git_output(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


def start_run_branch(repo: Path, run_id: int, base_ref: str = MAIN_BRANCH) -> tuple[str, str]:
    """Create the run's branch at `base_ref`; return (branch, its head commit).

    Idempotent: an existing run branch is left where it is. Holds the repository lock. In
    process: the branch is a ref written as `git branch --no-track` writes it.
    """
    branch = run_branch_name(run_id)
    with repository_lock(repo):
        repository = libgit.open_repository(repo)
        existing = repository.branches.local.get(branch)
        if existing is None:
            base = libgit.commit_of(repository, head_commit(repo, base_ref))
            existing = repository.branches.local.create(branch, base)
        return branch, str(existing.peel(pygit2.Commit).id)


# -- Reading -----------------------------------------------------------------------------------


def export_tree(repo: Path, commit: str, target: Path) -> None:
    """Extract the files of `commit` into `target` (created if missing), without `.git`.

    Files already in `target` are overwritten or left alone; pass a fresh folder for an exact
    copy.
    """
    archive = run_git(repo, "archive", "--format=tar", head_commit(repo, commit)).stdout
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def file_at(repo: Path, commit: str, relative: str) -> str | None:
    """The text of file `relative` at `commit`, or None if it does not exist there."""
    sha = head_commit(repo, commit)  # a bad commit is an error, not an absent file
    result = run_git(repo, "cat-file", "blob", f"{sha}:{PurePosixPath(relative)}", check=False)
    if result.returncode != 0:
        return None
    return decoded(result.stdout)


def log_subjects(repo: Path, ref: str) -> list[str]:
    """The subject lines of the commits reachable from `ref`, newest first.

    Topological order: commits made within the same second still list children first.
    """
    return nul_separated(git_output(repo, "log", "--topo-order", "--format=%s", "-z", ref))
