"""`tgiops secret set|check|list|delete`: the parsers and what they print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from tgiops.cli.args import (
    ArgumentParser,
    add_aws_args,
    add_json_arg,
    add_secret_name_arg,
    aws_from,
    secret_name,
)
from tgiops.core.errors import InputError, TgiopsError
from tgiops.core.layout import DEFAULT_TOKEN_SECRET

log = logging.getLogger("tgiops")


def add_secret_parsers(sub: Any) -> None:
    sec = sub.add_parser(
        "secret",
        help="store, check, list or delete the Hugging Face token in Secrets Manager",
        description="The Hugging Face token lives in AWS Secrets Manager, never on disk or in "
        "argv: deploys read it into a root-only env file on the host. Secrets created by "
        "`secret set` carry the tag tgiops:managed=true; only those are listed and deleted.",
    )
    sec_sub = sec.add_subparsers(
        dest="secret_command", metavar="ACTION", parser_class=ArgumentParser, required=True
    )
    for action, text, description in (
        (
            "set",
            "create or update it from stdin or a hidden prompt",
            "Store the token read from stdin (or a hidden prompt on a terminal); never from "
            "argv. A new secret is tagged tgiops:managed=true. A token that does not look like "
            "a Hugging Face user access token (hf_...) is stored with a warning.",
        ),
        (
            "check",
            "say whether it exists and is readable (never prints it)",
            "Say whether the secret exists and this AWS identity can read it; never prints "
            "the value. Exit 0 readable, 1 absent.",
        ),
        (
            "list",
            "the secrets tgiops created: names and dates, never values",
            "The secrets tagged tgiops:managed=true in the region: names, creation and "
            "change dates. Values are never read.",
        ),
        (
            "delete",
            "schedule a tgiops secret's deletion (30-day recovery window)",
            "Schedule the deletion of a secret tgiops created (tagged tgiops:managed=true) "
            "with Secrets Manager's default 30-day recovery window; any other secret is "
            "refused (exit 2). An absent secret is already deleted (exit 0).",
        ),
    ):
        sp = sec_sub.add_parser(action, help=text, description=description)
        if action != "list":
            add_secret_name_arg(sp, None if action == "delete" else DEFAULT_TOKEN_SECRET)
        if action == "delete":
            sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        add_aws_args(sp)
        add_json_arg(sp)
        sp.set_defaults(func=cmd_secret)


def cmd_secret(args: argparse.Namespace) -> int:
    from tgiops.core.record import MANAGED_TAG

    action = args.secret_command
    if action == "list":
        return _secret_list(args, MANAGED_TAG)
    name = secret_name(args.secret_name)
    if action == "delete":
        return _secret_delete(args, name, MANAGED_TAG)
    if action == "check":
        aws = aws_from(args)
        exists = aws.secret_exists(name)
        readable = False
        if exists:
            aws.get_secret(name)  # raises with the missing IAM action when unreadable
            readable = True
        if args.json:
            print(json.dumps({"name": name, "exists": exists, "readable": readable}))
        else:
            print(f"{name}: " + ("exists and is readable" if readable else "does not exist"))
        return 0 if readable else 1
    token = _read_token()
    warnings = []
    from tgiops.commands.logs import HF_TOKEN_RE

    if not HF_TOKEN_RE.fullmatch(token):
        warnings.append(
            "the value does not look like a Hugging Face user access token (hf_ and at least 16 "
            "letters or digits); stored anyway"
        )
    aws = aws_from(args)
    outcome = aws.put_secret(name, token, tags={MANAGED_TAG: "true"})
    managed = True
    if outcome == "updated":
        try:
            info = aws.describe_secret(name)
            managed = info is not None and info.tags.get(MANAGED_TAG) == "true"
        except TgiopsError as exc:  # DescribeSecret may not be allowed: the set still worked
            log.info("could not read the secret's tags: %s", exc)
        if not managed:
            warnings.append(
                f"{name} was not created by tgiops (no {MANAGED_TAG} tag): it stays out of "
                "`tgiops secret list` and `tgiops secret delete`"
            )
    for warning in warnings:
        print(f"tgiops: warning: {warning}", file=sys.stderr)
    if args.json:
        print(
            json.dumps({"name": name, "result": outcome, "managed": managed, "warnings": warnings})
        )
    else:
        print(f"{name}: {outcome}")
    return 0


def _secret_list(args: argparse.Namespace, tag: str) -> int:
    from tgiops.cli import output

    secrets = aws_from(args).list_secrets(tag)
    rows = [i.as_dict() for i in secrets]
    if args.json:
        print(json.dumps({"secrets": rows}, indent=2))
    elif not rows:
        print(f"no secret tagged {tag} (create one with `tgiops secret set`)")
    else:
        print(output.rows_as_table(rows, ["name", "created", "changed", "deletion_date"]))
    return 0


def _secret_delete(args: argparse.Namespace, name: str, tag: str) -> int:
    aws = aws_from(args)
    info = aws.describe_secret(name)
    if info is not None and info.tags.get(tag) != "true":
        raise InputError(
            f"secret {name} was not created by tgiops (no {tag}=true tag): refusing to delete "
            "it. Delete it with the AWS console or CLI if you mean to."
        )
    if info is None or info.deleted:
        result, date = ("absent", None) if info is None else ("already scheduled", info.deleted)
    else:
        interactive = sys.stdin is not None and sys.stdin.isatty()
        if not args.yes:
            if not interactive:
                raise InputError(
                    "secret delete removes the token: pass --yes to confirm (stdin is no terminal)"
                )
            answer = input(f"Schedule the deletion of secret {name} (30-day recovery)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise InputError(f"{name} left in place")
        result, date = "scheduled", aws.delete_secret(name)
    if args.json:
        print(json.dumps({"name": name, "result": result, "deletion_date": date}))
    elif result == "absent":
        print(f"{name}: already absent; nothing to delete")
    else:
        when = "already scheduled for deletion" if result != "scheduled" else "deletion scheduled"
        print(
            f"{name}: {when} on {date or 'a date AWS did not say'}; until then undo it with "
            f"`aws secretsmanager restore-secret --secret-id {name}`"
        )
    return 0


def _read_token() -> str:
    """The token from stdin (piped) or a hidden prompt; never from argv."""
    if sys.stdin is None:
        raise InputError("no token given: pipe it on stdin, e.g. `tgiops secret set < token.txt`")
    if sys.stdin.isatty():
        import getpass

        token = getpass.getpass("Hugging Face token (hidden): ")
    else:
        token = sys.stdin.read()
    token = token.strip()
    if not token:
        raise InputError("no token given: pipe it on stdin, e.g. `tgiops secret set < token.txt`")
    from tgiops.core.render import render_env_file

    render_env_file({"HF_TOKEN": token})  # the same check the env file will make, early
    return token
