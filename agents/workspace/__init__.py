"""Git workspaces for runs and steps: a small library over libgit2 and the `git` command line.

The model: each project has a normal git repository whose default branch is `main`. A run
works on its own branch (`run_branch_name`) cut from `main`; each step works in its own
worktree on its own branch (`step_branch_name`) cut from the run branch. After review, the
merge queue (`merge_step`) integrates one step branch at a time into the run branch, without a
checkout unless it conflicts (then in a dedicated integration worktree of the run branch).

Every function takes plain paths and strings and works with a fixed identity and without the
user's or the system's git configuration, so results do not depend on the machine: a step's
path (its worktree, refs, its commit, what it touched, a merge without overlapping changes,
the worktree's removal) in process through libgit2, the rest by running git in a subprocess.
Failures raise `GitError` naming the command and git's own message.

Operations that change refs or the worktree list shared by all worktrees of a repository
(`start_run_branch`, `add_worktree`, `merge_step`, `remove_worktree`) hold an exclusive
`flock` on a lock file in the repository's common git directory. The lock is taken on a fresh
file descriptor per call, so it serialises threads of one process as well as processes.
Nothing here imports Django.

The package by job: `gitcmd` (running git, errors, the lock), `libgit` (git in process),
`repository` (repositories, branches, reading at a commit), `worktrees` (worktrees and the
work in them), `merge` (the merge queue and conflicts), `remote` (a worker's clone of a
central repository over HTTP: clone, fetch, push).
"""

from agents.workspace.gitcmd import GitError, capped, git_output, nul_separated
from agents.workspace.merge import (
    DETAIL_LIMIT,
    RUN_MERGE_MESSAGE,
    MergeOutcome,
    merge_into_worktree,
    merge_step,
)
from agents.workspace.parking import unmark as unmark_clean
from agents.workspace.remote import (
    central_head,
    clone_repository,
    fetch_branches,
    push_branch,
    reset_worktree,
    tracking_ref,
)
from agents.workspace.repository import (
    INITIAL_COMMIT_MESSAGE,
    MAIN_BRANCH,
    STEP_KEY_PATTERN,
    ensure_repository,
    export_tree,
    file_at,
    head_commit,
    log_subjects,
    run_branch_name,
    start_run_branch,
    step_branch_name,
)
from agents.workspace.worktrees import (
    add_worktree,
    changed_between,
    changed_paths,
    commit_all,
    diff_since,
    merge_in_progress,
    remove_worktree,
    remove_worktrees,
    start_point,
)

# Its former name, which some callers still use.
_git = git_output

__all__ = [
    "DETAIL_LIMIT",
    "INITIAL_COMMIT_MESSAGE",
    "MAIN_BRANCH",
    "RUN_MERGE_MESSAGE",
    "STEP_KEY_PATTERN",
    "GitError",
    "MergeOutcome",
    "add_worktree",
    "central_head",
    "clone_repository",
    "fetch_branches",
    "merge_in_progress",
    "push_branch",
    "reset_worktree",
    "capped",
    "changed_between",
    "changed_paths",
    "commit_all",
    "diff_since",
    "ensure_repository",
    "export_tree",
    "file_at",
    "git_output",
    "head_commit",
    "log_subjects",
    "merge_into_worktree",
    "merge_step",
    "nul_separated",
    "remove_worktree",
    "remove_worktrees",
    "run_branch_name",
    "start_point",
    "start_run_branch",
    "step_branch_name",
    "tracking_ref",
    "unmark_clean",
]
