"""`orchestra worker-token`: the credentials workers on other machines fetch and push with."""

from __future__ import annotations

import argparse

from orchestra.cli.common import CliError, say


def add_parser(commands) -> None:
    tokens = commands.add_parser(
        "worker-token", help="issue, revoke or list the credentials of remote workers"
    )
    actions = tokens.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="issue a credential (the token is printed once)")
    add.add_argument("name", help="the worker's name, e.g. build-box-1")
    add.set_defaults(handler=cmd_add)
    revoke = actions.add_parser("revoke", help="revoke a worker's credential")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_revoke)
    listing = actions.add_parser("list", help="list the credentials and their last use")
    listing.set_defaults(handler=cmd_list)


def cmd_add(args: argparse.Namespace) -> int:
    from orchestra.credentials import CredentialError, issue_worker_token

    try:
        raw = issue_worker_token(args.name)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    say(f"Worker token for {args.name} (shown once; set it as ORCHESTRA_GIT_TOKEN there):")
    say(raw)  # last line: scripts take `tail -n 1`
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from orchestra.credentials import CredentialError, revoke_worker_token

    try:
        revoke_worker_token(args.name)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    say(f"Revoked the credential of {args.name}: its fetches and pushes are refused from now on.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from orchestra.models import WorkerCredential

    credentials = list(WorkerCredential.objects.all())
    if not credentials:
        say("No worker credentials (issue one with `orchestra worker-token add NAME`).")
    for credential in credentials:
        used = credential.last_used_at.isoformat() if credential.last_used_at else "never used"
        state = (
            f"revoked {credential.revoked_at.isoformat()}" if credential.revoked_at else "active"
        )
        say(f"{credential.name}\t{state}\tcreated {credential.created_at.isoformat()}\t{used}")
    return 0
