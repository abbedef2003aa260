"""`tgiops status`, `logs` and `undeploy`: the parsers and what they print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from tgiops.cli.args import add_json_arg, add_target_args, aws_from, fleet_targets, text_width
from tgiops.core.errors import InputError

if TYPE_CHECKING:  # annotations only: the SSH edge is imported by the verbs that connect
    from tgiops.edges.host import Host

log = logging.getLogger("tgiops")


def add_status_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="verdict per tgiops unit on a host or a fleet (default: the hosts of past deploys)",
        description="One SSH round trip per host gathers every tgiops unit's systemd state, "
        "container, GPUs and TGI's /health, /info and /metrics; EC2 facts and prices come from "
        "AWS. Each unit gets a verdict (healthy, loading, degraded, failed, not-deployed, "
        "unreachable) and a reason. Exit 0 only when every unit is healthy.",
    )
    add_target_args(s)
    s.add_argument(
        "--all",
        action="store_true",
        help="every running EC2 instance tagged tgiops:managed=true",
    )
    s.add_argument(
        "--unit", action="append", default=[], metavar="NAME", help="only this unit; repeatable"
    )
    add_json_arg(s, "the documented JSON object on stdout (README: Status JSON)")
    s.add_argument(
        "-o",
        "--output",
        choices=["table", "wide"],
        default="table",
        help="table: fits the terminal, the reason on its own line (default); wide: every "
        "column on one line per unit, whatever the width",
    )
    s.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C (--json: one JSON object per line)",
    )
    s.add_argument(
        "--parallel",
        type=int,
        default=32,
        metavar="N",
        help="at most N SSH connections at once (default 32)",
    )
    s.set_defaults(func=cmd_status)

    lg = sub.add_parser(
        "logs",
        help="journal lines of a tgiops unit (redacted); -f follows",
        description="The systemd journal of a tgiops unit on the host, with secrets masked "
        "(token variables, hf_ tokens, bearer tokens, TGI's api_key). -f follows one host "
        "until Ctrl-C.",
    )
    add_target_args(lg)
    lg.add_argument("--unit", metavar="NAME", help="the unit (default: the only one on the host)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="last N lines (50)")
    lg.add_argument(
        "--since",
        metavar="TIME",
        help="only lines since TIME, in journalctl's syntax: '2026-12-04 10:00', "
        "'-1h', 'today', '10 min ago'",
    )
    add_json_arg(
        lg,
        "one JSON object {host, unit, lines}; with -f one object {host, unit, line} per line",
    )
    lg.set_defaults(func=cmd_logs)

    u = sub.add_parser(
        "undeploy",
        help="stop, disable and remove a tgiops unit (keeps the model cache)",
        description="Stop and disable a tgiops unit, remove its container, unit and env files "
        "and its deployment record (and its EC2 tags), so bootstrap and reconcile do not bring "
        "it back. A unit that is not there is already absent (exit 0); a unit tgiops did not "
        "write is refused (exit 2).",
    )
    add_target_args(u)
    u.add_argument("--unit", metavar="NAME", help="the unit (default: the only one on the host)")
    u.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    u.add_argument(
        "--purge-cache",
        action="store_true",
        help="also delete this model's cache (unless another unit uses it)",
    )
    add_json_arg(u)
    u.set_defaults(func=cmd_undeploy)


def _status_aws(args: argparse.Namespace, targets: list):  # -> Aws | None
    if not any(t.instance is not None for t in targets):
        return None
    region = args.region
    if region is None:
        # Recorded deploys: the instances were found in the record's region.
        from tgiops.edges import state

        regions = {r.region for r in state.load_deployments() if r.region}
        region = next(iter(regions)) if len(regions) == 1 else None
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    return Aws(AwsSettings(region=region, profile=args.profile))


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from tgiops.cli import output
    from tgiops.commands import status

    if args.watch is not None and args.watch <= 0:
        raise InputError(f"--watch {args.watch:g}: give a refresh interval in seconds > 0")
    if args.parallel < 1:
        raise InputError(f"--parallel {args.parallel}: give at least 1")
    from tgiops.core.layout import UNIT_NAME_RE

    for unit in args.unit:  # refused here (exit 2), not reported as an unreachable host
        if not UNIT_NAME_RE.fullmatch(unit.removesuffix(".service")):
            raise InputError(f"--unit {unit!r} is not a tgiops unit name (e.g. tgiops-phi-3-mini)")
    wide = args.output == "wide"
    tty = sys.stdout.isatty() and not args.json
    console = None
    if tty:
        from rich.console import Console

        console = Console()
    previous = None
    report = None
    try:
        while True:
            targets, known, source = fleet_targets(args, allow_all=True)
            log.info("status of %d host(s) from %s", len(targets), source)
            request = status.StatusRequest(
                units=tuple(u.removesuffix(".service") for u in args.unit),
                max_parallel=args.parallel,
                known_units=known,
            )
            report = status.gather_status(
                targets, request, aws=_status_aws(args, targets), previous=previous
            )
            for host in report.hosts:  # diagnostics go to stderr, also with --json
                for warning in host.ec2.warnings if host.ec2 else ():
                    print(f"tgiops: warning: {host.target}: {warning}", file=sys.stderr)
            if args.json:
                data = output.status_as_dict(report)
                print(json.dumps(data, indent=None if args.watch else 2), flush=True)
            elif console is not None:
                if args.watch:
                    console.clear()
                    console.print(
                        f"tgiops status, every {args.watch:g}s; {report.generated_at} "
                        "(Ctrl-C to stop)",
                        style="dim",
                    )
                rendered = output.status_as_rich(report, console.width, wide=wide)
                console.print(rendered, soft_wrap=wide)
            else:
                print(output.status_as_text(report, text_width(), wide=wide), flush=True)
                if args.watch:
                    print(flush=True)
            if not args.watch:
                break
            previous = report
            time.sleep(args.watch)
    except KeyboardInterrupt:
        if report is None:
            raise
    return 0 if report is not None and report.healthy else 1


def cmd_logs(args: argparse.Namespace) -> int:
    from tgiops.commands import logs
    from tgiops.edges.ssh import RemoteHost

    request = logs.LogsRequest(
        unit=args.unit, lines=args.lines, follow=args.follow, since=args.since
    )
    logs.journal_command(args.unit or "unit", lines=args.lines, follow=False, since=args.since)
    targets, _, _ = fleet_targets(args, allow_all=False)
    if args.follow and len(targets) > 1:
        raise InputError(
            f"-f follows one host; the target is {len(targets)} hosts "
            f"({', '.join(t.label for t in targets)}): pick one with --host or --instance"
        )
    many = len(targets) > 1
    collected: list[dict[str, Any]] = []
    try:
        for target in targets:
            entry: dict[str, Any] = {"host": target.label, "unit": None, "lines": []}
            collected.append(entry)

            def unit_known(unit: str, entry: dict[str, Any] = entry) -> None:
                entry["unit"] = unit

            def show(line: str, entry: dict[str, Any] = entry) -> None:
                if args.json and args.follow:  # JSON lines: one object per journal line
                    record = {"host": entry["host"], "unit": entry["unit"], "line": line}
                    print(json.dumps(record), flush=True)
                elif args.json:
                    entry["lines"].append(line)
                else:
                    print((f"{entry['host']}: " if many else "") + line, flush=True)

            with RemoteHost(target.ssh) as host:
                logs.show_logs(host, request, show, on_unit=unit_known)
    except KeyboardInterrupt:
        if not args.follow:
            raise
    if args.json and not args.follow:
        print(json.dumps(collected[0] if len(collected) == 1 else collected, indent=2))
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    from tgiops.cli import output
    from tgiops.commands import fleet, undeploy
    from tgiops.core.layout import UNIT_NAME_RE
    from tgiops.edges.ssh import RemoteHost

    if args.unit and not UNIT_NAME_RE.fullmatch(args.unit.removesuffix(".service")):
        raise InputError(f"--unit {args.unit!r} is not a tgiops unit name (e.g. tgiops-phi-3-mini)")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if not args.yes and not interactive:
        raise InputError("undeploy removes a unit: pass --yes to confirm (stdin is no terminal)")
    if args.host or args.instance or args.name_tag or args.asg:
        targets, _, _ = fleet_targets(args, allow_all=False)
    else:
        targets, _, source = fleet_targets(args, allow_all=False)
        if len(targets) != 1:
            raise InputError(
                f"which host? {source} records {len(targets)} hosts: give --host or --instance"
            )
    results = []
    absent: set[int] = set()  # ids of results that say "already absent"
    for target in targets:
        with RemoteHost(target.ssh) as host:
            plan = _undeploy_plan(host, args.unit)
            if plan is None:  # nothing to undo: done (exit 0), and the records go too
                gone = undeploy.UndeployResult(
                    host=host.name,
                    unit=(args.unit or "").removesuffix(".service"),
                    removed=True,
                    leftovers=(),
                    cache="none",
                    cache_paths=(),
                    other_units=(),
                    round_trips=host.round_trips,
                )
                if gone.unit:
                    fleet.forget_deploy(target, gone, aws=lambda: aws_from(args))
                absent.add(id(gone))
                results.append(gone)
                continue
            if not args.yes:
                cache = "delete its model cache" if args.purge_cache else "keep the model cache"
                answer = input(
                    f"Remove {plan.unit} ({plan.plan.model_id or 'unknown model'}) from "
                    f"{target.label}, and {cache}? [y/N] "
                )
                if answer.strip().lower() not in ("y", "yes"):
                    print(f"{target.label}: {plan.unit} left in place", file=sys.stderr)
                    continue
            result = undeploy.undeploy(host, plan, purge_cache=args.purge_cache)
        fleet.forget_deploy(target, result, aws=lambda: aws_from(args))
        results.append(result)
    if args.json:
        payload = [r.as_dict(already_absent=id(r) in absent) for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for r in results:
            print(output.undeploy_as_text(r, already_absent=id(r) in absent))
    return 0 if all(r.removed for r in results) else 1


def _undeploy_plan(host: Host, requested: str | None):  # -> UndeployPlan | None
    """undeploy.inspect, except that a unit that is not there is "already absent" (None): a
    second undeploy has nothing to undo. A unit file of that name that tgiops did not write is
    still refused (exit 2): tgiops never removes what it does not own."""
    import shlex

    from tgiops.commands import undeploy
    from tgiops.commands.logs import parse_unit_list
    from tgiops.core.layout import UNIT_DIR, UNIT_NAME_RE
    from tgiops.core.probe import split_sections

    report = host.run_script(undeploy.inspect_script(), check=False).stdout
    units = parse_unit_list(
        "\n".join(k[len("unit ") :] for k in split_sections(report) if k.startswith("unit "))
    )
    name = (requested or "").removesuffix(".service")
    if requested and UNIT_NAME_RE.fullmatch(name) and name not in units:
        path = f"{UNIT_DIR}/{name}.service"
        if host.run(f"test -e {shlex.quote(path)}", check=False).exit_code == 0:
            raise InputError(
                f"{host.name}: {path} exists but tgiops did not write it (no managed marker); "
                "refusing to remove it"
            )
        return None
    if not requested and not units:
        return None
    return undeploy.plan_undeploy(host.name, report, requested)
