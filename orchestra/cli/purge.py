"""`orchestra purge --older-than 90d [--project SLUG] [--dry-run]`: remove finished runs,
their events and conversations, failed runs' worktrees and the audit records older than the
limit, in every project or one (see `orchestra.retention`)."""

from __future__ import annotations

import argparse

from orchestra.cli.common import CliError, get_project, say


def add_parser(commands) -> None:
    purge = commands.add_parser("purge", help="remove what is older than a limit (retention)")
    purge.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h or 2w")
    purge.add_argument("--project", metavar="SLUG", help="only this project (default: all)")
    purge.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    purge.set_defaults(handler=cmd_purge)


def cmd_purge(args: argparse.Namespace) -> int:
    from orchestra import retention
    from orchestra.models import Project

    try:
        age = retention.parse_age(args.older_than)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    projects = [get_project(args.project)] if args.project else Project.objects.order_by("slug")
    limits = retention.Limits.everything(age)
    verb = "would remove" if args.dry_run else "removed"
    for project in projects:
        purged = retention.purge(project, limits, dry_run=args.dry_run)
        say(f"{project.slug}: {verb} {describe(purged)}")
        if purged.kept_for_audit:
            ids = ", ".join(str(pk) for pk in purged.kept_for_audit)
            say(f"{project.slug}: kept runs {ids}: a newer audit record names them")
    return 0


def describe(purged) -> str:
    return (
        f"{purged.runs} runs, {purged.events} events, {purged.messages} conversations, "
        f"{purged.worktrees} runs' worktrees, {purged.audit_records} audit records"
    )
