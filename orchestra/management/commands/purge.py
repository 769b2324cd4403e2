"""`manage.py purge --older-than 90d [--project SLUG] [--dry-run]`: the CLI's purge, for
deployments that run management commands (see `orchestra.retention`)."""

from django.core.management.base import BaseCommand, CommandError

from orchestra import retention
from orchestra.cli.purge import describe
from orchestra.models import Project


class Command(BaseCommand):
    help = "Remove finished runs, events, conversations and worktrees older than a limit."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", required=True, help="e.g. 90d, 12h or 2w")
        parser.add_argument("--project", help="only this project (default: all)")
        parser.add_argument("--dry-run", action="store_true", help="count, remove nothing")

    def handle(self, *args, older_than: str, project: str | None, dry_run: bool, **options):
        try:
            limits = retention.Limits.everything(retention.parse_age(older_than))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        projects = Project.objects.order_by("slug")
        if project:
            projects = projects.filter(slug=project)
            if not projects:
                raise CommandError(f"no project {project!r}")
        verb = "would remove" if dry_run else "removed"
        for each in projects:
            purged = retention.purge(each, limits, dry_run=dry_run)
            self.stdout.write(f"{each.slug}: {verb} {describe(purged)}")
