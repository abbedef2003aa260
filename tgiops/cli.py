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

    def error(self, message: str) -> Any:  # type: ignore[override]
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


if __name__ == "__main__":
    sys.exit(main())
