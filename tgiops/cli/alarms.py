"""`tgiops alarms set|list|delete`: the parsers (printing: tgiops.cli.output)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tgiops.cli.args import ArgumentParser, add_aws_args, add_json_arg, aws_from

SET_DESCRIPTION = (
    "CloudWatch alarms on what `tgiops monitor` publishes (namespace tgiops), for a whole stack "
    "or Auto Scaling group (a Metrics Insights query over its Group dimension, so replaced "
    "instances join by themselves): a unit unhealthy or no host reporting for N minutes, every "
    "GPU idle for H hours, and with --queue-above waiting requests backing up. With "
    "--budget-usd-month an AWS Budget, with --billing-usd an alarm on the account's estimated "
    "charges (us-east-1; needs billing alerts enabled: without them it is left out, the rest "
    "is set, exit 1). They notify an SNS topic tgiops creates (tgiops-alarms-NAME; --email "
    "subscribes an address) or the --sns-topic given. Everything is named tgiops-NAME-... and "
    "tagged tgiops:stack=NAME (tgiops:asg=NAME for --asg); a name that exists without the tag "
    "is refused (exit 2). Running it twice changes nothing."
)


def _owner_args(parser: argparse.ArgumentParser) -> None:
    who = parser.add_argument_group("whose alarms (one)")
    who.add_argument("--stack", metavar="NAME", help="a `tgiops up` stack (its Auto Scaling group)")
    who.add_argument("--asg", metavar="NAME", help="an Auto Scaling group whose hosts send metrics")
    add_aws_args(parser)


def add_alarms_parsers(sub: Any) -> None:
    from tgiops.core import alarm_defaults as spec

    al = sub.add_parser(
        "alarms",
        help="CloudWatch alarms, an SNS topic and a budget for a stack (set, list, delete)",
        description="Alarms on the metrics `tgiops monitor` sends, and on spend. `set` creates "
        "or updates them, `list` shows them, `delete` removes exactly what `set` made.",
    )
    al_sub = al.add_subparsers(
        dest="alarms_command", metavar="ACTION", parser_class=ArgumentParser, required=True
    )
    st = al_sub.add_parser(
        "set", help="create or update the alarms (idempotent)", description=SET_DESCRIPTION
    )
    _owner_args(st)
    a = st.add_argument_group("alarms")
    a.add_argument(
        "--unhealthy-minutes",
        type=int,
        default=spec.DEFAULT_UNHEALTHY_MINUTES,
        metavar="N",
        help="unhealthy or silent this long (default %(default)s, at most 180)",
    )
    a.add_argument(
        "--idle-percent",
        type=float,
        default=spec.DEFAULT_IDLE_PERCENT,
        metavar="X",
        help="GPU utilisation below X%% is idle (default %(default)g)",
    )
    a.add_argument(
        "--idle-hours",
        type=float,
        default=spec.DEFAULT_IDLE_HOURS,
        metavar="H",
        help="idle this long (default %(default)g, at most 3)",
    )
    a.add_argument(
        "--queue-above",
        type=int,
        metavar="N",
        help="alarm when more than N requests wait on a unit (default: no queue alarm)",
    )
    a.add_argument(
        "--queue-minutes",
        type=int,
        default=spec.DEFAULT_QUEUE_MINUTES,
        metavar="M",
        help="for M minutes (default %(default)s, at most 180)",
    )
    s = st.add_argument_group("spend (the whole account's)")
    s.add_argument(
        "--budget-usd-month",
        type=float,
        metavar="USD",
        help="an AWS Budget (COST, MONTHLY) notifying above 100%%",
    )
    s.add_argument(
        "--billing-usd",
        type=float,
        metavar="USD",
        help="an alarm on AWS/Billing EstimatedCharges (us-east-1)",
    )
    n = st.add_argument_group("notifications")
    n.add_argument(
        "--sns-topic",
        metavar="ARN",
        help="notify this topic (never created, changed or deleted by tgiops)",
    )
    n.add_argument(
        "--email",
        metavar="ADDR",
        help="subscribe ADDR to the topic tgiops creates (AWS mails a confirmation)",
    )
    st.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    add_json_arg(st)
    st.set_defaults(func=cmd_alarms)

    ls = al_sub.add_parser(
        "list",
        help="the alarms tgiops set: state, threshold, what each watches",
        description="The alarms tagged for the stack or group (in its region and us-east-1), "
        "with their state, threshold and what they watch; its budget and topic.",
    )
    _owner_args(ls)
    add_json_arg(ls)
    ls.set_defaults(func=cmd_alarms)

    dl = al_sub.add_parser(
        "delete",
        help="remove exactly what `alarms set` made (safe to repeat)",
        description="Delete the alarms and topic tagged for the stack or group and its budget "
        "(tgiops-NAME-monthly). An alarm or topic without the tag, and a topic given with "
        "--sns-topic, are never touched. Nothing left to delete is not an error.",
    )
    _owner_args(dl)
    add_json_arg(dl)
    dl.set_defaults(func=cmd_alarms)


def cmd_alarms(args: argparse.Namespace) -> int:
    from tgiops.cli import output
    from tgiops.commands import alarms as cmd
    from tgiops.core import alarms as spec
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    owner = spec.owner_for(stack=args.stack, asg=args.asg)
    if args.alarms_command == "set":  # every option checked before AWS is asked anything
        request = _request(args, owner, region=None)
    aws = aws_from(args)
    region = aws.region
    edge_for = cmd.edges_for(aws, lambda r: Aws(AwsSettings(region=r, profile=args.profile)))
    if args.alarms_command == "list":
        listing = cmd.list_alarms(owner, edge_for, region)
        print(
            json.dumps(listing.as_dict(), indent=2)
            if args.json
            else output.alarms_listing_as_text(listing)
        )
        return 0
    if args.alarms_command == "delete":
        result = cmd.delete_alarms(owner, edge_for, region)
    else:
        request = _request(args, owner, region=region)
        result = cmd.set_alarms(request, edge_for, region, dry_run=args.dry_run)
    print(
        json.dumps(result.as_dict(), indent=2)
        if args.json
        else output.alarms_result_as_text(result)
    )
    return 1 if result.problems else 0


def _request(args: argparse.Namespace, owner: Any, region: str | None) -> Any:
    from tgiops.core import alarms as spec

    return spec.alarms_request(
        owner,
        # Before the region is known (no AWS call yet) the topic's own region stands in: the
        # same-region check runs again once it is.
        region=region or (spec.topic_region(args.sns_topic) if args.sns_topic else ""),
        unhealthy_minutes=args.unhealthy_minutes,
        idle_percent=args.idle_percent,
        idle_hours=args.idle_hours,
        queue_above=args.queue_above,
        queue_minutes=args.queue_minutes,
        billing_usd=args.billing_usd,
        budget_usd_month=args.budget_usd_month,
        sns_topic=args.sns_topic,
        email=args.email,
    )
