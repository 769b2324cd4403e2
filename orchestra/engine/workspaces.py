"""Where agents work: a git repository per project, a branch per run, a worktree per step.

Layout under ORCHESTRA_WORKSPACES:
  <slug>/                          the project's repository (branch `main`)
  <slug>-releases/<env>/           what the built-in or the project's deploy ships
  <slug>-worktrees/run-<id>/<key>  one worktree per step, on branch orchestra/run-<id>/<key>
  <slug>-worktrees/run-<id>/_merge the run branch's integration worktree (the merge queue)

A worker on another machine (ORCHESTRA_GIT_REMOTE set) has the same layout under its own
ORCHESTRA_WORKSPACES, with `<slug>/` its clone of the central repository (which the web
process serves over HTTP, see `orchestra.gitserve`). Before a step's worktree is made it
fetches the run branch and the run's step branches; after the step's commit it pushes the
step branch; the merge queue, planning and the report stay on the central machine. A step's
worktree path is this machine's, computed here, never read from `Step.worktree` (which the
last machine to work on the step wrote).
"""

import shutil
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

# How the merge queue's feedback starts when a step's branch conflicted with the run branch:
# preparing the step's next round brings the run head into its worktree (see
# `prepare_worktree`), on whichever worker runs it.
CONFLICT_FEEDBACK = "Merging your branch into the run branch conflicted"


def remote() -> str:
    """The central repositories' URL when this worker's are clones of them, else ""."""
    return settings.ORCHESTRA_GIT_REMOTE


def repository_for(project: Project) -> Path:
    """The project's repository: the central one (`central_repository`), or on a remote
    worker its own clone of it, cloned on first use."""
    if not remote():
        return central_repository(project)
    path = settings.ORCHESTRA_WORKSPACES / project.slug
    if path not in _checked or not (path / ".git").exists():
        git.clone_repository(f"{remote()}/{project.slug}.git", path, settings.ORCHESTRA_GIT_TOKEN)
        _checked.add(path)
    return path


def central_repository(project: Project) -> Path:
    """The project's repository on this machine, created (or cloned from
    `project.repository`) on first use: what the web process serves to remote workers."""
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
    """The run branch's integrated head, read from git (the source of truth): on a remote
    worker, fetched from the central repository first."""
    repo = repository_for(run.project)
    if remote():
        _fetch_run(repo, run)
        return git.head_commit(repo, git.tracking_ref(run.branch))
    return git.head_commit(repo, run.branch)


def prepare_worktree(run: Run, step: Step) -> list[str]:
    """Give the step its worktree, cut from the run branch's current head (which holds every
    dependency's merged work), or for a step without dependencies from the run's base (see
    `_start_point`); a revision keeps working in the one it has, and a round after a merge
    conflict first has the run head merged into it (conflict markers left for the agent).
    Returns the step fields it set, for the caller to save. Caller holds the step's
    activity, not a database transaction (git runs here)."""
    if remote():
        return _prepare_remote(run, step)
    if step.worktree and Path(step.worktree).is_dir():
        if _conflict_round(step):
            _bring_run_head_into(Path(step.worktree), run_head(run))
        return []
    repo = repository_for(run.project)
    step.branch = git.step_branch_name(run.pk, step.key)
    step.base_commit = _start_point(repo, run, step, run_head(run))
    path = _worktrees(run) / step.key
    git.add_worktree(repo, path, step.branch, step.base_commit)
    step.worktree = str(path)
    return ["branch", "base_commit", "worktree"]


def _start_point(repo: Path, run: Run, step: Step, head: str) -> str:
    """The commit a step's branch is cut from: the run head for a step with dependencies
    (it holds their merged work); the run's base for one without, unless the run branch has
    changed a path it claims since (a step that claimed nothing wrote it, and the lease held
    this one back until that merged: it starts from that work rather than conflict with it).

    What a step without dependencies sees is then the same however many other steps merged
    before a slot freed for it, and a parked worktree taken for it rewrites only the file or
    two its last step wrote: cut from the run head, it rewrote every file merged since that
    step started, about as many as steps run at once (in a 200-step plan on an ext4 without
    a journal, creating those files was a third of the embedded process's time)."""
    if step.depends_on or not run.base_commit:
        return head
    return git.start_point(repo, run.base_commit, head, step.claims)


def _conflict_round(step: Step) -> bool:
    return step.status == Step.Status.REVISING and step.feedback.startswith(CONFLICT_FEEDBACK)


def _bring_run_head_into(worktree: Path, head: str) -> list[str]:
    """Merge the run head into the step's worktree, leaving conflict markers for the agent;
    a merge already in progress there (this round was prepared before) is left as it is."""
    if git.merge_in_progress(worktree):
        return []
    return git.merge_into_worktree(worktree, head)


def worktree_of(step: Step) -> Path:
    """The step's worktree on this machine. On a remote worker it is made when missing (a
    review, a resumed or taken-over attempt that another worker started) from the step's
    branch on the central repository, and a review finds it at the commit it reviews."""
    if not remote():
        return Path(step.worktree)
    run = step.run
    path = _worktrees(run) / step.key
    wanted = step.head_commit if step.status == Step.Status.IN_REVIEW else ""
    if path.is_dir() and (not wanted or git.head_commit(path) == wanted):
        return path
    repo = repository_for(run.project)
    _fetch_run(repo, run)
    central = git.central_head(repo, step.branch)
    git.add_worktree(repo, path, step.branch, central or step.base_commit)
    target = wanted or central
    if target and git.head_commit(path) != target:
        git.reset_worktree(path, target)
    return path


def _prepare_remote(run: Run, step: Step) -> list[str]:
    repo = repository_for(run.project)
    remove_finished_worktrees(run.project)
    _fetch_run(repo, run)
    fields = []
    if not step.branch:
        step.branch = git.step_branch_name(run.pk, step.key)
        head = git.head_commit(repo, git.tracking_ref(run.branch))
        step.base_commit = _start_point(repo, run, step, head)
        fields += ["branch", "base_commit"]
    central = git.central_head(repo, step.branch)
    path = _worktrees(run) / step.key
    git.add_worktree(repo, path, step.branch, central or step.base_commit)
    # The central branch is the truth: a stale worktree (another worker did a round since)
    # starts from it, and so does a conflict round (the merge below starts clean).
    start = central or step.base_commit
    if git.head_commit(path) != start or _conflict_round(step):
        git.reset_worktree(path, start)
    if _conflict_round(step):
        git.merge_into_worktree(path, git.head_commit(repo, git.tracking_ref(run.branch)))
    if step.worktree != str(path):
        step.worktree = str(path)
        fields.append("worktree")
    return fields


def _fetch_run(repo: Path, run: Run) -> None:
    git.fetch_branches(repo, settings.ORCHESTRA_GIT_TOKEN, run.branch, f"{run.branch}-steps/*")


def commit_step(step: Step, *, changed: set[str] | None = None) -> list[str]:
    """Commit what the step's agent changed (an empty commit when nothing, so every step
    leaves one commit), and note the paths it touched; a remote worker pushes the step's
    branch to the central repository. Returns the fields it set. `changed`: every path the
    agent could have written, when that is known (only these are staged; the worktree is not
    walked)."""
    worktree = worktree_of(step)
    message = f"{step.key}: {step.title} (attempt {step.attempts})"
    committed = git.commit_all(worktree, message, allow_empty=True, changed=changed)
    step.head_commit = committed or git.head_commit(worktree)
    # Everything is committed now: comparing the two commits' trees finds what the step
    # touched without reading the working tree.
    step.touched = git.changed_between(worktree, step.base_commit, step.head_commit)
    if remote():
        git.push_branch(worktree, step.branch, settings.ORCHESTRA_GIT_TOKEN)
    return ["head_commit", "touched"]


def save_progress(step: Step) -> None:
    """Before a step pauses for a person: on a remote worker its work so far is committed
    and pushed, so whichever worker resumes it finds it. Nothing to do otherwise (the
    worktree stays where it is)."""
    if not remote() or not step.worktree:
        return
    worktree = worktree_of(step)
    if git.merge_in_progress(worktree):
        return  # conflict markers cannot be committed; the resolution is the agent's
    message = f"{step.key}: work in progress (attempt {step.attempts}, waiting for a person)"
    if git.commit_all(worktree, message):
        git.push_branch(worktree, step.branch, settings.ORCHESTRA_GIT_TOKEN)


def remove_finished_worktrees(project: Project) -> None:
    """On a remote worker: the worktrees of the project's runs that have ended go (their
    branches are on the central repository). Run when a worktree is prepared."""
    repo = repository_for(project)
    folder = repo.parent / f"{repo.name}-worktrees"
    runs = {
        int(child.name.removeprefix("run-")): child
        for child in (folder.iterdir() if folder.is_dir() else ())
        if child.name.startswith("run-") and child.name.removeprefix("run-").isdigit()
    }
    if not runs:
        return
    ended = Run.objects.filter(pk__in=list(runs), status__in=Run.TERMINAL).values_list(
        "pk", flat=True
    )
    for run_id in ended:
        git.remove_worktrees(repo, list(runs[run_id].iterdir()), park=parked_at_most(project))
        shutil.rmtree(runs[run_id], ignore_errors=True)


def release_worktree(run: Run, step: Step) -> None:
    """A merged step's worktree is parked at once (or removed when the shelf is full), so
    the next step of this run or another takes its checkout instead of writing every file
    of the repository again: in a plan wider than the shelf, fresh checkouts were most of a
    step's cost. Nothing reads a merged step's worktree again (its branch holds its work).
    Not on a remote worker's machine: the merge runs on the central one."""
    if remote() or not step.worktree:
        return
    _shelve(run, [Path(step.worktree)])


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
        cut_from=step.base_commit,
    )


def integrated_tree(run: Run):
    """What `deploy` ships: exports the run branch's head into a folder, returns the sha (on
    a remote worker, the central head, fetched first)."""
    repo = repository_for(run.project)

    def export(target: Path) -> str:
        commit = run_head(run)
        git.export_tree(repo, commit, target)
        return commit

    return export


def remove_worktrees(run: Run) -> None:
    """A finished run's worktrees go; its branches stay for history."""
    if not run.branch:
        return
    paths = [
        Path(worktree)
        for worktree in run.steps.exclude(worktree="").values_list("worktree", flat=True)
    ]
    _shelve(run, [*paths, _worktrees(run) / "_merge"])


def _shelve(run: Run, paths: list[Path]) -> None:
    """The worktrees at `paths` parked for later steps, or removed when the shelf is full."""
    git.remove_worktrees(repository_for(run.project), paths, park=parked_at_most(run.project))


def parked_at_most(project: Project) -> int:
    """How many finished worktrees the project's repository keeps parked:
    ORCHESTRA_PARKED_WORKTREES, or as many steps as the project runs at once when that is
    more (0 turns parking off). A shelf smaller than a plan's width is emptied as the plan
    starts (the rest are fresh checkouts, every file written) and overflows as it ends (the
    rest deleted, every file): in 200-step plans 50 at a time, with 32 parked, a run made
    and deleted some thirty whole checkouts, and the split worker's kernel time a step was
    43-50 ms against 11-15 with 64 parked. Keeping them holds no more disk than the plan
    held at its widest."""
    kept = settings.ORCHESTRA_PARKED_WORKTREES
    return max(kept, project.concurrency_cap) if kept > 0 else 0


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
            worktree = worktree_of(step)
            git.unmark_clean(worktree)  # a command may write anywhere in it
            code, output = _run(worktree, command, run.project.sandbox_network)
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
