"""The chores: issue an API token, verify or export a project's audit chain, migrate, seed."""

from __future__ import annotations

import argparse
import sys

from orchestra.cli.common import CliError, get_project, get_user, say


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """0 when the project's audit chain is intact, 1 naming the first broken record."""
    from approvals.audit import verify

    result = verify(get_project(args.project))
    if result.ok:
        say(f"ok: {result.count} records, chain intact")
        return 0
    bad = result.first_bad
    say(f"TAMPERED: record seq {bad.seq} (id {bad.pk}, kind {bad.kind}): {result.reason}")
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from approvals.audit import export_jsonl

    project = get_project(args.project)
    if args.output == "-":
        export_jsonl(project, sys.stdout)
        sys.stdout.flush()
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="\n") as stream:
            count = export_jsonl(project, stream)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    say(f"Exported {count} audit records of {project.slug} to {args.output}.")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from orchestra.models import ApiToken

    user = get_user(args.user)
    raw = ApiToken.issue(user, name=args.name)
    say(f"API token for {user.get_username()} (shown once; send it as 'Authorization: Bearer'):")
    say(raw)  # last line: scripts take `tail -n 1`
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    """Set a user's password: asked twice at a terminal, else the first line of stdin."""
    import getpass

    from django.contrib.auth.password_validation import ValidationError, validate_password

    user = get_user(args.user)
    if sys.stdin.isatty():
        password = getpass.getpass(f"New password for {user.get_username()}: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the two passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise CliError("an empty password; nothing changed")
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise CliError(" ".join(exc.messages)) from None
    user.set_password(password)
    user.save(update_fields=["password"])
    say(f"Password of {user.get_username()} changed.")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    seed_and_tell()
    return 0


def seed_and_tell() -> None:
    """Seed, and tell the person how to log in; the password is only known on first start."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from orchestra.seed import seed_demo

    existed = get_user_model().objects.filter(username="admin").exists()
    password = seed_demo()
    chosen = settings.ORCHESTRA_ADMIN_PASSWORD
    if password:
        say(f"Admin user: admin / password: {password}")
    elif chosen:
        # The variable is honoured on every start, not only the first: set it to reset.
        admin = get_user_model().objects.get(username="admin")
        changed = existed and not admin.check_password(chosen)
        if changed:
            admin.set_password(chosen)
            admin.save(update_fields=["password"])
        say(
            "Admin user: admin / password: the value of ORCHESTRA_ADMIN_PASSWORD"
            + (" (changed to it now)" if changed else "")
        )
    else:
        say(
            "Admin user: admin (already exists; its password is unchanged — set a new one "
            "with `.venv/bin/orchestra password admin`, or start with ORCHESTRA_ADMIN_PASSWORD)"
        )
