"""Where agents work: a git repository per project, a branch per run, a worktree per step.

Layout under ORCHESTRA_WORKSPACES:
  <slug>/                          the project's repository (branch `main`)
  <slug>-releases/<env>/           what the built-in or the project's deploy ships
  <slug>-worktrees/run-<id>/<key>  one worktree per step, on branch orchestra/run-<id>/<key>
  <slug>-worktrees/run-<id>/_merge the run branch's integration worktree (the merge queue)
"""

from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from agents import workspace as git
from agents.host import Gate
from agents.teams import STARTER_FILES
from agents.tools import ToolContext, ToolError, run_in_workspace
from orchestra.models import Project, Run, Step

# Repositories this process has checked: each agent session asks for its repository, and
# the check is a git command.
_checked: set[Path] = set()


def repository_for(project: Project) -> Path:
    """The project's repository, created (or cloned from `project.repository`) on first use."""
    if project.workspace_path:
        path = Path(project.workspace_path)
    else:
        path = settings.ORCHESTRA_WORKSPACES / project.slug
    if path in _checked and (path / ".git").exists():
        return path
    git.ensure_repository(
        path, source=project.repository, seed_files=STARTER_FILES.get(project.team)
    )
    _checked.add(path)
    return path


def releases_for(project: Project) -> Path:
    repo = repository_for(project)
    return repo.parent / f"{repo.name}-releases"


def _worktrees(run: Run) -> Path:
    repo = repository_for(run.project)
    return repo.parent / f"{repo.name}-worktrees" / f"run-{run.pk}"


def cut_run_branch(run: Run) -> tuple[str, str]:
    """Cut the run's branch from main (idempotent): its name and base commit. Git runs here,
    so outside any database transaction; the caller records the result."""
    return git.start_run_branch(repository_for(run.project), run.pk)


def run_head(run: Run) -> str:
    """The run branch's integrated head, read from git (the source of truth)."""
    return git.head_commit(repository_for(run.project), run.branch)


def prepare_worktree(run: Run, step: Step) -> list[str]:
    """Give the step its worktree, cut from the run branch's current head (which holds every
    dependency's merged work); a revision keeps working in the one it has. Returns the
    step fields it set, for the caller to save. Caller holds the step's activity, not a
    database transaction (git runs here)."""
    if step.worktree and Path(step.worktree).is_dir():
        return []
    repo = repository_for(run.project)
    step.branch = git.step_branch_name(run.pk, step.key)
    step.base_commit = run_head(run)
    path = _worktrees(run) / step.key
    git.add_worktree(repo, path, step.branch, step.base_commit)
    step.worktree = str(path)
    return ["branch", "base_commit", "worktree"]


def commit_step(step: Step) -> list[str]:
    """Commit what the step's agent changed (an empty commit when nothing, so every step
    leaves one commit), and note the paths it touched. Returns the fields it set."""
    worktree = Path(step.worktree)
    message = f"{step.key}: {step.title} (attempt {step.attempts})"
    step.head_commit = git.commit_all(worktree, message, allow_empty=True) or git.head_commit(
        worktree
    )
    # Everything is committed now: comparing the two commits' trees finds what the step
    # touched without reading the working tree.
    step.touched = git.changed_between(worktree, step.base_commit, step.head_commit)
    return ["head_commit", "touched"]


def merge_step(run: Run, step: Step) -> git.MergeOutcome:
    """Integrate the step's branch into the run branch: the merge queue, one merge at a time
    per repository (a lock inside the repository)."""
    repo = repository_for(run.project)
    return git.merge_step(
        repo,
        run.branch,
        step.branch,
        _worktrees(run) / "_merge",
        f"Merge step {step.key}: {step.title}",
    )


def bring_run_head_into(run: Run, step: Step) -> list[str]:
    """After a conflict: merge the run branch into the step's worktree, leaving conflict
    markers for the agent to resolve. Returns the conflicting paths."""
    return git.merge_into_worktree(Path(step.worktree), run_head(run))


def integrated_tree(run: Run):
    """What `deploy` ships: exports the run branch's head into a folder, returns the sha."""
    repo = repository_for(run.project)

    def export(target: Path) -> str:
        commit = git.head_commit(repo, run.branch)
        git.export_tree(repo, commit, target)
        return commit

    return export


def remove_worktrees(run: Run) -> None:
    """A finished run's worktrees go; its branches stay for history."""
    if not run.branch:
        return
    repo = repository_for(run.project)
    paths = [
        Path(worktree)
        for worktree in run.steps.exclude(worktree="").values_list("worktree", flat=True)
    ]
    git.remove_worktrees(
        repo, [*paths, _worktrees(run) / "_merge"], park=settings.ORCHESTRA_PARKED_WORKTREES
    )


# --- deterministic checks -------------------------------------------------------------------
def run_checks(run: Run, step: Step, gate: Callable[[str], Gate]) -> list[dict]:
    """Run the checks the step's brief names, in its worktree: each name is one of the
    project's checks ("tests" is its test command), and each command meets the policy first
    (`gate`), like any command an agent causes. Each result: check, command, passed, output;
    a check the policy sends to a person is not run and carries `needs_person` (the reason)."""
    commands = run.project.check_commands()
    results = []
    for name in step.brief.get("checks") or []:
        command = commands.get(name, "")
        result = {"check": name, "command": command or name, "passed": False}
        if not command:
            results.append(result | {"output": f"this project defines no check {name!r}"})
            continue
        verdict = gate(command)
        if verdict.denied:
            results.append(result | {"output": f"not run: denied by the policy ({verdict.reason})"})
        elif not verdict.allowed:
            results.append(result | {"output": "not run", "needs_person": verdict.reason})
        else:
            code, output = _run(Path(step.worktree), command, run.project.sandbox_network)
            results.append(result | {"passed": code == 0, "output": output[-4000:]})
    return results


def _run(cwd: Path, command: str, network: bool) -> tuple[int, str]:
    context = ToolContext(workspace=cwd, run_id=0, step_key="", environment={}, network=network)
    try:
        finished = run_in_workspace(context, command, "check")
    except ToolError as exc:
        return -1, str(exc)
    return finished.returncode, f"exit code {finished.returncode}\n{finished.output()}"


def describe_checks(results: list[dict]) -> str:
    return "\n".join(
        f"- `{r['command']}`: {'passed' if r['passed'] else 'FAILED'}\n{r['output']}"
        for r in results
    )


def fork_point(parent: Run, merged: list[Step], reused: set[str]) -> tuple[str, list[Step]]:
    """Where a fork of `parent` starts its branch: the parent's run branch just after the
    merges that only reused steps made before any step that runs again was merged (their
    merged commits are then the fork's, exactly). Also the reused steps merged after that
    point, which the fork merges again. `merged` are the parent's done steps. Git runs here."""
    repo = repository_for(parent.project)
    chain = git.git_output(
        repo, "rev-list", "--first-parent", "--reverse", f"{parent.base_commit}..{parent.branch}"
    ).split()
    position = {commit: index for index, commit in enumerate(chain)}
    ordered = sorted(
        (s for s in merged if s.merged_commit in position), key=lambda s: position[s.merged_commit]
    )
    base, kept = parent.base_commit, set()
    for step in ordered:
        if step.key not in reused:
            break
        base = step.merged_commit
        kept.add(step.key)
    return base, [s for s in merged if s.key in reused and s.key not in kept]


def start_fork_branch(fork: Run, base: str, remerge: list[Step]) -> tuple[str, dict[str, str]]:
    """Cut the fork's run branch at `base` and merge the reused steps' branches that came
    after it; the branch and each re-merged step's merged commit. Raises GitError, naming the
    step, when one no longer merges cleanly. Git runs here."""
    repo = repository_for(fork.project)
    branch, _ = git.start_run_branch(repo, fork.pk, base)
    commits = {}
    for step in remerge:
        outcome = git.merge_step(
            repo, branch, step.branch, _worktrees(fork) / "_merge", f"Merge step {step.key}"
        )
        if not outcome.ok:
            raise git.GitError(
                f"step {step.key!r} of the parent run no longer merges cleanly "
                f"({', '.join(outcome.conflicts)})"
            )
        commits[step.key] = outcome.commit
    return branch, commits
