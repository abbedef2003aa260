"""The command line: parse, call one function, render its result (human or --json).

Only ``main`` catches broadly. Exit codes: 0 ok, 1 operation failed / does not fit /
unhealthy, 2 bad input (nothing changed anywhere). Heavy libraries are imported by the
verbs that need them, so `tgiops --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from tgiops import __version__
from tgiops.errors import InputError, TgiopsError

log = logging.getLogger("tgiops")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but bad input raises InputError so every error leaves through one door."""

    def error(self, message: str) -> Any:
        raise InputError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _add_hardware_args(parser: argparse.ArgumentParser) -> None:
    hw = parser.add_argument_group("hardware (one of)")
    hw.add_argument("--instance-type", metavar="TYPE", help="EC2 instance type, e.g. g5.12xlarge")
    hw.add_argument("--gpu", metavar="NAME", help="GPU model not tied to an instance type: A10G")
    hw.add_argument("--gpus", type=int, metavar="N", default=None, help="number of GPUs (--gpu)")
    hw.add_argument("--gpu-memory-gib", type=float, metavar="X", help="memory per GPU (--gpu)")


def _add_model_args(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        parser.add_argument(
            "model", nargs="?", help="model alias from the catalog (`tgiops models`)"
        )
    parser.add_argument(
        "--model-config", metavar="FILE", help="plan any model from its Hugging Face config.json"
    )
    parser.add_argument(
        "--model-id", metavar="ORG/NAME", help="the repository to serve with --model-config"
    )
    parser.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="FILE",
        help="a catalog of your own over the built-in one (also $TGIOPS_MODELS)",
    )


def _add_plan_overrides(parser: argparse.ArgumentParser) -> None:
    ov = parser.add_argument_group("overrides (checked, not trusted)")
    ov.add_argument("--tgi-version", default=None, metavar="V", help="TGI release (default 3.3.5)")
    ov.add_argument("--num-shard", type=int, metavar="N")
    ov.add_argument("--quantize", metavar="METHOD", help="a TGI --quantize value, or none")
    ov.add_argument("--dtype", choices=["float16", "bfloat16"])
    ov.add_argument("--max-input-tokens", type=int, metavar="N")
    ov.add_argument("--max-total-tokens", type=int, metavar="N")
    ov.add_argument("--max-batch-prefill-tokens", type=int, metavar="N")
    ov.add_argument("--cuda-memory-fraction", type=float, metavar="F")


def _add_aws_args(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("AWS (boto3's standard chain; AWS_ENDPOINT_URL honoured)")
    aws.add_argument("--region", metavar="REGION")
    aws.add_argument("--profile", metavar="NAME")


def _add_target_args(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("targets")
    t.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="DEST",
        help="an SSH destination (resolved through ssh_config); repeatable",
    )
    t.add_argument("--instance", action="append", default=[], metavar="ID", help="EC2 instance id")
    t.add_argument("--name", dest="name_tag", metavar="TAG", help="EC2 Name tag (all running)")
    t.add_argument(
        "--asg", metavar="NAME", help="every InService instance of an Auto Scaling group"
    )
    ssh = parser.add_argument_group("SSH")
    ssh.add_argument("--ssh-config", metavar="FILE", help="ssh_config to use ($TGIOPS_SSH_CONFIG)")
    ssh.add_argument("--user", metavar="USER")
    ssh.add_argument("--identity", metavar="KEY", help="private key file")
    ssh.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="record an unknown host key (a changed key is always refused)",
    )
    ssh.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    _add_aws_args(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="tgiops",
        description="Serve LLMs with Hugging Face TGI on EC2 GPU instances, planned from the "
        "hardware.",
    )
    parser.add_argument("--version", action="version", version=f"tgiops {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail on stderr (-vv, -vvv); secrets are never shown",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)

    p = sub.add_parser("plan", help="plan TGI's configuration for a model on some hardware")
    _add_model_args(p)
    _add_hardware_args(p)
    _add_plan_overrides(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_plan)

    d = sub.add_parser("deploy", help="plan, install and start TGI on a host; wait until healthy")
    _add_model_args(d)
    _add_target_args(d)
    _add_plan_overrides(d)
    unit = d.add_argument_group("the unit")
    unit.add_argument("--unit", metavar="NAME", help="systemd unit name (default tgiops-ALIAS)")
    unit.add_argument("--port", type=int, default=8080, help="host port (default 8080)")
    unit.add_argument(
        "--public",
        action="store_true",
        help="bind all addresses instead of 127.0.0.1 (TGI has no auth by default)",
    )
    unit.add_argument(
        "--data-dir",
        default="/var/lib/tgiops/data",
        metavar="DIR",
        help="model cache on the host, mounted as /data (default /var/lib/tgiops/data)",
    )
    unit.add_argument("--gpu-devices", metavar="0,1", help="only these GPU indices (default all)")
    unit.add_argument(
        "--secret-name",
        default="tgiops/hf-token",
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
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_deploy)

    sec = sub.add_parser("secret", help="store or check the Hugging Face token in Secrets Manager")
    sec_sub = sec.add_subparsers(
        dest="secret_command", metavar="ACTION", parser_class=_ArgumentParser, required=True
    )
    for action, text in (
        ("set", "create or update it from stdin or a hidden prompt"),
        ("check", "say whether it exists and is readable (never prints it)"),
    ):
        sp = sec_sub.add_parser(action, help=text)
        sp.add_argument("--name", default="tgiops/hf-token", help="secret name")
        _add_aws_args(sp)
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=cmd_secret)

    m = sub.add_parser("models", help="list the model catalog")
    m.add_argument("--catalog", action="append", default=[], metavar="FILE")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args))
    except TgiopsError as exc:
        print(f"tgiops: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tgiops: interrupted", file=sys.stderr)
        return 130


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbosity < 3:  # -vvv shows the libraries' own debug lines too
        for noisy in ("paramiko", "botocore", "boto3", "urllib3", "docker", "invoke", "fabric"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


# --- plan -----------------------------------------------------------------------------------


def resolve_model(args: argparse.Namespace):  # -> ModelSpec
    from tgiops import resources
    from tgiops.catalog import find_model

    if args.model_config:
        if args.model:
            raise InputError("give a model alias or --model-config FILE, not both")
        return resources.load_hf_config(args.model_config, repo_id=args.model_id)
    if not args.model:
        raise InputError("which model? Give an alias (see `tgiops models`) or --model-config FILE")
    return find_model(resources.load_catalog(args.catalog), args.model)


def resolve_inventory(args: argparse.Namespace):  # -> GpuInventory
    from tgiops import hardware

    if args.instance_type and args.gpu:
        raise InputError("give --instance-type or --gpu, not both")
    if args.instance_type:
        if args.gpus is not None or args.gpu_memory_gib is not None:
            raise InputError("--gpus and --gpu-memory-gib go with --gpu, not --instance-type")
        return hardware.inventory_for_instance_type(args.instance_type)
    if args.gpu:
        return hardware.inventory_from_spec(args.gpu, args.gpus or 1, args.gpu_memory_gib)
    raise InputError(
        "which hardware? Give --instance-type TYPE (e.g. g5.12xlarge) or --gpu NAME --gpus N"
    )


def overrides_from(args: argparse.Namespace):  # -> Overrides
    from tgiops.plan import Overrides

    return Overrides(
        num_shard=args.num_shard,
        quantize=args.quantize,
        dtype=args.dtype,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        max_batch_prefill_tokens=args.max_batch_prefill_tokens,
        cuda_memory_fraction=args.cuda_memory_fraction,
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from tgiops import hardware, output
    from tgiops.engine import DEFAULT_TGI_VERSION, Engine
    from tgiops.plan import plan

    model = resolve_model(args)
    inventory = resolve_inventory(args)
    engine = Engine.tgi(args.tgi_version or DEFAULT_TGI_VERSION)
    result = plan(
        model, inventory, engine, overrides_from(args), instance_types=hardware.all_instance_types()
    )
    if args.json:
        print(json.dumps(output.plan_as_dict(result), indent=2))
    else:
        print(output.plan_as_text(result))
    return 0 if result.fits else 1


def cmd_models(args: argparse.Namespace) -> int:
    from tgiops import output, resources

    rows = output.models_as_rows(resources.load_catalog(args.catalog).values())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ["alias", "repo_id", "parameters_b", "quantization", "gated"]
        print(output.rows_as_table(rows, columns))
    return 0


# --- deploy ---------------------------------------------------------------------------------


def _progress_printer(enabled: bool):  # -> Callable[[str], None]
    """Progress lines on stderr when it is a terminal; otherwise they go to the log (-v)."""

    def show(message: str) -> None:
        if enabled:
            print(f"  .. {message}", file=sys.stderr, flush=True)
        log.info(message)

    return show


def _aws_from(args: argparse.Namespace):  # -> tgiops.aws.Aws
    from tgiops.aws import Aws, AwsSettings

    return Aws(AwsSettings(region=args.region, profile=args.profile))


def _targets_from(args: argparse.Namespace):  # -> list[Target]
    from tgiops.ssh import SSHTarget
    from tgiops.targets import TargetSpec, resolve_targets, ssh_config_path

    spec = TargetSpec(
        hosts=args.host, instance_ids=args.instance, name_tag=args.name_tag, asg_name=args.asg
    )
    if spec.empty:
        raise InputError("which host? Give --host DEST, --instance ID, --name TAG or --asg NAME")
    template = SSHTarget(
        destination="",
        ssh_config_path=ssh_config_path(args.ssh_config),
        user=args.user,
        identity=args.identity,
        accept_new_host_key=args.accept_new_host_key,
        connect_timeout_s=args.connect_timeout,
    )
    finder = _aws_from(args).find_instances if spec.uses_aws else None
    return resolve_targets(spec, template, finder)


def _gpu_devices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        devices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--gpu-devices {text!r}: give GPU indices like 0,1") from None
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise InputError(f"--gpu-devices {text!r}: indices must be distinct and >= 0")
    return devices


def cmd_deploy(args: argparse.Namespace) -> int:
    from tgiops import deploy, output, resources
    from tgiops.engine import DEFAULT_TGI_VERSION, Engine
    from tgiops.ssh import RemoteHost

    request = deploy.DeployRequest(
        model=resolve_model(args),
        engine=Engine.tgi(args.tgi_version or DEFAULT_TGI_VERSION),
        overrides=overrides_from(args),
        unit_name=args.unit,
        port=args.port,
        public=args.public,
        data_dir=args.data_dir,
        gpu_devices=_gpu_devices(args.gpu_devices),
        token_secret=None if args.no_token else args.secret_name,
        api_key_secret=args.api_key_secret,
        offline=args.offline,
        dry_run=args.dry_run,
        keep_failed=args.keep_failed,
        timeout_s=args.timeout,
    )
    request.unit_options(())  # validate unit name, port, paths before touching anything
    if args.public:
        print(
            "tgiops: warning: --public binds TGI on all addresses; it has no authentication "
            "unless --api-key-secret is given",
            file=sys.stderr,
        )
    targets = _targets_from(args)
    template = (resources.shipped_path("unit_templates") / "tgi.service.j2").read_text()
    aws = _aws_from(args) if (request.token_secret or request.api_key_secret) else None
    show = _progress_printer(sys.stderr.isatty() and not args.json)
    results = []
    for target in targets:
        with RemoteHost(target.ssh) as host:
            result = deploy.deploy(
                host,
                request,
                get_secret=aws.get_secret if aws else None,
                template_text=template,
                on_progress=show,
            )
        if target.instance is not None and not request.dry_run and result.healthy and aws:
            aws.tag_instance(
                target.instance.instance_id,
                {
                    "tgiops:managed": "true",
                    "tgiops:model": request.model.alias,
                    "tgiops:unit": result.unit,
                },
            )
        results.append(result)
    if args.json:
        payload = [output.deploy_as_dict(r) for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for r in results:
            print(output.deploy_as_text(r))
    failed = [r for r in results if not r.dry_run and not r.healthy]
    for r in failed:
        print(f"tgiops: error: {deploy.error_from(r)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_secret(args: argparse.Namespace) -> int:
    aws = _aws_from(args)
    if args.secret_command == "check":
        exists = aws.secret_exists(args.name)
        readable = False
        if exists:
            aws.get_secret(args.name)  # raises with the missing IAM action when unreadable
            readable = True
        if args.json:
            print(json.dumps({"name": args.name, "exists": exists, "readable": readable}))
        else:
            print(f"{args.name}: " + ("exists and is readable" if readable else "does not exist"))
        return 0 if readable else 1
    token = _read_token()
    outcome = aws.put_secret(args.name, token)
    if args.json:
        print(json.dumps({"name": args.name, "result": outcome}))
    else:
        print(f"{args.name}: {outcome}")
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
    from tgiops.render import render_env_file

    render_env_file({"HF_TOKEN": token})  # the same check the env file will make, early
    return token


if __name__ == "__main__":
    sys.exit(main())
