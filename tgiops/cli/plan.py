"""`tgiops plan` and `tgiops models`: the parsers and what they print."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tgiops.cli.args import (
    CATALOG_HELP,
    add_hardware_args,
    add_json_arg,
    add_model_args,
    add_plan_overrides,
    add_recommend_args,
    engine_from,
    overrides_from,
    resolve_inventory,
    resolve_model,
)


def cmd_plan(args: argparse.Namespace) -> int:
    from tgiops.cli import output, recommend
    from tgiops.core import hardware, recovery
    from tgiops.core.catalog import quantized_siblings
    from tgiops.core.engines.tgi import TgiEngine
    from tgiops.core.plan import plan
    from tgiops.edges import resources

    model = resolve_model(args)
    chosen = engine_from(args)
    if recommend.no_hardware_given(args):  # which instance type? (issue 14 §4)
        return recommend.run(args, model, chosen, overrides_from(args, chosen.name))
    recommend.refuse_filters_with_hardware(args)
    inventory = resolve_inventory(args)
    recovery_estimate = recovery.estimate(
        model,
        hardware.find_instance_type(inventory.instance_type) if inventory.instance_type else None,
        throughput_mib_s=getattr(args, "data_volume_throughput", None),
        target_s=getattr(args, "recovery_target_s", None),
    )
    if chosen.name == "vllm":
        return _plan_vllm(args, model, inventory, chosen.version_text, recovery_estimate)
    engine = TgiEngine.release(chosen.version_text)
    result = plan(
        model,
        inventory,
        engine,
        overrides_from(args),
        instance_types=hardware.all_instance_types(),
        quantized_siblings=quantized_siblings(resources.load_catalog(args.catalog), model),
    )
    if args.json:
        from tgiops.core.plan import plan_as_dict

        payload = plan_as_dict(result)
        payload["recovery"] = output.recovery_as_dict(recovery_estimate)
        print(json.dumps(payload, indent=2))
    else:
        print(output.plan_as_text(result) + output.recovery_as_text(recovery_estimate))
    return 0 if result.fits else 1


def _plan_vllm(
    args: argparse.Namespace, model: Any, inventory: Any, version: str, recovery_estimate: Any
) -> int:
    from tgiops.cli import output
    from tgiops.core.engines import vllm

    result = vllm.plan_vllm(model, inventory, overrides_from(args, "vllm"), version=version)
    if args.json:
        payload = vllm.plan_as_dict(result)
        payload["recovery"] = output.recovery_as_dict(recovery_estimate)
        print(json.dumps(payload, indent=2))
    else:
        print(vllm.plan_as_text(result) + output.recovery_as_text(recovery_estimate))
    return 0 if result.fits else 1


def cmd_models(args: argparse.Namespace) -> int:
    from tgiops.cli import output
    from tgiops.edges import resources

    rows = output.models_as_rows(resources.load_catalog(args.catalog).values())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(output.models_as_text(rows))
    return 0


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="plan TGI's configuration for a model on some hardware",
        description="Decide TGI's configuration for a model on some GPUs: shards, quantization, "
        "dtype, attention path and token limits, each with its reason; when the model does not "
        "fit, say why and offer alternatives. Touches no host and no AWS. Exit 0 fits, 1 does "
        "not fit, 2 bad input.",
    )
    add_model_args(p)
    add_hardware_args(p)
    add_plan_overrides(p)
    add_json_arg(p)
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
    add_recommend_args(p)
    p.set_defaults(func=cmd_plan)


def add_models_parser(sub: Any) -> None:
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
    add_json_arg(m)
    m.set_defaults(func=cmd_models)
