"""Core records: projects, tasks, runs, plans, steps and the append-only event log.

State changes live in the service modules (`orchestra.engine`, `approvals.services`); nothing
here saves a row on its own initiative.
"""

import hashlib
import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models


class Project(models.Model):
    class Team(models.TextChoices):
        SOFTWARE = "software", "Software"
        CONTENT = "content", "Content"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    team = models.CharField(max_length=40, default=Team.SOFTWARE)
    description = models.TextField(blank=True)
    workspace_path = models.CharField(max_length=500, blank=True)
    concurrency_cap = models.PositiveIntegerField(default=50)
    max_revisions = models.PositiveIntegerField(default=2)
    max_step_attempts = models.PositiveIntegerField(default=2)
    requires_plan_approval = models.BooleanField(default=False)
    # The final report waits for a person: approved, it ends the run; sent back with a
    # comment, the orchestrator writes it again once.
    requires_report_approval = models.BooleanField(default=False)
    # The git repository the agents work in: empty means a fresh one under the data folder;
    # otherwise an existing local path or a clone URL, cloned once.
    repository = models.CharField(max_length=500, blank=True)
    test_command = models.CharField(max_length=500, blank=True)
    # Run from the integrated tree of the run branch; empty means the built-in release copy.
    deploy_command = models.CharField(max_length=500, blank=True)
    # Command prefixes `run_command` may run without a human (the test command always may).
    command_allowlist = models.JSONField(default=list, blank=True)
    # Named checks a plan may ask for before review, {name: command}, defined by an admin;
    # "tests" is always the test command. A plan names checks; it never gives commands.
    checks = models.JSONField(default=dict, blank=True)
    # Whether the project's commands (in the sandbox) may reach the network; off by default.
    sandbox_network = models.BooleanField(default=False)
    # Notifications when a checkpoint opens, is decided or expires.
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(max_length=200, blank=True)
    # The webhook's body: Orchestra's JSON payload, or a Slack-compatible message (Slack's
    # incoming webhooks, and chat tools that accept the same `text`/`blocks` format).
    webhook_format = models.CharField(
        max_length=20,
        choices=[("orchestra", "Orchestra JSON"), ("slack", "Slack message")],
        default="orchestra",
    )
    notify_emails = models.JSONField(default=list, blank=True)
    # Retention, in days; empty keeps forever. Finished runs (with their steps, events, calls
    # and checkpoints), events of finished runs, the stored conversations of model calls, and
    # the worktrees a failed or cancelled run keeps for inspection (a completed run's go at
    # once). Applied by the retention beat task (`orchestra.retention`).
    retention_runs_days = models.PositiveIntegerField(null=True, blank=True)
    retention_events_days = models.PositiveIntegerField(null=True, blank=True)
    retention_messages_days = models.PositiveIntegerField(null=True, blank=True)
    retention_worktrees_days = models.PositiveIntegerField(null=True, blank=True, default=14)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def check_commands(self) -> dict[str, str]:
        """The checks a plan may name, and the command each runs."""
        named = {str(k): str(v) for k, v in (self.checks or {}).items() if str(v).strip()}
        return {**named, "tests": self.test_command} if self.test_command else named


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        OPERATOR = "operator"
        APPROVER = "approver"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Task(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title


class Run(models.Model):
    class Status(models.TextChoices):
        PLANNING = "planning"
        AWAITING_APPROVAL = "awaiting_approval"
        RUNNING = "running"
        REVIEWING = "reviewing"
        REPORTING = "reporting"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        # A person (or a checkpoint's deadline) chose "reject and stop": a decision, not a
        # failure, so it is kept out of the failure rate.
        STOPPED = "stopped"

    class Phase(models.TextChoices):
        PLAN = "plan"
        DISPATCH = "dispatch"
        REVIEW = "review"
        REPORT = "report"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.STOPPED)

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNING)
    phase = models.CharField(max_length=20, choices=Phase.choices, default=Phase.PLAN)
    uses_demo_model = models.BooleanField(default=False)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    report = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Who stopped a `stopped` run (null: a checkpoint's deadline did); why is in `error`.
    stopped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Last event sequence number handed out; bumped under this row's lock.
    event_seq = models.BigIntegerField(default=0)
    # Git: the run's branch, the commit it started from and its integrated head.
    branch = models.CharField(max_length=200, blank=True)
    base_commit = models.CharField(max_length=40, blank=True)
    head_commit = models.CharField(max_length=40, blank=True)
    # Paused by hand: nothing is dispatched and running steps park at their next turn until
    # someone resumes it. Who paused it, for the run page.
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.CharField(max_length=150, blank=True)
    # A fork: the run it was forked from and the step it was forked at (that step and those
    # downstream of it ran again; the others were reused as they were).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    forked_at_step = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["project", "-created_at"], name="run_project_created"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.task}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None


class Plan(models.Model):
    class Status(models.TextChoices):
        PROPOSED = "proposed"
        REJECTED = "rejected"
        ACCEPTED = "accepted"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="plans")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROPOSED)
    data = models.JSONField(default=dict)
    errors = models.JSONField(default=list, blank=True)
    # Orderings the engine added between steps that claim the same resource.
    added_orderings = models.JSONField(default=list, blank=True)
    # A version made by a human in plan review: what it was based on, who edited, the diff.
    based_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    diff = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "version"]
        constraints = [
            models.UniqueConstraint(fields=["run", "version"], name="unique_plan_version"),
        ]

    def __str__(self) -> str:
        return f"Plan v{self.version} of run {self.run_id}"


class Step(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        RUNNING = "running"
        AWAITING_APPROVAL = "awaiting_approval"
        IN_REVIEW = "in_review"
        REVISING = "revising"
        MERGING = "merging"
        # Parked at a turn boundary while its run is paused; carries on from its conversation.
        PAUSED = "paused"
        DONE = "done"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.SKIPPED, Status.CANCELLED)
    # Dispatched and not finished: these hold their claims.
    ACTIVE = (
        Status.READY,
        Status.RUNNING,
        Status.AWAITING_APPROVAL,
        Status.IN_REVIEW,
        Status.REVISING,
        Status.MERGING,
        Status.PAUSED,
    )

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=64)
    position = models.PositiveIntegerField(default=0)
    title = models.CharField(max_length=300)
    agent_role = models.CharField(max_length=64)
    # The model this step's agent uses instead of its profile's (set when a run is forked
    # at this step with another model); empty: the profile's.
    model = models.CharField(max_length=100, blank=True)
    brief = models.JSONField(default=dict)
    depends_on = models.JSONField(default=list, blank=True)
    claims = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    revisions = models.PositiveIntegerField(default=0)
    # Attempt number the review gate has taken; guards against reviewing one attempt twice.
    reviewed_attempt = models.PositiveIntegerField(default=0)
    feedback = models.TextField(blank=True)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    task_id = models.CharField(max_length=64, blank=True)
    # Git: the step's own branch and worktree, cut from the run branch at `base_commit`;
    # `head_commit` is its reviewed work, `merged_commit` the run-branch commit integrating it.
    branch = models.CharField(max_length=200, blank=True)
    worktree = models.CharField(max_length=500, blank=True)
    base_commit = models.CharField(max_length=40, blank=True)
    head_commit = models.CharField(max_length=40, blank=True)
    merged_commit = models.CharField(max_length=40, blank=True)
    # Paths the step changed; with `claims`, what it leases while active.
    touched = models.JSONField(default=list, blank=True)
    merge_rounds = models.PositiveIntegerField(default=0)
    # Deterministic checks (e.g. the test command) run before review, with their results.
    checks = models.JSONField(default=list, blank=True)
    # A fork's step taken as it was from the parent run (its output and merged commit; no
    # model was called for it).
    reused_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="unique_step_key"),
        ]
        indexes = [models.Index(fields=["run", "status"], name="step_run_status")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class Activity(models.Model):
    """A durable unit of work: planning, a step's attempt (and its resume after a decision),
    its checks and review, its merge, the report. Written in the transaction that makes the
    work due, so nothing is lost between the database and the broker; claimed by one worker
    at a time with a conditional update; kept alive by its owner's heartbeat. One rule takes
    over any kind whose lease expired (see `orchestra.activities`)."""

    class Kind(models.TextChoices):
        PLAN = "plan"
        STEP = "step"
        REVIEW = "review"
        MERGE = "merge"
        REPORT = "report"

    class Status(models.TextChoices):
        QUEUED = "queued"  # sent (or due to be sent) to a worker; the lease bounds the wait
        RUNNING = "running"  # an owner holds it and renews the lease
        DONE = "done"

    key = models.CharField(max_length=80, unique=True)  # "<kind>:<run or step id>"
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="activities")
    step = models.ForeignKey(
        "Step", null=True, blank=True, on_delete=models.CASCADE, related_name="activities"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # The Celery task (by name) and arguments that carry the work on from what was stored.
    task = models.CharField(max_length=80)
    args = models.JSONField(default=list)
    owner = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField(default=0)  # times claimed
    lease_expires_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "lease_expires_at"], name="activity_due")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status}, attempt {self.attempt})"


class Event(models.Model):
    """Append-only log of everything that happened in a run, ordered by a per-run `seq`."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=40)
    actor = models.CharField(max_length=150, default="engine")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="unique_event_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"

    # `as_json`'s fields, read as plain values: a client following a run reads every event,
    # and model instances (the step's whole row with each) cost more than the rest of it.
    _JSON_COLUMNS = ("seq", "kind", "at", "step__key", "actor", "data")

    @classmethod
    def json_rows(cls, events: models.QuerySet) -> list[dict]:
        """`as_json` of each event of `events` (ordered and sliced by the caller), in one
        query without model instances."""
        return [_event_json(*row) for row in events.values_list(*cls._JSON_COLUMNS)]

    def as_json(self) -> dict:
        step = self.step.key if self.step_id and self.step else None
        return _event_json(self.seq, self.kind, self.at, step, self.actor, self.data)


def _event_json(seq: int, kind: str, at, step: str | None, actor: str, data: dict) -> dict:
    return {
        "seq": seq,
        "kind": kind,
        "at": at.isoformat(),
        "step": step,
        "actor": actor,
        "data": data,
    }


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 is stored, the plain value is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, default="cli")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} for {self.user}"

    @staticmethod
    def digest_of(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str = "cli") -> str:
        raw = "orc_" + secrets.token_urlsafe(32)
        cls.objects.create(user=user, name=name, digest=cls.digest_of(raw))
        return raw


class WorkerCredential(models.Model):
    """A worker's key to the central repository (git over HTTP). Only its SHA-256 is
    stored; the plain token is shown once, when it is issued. A revoked one opens nothing."""

    name = models.CharField(max_length=100, unique=True)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name if self.revoked_at is None else f"{self.name} (revoked)"
