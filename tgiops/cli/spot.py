"""`tgiops userdata`, `bootstrap`, `reconcile`, `watch-interruption`: spot recovery's verbs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from tgiops.cli.args import (
    CATALOG_HELP,
    IMDS_HELP,
    add_aws_args,
    add_json_arg,
    add_model_args,
    add_plan_overrides,
    add_restore_secret_args,
    add_spot_unit_args,
    add_ssh_args,
    aws_from,
    deploy_request_from,
    read_text,
    require_root,
    resolve_imds_endpoint,
    ssh_template,
    tgi_unit_template,
)
from tgiops.core.errors import DoesNotFitError, InputError, TgiopsError
from tgiops.core.layout import BOOTSTRAP_CONFIG_PATH, DEFAULT_DATA_DIR

log = logging.getLogger("tgiops")


def add_spot_parsers(sub: Any) -> None:
    ud = sub.add_parser(
        "userdata",
        help="print EC2 user data (cloud-init) that installs tgiops and restores the endpoint "
        "at every boot",
        description="Print the user data for a launch template: it installs tgiops, mounts the "
        "data volume and installs tgiops-bootstrap (restores the recorded deployment at every "
        "boot) and the spot interruption watcher. Changes nothing; --iam-policy prints the "
        "instance role's minimal policy. A plan that does not fit --instance-type is refused "
        "(exit 2).",
    )
    add_model_args(ud)
    add_plan_overrides(ud)
    add_spot_unit_args(ud)
    inst = ud.add_argument_group("the instances the launch template makes")
    inst.add_argument(
        "--eip", metavar="ALLOC_ID", help="Elastic IP to point at the instance once healthy"
    )
    inst.add_argument("--region", metavar="REGION", help="AWS region (default: from IMDS)")
    inst.add_argument(
        "--efs", metavar="FS_ID", help="EFS file system mounted as the model cache (persistent)"
    )
    inst.add_argument(
        "--data-device", metavar="DEV", help="block device mounted as the model cache"
    )
    inst.add_argument(
        "--cache-volume",
        metavar="STACK",
        help="the model cache on an EBS volume of its own, tagged tgiops:stack=STACK and "
        "tgiops:role=model-cache: at boot the instance attaches the available one of its zone "
        "or creates one (as `tgiops up` does); --iam-policy then grants that, scoped by the "
        "tags (give --asg and --region)",
    )
    inst.add_argument(
        "--data-volume-gib",
        type=int,
        metavar="GIB",
        help="with --cache-volume: the size of a new volume (default 100)",
    )
    inst.add_argument(
        "--data-volume-throughput",
        type=int,
        metavar="MIB_S",
        help="with --cache-volume: gp3 throughput of a new volume (default 125)",
    )
    how = ud.add_argument_group(
        "how tgiops gets onto the instance (one is required; never the public package index: "
        "root runs it at every boot)"
    )
    how.add_argument(
        "--preinstalled", action="store_true", help="the AMI has tgiops baked in under /opt/tgiops"
    )
    how.add_argument(
        "--pip-requirements",
        metavar="FILE",
        help="a lock file with --hash= on every requirement (pip-compile --generate-hashes), "
        "installed with pip --require-hashes",
    )
    how.add_argument(
        "--pip-spec",
        metavar="ARGS",
        help="pip arguments naming a private index (--index-url https://pypi.internal/simple "
        "tgiops==X -c CONSTRAINTS) or a wheel by absolute path on the AMI",
    )
    inst.add_argument(
        "--asg", metavar="NAME", help="the Auto Scaling group: --iam-policy lets the role move "
        "the Elastic IP only to its instances"
    )  # fmt: skip
    inst.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for bootstrap's AWS SDK (e.g. HTTPS_PROXY); never a secret",
    )
    inst.add_argument(
        "--no-watch-interruption",
        action="store_true",
        help="do not install the spot interruption watcher",
    )
    inst.add_argument(
        "--on-rebalance",
        choices=["log", "stop"],
        default="log",
        help="what the watcher does on a rebalance recommendation (default: log)",
    )
    inst.add_argument(
        "--monitor",
        action="store_true",
        help="install tgiops-monitor too: GPU and engine metrics to CloudWatch every 60 s "
        "(--iam-policy then allows cloudwatch:PutMetricData in the namespace tgiops only)",
    )
    inst.add_argument("--timeout", type=float, metavar="S", help="bootstrap's health wait")
    inst.add_argument(
        "--instance-type", metavar="TYPE", help="check first that the model fits this type"
    )
    ud.add_argument(
        "--iam-policy",
        action="store_true",
        help="print the instance role's minimal IAM policy (JSON) instead of the user data",
    )
    ud.add_argument("--json", action="store_true", help="user data, policy and config as JSON")
    ud.set_defaults(func=cmd_userdata)

    bs = sub.add_parser(
        "bootstrap",
        help="(on the instance, at boot) restore the recorded TGI deployment on this instance",
        description="Run as root on the instance (the tgiops-bootstrap unit does): read the "
        "deployment record (data volume, config, user data, instance tags), get the token with "
        "the instance role, install and start the TGI unit, wait healthy, then move the "
        "Elastic IP here. A second run changes nothing.",
    )
    bs.add_argument(
        "--config",
        default=BOOTSTRAP_CONFIG_PATH,
        metavar="FILE",
        help=f"bootstrap config written by the user data (default {BOOTSTRAP_CONFIG_PATH})",
    )
    bs.add_argument("--data-dir", metavar="DIR", help="where the records are (data volume)")
    bs.add_argument("--eip", metavar="ALLOC_ID", help="Elastic IP to point here once healthy")
    bs.add_argument("--instance-id", metavar="ID", help="this instance (default: from IMDS)")
    bs.add_argument("--imds-endpoint", metavar="URL", help=IMDS_HELP)
    bs.add_argument("--timeout", type=float, metavar="S", help="health wait per unit")
    bs.add_argument("--catalog", action="append", default=[], metavar="FILE", help=CATALOG_HELP)
    add_aws_args(bs)
    add_json_arg(bs)
    bs.set_defaults(func=cmd_bootstrap)

    rc = sub.add_parser(
        "reconcile",
        help="make the live instances of a group serve the recorded deployment; move the "
        "Elastic IP and target group registrations to them",
        description="From outside, after a spot relaunch: find the live instances, restore the "
        "recorded deployment where it is missing or differs, wait healthy, keep the Elastic IP "
        "on a healthy instance and the target group's registrations current. Safe to repeat.",
    )
    which = rc.add_argument_group("instances (one of)")
    which.add_argument("--asg", metavar="NAME", help="the InService instances of this group")
    which.add_argument("--name", dest="name_tag", metavar="TAG", help="running, with this Name")
    rc.add_argument("--eip", metavar="ALLOC_ID", help="keep this Elastic IP on a healthy one")
    rc.add_argument(
        "--target-group", metavar="ARN", help="register healthy instances, deregister gone ones"
    )
    rc.add_argument(
        "--watch", type=float, metavar="SECONDS", help="reconcile every SECONDS until Ctrl-C"
    )
    rc.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="where the instances keep the deployment records (default /var/lib/tgiops/data)",
    )
    # What only the operator decides; records and tags never do (tgiops.core.record, "Trust").
    add_restore_secret_args(rc)
    rc.add_argument("--public", action="store_true", help="bind all addresses")
    rc.add_argument("--timeout", type=float, metavar="S", help="health wait per unit")
    rc.add_argument(
        "--address",
        choices=["public", "private"],
        default="public",
        help="how to reach instances without an ssh_config entry (default public)",
    )
    rc.add_argument("--catalog", action="append", default=[], metavar="FILE", help=CATALOG_HELP)
    add_ssh_args(rc, "record unknown host keys (a replacement instance has new ones)")
    add_aws_args(rc)
    rc.add_argument("--json", action="store_true", help="one JSON object per pass")
    rc.set_defaults(func=cmd_reconcile)

    wi = sub.add_parser(
        "watch-interruption",
        help="(on the instance) stop TGI gracefully on a spot interruption notice (IMDSv2)",
        description="Run as root on a spot instance (the tgiops-watch-interruption unit does): "
        "poll IMDSv2 for an interruption notice and stop the recorded TGI units gracefully "
        "within the two minutes, recording why.",
    )
    wi.add_argument(
        "--unit", action="append", default=[], metavar="NAME", help="default: recorded units"
    )
    wi.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="where the deployment records are (default /var/lib/tgiops/data)",
    )
    wi.add_argument("--interval", type=float, default=5.0, metavar="S", help="poll every S (5)")
    wi.add_argument(
        "--on-rebalance",
        choices=["log", "stop"],
        default="log",
        help="on a rebalance recommendation: log it, or stop TGI as on a notice (default log)",
    )
    wi.add_argument("--imds-endpoint", metavar="URL", help=IMDS_HELP)
    wi.add_argument("--once", action="store_true", help="poll once and exit")
    add_json_arg(wi)
    wi.set_defaults(func=cmd_watch_interruption)


USERDATA_LIMIT_BYTES = 16384  # EC2: "User data is limited to 16 KB, in raw form"


def cmd_userdata(args: argparse.Namespace) -> int:
    from tgiops.commands import bootstrap
    from tgiops.core import hardware
    from tgiops.core.request import plan_request
    from tgiops.edges import resources

    request = deploy_request_from(args)
    if args.instance_type:
        checked = plan_request(
            request,
            hardware.inventory_for_instance_type(args.instance_type),
            instance_types=hardware.all_instance_types(),
        )
        if not checked.fits:
            raise DoesNotFitError(
                f"{request.model.alias} does not fit {args.instance_type}: {checked.problem}. "
                "Nothing was written. Run `tgiops plan` for alternatives.",
                plan=checked,
            )
    env: dict[str, str] = {}
    for pair in args.env:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--env {pair!r}: give KEY=VALUE")
        env[key] = value
    rec = bootstrap.userdata_record(request, resources.load_catalog(environ={}))
    cache = None
    if args.cache_volume:
        cache = bootstrap.CacheVolumeSpec(
            stack=args.cache_volume,
            gib=args.data_volume_gib or 100,
            throughput=args.data_volume_throughput or 125,
            model=request.model.alias,
        )
    elif args.data_volume_gib or args.data_volume_throughput:
        raise InputError("--data-volume-gib/--data-volume-throughput go with --cache-volume")
    options = bootstrap.UserdataOptions(
        record=rec,
        elastic_ip=args.eip,
        region=args.region,
        timeout_s=args.timeout,
        pip_spec=args.pip_spec,
        pip_requirements=read_text(args.pip_requirements) if args.pip_requirements else None,
        preinstalled=args.preinstalled,
        asg_name=args.asg,
        efs_id=args.efs,
        data_device=args.data_device,
        cache_volume=cache,
        env=env,
        watch_interruption=not args.no_watch_interruption,
        on_rebalance=args.on_rebalance,
        monitor=args.monitor,
    )
    policy = bootstrap.iam_policy(
        bootstrap.secret_names(rec),
        args.eip,
        region=args.region,
        asg_name=args.asg,
        cache_volume_stack=args.cache_volume,
        monitor=args.monitor,
    )
    if args.iam_policy:
        print(json.dumps(policy, indent=2))
        return 0
    templates = resources.shipped_path("unit_templates")
    text = bootstrap.render_userdata(
        options,
        userdata_template=(templates / "userdata.sh.j2").read_text(),
        bootstrap_unit_template=(templates / "tgiops-bootstrap.service.j2").read_text(),
        watch_unit_template=(templates / "tgiops-watch-interruption.service.j2").read_text(),
    )
    if len(text.encode()) > USERDATA_LIMIT_BYTES:
        print(
            f"tgiops: warning: the user data is {len(text.encode())} bytes; EC2 takes at most "
            f"{USERDATA_LIMIT_BYTES} (before base64). Put the model in a catalog on the AMI.",
            file=sys.stderr,
        )
    if args.json:
        config = bootstrap.config_from_userdata(text, origin="the user data")
        print(
            json.dumps(
                {
                    "user_data": text,
                    "iam_policy": policy,
                    "bootstrap_config": json.loads(config.to_json()) if config else None,
                },
                indent=2,
            )
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from tgiops.cli import output, progress
    from tgiops.commands import bootstrap
    from tgiops.edges import resources
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws
    from tgiops.edges.imds import Imds
    from tgiops.edges.localhost import LocalHost

    if args.eip:
        bootstrap.check_elastic_ip(args.eip)
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout:g}: give seconds > 0")
    imds_endpoint = resolve_imds_endpoint(args.imds_endpoint)
    require_root("bootstrap installs and starts a systemd unit")
    options = bootstrap.BootstrapOptions(
        config_path=args.config,
        data_dir=args.data_dir,
        elastic_ip=args.eip,
        region=args.region,
        profile=args.profile,
        instance_id=args.instance_id,
        timeout_s=args.timeout,
    )
    show = progress.stderr_printer(tty=sys.stderr.isatty() and not args.json)
    with LocalHost() as host:
        result = bootstrap.bootstrap(
            host,
            options,
            imds=Imds(imds_endpoint),
            make_aws=lambda region: Aws(AwsSettings(region=region, profile=args.profile)),
            catalog=resources.load_catalog(args.catalog),
            template_text=tgi_unit_template(),
            on_progress=show,
        )
    show.close()
    if args.json:
        print(json.dumps(result.as_dict()))  # one line: it lands in the journal
    else:
        print(output.bootstrap_as_text(result))
    return 0 if result.healthy else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    import time

    from tgiops.cli import output, progress
    from tgiops.commands import reconcile
    from tgiops.edges import resources

    if args.watch is not None and args.watch <= 0:
        raise InputError(f"--watch {args.watch:g}: give a number of seconds > 0")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout:g}: give seconds > 0")
    options = reconcile.ReconcileOptions(
        asg_name=args.asg,
        name_tag=args.name_tag,
        elastic_ip=args.eip,
        target_group_arn=args.target_group,
        data_dir=args.data_dir,
        timeout_s=args.timeout,
        address=args.address,
        token_secret=None if args.no_token else args.secret_name,
        api_key_secret=args.api_key_secret,
        public=args.public,
    )
    aws = aws_from(args)
    template = ssh_template(args)
    catalog = resources.load_catalog(args.catalog)
    show = progress.stderr_printer(tty=sys.stderr.isatty() and not args.json)
    result = None
    try:
        while True:
            try:
                result = reconcile.reconcile(
                    aws,
                    options,
                    ssh_template=template,
                    catalog=catalog,
                    template_text=tgi_unit_template(),
                    on_progress=show,
                )
            except InputError:
                raise
            except TgiopsError as exc:
                show.close()
                if not args.watch:
                    raise
                print(f"tgiops: error: this pass failed: {exc}", file=sys.stderr, flush=True)
                if args.json:  # one object per pass, a failed pass included
                    from tgiops.cli.output import error_as_dict

                    failed = error_as_dict(type(exc).__name__, str(exc), exc.exit_code, exc)
                    print(json.dumps(failed), flush=True)
            else:
                show.close()
                if args.json:
                    print(json.dumps(result.as_dict(), indent=None if args.watch else 2))
                else:
                    print(output.reconcile_as_text(result), flush=True)
            if not args.watch:
                break
            time.sleep(args.watch)
    except KeyboardInterrupt:
        if result is None:
            raise
    return 0 if result is not None and result.healthy else 1


def cmd_watch_interruption(args: argparse.Namespace) -> int:
    from tgiops.commands import interruption
    from tgiops.core.errors import AWSError
    from tgiops.edges.imds import Imds
    from tgiops.edges.localhost import LocalHost

    options = interruption.WatchOptions(
        data_dir=args.data_dir,
        units=tuple(u.removesuffix(".service") for u in args.unit),
        interval_s=args.interval,
        on_rebalance=args.on_rebalance,
        once=args.once,
    )
    imds_endpoint = resolve_imds_endpoint(args.imds_endpoint)
    require_root("watch-interruption stops systemd units")
    imds = Imds(imds_endpoint)
    try:
        instance_id: str | None = imds.instance_id()
    except AWSError as exc:
        log.warning("no instance id from the metadata service (%s); watching anyway", exc)
        instance_id = None
    with LocalHost() as host:
        result = interruption.watch_interruption(
            host,
            imds,
            options,
            instance_id=instance_id,
            on_event=lambda message: print(f"tgiops: {message}", file=sys.stderr, flush=True),
        )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.reason:
        print(result.reason)
        for s in result.stopped:
            print(f"  {s.unit}: {s.state_after} (drain up to {s.grace_s} s)")
    else:
        print("no interruption notice")
    return 1 if any(s.state_after == "active" for s in result.stopped) else 0
