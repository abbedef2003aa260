"""`tgiops up`, `tgiops down`, `tgiops stacks`: the parsers and what they print."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tgiops.cli.args import (
    IMDS_HELP,
    add_aws_args,
    add_json_arg,
    add_model_args,
    add_plan_overrides,
    add_spot_unit_args,
    aws_from,
    deploy_request_from,
    read_text,
    resolve_imds_endpoint,
)
from tgiops.core.errors import InputError


def add_stack_parsers(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="create (or complete, or update) a self-healing spot endpoint stack on AWS",
        description="Create or update, all tagged tgiops:stack=NAME: a security group, an "
        "Elastic IP, an instance role and profile (the policy of `userdata --iam-policy`), a "
        "launch template (IMDSv2, encrypted gp3, the user data of `tgiops userdata`) and an Auto "
        "Scaling group over every instance type that fits (spot, price-capacity-optimized, "
        "capacity rebalance). The token secret must exist first (`tgiops secret set`). Shows "
        "the plan first; running it twice changes nothing.",
    )
    add_model_args(up)
    up.add_argument(
        "--name",
        required=True,
        metavar="NAME",
        help="the stack's name; its resources carry the tags tgiops:stack=NAME and the EC2 "
        "Name tag tgiops-NAME",
    )
    add_plan_overrides(up)
    add_spot_unit_args(up)
    g = up.add_argument_group("capacity")
    market = g.add_mutually_exclusive_group()
    market.add_argument("--spot", dest="spot", action="store_true", default=True,
                        help="spot instances (default)")  # fmt: skip
    market.add_argument("--on-demand", dest="spot", action="store_false", help="on-demand only")
    g.add_argument("--on-demand-base", type=int, default=0, metavar="N",
                   help="the first N instances on-demand, spot above (default 0)")  # fmt: skip
    g.add_argument("--instance-types", default="auto", metavar="auto|T1,T2",
                   help="auto: every type the planner says fits, cheapest first")  # fmt: skip
    g.add_argument("--max-usd-per-hour", type=float, metavar="USD", help="price cap per hour")
    n = up.add_argument_group("network and instances")
    n.add_argument("--subnets", metavar="ID,ID", help="default: the default VPC's, one per zone")
    n.add_argument("--ssh-cidr", metavar="CIDR", help="admit SSH from CIDR (default: no SSH)")
    n.add_argument("--public-ssh", action="store_true", help="allow --ssh-cidr 0.0.0.0/0")
    n.add_argument("--key-name", metavar="NAME", help="EC2 key pair (default: one tgiops makes)")
    n.add_argument("--data-volume-gib", type=int, metavar="GIB", help="volume size")
    n.add_argument("--data-volume-throughput", type=int, metavar="MIB_S", help="gp3 MiB/s")
    n.add_argument(
        "--efs",
        metavar="FS_ID",
        help="an EFS file system (a mount target in each subnet) as the model cache, shared "
        "by every zone (default: the stack's own cache volume)",
    )
    n.add_argument(
        "--no-cache-volume",
        dest="cache_volume",
        action="store_false",
        default=True,
        help="keep the model cache on the root volume: a replacement downloads again "
        "(default: on the stack's own encrypted gp3 volume per zone, attached at boot and kept "
        "across replacements, so a replacement in that zone starts from the cache; "
        "--data-volume-gib/--data-volume-throughput size it)",
    )
    n.add_argument("--ami", metavar="AMI_ID", help="default: the Deep Learning Base GPU AMI")
    eip = n.add_mutually_exclusive_group()
    eip.add_argument("--eip", dest="eip", action="store_true", default=True,
                     help="an Elastic IP on the healthy instance (default)")  # fmt: skip
    eip.add_argument("--no-eip", dest="eip", action="store_false", help="no Elastic IP")
    n.add_argument(
        "--alb",
        action="store_true",
        help="an internet-facing ALB (HTTP 80), a target group checking the engine's health "
        "path on the unit's port, and a listener; the unit binds all addresses and its port "
        "admits the ALB's security group only",
    )
    how = up.add_argument_group("how tgiops gets onto the instance (one; as for userdata)")
    how.add_argument("--preinstalled", action="store_true", help="the AMI has /opt/tgiops")
    how.add_argument("--pip-requirements", metavar="FILE", help="hash-pinned lock file")
    how.add_argument("--pip-spec", metavar="ARGS", help="pip arguments naming a private index")
    how.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the instance's AWS SDK (e.g. HTTPS_PROXY); never a secret",
    )
    how.add_argument(
        "--monitor",
        action="store_true",
        help="GPU and engine metrics to CloudWatch from each instance (tgiops-monitor, as "
        "`tgiops userdata --monitor`); the role may then PutMetricData in namespace tgiops",
    )
    r = up.add_argument_group("running it")
    r.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.add_argument("--no-wait", action="store_true", help="do not wait for a healthy endpoint")
    r.add_argument("--wait-timeout", type=float, default=1800.0, metavar="S",
                   help="how long to wait (default 1800)")  # fmt: skip
    add_aws_args(up)
    add_json_arg(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down",
        help="delete everything tagged for a stack (safe to repeat)",
        description="Delete what carries tgiops:stack=NAME in dependency order, waiting for "
        "instances to terminate first. Untagged resources are never touched; the token secret "
        "stays unless --delete-secret.",
    )
    down.add_argument("name", help="the stack's name")
    down.add_argument("--delete-secret", metavar="NAME",
                      help="also delete this token secret (only one tgiops created)")  # fmt: skip
    down.add_argument("--keep-cache", action="store_true",
                      help="keep the stack's model cache volumes (a later `up` of the same "
                      "name attaches them again)")  # fmt: skip
    down.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_aws_args(down)
    add_json_arg(down)
    down.set_defaults(func=cmd_down)

    ls = sub.add_parser(
        "stacks",
        help="the stacks of the region, their state and $/h",
        description="List the stacks `tgiops up` made in the region (from the resources tagged "
        "tgiops:stack): their state, instances in service and what they cost per hour now.",
    )
    add_aws_args(ls)
    add_json_arg(ls)
    ls.set_defaults(func=cmd_stacks)
    add_attach_cache_volume_parser(sub)


def add_attach_cache_volume_parser(sub: Any) -> None:
    cv = sub.add_parser(
        "attach-cache-volume",
        help="(on the instance, at boot) attach the stack's model cache volume here",
        description="Run by a `tgiops up` stack's user data, with the instance role: attach the "
        "stack's available model cache volume in this instance's zone (tags tgiops:stack=NAME, "
        "tgiops:role=model-cache), or create one (encrypted gp3), and print the device it "
        "appears as. A volume attached to another instance is never touched; the volume "
        "outlives the instance, so the next one in the zone starts from the cache.",
    )
    cv.add_argument("--stack", required=True, metavar="NAME", help="the stack's name")
    cv.add_argument("--gib", type=int, required=True, metavar="GIB", help="size if created")
    cv.add_argument("--throughput", type=int, required=True, metavar="MIB_S",
                    help="gp3 throughput if created")  # fmt: skip
    cv.add_argument("--model", metavar="ALIAS", help="the tgiops:model tag of a new volume")
    cv.add_argument("--region", metavar="REGION", help="AWS region (default: from IMDS)")
    cv.add_argument("--imds-endpoint", metavar="URL", help=IMDS_HELP)
    cv.add_argument("--wait-timeout", type=float, default=300.0, metavar="S",
                    help="wait for the volume and its device (default 300)")  # fmt: skip
    add_json_arg(cv)
    cv.set_defaults(func=cmd_attach_cache_volume)


def cmd_attach_cache_volume(args: argparse.Namespace) -> int:
    from tgiops.commands import cache_volume
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws
    from tgiops.edges.imds import Imds

    imds = Imds(resolve_imds_endpoint(args.imds_endpoint))
    region = args.region or imds.region()
    result = cache_volume.attach_cache_volume(
        Aws(AwsSettings(region=region)),
        imds,
        stack=args.stack,
        gib=args.gib,
        throughput=args.throughput,
        model=args.model,
        wait_s=args.wait_timeout,
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.device)  # the user data reads this line
    return 0


def _confirmer(args: argparse.Namespace, question: str) -> Any:
    def confirm(result: Any) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(f"{question}: pass --yes to confirm (stdin is no terminal)")
        if result is not None:
            print(_plan_text(result), file=sys.stderr)
        return input(f"{question}? [y/N] ").strip().lower() in ("y", "yes")

    return confirm


def _plan_text(result: Any) -> str:
    lines = [f"stack {result.stack} in {result.region}:"]
    for c in result.changes:
        lines.append(f"  {c.action:<7} {c.kind:<18} {c.name}: {c.detail}")
    for q in result.quotas:
        value = "unreadable" if q.get("value") is None else f"{q['value']:g}"
        lines.append(f"  quota {q['name']} ({q['code']}): {value}, needs {q['needed_vcpus']}")
    if result.usd_per_hour is not None:
        lines.append(f"  ~${result.usd_per_hour:.3f}/h for one instance")
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    from tgiops.cli import progress
    from tgiops.commands import up as up_cmd
    from tgiops.edges import state

    if args.alb:
        args.public = True  # the ALB must reach the unit; the security group admits only it
    request = deploy_request_from(args)
    install = {
        "pip_spec": args.pip_spec,
        "pip_requirements": read_text(args.pip_requirements) if args.pip_requirements else None,
        "preinstalled": args.preinstalled,
        "env": _env(args.env),
        "efs_id": args.efs,
        "monitor": args.monitor,
    }
    types = [] if args.instance_types == "auto" else [
        t.strip() for t in args.instance_types.split(",") if t.strip()
    ]  # fmt: skip
    options = up_cmd.UpOptions(
        stack=args.name,
        request=request,
        install=install,
        spot=args.spot,
        on_demand_base=args.on_demand_base,
        instance_types=types,
        max_usd_per_hour=args.max_usd_per_hour,
        subnets=[s for s in (args.subnets or "").split(",") if s],
        ssh_cidr=args.ssh_cidr,
        public_ssh=args.public_ssh,
        key_name=args.key_name,
        data_volume_gib=args.data_volume_gib,
        data_volume_throughput=args.data_volume_throughput,
        ami=args.ami,
        eip=args.eip,
        alb=args.alb,
        cache_volume=args.cache_volume,
        dry_run=args.dry_run,
        wait=not args.no_wait,
        wait_s=args.wait_timeout,
    )
    if args.public_ssh:
        print("tgiops: warning: --public-ssh opens SSH to the whole internet", file=sys.stderr)
    show = progress.stderr_printer(tty=sys.stderr.isatty() and not args.json)
    home = state.state_dir()
    result = up_cmd.up(
        aws_from(args),
        options,
        confirm=_confirmer(args, f"create or change the stack {args.name}"),
        progress=show,
        key_dir=home / "keys",
        known_hosts=home / "known_hosts",
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(_plan_text(result))
        if result.endpoint:
            print(f"endpoint: http://{result.endpoint}")
        for i in result.instances:
            print(f"  {i['instance_id']} {i['instance_type']} {i['lifecycle']} {i['state']}")
    return 0


def _env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--env {pair!r}: give KEY=VALUE")
        env[key] = value
    return env


def cmd_down(args: argparse.Namespace) -> int:
    from tgiops.cli import progress
    from tgiops.commands import down as down_cmd
    from tgiops.edges import state

    if not _confirmer(args, f"delete everything tagged for the stack {args.name}")(None):
        raise InputError("not confirmed: nothing was deleted")
    show = progress.stderr_printer(tty=sys.stderr.isatty() and not args.json)
    result = down_cmd.down(
        aws_from(args),
        args.name,
        delete_secret=args.delete_secret,
        keep_cache=args.keep_cache,
        progress=show,
        key_dir=state.state_dir() / "keys",
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.deleted:
        for d in result.deleted:
            print(f"deleted {d['kind']} {d['id']}")
    else:
        print(f"nothing tagged tgiops:stack={args.name} in {result.region}")
    return 0


def cmd_stacks(args: argparse.Namespace) -> int:
    from tgiops.commands import down as down_cmd

    rows = down_cmd.stacks(aws_from(args))
    if args.json:
        print(json.dumps({"stacks": [r.as_dict() for r in rows]}, indent=2))
        return 0
    if not rows:
        print("no stacks")
    for r in rows:
        price = "?" if r.usd_per_hour is None else f"${r.usd_per_hour:.3f}/h"
        print(f"{r.stack:<20} {r.state:<20} {r.instances} instance(s) {price} {r.model or ''}")
        for v in r.cache_volumes:
            print(f"  cache volume {v['volume_id']}: {v['size_gib']} GiB in {v['zone']}, "
                  f"{v['state']}")  # fmt: skip
    return 0
