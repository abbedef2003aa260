"""``tgiops plan MODEL`` with no hardware flags: the instance types that serve it, cheapest first.

The glue between the CLI, the AWS edge (``Aws.lowest_spot_prices``) and the pure ranking
(``tgiops.core.recommend``). The CLI's plan subcommand calls ``run`` when no hardware is given.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from tgiops.core.catalog import ModelSpec
from tgiops.core.errors import AWSError, InputError

if TYPE_CHECKING:
    from tgiops.core.engines import Engine


def no_hardware_given(args: argparse.Namespace) -> bool:
    """No --instance-type, --gpu, --gpus, --gpu-memory-gib or --compute-capability: rank."""
    flags = ("instance_type", "gpu", "gpus", "gpu_memory_gib", "compute_capability")
    return all(getattr(args, flag, None) is None for flag in flags)


def run(args: argparse.Namespace, model: ModelSpec, engine: Engine, overrides: Any) -> int:
    """Rank the table's instance types for ``model`` with ``engine``'s planner and
    ``overrides`` (that engine's kind); print them (text or --json).

    Exit 0 when at least one fits, 1 when none of the table fits the model (like ``plan``'s
    "does not fit"), 2 when the filters exclude every type that fits (bad input: change them).
    """
    from tgiops.core import hardware
    from tgiops.core import recommend as rc

    for flag, value in (
        ("--data-volume-throughput", getattr(args, "data_volume_throughput", None)),
        ("--recovery-target-s", getattr(args, "recovery_target_s", None)),
    ):
        if value is not None:
            raise InputError(
                f"{flag} goes with --instance-type (recovery time depends on the instance "
                "type's disks): pick one from this list, then `tgiops plan MODEL "
                f"--instance-type TYPE {flag} ...`"
            )
    filters = rc.Filters(
        region=getattr(args, "region", None) or hardware.PRICE_REGION,
        max_usd_per_hour=getattr(args, "max_usd_per_hour", None),
        spot=bool(getattr(args, "spot", False)),
        min_context=getattr(args, "min_context", None),
    )
    rc.check_filters(filters)  # before any AWS call
    types = hardware.all_instance_types()
    spot = _spot_prices(filters.region, getattr(args, "profile", None), [t.name for t in types])
    rec = rc.recommend(model, engine, types, filters, spot, overrides)
    if not rec.candidates:
        excluded_by_filters = filters.min_context is not None or any(
            r.why.startswith("--") for r in rec.rejected
        )
        if excluded_by_filters:
            raise InputError(rc.nothing_fits_message(rec))
    print(json.dumps(rc.as_dict(rec), indent=2) if args.json else rc.as_text(rec))
    return 0 if rec.candidates else 1


def refuse_filters_with_hardware(args: argparse.Namespace) -> None:
    """The ranking's filters mean nothing next to --instance-type / --gpu: refuse, don't ignore."""
    given = [
        flag
        for flag, value in (
            ("--max-usd-per-hour", getattr(args, "max_usd_per_hour", None)),
            ("--spot", getattr(args, "spot", False) or None),
            ("--min-context", getattr(args, "min_context", None)),
            ("--region", getattr(args, "region", None)),
            ("--profile", getattr(args, "profile", None)),
        )
        if value is not None
    ]
    if given:
        raise InputError(
            f"{', '.join(given)} rank the instance table and go with `tgiops plan MODEL` without "
            "--instance-type/--gpu; drop them, or drop the hardware flags to compare instance "
            "types (for one type's context use --max-total-tokens)"
        )


def _spot_prices(region: str, profile: str | None, names: list[str]):  # -> rc.SpotPrices
    from tgiops.core.recommend import SpotPrice, SpotPrices
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    aws = Aws(AwsSettings(region=region, profile=profile))
    try:
        if not aws.has_credentials():
            return SpotPrices(
                {},
                "spot prices unavailable: no AWS credentials configured (--profile, AWS_PROFILE, "
                "environment variables or an instance role let tgiops read EC2's spot prices)",
            )
        found = aws.lowest_spot_prices(names)
    except AWSError as exc:
        return SpotPrices({}, f"spot prices unavailable: {exc}")
    return SpotPrices({name: SpotPrice(price, zone) for name, (price, zone) in found.items()})
