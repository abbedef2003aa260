"""`tgiops deploy`: the parser, the fan-out over targets and what it prints."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tgiops.cli.args import (
    add_json_arg,
    add_model_args,
    add_plan_overrides,
    add_target_args,
    aws_from,
    deploy_request_from,
    targets_from,
    tgi_unit_template,
)
from tgiops.core.errors import InputError
from tgiops.core.layout import DEFAULT_DATA_DIR, DEFAULT_TOKEN_SECRET

if TYPE_CHECKING:  # annotations only: verbs import what they run lazily
    from tgiops.core.request import DeployResult


def cmd_deploy(args: argparse.Namespace) -> int:
    from tgiops.cli import output, progress
    from tgiops.commands import deploy, deploy_fleet, fleet
    from tgiops.edges.ssh import RemoteHost

    request = deploy_request_from(
        args,
        offline=args.offline,
        dry_run=args.dry_run,
        keep_failed=args.keep_failed,
        timeout_s=args.timeout,
    )
    if args.public:
        print(
            "tgiops: warning: --public binds TGI on all addresses; it has no authentication "
            "unless --api-key-secret is given",
            file=sys.stderr,
        )
    if args.connect_timeout <= 0:
        raise InputError(
            f"--connect-timeout {args.connect_timeout:g}: give the SSH connect timeout in "
            "seconds (> 0), e.g. 10"
        )
    targets = targets_from(args)
    template = tgi_unit_template()
    needs_aws = bool(request.token_secret or request.api_key_secret) or any(
        t.instance is not None for t in targets
    )
    aws = aws_from(args) if needs_aws else None
    many = len(targets) > 1

    def run_one(target: Any) -> DeployResult:
        show = progress.stderr_printer(
            tty=sys.stderr.isatty() and not many, prefix=f"{target.label}: " if many else ""
        )
        try:
            with RemoteHost(target.ssh) as host:
                return deploy.deploy(
                    host,
                    request,
                    get_secret=aws.get_secret if aws else None,
                    secret_exists=aws.secret_exists if aws else None,
                    template_text=template,
                    on_progress=show,
                )
        finally:
            show.close()

    if not many:
        outcomes = [deploy_fleet.HostOutcome(targets[0].label, run_one(targets[0]))]
    else:
        outcomes = deploy_fleet.deploy_fleet(
            targets, run_one, max_parallel=args.parallel, label=lambda t: t.label
        )
    for target, outcome in zip(targets, outcomes, strict=True):
        if outcome.result is not None:
            r = outcome.result
            fleet.remember_deploy(target, deploy_fleet.resolved_request(request, r), r, aws=aws,
                                  port=r.port, region=args.region)  # fmt: skip
    results = [o.result for o in outcomes if o.result is not None]
    if args.json:
        if many:
            print(json.dumps(deploy_fleet.fleet_as_dict(outcomes, lambda r: r.as_dict()), indent=2))
        else:
            print(json.dumps(results[0].as_dict(), indent=2))
    else:
        for o in outcomes:
            print(output.deploy_as_text(o.result) if o.result else f"{o.label}: {o.error}")
        if many:
            print(deploy_fleet.fleet_summary_text(outcomes))
    for r in results:
        for warning in r.warnings:
            print(f"tgiops: warning: {r.host}: {warning}", file=sys.stderr)
    failed = [r for r in results if not r.dry_run and not r.healthy]
    for r in failed:
        print(
            f"tgiops: error: deploy of {r.unit} on {r.host} failed; now serving: {r.restored}",
            file=sys.stderr,
        )
    for o in outcomes:
        if o.error:
            print(f"tgiops: error: {o.label}: {o.error}", file=sys.stderr)
    return deploy_fleet.fleet_exit_code(outcomes)


def add_deploy_parser(sub: Any) -> None:
    d = sub.add_parser(
        "deploy",
        help="plan, install and start TGI on a host; wait until healthy",
        description="Connect over SSH, probe the GPUs, plan, install TGI as a systemd unit with "
        "the Hugging Face token from Secrets Manager, start it and wait until it serves; on "
        "failure restore the previous unit. Exit 0 healthy, 1 failed (rolled back), 2 refused "
        "before any change (bad input, or the plan does not fit the host).",
    )
    add_model_args(d)
    add_target_args(d)
    add_plan_overrides(d)
    unit = d.add_argument_group("the unit")
    unit.add_argument(
        "--unit", metavar="NAME", help="systemd unit name, tgiops-NAME (default tgiops-ALIAS)"
    )
    unit.add_argument(
        "--port",
        type=int,
        help="host port (default: the unit's current one, else the first free from 8080)",
    )
    unit.add_argument(
        "--public",
        action="store_true",
        help="bind all addresses instead of 127.0.0.1 (TGI has no auth by default)",
    )
    unit.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="model cache on the host, mounted as /data (default /var/lib/tgiops/data)",
    )
    unit.add_argument("--gpu-devices", metavar="0,1", help="only these GPU indices (default all)")
    unit.add_argument(
        "--secret-name",
        default=DEFAULT_TOKEN_SECRET,
        help="Secrets Manager secret holding the Hugging Face token",
    )
    unit.add_argument("--no-token", action="store_true", help="deploy without a token (ungated)")
    unit.add_argument(
        "--api-key-secret",
        metavar="NAME",
        help="secret holding an API key for TGI's --api-key (TGI >= 2.3)",
    )
    unit.add_argument(
        "--offline",
        action="store_true",
        help="HF_HUB_OFFLINE=1: start from the model cache, no download",
    )
    d.add_argument("--dry-run", action="store_true", help="show the plan, unit and commands only")
    d.add_argument("--keep-failed", action="store_true", help="no rollback of a failed unit")
    d.add_argument("--timeout", type=float, metavar="S", help="health wait (default from size)")
    d.add_argument(
        "--parallel", type=int, default=32, metavar="N", help="at most N hosts at once (32)"
    )
    add_json_arg(d)
    d.set_defaults(func=cmd_deploy)
