"""Command line of the testbed: `scripts/testbed up|down|status|alias`.

stdout carries data only (the JSON object of `up`, the status listing); progress,
timings and errors go to stderr. Exit codes: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from testbedlib.errors import TestbedError
from testbedlib.testbed import DEFAULT_GPUS, DEFAULT_NAME, Testbed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/testbed",
        description="Boot fake EC2 GPU hosts (systemd-nspawn + sshd + dockerd + fake "
        "nvidia-smi + TGI emulator) and a moto server, for tgiops end-to-end tests.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="boot a host; print one JSON object")
    up.add_argument("--name", default=DEFAULT_NAME, help=f"host name (default {DEFAULT_NAME})")
    up.add_argument(
        "--gpus",
        default=None,
        help=f"COUNTxMODEL, e.g. 4xA10G, 1xT4, 8xH100 (default {DEFAULT_GPUS})",
    )
    up.add_argument(
        "--data-dir",
        default=None,
        help="directory mounted at /var/lib/tgiops/data (shareable between hosts)",
    )
    up.add_argument(
        "--tgi-load-seconds",
        type=float,
        default=None,
        help="how long the TGI emulator pretends to load (TGI_EMULATOR_LOAD_SECONDS)",
    )

    down = commands.add_parser("down", help="end a host (or all, and the moto server)")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--name", default=None, help=f"host name (default {DEFAULT_NAME})")
    which.add_argument("--all", action="store_true", help="everything; leave the machine as found")

    status = commands.add_parser("status", help="list hosts")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    alias = commands.add_parser("alias", help="make ALIAS reach host NAME via ssh_config")
    alias.add_argument("name")
    alias.add_argument("alias")
    return parser


def render_status(data: dict) -> str:
    lines = [f"{'NAME':<20} {'ADDRESS':<15} {'GPUS':<12} {'STATE':<8} ALIASES"]
    for host in data["hosts"]:
        state = "running" if host["running"] else "stale"
        lines.append(
            f"{host['name']:<20} {host['address']:<15} {host['gpus']:<12} {state:<8} "
            f"{','.join(host['aliases']) or '-'}"
        )
    for name in data["stale"]:
        lines.append(f"{name:<20} {'-':<15} {'-':<12} {'stale':<8} -")
    for name in data["other_testbeds"]:
        lines.append(f"{name:<20} {'-':<15} {'-':<12} {'other':<8} (another state directory)")
    lines.append(f"aws: {data['aws_endpoint_url'] or 'not running'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="testbed: %(message)s",
        stream=sys.stderr,
    )
    testbed = Testbed()
    try:
        if args.command == "up":
            info = testbed.up(args.name, args.gpus, args.data_dir, args.tgi_load_seconds)
            print(json.dumps(info.to_json()))
        elif args.command == "down":
            if args.all:
                testbed.down_all()
            elif not testbed.down(args.name or DEFAULT_NAME):
                logging.getLogger(__name__).info("no host named %s", args.name or DEFAULT_NAME)
        elif args.command == "status":
            data = testbed.status()
            print(json.dumps(data, indent=2) if args.json else render_status(data))
        elif args.command == "alias":
            print(json.dumps(testbed.alias(args.name, args.alias).to_json()))
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
    return 0
