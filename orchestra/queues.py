"""Which Celery queue each task goes to (Celery's `task_routes` calls `route`).

- `orchestra`: work that needs the central repository or is the engine's own bookkeeping:
  planning, merges, the report, dispatch, the sweep, expiry, exports, retention, deliveries.
- `steps`: a step's attempt (first, resumed, taken over) and its review, which work in the
  step's worktree and can run on any worker, a remote one included.
- a role's own queue, for a step whose agent role (the review: the reviewer's) is listed in
  ORCHESTRA_ROLE_QUEUES; then only workers consuming it run that role's work.

With no role queues configured, routing reads nothing from the database.
"""

from django.conf import settings

from orchestra.models import Step

CENTRAL = "orchestra"
STEPS = "steps"
# Messages queued by earlier versions, which knew no queues, wait here.
LEGACY = "celery"
REVIEWER_ROLE = "reviewer"

STEP_TASKS = frozenset(
    {"orchestra.execute_step", "orchestra.resume_step", "orchestra.take_over_step"}
)
REVIEW_TASK = "orchestra.review_step"


def queue_for(name: str, args=()) -> str:
    """The queue of task `name` called with `args` (a step task's first is the step id)."""
    if name == REVIEW_TASK:
        return _role_queue(REVIEWER_ROLE)
    if name in STEP_TASKS:
        roles = settings.ORCHESTRA_ROLE_QUEUES
        if not roles or not args:
            return STEPS
        role = Step.objects.filter(pk=args[0]).values_list("agent_role", flat=True).first()
        return _role_queue(role or "")
    return CENTRAL


def _role_queue(role: str) -> str:
    return role if role in settings.ORCHESTRA_ROLE_QUEUES else STEPS


def route(name, args, kwargs, options, task=None, **kw) -> dict:
    """Celery's router: every task sent gets its queue."""
    return {"queue": queue_for(name, args or ())}


def worker_queues(remote: bool) -> list[str]:
    """What `orchestra worker` consumes when not told: everything, and the queue earlier
    versions sent to; a remote worker (no central repository here) only step work."""
    if remote:
        return [STEPS, *settings.ORCHESTRA_ROLE_QUEUES]
    return [CENTRAL, STEPS, *settings.ORCHESTRA_ROLE_QUEUES, LEGACY]
