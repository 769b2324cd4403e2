"""`approvals`: list, show and decide checkpoints from a terminal, as a given user.

The same access functions and the same decision service as the dashboard and the API
(`get_checkpoint_for_user`, `decide_checkpoint`), so the same rules and refusals apply. In
the embedded default the work a decision resumes runs in this process until the run is quiet
again (see `follow.wait_until_quiet`).
"""

from __future__ import annotations

import argparse
import json

from orchestra.cli.common import CliError, get_user, say
from orchestra.cli.follow import approval_url, checkpoint_summary, wait_until_quiet


def _checkpoint(args: argparse.Namespace):
    from django.http import Http404

    from approvals.services import get_checkpoint_for_user

    user = get_user(args.user)
    try:
        return user, get_checkpoint_for_user(user, args.id)
    except Http404:
        raise CliError(f"no checkpoint {args.id} that {args.user} can see") from None


def cmd_list(args: argparse.Namespace) -> int:
    from approvals.models import Checkpoint
    from orchestra.access import visible_projects

    user = get_user(args.user)
    checkpoints = Checkpoint.objects.filter(run__project__in=visible_projects(user))
    if not args.all:
        checkpoints = checkpoints.filter(status=Checkpoint.Status.PENDING)
    checkpoints = checkpoints.select_related("run__task", "step", "tool_call")
    rows = list(checkpoints.order_by("-requested_at", "-pk")[:100])
    if not rows:
        say("No checkpoint is waiting." if not args.all else "No checkpoint yet.")
        return 0
    for c in rows:
        say(
            f"{c.pk:>5}  {c.status:<10} run {c.run_id} “{c.run.task.title}”  "
            f"{checkpoint_summary(c)}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, checkpoint = _checkpoint(args)
    say(f"Checkpoint {checkpoint.pk}: {checkpoint.kind.replace('_', ' ')} ({checkpoint.status})")
    say(f"  run      {checkpoint.run_id} “{checkpoint.run.task.title}”")
    if checkpoint.step is not None:
        say(f"  step     {checkpoint.step.key} — {checkpoint.step.title}")
    shown = checkpoint.shown or {}
    if shown.get("tool"):
        say(f"  tool     {shown['tool']} (risk {shown.get('risk', '?')})")
    if "arguments" in shown:
        say("  arguments")
        for line in json.dumps(shown["arguments"], indent=2, ensure_ascii=False).splitlines():
            say(f"    {line}")
    if shown.get("reason"):
        say(f"  reason   {shown['reason']}")
    if shown.get("diff"):
        say("  diff")
        for line in str(shown["diff"]).splitlines():
            say(f"    {line}")
    if checkpoint.decided_by:
        say(f"  decided  {checkpoint.decision} by {checkpoint.decided_by.get_username()}")
    say(f"  page     {approval_url(checkpoint.pk)}")
    return 0


def _decide(args: argparse.Namespace, decision: str, arguments: dict | None = None) -> int:
    from django.core.exceptions import PermissionDenied

    from approvals.errors import AlreadyDecided, AlreadyVoted, InvalidDecision
    from orchestra.engine import decide_checkpoint

    user, checkpoint = _checkpoint(args)
    try:
        checkpoint = decide_checkpoint(user, checkpoint, decision, args.comment or "", arguments)
    except (PermissionDenied, AlreadyDecided, AlreadyVoted, InvalidDecision) as exc:
        raise CliError(str(exc) or type(exc).__name__) from None
    by = checkpoint.decided_by.get_username() if checkpoint.decided_by else user.get_username()
    if checkpoint.status == "pending":
        say(f"Checkpoint {checkpoint.pk}: your approval is recorded; more approvers are needed.")
    else:
        say(f"Checkpoint {checkpoint.pk} {checkpoint.status} by {by}.")
    _drive(checkpoint.run_id)
    return 0


def _drive(run_id: int) -> None:
    from django.conf import settings

    if settings.ORCHESTRA_EMBEDDED_WORKER == "thread":
        say("Embedded mode: continuing the run in this process until it needs a person…")
        wait_until_quiet(run_id)
    from orchestra.models import Run

    run = Run.objects.get(pk=run_id)
    say(f"Run {run.pk} is now {run.status.replace('_', ' ')}.")


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    if not (args.comment or "").strip():
        raise CliError("say why you reject it: --comment 'reason' (the agent reads it)")
    return _decide(args, "reject_stop" if args.stop else "reject")


def cmd_edit(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        raise CliError(f"the arguments are not JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise CliError('the arguments must be a JSON object, e.g. \'{"command": "ls"}\'')
    return _decide(args, "edit", arguments)


def add_parser(commands) -> None:
    approvals = commands.add_parser("approvals", help="list, show and decide checkpoints")
    actions = approvals.add_subparsers(dest="approvals_command", metavar="ACTION")
    approvals.set_defaults(handler=cmd_list, all=False, user="admin")

    def with_user(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--user", default="admin", help="who decides (default admin)")
        return parser

    listing = with_user(actions.add_parser("list", help="pending checkpoints (--all: every)"))
    listing.add_argument("--all", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = with_user(actions.add_parser("show", help="what a checkpoint asks"))
    show.add_argument("id", type=int)
    show.set_defaults(handler=cmd_show)
    approve = with_user(actions.add_parser("approve", help="approve a checkpoint"))
    approve.add_argument("id", type=int)
    approve.add_argument("--comment", default="")
    approve.set_defaults(handler=cmd_approve)
    reject = with_user(actions.add_parser("reject", help="reject with a comment"))
    reject.add_argument("id", type=int)
    reject.add_argument("--comment", default="", help="why (the agent reads it)")
    reject.add_argument("--stop", action="store_true", help="and stop the step (and the run)")
    reject.set_defaults(handler=cmd_reject)
    edit = with_user(actions.add_parser("edit", help="approve with edited arguments (JSON)"))
    edit.add_argument("id", type=int)
    edit.add_argument("arguments", help='the arguments as JSON, e.g. \'{"command": "ls"}\'')
    edit.add_argument("--comment", default="")
    edit.set_defaults(handler=cmd_edit)
