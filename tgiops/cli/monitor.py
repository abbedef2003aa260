"""`tgiops monitor enable|disable|show` (and `monitor run`, what the unit runs on the host)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tgiops import __version__
from tgiops.cli.args import (
    IMDS_HELP,
    ArgumentParser,
    add_aws_args,
    add_json_arg,
    add_target_args,
    aws_from,
    resolve_imds_endpoint,
)
from tgiops.core.errors import InputError, TgiopsError

if TYPE_CHECKING:  # annotations only: the verb imports what it runs when it runs
    from tgiops.core.monitor import HostValues

_NAMES = "GPUs' utilisation and memory, requests running and waiting, generated tokens/s, " \
    "KV-cache usage and health"  # fmt: skip


def add_monitor_parsers(sub: Any) -> None:
    mon = sub.add_parser(
        "monitor",
        help="GPU and engine metrics to CloudWatch: enable, disable or show",
        description=f"A small tgiops service on each host sends the {_NAMES} to CloudWatch "
        "(namespace tgiops) every --interval seconds with the instance role's credentials. "
        "Every metric is a billed custom metric: see the README for what one host costs.",
    )
    mon_sub = mon.add_subparsers(
        dest="monitor_command",
        metavar="{enable,disable,show}",
        parser_class=ArgumentParser,
        required=True,
    )
    en = mon_sub.add_parser(
        "enable",
        help="install and start the tgiops-monitor unit on each host",
        description="Install the tgiops-monitor systemd unit on each target host and start "
        "it. It runs /opt/tgiops/bin/tgiops (installed as `tgiops userdata` does) at the "
        "lowest priority with a CPU quota, and holds no secret. A tgiops-monitor unit tgiops "
        "did not write is refused (exit 2). Running it again changes nothing.",
    )
    _targets(en)
    en.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="S",
        help="send every S seconds (default 60)",
    )
    en.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the unit's AWS SDK (e.g. HTTPS_PROXY); never a secret",
    )
    add_json_arg(en)
    en.set_defaults(func=cmd_monitor)

    dis = mon_sub.add_parser(
        "disable",
        help="stop and remove the tgiops-monitor unit from each host",
        description="Stop, disable and remove the tgiops-monitor unit tgiops installed; nothing "
        "else is touched (a unit tgiops did not write is refused, exit 2). Metrics already in "
        "CloudWatch stay there until they expire.",
    )
    _targets(dis)
    add_json_arg(dis)
    dis.set_defaults(func=cmd_monitor)

    sh = mon_sub.add_parser(
        "show",
        help="the latest values per host, from CloudWatch",
        description="Read the latest value of every tgiops metric from CloudWatch "
        "(ListMetrics, GetMetricData) for the instances given, an Auto Scaling group or a "
        "stack; with none, every host that sends. Exit 1 when a target has sent nothing yet.",
    )
    which = sh.add_argument_group("which hosts (default: all that send)")
    which.add_argument(
        "--instance", action="append", default=[], metavar="ID", help="EC2 instance id; repeatable"
    )
    which.add_argument("--asg", metavar="NAME", help="the hosts of this Auto Scaling group")
    which.add_argument("--stack", metavar="NAME", help="the hosts of a `tgiops up` stack")
    add_aws_args(sh)
    add_json_arg(sh)
    sh.set_defaults(func=cmd_monitor)

    # What the unit runs on the host; not for people (no help line: not listed).
    run = mon_sub.add_parser(
        "run",
        description="(on the host: the tgiops-monitor unit runs this) read the GPUs and the "
        "engines every --interval seconds and send the metrics to CloudWatch.",
    )
    run.add_argument(
        "--interval", type=float, default=60.0, metavar="S", help="send every S (default 60)"
    )
    run.add_argument("--group", metavar="NAME", help="the Group dimension (stack or ASG)")
    run.add_argument("--instance-id", metavar="ID", help="this instance (default: from IMDS)")
    run.add_argument("--imds-endpoint", metavar="URL", help=IMDS_HELP)
    run.add_argument("--buffer", type=int, default=10_000, metavar="N", help="points kept")
    run.add_argument("--ticks", type=int, metavar="N", help="stop after N intervals")
    add_aws_args(run)
    add_json_arg(run)
    run.set_defaults(func=cmd_monitor)


def _targets(parser: argparse.ArgumentParser) -> None:
    add_target_args(parser)
    parser.add_argument(
        "--stack", metavar="NAME", help="every InService instance of a `tgiops up` stack"
    )


def _stack_group(args: argparse.Namespace) -> str | None:
    """--stack NAME is the Auto Scaling group `tgiops up` made for it (core.stack)."""
    if not getattr(args, "stack", None):
        return None
    from tgiops.core.stack import check_stack_name, resource_name

    if args.asg:
        raise InputError("give --asg or --stack, not both")
    return resource_name(check_stack_name(args.stack))


def cmd_monitor(args: argparse.Namespace) -> int:
    action = args.monitor_command
    if action == "run":
        return _run(args)
    if action == "show":
        return _show(args)
    return _change(args, action)


def _change(args: argparse.Namespace, action: str) -> int:
    from tgiops.cli import progress
    from tgiops.cli.args import targets_from
    from tgiops.commands import monitor
    from tgiops.edges import resources
    from tgiops.edges.ssh import RemoteHost

    stack_group = _stack_group(args)
    if stack_group:
        args.asg = stack_group
    unit_text: str | None = None
    env: dict[str, str] = {}
    if action == "enable":
        monitor.check_interval(args.interval)
        for pair in args.env:
            key, sep, value = pair.partition("=")
            if not sep:
                raise InputError(f"--env {pair!r}: give KEY=VALUE")
            env[key] = value
        monitor.check_env(env)
        template = resources.shipped_path("unit_templates") / "tgiops-monitor.service.j2"
        unit_template = template.read_text()
    targets = targets_from(args)
    many = len(targets) > 1
    outcomes: list[dict[str, Any]] = []
    worst = 0
    for target in targets:
        show = progress.stderr_printer(
            tty=sys.stderr.isatty() and not args.json and not many,
            prefix=f"{target.label}: " if many else "",
        )
        group = args.asg or (target.instance.tags.get("aws:autoscaling:groupName")
                             if target.instance is not None else None)  # fmt: skip
        try:
            with RemoteHost(target.ssh) as host:
                if action == "enable":
                    unit_text = monitor.render_unit(
                        unit_template, tgiops_version=__version__, interval_s=args.interval,
                        group=group, region=args.region, env=env,
                    )  # fmt: skip
                    change = monitor.enable(host, unit_text, on_progress=show)
                else:
                    change = monitor.disable(host, on_progress=show)
            outcomes.append({"target": target.label, **change.as_dict(), "error": None})
        except TgiopsError as exc:
            if not many:
                raise
            worst = max(worst, exc.exit_code)
            outcomes.append({"target": target.label, "error": str(exc)})
        finally:
            show.close()
    if args.json:
        print(json.dumps(outcomes[0] if not many else {"hosts": outcomes}, indent=2))
    else:
        for o in outcomes:
            if o.get("error"):
                print(f"{o['target']}: error: {o['error']}")
            else:
                active = f" ({o['active']})" if o.get("active") else ""
                print(f"{o['target']}: {o['unit']} {o['action']}{active}")
    for o in outcomes:
        if o.get("error"):
            print(f"tgiops: error: {o['target']}: {o['error']}", file=sys.stderr)
    return 1 if worst else 0


def _show(args: argparse.Namespace) -> int:
    import time

    from tgiops.commands import monitor

    group = _stack_group(args) or args.asg
    filters: list[dict[str, str]] = [{"InstanceId": i} for i in args.instance]
    if group:
        filters.append({"Group": group})
    hosts = monitor.show(aws_from(args), filters=filters, now=time.time())
    missing = [i for i in args.instance if not any(h.instance_id == i for h in hosts)]
    if group and not any(h.group == group for h in hosts):
        missing.append(group)
    if args.json:
        print(json.dumps({"namespace": "tgiops", "hosts": [_host_dict(h) for h in hosts],
                          "missing": missing}, indent=2))  # fmt: skip
    else:
        print(show_as_text(hosts) if hosts else "no tgiops metrics in CloudWatch yet")
    why = "no tgiops metrics in CloudWatch (is the monitor enabled there? a new metric may take "
    for what in missing:
        print(f"tgiops: error: {what}: {why}minutes to be listed)", file=sys.stderr)
    return 1 if missing or not hosts else 0


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def _host_dict(h: HostValues) -> dict[str, Any]:
    def points(values: Any) -> dict[str, Any]:
        return {k: {"value": v, "at": _iso(t)} for k, (v, t) in sorted(values.items())}

    return {
        "instance_id": h.instance_id,
        "unit": h.unit,
        "group": h.group,
        "latest": _iso(h.latest),
        "metrics": points(h.values),
        "gpus": {index: points(values) for index, values in h.gpus.items()},
    }


_UNITS = {"GPUUtilization": "%", "KVCacheUsage": "%", "GPUMemoryUsed": " MiB"}


def show_as_text(hosts: list[HostValues]) -> str:
    lines = []
    for h in hosts:
        group = f", group {h.group}" if h.group else ""
        lines.append(f"{h.instance_id} {h.unit}{group} (latest {_iso(h.latest)})")
        if h.values:
            lines.append(
                "  "
                + "  ".join(
                    f"{name} {value:g}{_UNITS.get(name, '')}"
                    for name, (value, _) in sorted(h.values.items())
                )
            )
        for index, values in h.gpus.items():
            shown = "  ".join(
                f"{name} {value:g}{_UNITS.get(name, '')}"
                for name, (value, _) in sorted(values.items())
            )
            lines.append(f"  GPU {index}: {shown}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    import logging

    from tgiops.commands import monitor
    from tgiops.core.monitor import NAMESPACE
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws
    from tgiops.edges.imds import Imds
    from tgiops.edges.localhost import LocalHost

    log = logging.getLogger("tgiops")
    if args.verbose == 0:  # the journal is the service's only log: say outages and recoveries
        logging.getLogger("tgiops").setLevel(logging.INFO)
    if args.ticks is not None and args.ticks < 1:
        raise InputError(f"--ticks {args.ticks}: give a number >= 1")
    options = monitor.RunOptions(
        interval_s=args.interval,
        group=args.group,
        instance_id=args.instance_id,
        buffer_points=args.buffer,
        max_ticks=args.ticks,
    )
    imds = Imds(resolve_imds_endpoint(args.imds_endpoint))
    instance_id = options.instance_id or imds.instance_id()
    region = monitor.resolve_region(args.region, imds)
    aws = Aws(AwsSettings(region=region, profile=args.profile))
    log.info("tgiops monitor: instance %s, region %s", instance_id, region)
    with LocalHost() as host:
        summary = monitor.run(
            host,
            options,
            instance_id=instance_id,
            put=lambda batch: aws.put_metric_data(NAMESPACE, batch),
        )
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(f"sent {summary.sent} points in {summary.ticks} ticks "
              f"({summary.failed_sends} failed sends, {summary.dropped} dropped)")  # fmt: skip
    return 0
