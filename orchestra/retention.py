"""Retention: what a project keeps and for how long, and the purge that applies it.

Four kinds, each with its own age limit (`Limits`): finished runs (deleted with their steps,
events, agent runs, model and tool calls, checkpoints and deliveries, and their task once it
has no run left), the events of finished runs, the stored conversations of agent runs (their
messages and model replies; the calls' usage stays), and the worktrees that failed and
cancelled runs keep for inspection. A run that has not ended is never touched.

`orchestra purge --older-than 90d` applies one limit to every kind in every project; the beat
task `orchestra.apply_retention` applies each project's own settings (`Project.retention_*`).

The audit chain stays verifiable: the purge removes the audit records older than the runs'
limit and anchors the chain first (`approvals.audit.purge_prefix`), and it keeps a run that a
remaining audit record names (that record's hash covers the run's id, which deleting the run
would clear). Git runs outside any transaction: worktrees are removed before the rows that
name them go, and a removal that fails leaves the run for the next purge.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import AgentRun, ModelCall
from agents.workspace import GitError
from approvals import audit
from approvals.models import AuditRecord
from orchestra.engine import workspaces
from orchestra.models import Event, Project, Run, Step, Task

logger = logging.getLogger(__name__)

ACTOR = "retention"
_AGE = re.compile(r"^\s*(\d+)\s*([dhw])\s*$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
# Runs deleted per transaction: a year of runs goes in many short transactions, not one.
BATCH = 200


def parse_age(text: str) -> timedelta:
    """ "90d", "12h", "2w" -> timedelta; ValueError with the accepted forms otherwise."""
    match = _AGE.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age: use a number and d, h or w, e.g. 90d")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Limits:
    """Each kind's age limit; None keeps that kind forever."""

    runs: timedelta | None = None
    events: timedelta | None = None
    messages: timedelta | None = None
    worktrees: timedelta | None = None

    @classmethod
    def everything(cls, age: timedelta) -> Limits:
        return cls(runs=age, events=age, messages=age, worktrees=age)

    @classmethod
    def of(cls, project: Project) -> Limits:
        def days(value: int | None) -> timedelta | None:
            return None if value is None else timedelta(days=value)

        return cls(
            runs=days(project.retention_runs_days),
            events=days(project.retention_events_days),
            messages=days(project.retention_messages_days),
            worktrees=days(project.retention_worktrees_days),
        )

    def any(self) -> bool:
        return any(v is not None for v in (self.runs, self.events, self.messages, self.worktrees))


@dataclass
class Purged:
    """What a purge removed (or, dry, would remove) in one project."""

    project: str
    runs: int = 0
    events: int = 0
    messages: int = 0  # agent runs whose conversation was cleared
    worktrees: int = 0  # runs whose worktrees were removed
    audit_records: int = 0
    kept_for_audit: list[int] = field(default_factory=list)  # old runs a kept record names

    def total(self) -> int:
        return self.runs + self.events + self.messages + self.worktrees + self.audit_records

    def as_json(self) -> dict:
        return {
            "runs": self.runs,
            "events": self.events,
            "messages": self.messages,
            "worktrees": self.worktrees,
            "audit_records": self.audit_records,
        }


def purge(
    project: Project, limits: Limits, *, dry_run: bool = False, now: datetime | None = None
) -> Purged:
    """Remove what in `project` is older than `limits`; with `dry_run`, only count it.

    Side effects (not dry): git worktree removals first, outside any transaction; then the
    rows in short transactions; a "retention.purged" audit record anchoring what was removed
    (appended only when something was)."""
    now = now or timezone.now()
    cutoff = {
        kind: (now - age if age is not None else None) for kind, age in asdict(limits).items()
    }
    purged = Purged(project.slug)
    finished = Run.objects.filter(project=project, status__in=Run.TERMINAL).annotate(
        ended=Coalesce("finished_at", "created_at")
    )
    audit_through = None
    doomed: list[int] = []
    if cutoff["runs"] is not None:
        audit_through = audit.prefix_before(project, cutoff["runs"])
        kept_records = AuditRecord.objects.filter(project=project, run__isnull=False)
        if audit_through is not None:
            kept_records = kept_records.filter(seq__gt=audit_through[0])
        named = set(kept_records.values_list("run_id", flat=True))
        old = list(finished.filter(ended__lt=cutoff["runs"]).values_list("pk", flat=True))
        doomed = [pk for pk in old if pk not in named]
        purged.kept_for_audit = sorted(pk for pk in old if pk in named)
        purged.runs = len(doomed)
        purged.audit_records = audit_through[2] if audit_through else 0
    inspected = _with_worktrees(finished, cutoff["worktrees"], doomed)
    purged.worktrees = len(inspected)
    events = Event.objects.none()
    if cutoff["events"] is not None:
        events = Event.objects.filter(
            run__in=finished.exclude(pk__in=doomed), at__lt=cutoff["events"]
        )
        purged.events = events.count()
    conversations = AgentRun.objects.none()
    if cutoff["messages"] is not None:
        conversations = (
            AgentRun.objects.filter(
                run__in=finished.exclude(pk__in=doomed), started_at__lt=cutoff["messages"]
            )
            .exclude(messages=[])
            .values_list("pk", flat=True)
        )
        purged.messages = conversations.count()
    if dry_run or not purged.total():
        return purged

    for run in Run.objects.filter(pk__in=inspected).select_related("project"):
        if not _remove_worktrees(run):
            purged.worktrees -= 1
            if run.pk in doomed:  # its rows go once its worktrees are gone
                doomed.remove(run.pk)
                purged.runs -= 1
    _forget_worktrees([pk for pk in inspected if pk not in doomed])
    agent_runs = list(conversations)
    with transaction.atomic():
        if cutoff["runs"] is not None:
            summary = {
                "older_than": {k: v.isoformat() for k, v in cutoff.items() if v is not None},
                "removed": purged.as_json(),
            }
            purged.audit_records = audit.purge_prefix(project, cutoff["runs"], ACTOR, summary)
        else:
            audit.record(project, audit.PURGE_KIND, ACTOR, {"removed": purged.as_json()})
        events.delete()
        AgentRun.objects.filter(pk__in=agent_runs).update(messages=[])
        ModelCall.objects.filter(agent_run_id__in=agent_runs).update(response={})
    for start in range(0, len(doomed), BATCH):
        _delete_runs(doomed[start : start + BATCH])
    return purged


def apply_settings(now: datetime | None = None) -> list[Purged]:
    """Purge every project by its own retention settings (the beat task); the projects where
    something was removed, with what."""
    done = []
    for project in Project.objects.order_by("pk"):
        limits = Limits.of(project)
        if not limits.any():
            continue
        try:
            purged = purge(project, limits, now=now)
        except Exception:  # one project's trouble must not stop the others' retention
            logger.exception("retention of project %s failed", project.slug)
            continue
        if purged.total():
            done.append(purged)
    return done


def _with_worktrees(finished, cutoff: datetime | None, doomed: list[int]) -> list[int]:
    """Runs whose worktrees go: failed and cancelled ones older than the worktrees' limit, and
    every run about to be deleted, that still have a worktree on disk."""
    old_inspected = Q(pk__in=[])
    if cutoff is not None:
        old_inspected = Q(status__in=[Run.Status.FAILED, Run.Status.CANCELLED], ended__lt=cutoff)
    chosen = finished.filter(old_inspected | Q(pk__in=doomed))
    paths = Step.objects.filter(run__in=chosen).exclude(worktree="")
    return sorted(
        {run_id for run_id, path in paths.values_list("run_id", "worktree") if Path(path).exists()}
    )


def _remove_worktrees(run: Run) -> bool:
    try:
        workspaces.remove_worktrees(run)
    except (GitError, OSError):
        logger.warning("could not remove the worktrees of run %s", run.pk, exc_info=True)
        return False
    return True


def _forget_worktrees(run_ids: list[int]) -> None:
    """The steps of kept runs no longer name a worktree that is gone."""
    Step.objects.filter(run_id__in=run_ids).exclude(worktree="").update(worktree="")


def _delete_runs(run_ids: list[int]) -> None:
    """Delete the runs (cascading to everything recorded under them) and the tasks left with
    no run, in one transaction."""
    with transaction.atomic():
        tasks = set(Run.objects.filter(pk__in=run_ids).values_list("task_id", flat=True))
        Run.objects.filter(pk__in=run_ids).delete()
        Task.objects.filter(pk__in=tasks, runs__isnull=True).delete()
