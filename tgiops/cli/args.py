"""The options several verbs share, and how they become tgiops' inputs (a model, GPUs, a deploy
request, targets). Heavy modules are imported inside the functions (start-up time)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from tgiops.core.errors import InputError
from tgiops.core.layout import DEFAULT_DATA_DIR, DEFAULT_TOKEN_SECRET

if TYPE_CHECKING:  # annotations only: verbs import what they run lazily
    from tgiops.core.request import DeployRequest


def add_hardware_args(parser: argparse.ArgumentParser) -> None:
    hw = parser.add_argument_group("hardware (one of)")
    hw.add_argument("--instance-type", metavar="TYPE", help="EC2 instance type, e.g. g5.12xlarge")
    hw.add_argument("--gpu", metavar="NAME", help="GPU model not tied to an instance type: A10G")
    hw.add_argument("--gpus", type=int, metavar="N", default=None, help="number of GPUs (--gpu)")
    hw.add_argument("--gpu-memory-gib", type=float, metavar="X", help="memory per GPU (--gpu)")
    hw.add_argument(
        "--compute-capability",
        metavar="X.Y",
        help="CUDA compute capability of a --gpu card tgiops does not know, e.g. 8.6",
    )


CATALOG_HELP = "a catalog of your own over the built-in one; repeatable (also $TGIOPS_MODELS)"


JSON_HELP = "print one JSON object on stdout, errors included (README: Errors as JSON)"


IMDS_HELP = (
    "instance metadata endpoint (default $AWS_EC2_METADATA_SERVICE_ENDPOINT or "
    "http://169.254.169.254)"
)


def add_json_arg(parser: argparse.ArgumentParser, text: str = JSON_HELP) -> None:
    parser.add_argument("--json", action="store_true", help=text)


def add_model_args(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
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
        help=CATALOG_HELP,
    )


def add_plan_overrides(parser: argparse.ArgumentParser) -> None:
    from tgiops.core.engine_names import ENGINE_NAMES

    eng = parser.add_argument_group("engine")
    eng.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default=None,
        help="the serving engine (default tgi); vllm: vLLM's OpenAI-compatible server",
    )
    eng.add_argument(
        "--engine-version",
        default=None,
        metavar="V",
        help="the engine's release (default: TGI 3.3.7, vLLM 0.27.1)",
    )
    ov = parser.add_argument_group("overrides (checked, not trusted)")
    ov.add_argument(
        "--tgi-version", default=None, metavar="V", help="TGI release (= --engine-version for TGI)"
    )
    ov.add_argument(
        "--num-shard",
        type=int,
        metavar="N",
        help="GPUs to shard over (default: the most GPUs that divide the attention heads)",
    )
    ov.add_argument("--quantize", metavar="METHOD", help="a TGI --quantize value, or none")
    ov.add_argument(
        "--dtype",
        choices=["float16", "bfloat16"],
        help="(default: bfloat16 on sm80+, float16 below and for AWQ/GPTQ)",
    )
    ov.add_argument(
        "--max-input-tokens",
        type=int,
        metavar="N",
        help="longest prompt, in tokens (default: from the memory model)",
    )
    ov.add_argument(
        "--max-total-tokens",
        type=int,
        metavar="N",
        help="prompt + generated tokens per request (default: room for 4 full-length "
        "requests, capped by the context length)",
    )
    ov.add_argument(
        "--max-batch-prefill-tokens",
        type=int,
        metavar="N",
        help="tokens prefilled at once across a batch (default: from the memory model)",
    )
    ov.add_argument(
        "--cuda-memory-fraction",
        type=float,
        metavar="F",
        help="share of each GPU's memory TGI may use, 0 < F <= 1 (default 1)",
    )
    ov.add_argument(
        "--flash-attention",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: FlashAttention on sm80+ only, the non-flash fallback below",
    )
    vo = parser.add_argument_group("vLLM overrides (--engine vllm; checked, not trusted)")
    vo.add_argument(
        "--gpu-memory-utilization",
        type=float,
        metavar="F",
        help="share of each GPU's TOTAL memory vLLM may use, 0 < F <= 1 (default 0.92); vLLM "
        "refuses to start when less than that is free",
    )
    vo.add_argument(
        "--max-model-len",
        type=int,
        metavar="N",
        help="prompt + output tokens per request (default: room for 4 full-length requests)",
    )
    vo.add_argument("--max-num-seqs", type=int, metavar="N", help="requests batched at once")
    vo.add_argument(
        "--max-num-batched-tokens", type=int, metavar="N", help="tokens per scheduler step"
    )
    vo.add_argument(
        "--enforce-eager", action="store_true", help="no CUDA graphs (less memory, slower)"
    )


def add_recommend_args(parser: argparse.ArgumentParser) -> None:
    r = parser.add_argument_group(
        "without hardware flags: every instance type of the table, cheapest that fits first"
    )
    r.add_argument("--max-usd-per-hour", type=float, metavar="USD", help="price cap per hour")
    r.add_argument("--spot", action="store_true", help="rank and cap by the current spot price")
    r.add_argument("--min-context", type=int, metavar="N", help="tokens one request needs")
    add_aws_args(parser)


def add_aws_args(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("AWS (boto3's standard chain; AWS_ENDPOINT_URL honoured)")
    aws.add_argument(
        "--region", metavar="REGION", help="AWS region (default: $AWS_REGION or the profile's)"
    )
    aws.add_argument(
        "--profile", metavar="NAME", help="AWS profile of ~/.aws/config (default: $AWS_PROFILE)"
    )


def add_target_args(parser: argparse.ArgumentParser) -> None:
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
    add_ssh_args(parser)
    add_aws_args(parser)


def add_ssh_args(
    parser: argparse.ArgumentParser,
    accept_help: str = "record an unknown host key (a changed key is always refused)",
) -> None:
    ssh = parser.add_argument_group("SSH")
    ssh.add_argument("--ssh-config", metavar="FILE", help="ssh_config to use ($TGIOPS_SSH_CONFIG)")
    ssh.add_argument(
        "--user",
        metavar="USER",
        help="log in as USER (default: the ssh_config's User, else your user name); "
        "not root: needs passwordless sudo",
    )
    ssh.add_argument(
        "--identity", metavar="KEY", help="private key file (instead of the ssh_config's)"
    )
    ssh.add_argument("--accept-new-host-key", action="store_true", help=accept_help)
    ssh.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for each SSH connection (default 10)",
    )


def resolve_model(args: argparse.Namespace):  # -> ModelSpec
    from tgiops.core.catalog import find_model
    from tgiops.edges import resources

    if args.model_config:
        if args.model:
            raise InputError("give a model alias or --model-config FILE, not both")
        return resources.load_hf_config(args.model_config, repo_id=args.model_id)
    if not args.model:
        raise InputError("which model? Give an alias (see `tgiops models`) or --model-config FILE")
    if args.model_id:
        raise InputError(
            f"--model-id {args.model_id} goes with --model-config; the alias {args.model!r} "
            "already names its repository. Give the alias, or --model-config FILE "
            f"--model-id {args.model_id}, not both"
        )
    engine = getattr(args, "engine", None) or "tgi"
    return find_model(resources.load_catalog(args.catalog), args.model, engine)


def resolve_inventory(args: argparse.Namespace):  # -> GpuInventory
    from tgiops.core import hardware

    if args.instance_type and args.gpu:
        raise InputError("give --instance-type or --gpu, not both")
    cc_text = getattr(args, "compute_capability", None)
    if args.instance_type:
        if args.gpus is not None or args.gpu_memory_gib is not None or cc_text is not None:
            raise InputError(
                "--gpus, --gpu-memory-gib and --compute-capability go with --gpu, not "
                "--instance-type"
            )
        return hardware.inventory_for_instance_type(args.instance_type)
    if args.gpu:
        gpus = 1 if args.gpus is None else args.gpus  # `--gpus 0` is an error, not 1
        cc = None if cc_text is None else hardware.parse_compute_capability(cc_text)
        return hardware.inventory_from_spec(args.gpu, gpus, args.gpu_memory_gib, cc)
    raise InputError(
        "which hardware? Give --instance-type TYPE (e.g. g5.12xlarge) or --gpu NAME --gpus N"
    )


# The overrides only one engine understands: given with the other engine they are refused, not
# ignored (a silently dropped limit would deploy something else than asked).
_TGI_ONLY = ("max_input_tokens", "max_total_tokens", "max_batch_prefill_tokens",
             "cuda_memory_fraction")  # fmt: skip
_VLLM_ONLY = ("gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def engine_from(args: argparse.Namespace):  # -> tgiops.core.engines.Engine
    """--engine / --engine-version (--tgi-version: TGI's own spelling, kept), checked (exit 2)."""
    from tgiops.core.engine_names import DEFAULT_ENGINE
    from tgiops.core.engines import engine_for

    name = getattr(args, "engine", None) or DEFAULT_ENGINE
    version = getattr(args, "engine_version", None)
    tgi_version = getattr(args, "tgi_version", None)
    if tgi_version is not None:
        if name != "tgi":
            raise InputError(
                f"--tgi-version goes with --engine tgi; give --engine-version for {name}"
            )
        if version is not None and version != tgi_version:
            raise InputError("give --engine-version or --tgi-version, not both")
        version = tgi_version
    return engine_for(name, version)


def overrides_from(args: argparse.Namespace, engine_name: str = "tgi"):
    """The engine's overrides (tgiops.core.plan.Overrides or vllm.VllmOverrides)."""
    own, other = (_VLLM_ONLY, _TGI_ONLY) if engine_name == "vllm" else (_TGI_ONLY, _VLLM_ONLY)
    given = [d for d in other if getattr(args, d, None) is not None]
    if engine_name == "vllm" and getattr(args, "flash_attention", "auto") != "auto":
        given.append("flash_attention")
    if engine_name != "vllm" and getattr(args, "enforce_eager", False):
        given.append("enforce_eager")
    if given:
        hint = " (vLLM's is --max-model-len)" if "max_total_tokens" in given else ""
        raise InputError(
            ", ".join(_flag(d) for d in given)
            + f": not an option of {engine_name}{hint}; it goes with --engine "
            + ("tgi" if engine_name == "vllm" else "vllm")
        )
    del own
    if engine_name == "vllm":
        from tgiops.core.engines.vllm import VllmOverrides

        return VllmOverrides(
            num_shard=args.num_shard,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            quantize=args.quantize,
            dtype=args.dtype,
            enforce_eager=bool(args.enforce_eager),
        )
    from tgiops.core.plan import Overrides

    return Overrides(
        num_shard=args.num_shard,
        quantize=args.quantize,
        dtype=args.dtype,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        max_batch_prefill_tokens=args.max_batch_prefill_tokens,
        cuda_memory_fraction=args.cuda_memory_fraction,
        flash_attention={"auto": None, "on": True, "off": False}[args.flash_attention],
    )


def aws_from(args: argparse.Namespace):  # -> tgiops.edges.aws.client.Aws
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    return Aws(AwsSettings(region=args.region, profile=args.profile))


def targets_from(args: argparse.Namespace):  # -> list[Target]
    from tgiops.edges.targets import TargetSpec, resolve_targets

    spec = TargetSpec(
        hosts=args.host, instance_ids=args.instance, name_tag=args.name_tag, asg_name=args.asg
    )
    if spec.empty:
        raise InputError("which host? Give --host DEST, --instance ID, --name TAG or --asg NAME")
    finder = aws_from(args).find_instances if spec.uses_aws else None
    return resolve_targets(spec, ssh_template(args), finder)


def gpu_devices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        devices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--gpu-devices {text!r}: give GPU indices like 0,1") from None
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise InputError(f"--gpu-devices {text!r}: indices must be distinct and >= 0")
    return devices


def deploy_request_from(args: argparse.Namespace, **extra: Any) -> DeployRequest:
    """The deploy request the shared model/override/unit options describe, validated (exit 2)
    before any host or AWS is touched."""
    from tgiops.core.request import DeployRequest

    engine = engine_from(args)
    request = DeployRequest(
        model=resolve_model(args),
        engine=engine,
        overrides=overrides_from(args, engine.name),
        unit_name=args.unit,
        port=args.port,
        public=args.public,
        data_dir=args.data_dir,
        gpu_devices=gpu_devices(args.gpu_devices),
        token_secret=None if args.no_token else secret_name(args.secret_name),
        api_key_secret=(
            None
            if args.api_key_secret is None
            else secret_name(args.api_key_secret, "--api-key-secret")
        ),
        **extra,
    )
    request.unit_options(())  # validates unit name, port and data dir
    return request


# Secrets Manager's names: tgiops.core.record.SECRET_NAME_RE. An ARN is accepted wherever an
# existing secret is named (SecretId).
SECRET_ARN_RE = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
)


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: works, and says which one to use instead."""

    def __init__(self, *args: Any, replacement: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        print(
            f"tgiops: warning: {option} is deprecated here; use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_secret_name_arg(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--secret-name",
        default=default,
        metavar="NAME",
        help="the secret's name or ARN" + (f" (default {default})" if default else " (required)"),
    )
    parser.add_argument(  # before 0.x this option was --name, which elsewhere is an EC2 tag
        "--name",
        dest="secret_name",
        action=DeprecatedAlias,
        replacement="--secret-name",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def secret_name(value: str | None, option: str = "--secret-name") -> str:
    """A Secrets Manager name (or ARN) checked against AWS's rules before any call (exit 2)."""
    if not value:
        raise InputError(f"which secret? Give {option} NAME")
    from tgiops.core.record import SECRET_NAME_RE

    if SECRET_NAME_RE.fullmatch(value) or SECRET_ARN_RE.fullmatch(value):
        return value
    raise InputError(
        f"{option} {value!r}: not a Secrets Manager name (1-512 characters of letters, digits "
        "and /_+=.@-) or secret ARN"
    )


def ssh_template(args: argparse.Namespace):  # -> SSHTarget
    from tgiops.edges.ssh import SSHTarget
    from tgiops.edges.targets import ssh_config_path

    identity = args.identity
    if identity is not None:  # checked here: a missing key is not sshd's refusal
        path = os.path.expanduser(identity)
        if os.path.isdir(path):
            raise InputError(f"--identity {identity}: is a directory; give a private key file")
        if not os.path.isfile(path):
            raise InputError(f"--identity {identity}: no such file")
        if not os.access(path, os.R_OK):
            raise InputError(f"--identity {identity}: not readable by this user")
    if args.user is not None and (not args.user or any(c.isspace() for c in args.user)):
        raise InputError(f"--user {args.user!r}: give a user name")
    return SSHTarget(
        destination="",
        ssh_config_path=ssh_config_path(args.ssh_config),
        user=args.user,
        identity=identity,
        accept_new_host_key=args.accept_new_host_key,
        connect_timeout_s=args.connect_timeout,
    )


def fleet_targets(args: argparse.Namespace, *, allow_all: bool):
    """(targets, units recorded per destination, where they came from) for status/logs/undeploy.

    With no target the hosts of past deploys come from the local record (tgiops.edges.state).
    """
    from tgiops.edges import state
    from tgiops.edges.targets import TargetSpec, resolve_targets

    spec = TargetSpec(
        hosts=args.host,
        instance_ids=args.instance,
        name_tag=args.name_tag,
        asg_name=args.asg,
        managed=bool(allow_all and getattr(args, "all", False)),
    )
    template = ssh_template(args)
    if not spec.empty:
        finder = aws_from(args).find_instances if spec.uses_aws else None
        return resolve_targets(spec, template, finder), {}, "the command line"
    path = state.state_file()
    records = state.load_deployments(path)
    if not records:
        raise InputError(
            f"which hosts? No target given and no deploys recorded in {path}: give --host DEST, "
            "--instance ID, --name TAG, --asg NAME" + (" or --all" if allow_all else "")
        )
    from tgiops.commands import fleet
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    instances = fleet.recorded_instances(
        records,
        region=args.region,
        aws_for=lambda region: Aws(AwsSettings(region=region, profile=args.profile)),
    )
    targets, known = fleet.recorded_targets(records, template, instances)
    return targets, known, str(path)


def text_width() -> int:
    """Columns for plain output: $COLUMNS, else the terminal's, else 80 (a pipe, a file)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def add_spot_unit_args(parser: argparse.ArgumentParser) -> None:
    unit = parser.add_argument_group("the unit (as for deploy)")
    unit.add_argument("--unit", metavar="NAME", help="systemd unit name (default tgiops-ALIAS)")
    unit.add_argument("--port", type=int, default=8080, help="host port (default 8080)")
    unit.add_argument("--public", action="store_true", help="bind all addresses")
    unit.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="model cache on the instance, mounted as /data (default /var/lib/tgiops/data)",
    )
    unit.add_argument("--gpu-devices", metavar="0,1", help="only these GPU indices")
    add_restore_secret_args(unit)


def add_restore_secret_args(parser: Any) -> None:
    """The secrets a restored unit reads: the operator's to name, never a record's."""
    parser.add_argument("--secret-name", default=DEFAULT_TOKEN_SECRET, help="the token's secret")
    parser.add_argument("--no-token", action="store_true", help="no token (ungated models)")
    parser.add_argument("--api-key-secret", metavar="NAME", help="secret with TGI's --api-key")


def require_root(why: str) -> None:
    import os

    if os.geteuid() != 0:
        raise InputError(f"run this as root: {why} (on the instance: sudo tgiops ...)")


def resolve_imds_endpoint(explicit: str | None) -> str | None:
    """--imds-endpoint, else $AWS_EC2_METADATA_SERVICE_ENDPOINT, checked to be an http(s) URL
    (urllib would raise a bare ValueError at the first request)."""
    from urllib.parse import urlsplit

    from tgiops.edges.imds import ENDPOINT_ENV_VAR

    value = explicit or os.environ.get(ENDPOINT_ENV_VAR)
    if not value:
        return None
    origin = "--imds-endpoint" if explicit else f"${ENDPOINT_ENV_VAR}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise InputError(f"{origin} {value!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"{origin} {value!r}: give an http:// URL, e.g. http://169.254.169.254 (the default)"
        )
    return value


def tgi_unit_template() -> str:
    from tgiops.edges import resources

    return (resources.shipped_path("unit_templates") / "tgi.service.j2").read_text()


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but bad input raises InputError so every error leaves through one door, and a
    mistyped choice (a verb, a --dtype) gets a "did you mean"."""

    def error(self, message: str) -> Any:
        # main prints "tgiops: error: "; the prog is named in the hint, not repeated in front.
        raise InputError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse says "unrecognized"; say which option was probably meant
            verb = self._verb_parser(parsed)
            known = [
                o for a in verb._actions for o in a.option_strings if a.help != argparse.SUPPRESS
            ]
            hints = []
            for word in extras:
                option = word.partition("=")[0]
                close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
                if option.startswith("--") and close and close[0] != option:
                    hints.append(f"{option}: did you mean {close[0]}?")
                elif option in known:  # a real option, after `--`: taken as a plain word
                    hints.append(f"{option} comes after `--`, which ends the options")
            message = "unrecognized arguments: " + " ".join(extras)
            verb.error(message + "".join(f"; {h}" for h in hints))
        return parsed

    def _verb_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The (sub)parser of the verb that was parsed: its options are the ones to suggest."""
        parser: argparse.ArgumentParser = self
        for dest in ("command", "secret_command"):
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            name = getattr(parsed, dest, None)
            if not subs or name not in subs[0].choices:
                break
            parser = subs[0].choices[name]
        return parser

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse drops a lone "--" from `--opt=--` and stores [] instead of a string.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            raise argparse.ArgumentError(action, "expected one value, got '--'")
        return super()._get_values(action, arg_strings)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = [str(c) for c in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise argparse.ArgumentError(
            action,
            f"invalid choice: {value!r} (choose from {', '.join(map(repr, choices))}){hint}",
        )
