"""The command line: parse, call one function, render its result (human or --json).

Only ``main`` catches broadly: every failure leaves through it as one ``tgiops: error:`` line
on stderr (and, with ``--json``, as one error object on stdout; ``error_as_dict``) with the
exit code of the rule in ``tgiops.errors``: 0 done, 1 ran and failed (or a check's answer is
"no"), 2 refused before changing anything. Heavy libraries are imported by the verbs that
need them, so `tgiops --help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from tgiops import __version__
from tgiops.errors import DoesNotFitError, InputError, TgiopsError

log = logging.getLogger("tgiops")


class _ArgumentParser(argparse.ArgumentParser):
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
                if option.startswith("--") and close:
                    hints.append(f"{option}: did you mean {close[0]}?")
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


def _add_hardware_args(parser: argparse.ArgumentParser) -> None:
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


def _add_json_arg(parser: argparse.ArgumentParser, text: str = JSON_HELP) -> None:
    parser.add_argument("--json", action="store_true", help=text)


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
        help=CATALOG_HELP,
    )


def _add_plan_overrides(parser: argparse.ArgumentParser) -> None:
    ov = parser.add_argument_group("overrides (checked, not trusted)")
    ov.add_argument("--tgi-version", default=None, metavar="V", help="TGI release (default 3.3.7)")
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


def _add_recommend_args(parser: argparse.ArgumentParser) -> None:
    r = parser.add_argument_group(
        "without hardware flags: every instance type of the table, cheapest that fits first"
    )
    r.add_argument("--max-usd-per-hour", type=float, metavar="USD", help="price cap per hour")
    r.add_argument("--spot", action="store_true", help="rank and cap by the current spot price")
    r.add_argument("--min-context", type=int, metavar="N", help="tokens one request needs")
    _add_aws_args(parser)


def _add_aws_args(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("AWS (boto3's standard chain; AWS_ENDPOINT_URL honoured)")
    aws.add_argument(
        "--region", metavar="REGION", help="AWS region (default: $AWS_REGION or the profile's)"
    )
    aws.add_argument(
        "--profile", metavar="NAME", help="AWS profile of ~/.aws/config (default: $AWS_PROFILE)"
    )


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
    _add_ssh_args(parser)
    _add_aws_args(parser)


def _add_ssh_args(
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

    p = sub.add_parser(
        "plan",
        help="plan TGI's configuration for a model on some hardware",
        description="Decide TGI's configuration for a model on some GPUs: shards, quantization, "
        "dtype, attention path and token limits, each with its reason; when the model does not "
        "fit, say why and offer alternatives. Touches no host and no AWS. Exit 0 fits, 1 does "
        "not fit, 2 bad input.",
    )
    _add_model_args(p)
    _add_hardware_args(p)
    _add_plan_overrides(p)
    _add_json_arg(p)
    rec = p.add_argument_group("recovery (time to read the weights on a replacement instance)")
    rec.add_argument(
        "--data-volume-throughput",
        type=int,
        metavar="MIB_S",
        help="the gp3 data volume's provisioned throughput, 125-2000 MiB/s",
    )
    rec.add_argument(
        "--recovery-target-s",
        type=float,
        metavar="S",
        help="seconds a replacement may spend reading the weights: recommends a throughput",
    )
    _add_recommend_args(p)
    p.set_defaults(func=cmd_plan)

    d = sub.add_parser(
        "deploy",
        help="plan, install and start TGI on a host; wait until healthy",
        description="Connect over SSH, probe the GPUs, plan, install TGI as a systemd unit with "
        "the Hugging Face token from Secrets Manager, start it and wait until it serves; on "
        "failure restore the previous unit. Exit 0 healthy, 1 failed (rolled back), 2 refused "
        "before any change (bad input, or the plan does not fit the host).",
    )
    _add_model_args(d)
    _add_target_args(d)
    _add_plan_overrides(d)
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
        default=DEFAULT_SECRET,
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
    _add_json_arg(d)
    d.set_defaults(func=cmd_deploy)
    _add_status_parsers(sub)
    _add_spot_parsers(sub)

    _add_secret_parsers(sub)

    m = sub.add_parser(
        "models",
        help="list the model catalog",
        description="The models tgiops knows by alias: the built-in catalog (models.yaml) "
        "overlaid by yours.",
        epilog="GATED: yes = the repository asks you to accept its licence, so the deploy "
        "needs a Hugging Face token with access (`tgiops secret set`); no = public; - = not "
        "verified (deploy with a token to be safe). CONTEXT: the model's context length "
        "(max_position_embeddings), in tokens.",
    )
    m.add_argument("--catalog", action="append", default=[], metavar="FILE", help=CATALOG_HELP)
    _add_json_arg(m)
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    stdout = _WatchedStdout(sys.stdout)
    sys.stdout = stdout
    try:
        return _main(parser, argv, stdout)
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.wrapped


def _main(parser: argparse.ArgumentParser, argv: list[str], stdout: _WatchedStdout) -> int:
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            raise InputError("which command? See the list above")
        _check_common(args)
        code = int(args.func(args))
        sys.stdout.flush()  # a full disk or a closed pipe shows here, inside the one door
        return code
    except KeyboardInterrupt:
        return _fail(argv, args, "Interrupted", "interrupted", 130)
    except TgiopsError as exc:
        return _fail(argv, args, type(exc).__name__, str(exc), exc.exit_code, exc)
    except OSError as exc:
        if stdout.failure is None:
            return _internal_error(argv, args, exc)
        # The output could not be written (`> /dev/full`, a closed pipe): nothing more to say
        # on stdout; point it at /dev/null so the interpreter's final flush stays quiet too.
        _silence_stdout()
        if exc.errno != errno.EPIPE:
            print(f"tgiops: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the last resort: a bug, never a traceback for the user
        return _internal_error(argv, args, exc)


# botocore's own check of a region name (botocore.utils.validate_region_name).
_REGION_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


def _check_common(args: argparse.Namespace) -> None:
    """Options many verbs share, checked once before any verb runs (exit 2)."""
    import math

    region = getattr(args, "region", None)
    if region is not None and not _REGION_RE.fullmatch(region):
        raise InputError(f"--region {region!r}: not an AWS region name (e.g. us-east-1)")
    timeout = getattr(args, "connect_timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise InputError(f"--connect-timeout {timeout:g}: give seconds, > 0 and <= 3600")
    for option in ("timeout", "interval"):
        value = getattr(args, option, None)
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{option} {value:g}: give seconds > 0")


def wants_json(argv: Sequence[str], args: argparse.Namespace | None) -> bool:
    """--json asked for: from the parsed arguments, else (argparse refused them) from argv."""
    if args is not None:
        return bool(getattr(args, "json", False))
    for word in argv:
        if word == "--":
            break
        if len(word) > 3 and "--json".startswith(word):  # argparse accepts --js, --jso
            return True
    return False


def error_as_dict(kind: str, message: str, exit_code: int, exc: BaseException | None = None):
    """The one JSON shape of every verb's failure (README: "Errors as JSON")."""
    data: dict[str, Any] = {
        "ok": False,
        "exit_code": exit_code,
        "error": {"type": kind, "message": message},
    }
    plan = getattr(exc, "plan", None)
    if plan is not None:  # a plan that does not fit: what was planned, and the alternatives
        from tgiops import output

        data["plan"] = output.plan_as_dict(plan)
    return data


def _fail(
    argv: Sequence[str],
    args: argparse.Namespace | None,
    kind: str,
    message: str,
    code: int,
    exc: BaseException | None = None,
) -> int:
    print(f"tgiops: error: {message}", file=sys.stderr)
    if wants_json(argv, args):
        try:
            # One line: also a valid last line of the JSON-lines outputs (--watch, logs -f).
            print(json.dumps(error_as_dict(kind, message, code, exc)), flush=True)
        except OSError:
            _silence_stdout()
    return code


def _internal_error(argv: Sequence[str], args: argparse.Namespace | None, exc: Exception) -> int:
    """A failure no edge translated: a bug. One line (redacted); the traceback only at -vvv."""
    from tgiops.logs import LogRedactor

    log.debug("unexpected error", exc_info=exc)
    text = LogRedactor()(f"{type(exc).__name__}: {exc}")
    message = f"unexpected {text} (a bug in tgiops: please report it, with the output of -vvv)"
    return _fail(argv, args, "InternalError", message, 1)


class _WatchedStdout:
    """sys.stdout, remembering a failed write: `tgiops models > /dev/full` is told apart from
    an OSError of the verb itself (both surface as OSError)."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return int(self.wrapped.write(text))
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            self.failure = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _silence_stdout() -> None:
    sys.stdout = getattr(sys.stdout, "wrapped", sys.stdout)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests' StringIO)
        pass


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbosity < 3:  # -vvv shows the libraries' own debug lines too
        # paramiko logs a refused tunnel (TGI still loading) at ERROR: that is expected here.
        for noisy in ("paramiko", "botocore", "boto3", "urllib3", "docker", "invoke", "fabric"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


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
    if args.model_id:
        raise InputError(
            f"--model-id {args.model_id} goes with --model-config; the alias {args.model!r} "
            "already names its repository. Give the alias, or --model-config FILE "
            f"--model-id {args.model_id}, not both"
        )
    return find_model(resources.load_catalog(args.catalog), args.model)


def resolve_inventory(args: argparse.Namespace):  # -> GpuInventory
    from tgiops import hardware

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
        flash_attention={"auto": None, "on": True, "off": False}[args.flash_attention],
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from tgiops import hardware, output, recommend_cmd, recovery, resources
    from tgiops.catalog import quantized_siblings
    from tgiops.engine import DEFAULT_TGI_VERSION, Engine
    from tgiops.plan import plan

    model = resolve_model(args)
    if recommend_cmd.no_hardware_given(args):  # which instance type? (issue 14 §4)
        return recommend_cmd.run(args, model, overrides_from(args))
    recommend_cmd.refuse_filters_with_hardware(args)
    inventory = resolve_inventory(args)
    engine = Engine.tgi(args.tgi_version or DEFAULT_TGI_VERSION)
    recovery_estimate = recovery.estimate(
        model,
        hardware.find_instance_type(inventory.instance_type) if inventory.instance_type else None,
        throughput_mib_s=getattr(args, "data_volume_throughput", None),
        target_s=getattr(args, "recovery_target_s", None),
    )
    result = plan(
        model,
        inventory,
        engine,
        overrides_from(args),
        instance_types=hardware.all_instance_types(),
        quantized_siblings=quantized_siblings(resources.load_catalog(args.catalog), model),
    )
    if args.json:
        payload = output.plan_as_dict(result)
        payload["recovery"] = output.recovery_as_dict(recovery_estimate)
        print(json.dumps(payload, indent=2))
    else:
        print(output.plan_as_text(result) + output.recovery_as_text(recovery_estimate))
    return 0 if result.fits else 1


def cmd_models(args: argparse.Namespace) -> int:
    from tgiops import output, resources

    rows = output.models_as_rows(resources.load_catalog(args.catalog).values())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(output.models_as_text(rows))
    return 0


# --- deploy ---------------------------------------------------------------------------------


def _aws_from(args: argparse.Namespace):  # -> tgiops.aws.Aws
    from tgiops.aws import Aws, AwsSettings

    return Aws(AwsSettings(region=args.region, profile=args.profile))


def _targets_from(args: argparse.Namespace):  # -> list[Target]
    from tgiops.targets import TargetSpec, resolve_targets

    spec = TargetSpec(
        hosts=args.host, instance_ids=args.instance, name_tag=args.name_tag, asg_name=args.asg
    )
    if spec.empty:
        raise InputError("which host? Give --host DEST, --instance ID, --name TAG or --asg NAME")
    finder = _aws_from(args).find_instances if spec.uses_aws else None
    return resolve_targets(spec, _ssh_template(args), finder)


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


def deploy_request_from(args: argparse.Namespace, **extra: Any):  # -> DeployRequest
    """The deploy request the shared model/override/unit options describe, validated (exit 2)
    before any host or AWS is touched."""
    from tgiops.deploy import DeployRequest
    from tgiops.engine import DEFAULT_TGI_VERSION, Engine

    request = DeployRequest(
        model=resolve_model(args),
        engine=Engine.tgi(args.tgi_version or DEFAULT_TGI_VERSION),
        overrides=overrides_from(args),
        unit_name=args.unit,
        port=args.port,
        public=args.public,
        data_dir=args.data_dir,
        gpu_devices=_gpu_devices(args.gpu_devices),
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


def cmd_deploy(args: argparse.Namespace) -> int:
    from tgiops import deploy, fleet, output, progress
    from tgiops.ssh import RemoteHost

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
    targets = _targets_from(args)
    template = _tgi_unit_template()
    needs_aws = bool(request.token_secret or request.api_key_secret) or any(
        t.instance is not None for t in targets
    )
    aws = _aws_from(args) if needs_aws else None
    many = len(targets) > 1

    def run_one(target: Any) -> deploy.DeployResult:
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
        outcomes = [deploy.HostOutcome(targets[0].label, run_one(targets[0]))]
    else:
        outcomes = deploy.deploy_fleet(
            targets, run_one, max_parallel=args.parallel, label=lambda t: t.label
        )
    for target, outcome in zip(targets, outcomes, strict=True):
        if outcome.result is not None:
            r = outcome.result
            fleet.remember_deploy(target, deploy.resolved_request(request, r), r, aws=aws,
                                  port=r.port, region=args.region)  # fmt: skip
    results = [o.result for o in outcomes if o.result is not None]
    if args.json:
        if many:
            print(json.dumps(deploy.fleet_as_dict(outcomes, output.deploy_as_dict), indent=2))
        else:
            print(json.dumps(output.deploy_as_dict(results[0]), indent=2))
    else:
        for o in outcomes:
            print(output.deploy_as_text(o.result) if o.result else f"{o.label}: {o.error}")
        if many:
            print(deploy.fleet_summary_text(outcomes))
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
    return deploy.fleet_exit_code(outcomes)


DEFAULT_SECRET = "tgiops/hf-token"
# tgiops.render.DEFAULT_DATA_DIR, spelled here because importing render pulls the planner and
# the catalog into every start-up (`--help` too); tests/unit/test_cli_help.py checks they agree.
DEFAULT_DATA_DIR = "/var/lib/tgiops/data"
# Secrets Manager's names: tgiops.record.SECRET_NAME_RE. An ARN is accepted wherever an
# existing secret is named (SecretId).
SECRET_ARN_RE = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
)


class _DeprecatedAlias(argparse.Action):
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


def _add_secret_name_arg(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--secret-name",
        default=default,
        metavar="NAME",
        help="the secret's name or ARN" + (f" (default {default})" if default else " (required)"),
    )
    parser.add_argument(  # before 0.x this option was --name, which elsewhere is an EC2 tag
        "--name",
        dest="secret_name",
        action=_DeprecatedAlias,
        replacement="--secret-name",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def _add_secret_parsers(sub: Any) -> None:
    sec = sub.add_parser(
        "secret",
        help="store, check, list or delete the Hugging Face token in Secrets Manager",
        description="The Hugging Face token lives in AWS Secrets Manager, never on disk or in "
        "argv: deploys read it into a root-only env file on the host. Secrets created by "
        "`secret set` carry the tag tgiops:managed=true; only those are listed and deleted.",
    )
    sec_sub = sec.add_subparsers(
        dest="secret_command", metavar="ACTION", parser_class=_ArgumentParser, required=True
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
            _add_secret_name_arg(sp, None if action == "delete" else DEFAULT_SECRET)
        if action == "delete":
            sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        _add_aws_args(sp)
        _add_json_arg(sp)
        sp.set_defaults(func=cmd_secret)


def secret_name(value: str | None, option: str = "--secret-name") -> str:
    """A Secrets Manager name (or ARN) checked against AWS's rules before any call (exit 2)."""
    if not value:
        raise InputError(f"which secret? Give {option} NAME")
    from tgiops.record import SECRET_NAME_RE

    if SECRET_NAME_RE.fullmatch(value) or SECRET_ARN_RE.fullmatch(value):
        return value
    raise InputError(
        f"{option} {value!r}: not a Secrets Manager name (1-512 characters of letters, digits "
        "and /_+=.@-) or secret ARN"
    )


def cmd_secret(args: argparse.Namespace) -> int:
    from tgiops.record import MANAGED_TAG

    action = args.secret_command
    if action == "list":
        return _secret_list(args, MANAGED_TAG)
    name = secret_name(args.secret_name)
    if action == "delete":
        return _secret_delete(args, name, MANAGED_TAG)
    if action == "check":
        aws = _aws_from(args)
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
    from tgiops.logs import HF_TOKEN_RE

    if not HF_TOKEN_RE.fullmatch(token):
        warnings.append(
            "the value does not look like a Hugging Face user access token (hf_ and at least 16 "
            "letters or digits); stored anyway"
        )
    aws = _aws_from(args)
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
    from tgiops import output

    secrets = _aws_from(args).list_secrets(tag)
    rows = [output.secret_as_dict(i) for i in secrets]
    if args.json:
        print(json.dumps({"secrets": rows}, indent=2))
    elif not rows:
        print(f"no secret tagged {tag} (create one with `tgiops secret set`)")
    else:
        print(output.rows_as_table(rows, ["name", "created", "changed", "deletion_date"]))
    return 0


def _secret_delete(args: argparse.Namespace, name: str, tag: str) -> int:
    aws = _aws_from(args)
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
    from tgiops.render import render_env_file

    render_env_file({"HF_TOKEN": token})  # the same check the env file will make, early
    return token


# --- status, logs, undeploy (issue 5) -------------------------------------------------------


def _add_status_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="verdict per tgiops unit on a host or a fleet (default: the hosts of past deploys)",
        description="One SSH round trip per host gathers every tgiops unit's systemd state, "
        "container, GPUs and TGI's /health, /info and /metrics; EC2 facts and prices come from "
        "AWS. Each unit gets a verdict (healthy, loading, degraded, failed, not-deployed, "
        "unreachable) and a reason. Exit 0 only when every unit is healthy.",
    )
    _add_target_args(s)
    s.add_argument(
        "--all",
        action="store_true",
        help="every running EC2 instance tagged tgiops:managed=true",
    )
    s.add_argument(
        "--unit", action="append", default=[], metavar="NAME", help="only this unit; repeatable"
    )
    _add_json_arg(s, "the documented JSON object on stdout (README: Status JSON)")
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
    _add_target_args(lg)
    lg.add_argument("--unit", metavar="NAME", help="the unit (default: the only one on the host)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="last N lines (50)")
    lg.add_argument(
        "--since",
        metavar="TIME",
        help="only lines since TIME, in journalctl's syntax: '2026-12-04 10:00', "
        "'-1h', 'today', '10 min ago'",
    )
    _add_json_arg(
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
    _add_target_args(u)
    u.add_argument("--unit", metavar="NAME", help="the unit (default: the only one on the host)")
    u.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    u.add_argument(
        "--purge-cache",
        action="store_true",
        help="also delete this model's cache (unless another unit uses it)",
    )
    _add_json_arg(u)
    u.set_defaults(func=cmd_undeploy)


def _ssh_template(args: argparse.Namespace):  # -> SSHTarget
    from tgiops.ssh import SSHTarget
    from tgiops.targets import ssh_config_path

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


def _fleet_targets(args: argparse.Namespace, *, allow_all: bool):
    """(targets, units recorded per destination, where they came from) for status/logs/undeploy.

    With no target the hosts of past deploys come from the local record (tgiops.state).
    """
    from tgiops import state
    from tgiops.targets import TargetSpec, resolve_targets

    spec = TargetSpec(
        hosts=args.host,
        instance_ids=args.instance,
        name_tag=args.name_tag,
        asg_name=args.asg,
        managed=bool(allow_all and getattr(args, "all", False)),
    )
    template = _ssh_template(args)
    if not spec.empty:
        finder = _aws_from(args).find_instances if spec.uses_aws else None
        return resolve_targets(spec, template, finder), {}, "the command line"
    path = state.state_file()
    records = state.load_deployments(path)
    if not records:
        raise InputError(
            f"which hosts? No target given and no deploys recorded in {path}: give --host DEST, "
            "--instance ID, --name TAG, --asg NAME" + (" or --all" if allow_all else "")
        )
    from tgiops import fleet
    from tgiops.aws import Aws, AwsSettings

    instances = fleet.recorded_instances(
        records,
        region=args.region,
        aws_for=lambda region: Aws(AwsSettings(region=region, profile=args.profile)),
    )
    targets, known = fleet.recorded_targets(records, template, instances)
    return targets, known, str(path)


def _status_aws(args: argparse.Namespace, targets: list):  # -> Aws | None
    if not any(t.instance is not None for t in targets):
        return None
    region = args.region
    if region is None:
        # Recorded deploys: the instances were found in the record's region.
        from tgiops import state

        regions = {r.region for r in state.load_deployments() if r.region}
        region = next(iter(regions)) if len(regions) == 1 else None
    from tgiops.aws import Aws, AwsSettings

    return Aws(AwsSettings(region=region, profile=args.profile))


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from tgiops import output, status

    if args.watch is not None and args.watch <= 0:
        raise InputError(f"--watch {args.watch:g}: give a refresh interval in seconds > 0")
    if args.parallel < 1:
        raise InputError(f"--parallel {args.parallel}: give at least 1")
    from tgiops.render import UNIT_NAME_RE

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
            targets, known, source = _fleet_targets(args, allow_all=True)
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
                print(output.status_as_text(report, _text_width(), wide=wide), flush=True)
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


def _text_width() -> int:
    """Columns for plain output: $COLUMNS, else the terminal's, else 80 (a pipe, a file)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def cmd_logs(args: argparse.Namespace) -> int:
    from tgiops import logs
    from tgiops.ssh import RemoteHost

    request = logs.LogsRequest(
        unit=args.unit, lines=args.lines, follow=args.follow, since=args.since
    )
    logs.journal_command(args.unit or "unit", lines=args.lines, follow=False, since=args.since)
    targets, _, _ = _fleet_targets(args, allow_all=False)
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
    from tgiops import fleet, output, undeploy
    from tgiops.render import UNIT_NAME_RE
    from tgiops.ssh import RemoteHost

    if args.unit and not UNIT_NAME_RE.fullmatch(args.unit.removesuffix(".service")):
        raise InputError(f"--unit {args.unit!r} is not a tgiops unit name (e.g. tgiops-phi-3-mini)")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if not args.yes and not interactive:
        raise InputError("undeploy removes a unit: pass --yes to confirm (stdin is no terminal)")
    if args.host or args.instance or args.name_tag or args.asg:
        targets, _, _ = _fleet_targets(args, allow_all=False)
    else:
        targets, _, source = _fleet_targets(args, allow_all=False)
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
                    fleet.forget_deploy(target, gone, aws=lambda: _aws_from(args))
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
        fleet.forget_deploy(target, result, aws=lambda: _aws_from(args))
        results.append(result)
    if args.json:
        payload = [output.undeploy_as_dict(r, already_absent=id(r) in absent) for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for r in results:
            print(output.undeploy_as_text(r, already_absent=id(r) in absent))
    return 0 if all(r.removed for r in results) else 1


def _undeploy_plan(host: Any, requested: str | None):  # -> UndeployPlan | None
    """undeploy.inspect, except that a unit that is not there is "already absent" (None): a
    second undeploy has nothing to undo. A unit file of that name that tgiops did not write is
    still refused (exit 2): tgiops never removes what it does not own."""
    import shlex

    from tgiops import undeploy
    from tgiops.logs import parse_unit_list
    from tgiops.probe import split_sections
    from tgiops.render import UNIT_DIR, UNIT_NAME_RE

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


# --- spot relaunch: userdata, bootstrap, reconcile, watch-interruption (issue 6) ------------


def _add_spot_parsers(sub: Any) -> None:
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
    _add_model_args(ud)
    _add_plan_overrides(ud)
    _add_spot_unit_args(ud)
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
        default="/etc/tgiops/bootstrap.json",
        metavar="FILE",
        help="bootstrap config written by the user data (default /etc/tgiops/bootstrap.json)",
    )
    bs.add_argument("--data-dir", metavar="DIR", help="where the records are (data volume)")
    bs.add_argument("--eip", metavar="ALLOC_ID", help="Elastic IP to point here once healthy")
    bs.add_argument("--instance-id", metavar="ID", help="this instance (default: from IMDS)")
    bs.add_argument("--imds-endpoint", metavar="URL", help=IMDS_HELP)
    bs.add_argument("--timeout", type=float, metavar="S", help="health wait per unit")
    bs.add_argument("--catalog", action="append", default=[], metavar="FILE", help=CATALOG_HELP)
    _add_aws_args(bs)
    _add_json_arg(bs)
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
    # What only the operator decides; records and tags never do (tgiops.record, "Trust").
    _add_restore_secret_args(rc)
    rc.add_argument("--public", action="store_true", help="bind all addresses")
    rc.add_argument("--timeout", type=float, metavar="S", help="health wait per unit")
    rc.add_argument(
        "--address",
        choices=["public", "private"],
        default="public",
        help="how to reach instances without an ssh_config entry (default public)",
    )
    rc.add_argument("--catalog", action="append", default=[], metavar="FILE", help=CATALOG_HELP)
    _add_ssh_args(rc, "record unknown host keys (a replacement instance has new ones)")
    _add_aws_args(rc)
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
    _add_json_arg(wi)
    wi.set_defaults(func=cmd_watch_interruption)


def _add_spot_unit_args(parser: argparse.ArgumentParser) -> None:
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
    _add_restore_secret_args(unit)


def _add_restore_secret_args(parser: Any) -> None:
    """The secrets a restored unit reads: the operator's to name, never a record's."""
    parser.add_argument("--secret-name", default=DEFAULT_SECRET, help="the token's secret")
    parser.add_argument("--no-token", action="store_true", help="no token (ungated models)")
    parser.add_argument("--api-key-secret", metavar="NAME", help="secret with TGI's --api-key")


def _require_root(why: str) -> None:
    import os

    if os.geteuid() != 0:
        raise InputError(f"run this as root: {why} (on the instance: sudo tgiops ...)")


def _imds_endpoint(explicit: str | None) -> str | None:
    """--imds-endpoint, else $AWS_EC2_METADATA_SERVICE_ENDPOINT, checked to be an http(s) URL
    (urllib would raise a bare ValueError at the first request)."""
    from urllib.parse import urlsplit

    from tgiops.imds import ENDPOINT_ENV_VAR

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


def _tgi_unit_template() -> str:
    from tgiops import resources

    return (resources.shipped_path("unit_templates") / "tgi.service.j2").read_text()


USERDATA_LIMIT_BYTES = 16384  # EC2: "User data is limited to 16 KB, in raw form"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def cmd_userdata(args: argparse.Namespace) -> int:
    from tgiops import bootstrap, hardware, resources
    from tgiops.plan import plan

    request = deploy_request_from(args)
    if args.instance_type:
        checked = plan(
            request.model,
            hardware.inventory_for_instance_type(args.instance_type),
            request.engine,
            request.overrides,
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
    options = bootstrap.UserdataOptions(
        record=rec,
        elastic_ip=args.eip,
        region=args.region,
        timeout_s=args.timeout,
        pip_spec=args.pip_spec,
        pip_requirements=_read_text(args.pip_requirements) if args.pip_requirements else None,
        preinstalled=args.preinstalled,
        asg_name=args.asg,
        efs_id=args.efs,
        data_device=args.data_device,
        env=env,
        watch_interruption=not args.no_watch_interruption,
        on_rebalance=args.on_rebalance,
    )
    policy = bootstrap.iam_policy(
        bootstrap.secret_names(rec), args.eip, region=args.region, asg_name=args.asg
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
    from tgiops import bootstrap, output, progress, resources
    from tgiops.aws import Aws, AwsSettings
    from tgiops.imds import Imds
    from tgiops.localhost import LocalHost

    if args.eip:
        bootstrap.check_elastic_ip(args.eip)
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout:g}: give seconds > 0")
    imds_endpoint = _imds_endpoint(args.imds_endpoint)
    _require_root("bootstrap installs and starts a systemd unit")
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
            template_text=_tgi_unit_template(),
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

    from tgiops import output, progress, reconcile, resources

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
    aws = _aws_from(args)
    template = _ssh_template(args)
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
                    template_text=_tgi_unit_template(),
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
    from tgiops import interruption
    from tgiops.errors import AWSError
    from tgiops.imds import Imds
    from tgiops.localhost import LocalHost

    options = interruption.WatchOptions(
        data_dir=args.data_dir,
        units=tuple(u.removesuffix(".service") for u in args.unit),
        interval_s=args.interval,
        on_rebalance=args.on_rebalance,
        once=args.once,
    )
    imds_endpoint = _imds_endpoint(args.imds_endpoint)
    _require_root("watch-interruption stops systemd units")
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


if __name__ == "__main__":
    sys.exit(main())
