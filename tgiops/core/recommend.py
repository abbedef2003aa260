"""Which EC2 instance type should serve this model? (pure: no I/O, no clock, no environment)

``tgiops plan MODEL`` without hardware flags plans the model on every instance type of
``hardware.INSTANCE_TYPES`` with the chosen engine's own planner, through the Engine seam
(``Engine.plan_on``: TGI's ``tgiops.core.plan.plan``, vLLM's ``plan_vllm``; so a candidate fits
exactly when ``plan --instance-type`` says it fits) and ranks the ones that fit, cheapest first.

Prices: on-demand from the built-in table (``hardware.PRICE_REGION`` on ``hardware.PRICE_DATE``,
tgiops/docs/gpus-and-instances.md); a region without a built-in table gets no on-demand price
rather than a guessed one. Spot prices come from the caller
(``tgiops.edges.aws.spot.SpotCalls.lowest_spot_prices`` reads EC2's ``DescribeSpotPriceHistory``):
the lowest current price over the region's zones and that zone, or none with the reason (no
credentials, the call failed, not offered).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tgiops.core.catalog import ModelSpec
from tgiops.core.engines import Engine, RankedPlan
from tgiops.core.errors import InputError, PlanInputError
from tgiops.core.hardware import PRICE_DATE, PRICE_REGION, InstanceType, inventory_for_instance_type


@dataclass(frozen=True)
class SpotPrice:
    usd_per_hour: float
    zone: str  # the availability zone with that (lowest) price


@dataclass(frozen=True)
class SpotPrices:
    """Current spot prices of one region, or why there are none (never guessed)."""

    by_instance_type: Mapping[str, SpotPrice]
    unavailable: str | None = None  # set when the lookup was not possible at all


NO_SPOT_PRICES = SpotPrices({}, "spot prices unavailable: no lookup was made")


@dataclass(frozen=True)
class Filters:
    region: str = PRICE_REGION
    max_usd_per_hour: float | None = None
    spot: bool = False  # rank (and cap) by the spot price instead of the on-demand one
    min_context: int | None = None  # prompt + answer tokens one request must be allowed


@dataclass(frozen=True)
class Candidate:
    instance_type: InstanceType
    plan: RankedPlan
    on_demand_usd_per_hour: float | None
    spot: SpotPrice | None
    price_notes: tuple[str, ...] = ()

    @property
    def concurrent_requests(self) -> int:
        """Requests of the full ``max_total_tokens`` the KV cache holds at once."""
        total = self.plan.max_total_tokens
        return self.plan.memory.kv_cache_tokens // total if total > 0 else 0

    @property
    def spot_usd_per_hour(self) -> float | None:
        return self.spot.usd_per_hour if self.spot else None


@dataclass(frozen=True)
class Rejected:
    instance_type: str
    why: str


@dataclass(frozen=True)
class Recommendation:
    model: ModelSpec
    engine: Engine
    filters: Filters
    price_date: str | None  # the on-demand table's date (None: no table for the region)
    spot_unavailable: str | None
    candidates: tuple[Candidate, ...]  # fitting and passing the filters, cheapest first
    rejected: tuple[Rejected, ...]


def check_filters(filters: Filters) -> None:
    """Bad filter values are refused naming the value and the fix (exit 2)."""
    cap = filters.max_usd_per_hour
    if cap is not None and not (cap > 0 and cap < float("inf")):  # also NaN
        raise InputError(
            f"--max-usd-per-hour {cap!r}: give the most you will pay per hour in USD, a number "
            "above 0 (e.g. --max-usd-per-hour 5)"
        )
    if filters.min_context is not None and filters.min_context < 2:
        raise InputError(
            f"--min-context {filters.min_context}: give the tokens one request needs (prompt + "
            "answer), at least 2 (e.g. --min-context 8192)"
        )


def recommend(
    model: ModelSpec,
    engine: Engine,
    instance_types: Iterable[InstanceType],
    filters: Filters,
    spot_prices: SpotPrices = NO_SPOT_PRICES,
    overrides: Any = None,
) -> Recommendation:
    """Plan ``model`` on each instance type with ``engine``'s planner and ``overrides`` (that
    engine's kind; None: nothing forced); rank the ones that fit and pass the filters."""
    check_filters(filters)
    engine.require_servable(model)  # one refusal naming the engine that can, not one per type
    overrides = overrides if overrides is not None else engine.default_overrides()
    if filters.min_context is not None:
        overrides = _with_min_context(model, engine, overrides, filters.min_context)
    on_demand_known = filters.region == PRICE_REGION
    plans: dict[tuple[str, int], RankedPlan | str] = {}  # one plan per (GPU, count): same inventory
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    for it in instance_types:
        key = (it.gpu, it.gpu_count)
        if key not in plans:
            plans[key] = _plan_or_refusal(model, it, engine, overrides)
        planned = plans[key]
        if isinstance(planned, str):
            rejected.append(Rejected(it.name, planned))
            continue
        if not planned.fits:
            rejected.append(Rejected(it.name, planned.problem or "does not fit"))
            continue
        planned = replace(  # type: ignore[type-var]  # both engines' plans are dataclasses
            planned, inventory=replace(planned.inventory, instance_type=it.name)
        )
        notes: list[str] = []
        on_demand = it.on_demand_usd_per_hour if on_demand_known else None
        if not on_demand_known:
            notes.append(
                f"on-demand price: the built-in table is {PRICE_REGION}'s ({PRICE_DATE}); none "
                f"for {filters.region}"
            )
        elif on_demand is None:
            notes.append(f"on-demand price: none in the built-in {PRICE_REGION} table")
        spot = spot_prices.by_instance_type.get(it.name)
        if spot is None:
            notes.append(
                spot_prices.unavailable
                or f"spot price: EC2 reports none for {it.name} in {filters.region}"
            )
        candidate = Candidate(it, planned, on_demand, spot, tuple(notes))
        why = _filtered_out(candidate, filters, spot_prices)
        if why:
            rejected.append(Rejected(it.name, why))
        else:
            candidates.append(candidate)
    candidates.sort(key=lambda c: _rank(c, filters))
    return Recommendation(
        model=model,
        engine=engine,
        filters=filters,
        price_date=PRICE_DATE if on_demand_known else None,
        spot_unavailable=spot_prices.unavailable,
        candidates=tuple(candidates),
        rejected=tuple(rejected),
    )


def _with_min_context(model: ModelSpec, engine: Engine, overrides: Any, min_context: int) -> Any:
    if min_context > model.max_position_embeddings:
        raise InputError(
            f"--min-context {min_context}: {model.alias} handles at most "
            f"{model.max_position_embeddings} tokens (max_position_embeddings in its "
            f"config.json); ask for {model.max_position_embeddings} or less, or pick a model "
            "with a longer context"
        )
    given = engine.max_total_of(overrides)
    flag = engine.max_total_flag
    if given is not None and given < min_context:
        raise InputError(
            f"{flag} {given} is below --min-context {min_context}: drop one, or "
            f"make {flag} at least --min-context"
        )
    # The planner then checks that the KV cache holds one request of this length and that
    # the engine's own validation accepts it (tgiops/core/plan.py "Token limits"; vLLM:
    # plan_vllm's max_model_len checks).
    return engine.with_max_total(overrides, given or min_context)


def _plan_or_refusal(
    model: ModelSpec, it: InstanceType, engine: Engine, overrides: Any
) -> RankedPlan | str:
    try:
        return engine.plan_on(model, inventory_for_instance_type(it.name), overrides)
    except PlanInputError as exc:  # what this hardware cannot take (--num-shard 8 on 1 GPU;
        return str(exc)  # vLLM below compute capability 7.5)


def _price(candidate: Candidate, filters: Filters) -> float | None:
    return candidate.spot_usd_per_hour if filters.spot else candidate.on_demand_usd_per_hour


def _filtered_out(candidate: Candidate, filters: Filters, spot_prices: SpotPrices) -> str | None:
    if filters.spot and candidate.spot is None:
        return "--spot: " + (
            spot_prices.unavailable or f"EC2 reports no spot price in {filters.region}"
        )
    cap = filters.max_usd_per_hour
    if cap is None:
        return None
    price = _price(candidate, filters)
    kind = "spot" if filters.spot else "on-demand"
    if price is None:
        return f"--max-usd-per-hour {cap:g}: no {kind} price known in {filters.region}"
    if price > cap:
        return f"--max-usd-per-hour {cap:g}: {kind} ${price:.4g}/h in {filters.region}"
    return None


def _rank(candidate: Candidate, filters: Filters) -> tuple[bool, float, int, int, int, float, str]:
    """Priced types cheapest first; the unpriced after them (or all of them, in a region the
    built-in table does not price) smallest first: fewest GPUs, the least GPU memory, then
    vCPUs and host memory, which is how EC2 prices the sizes of one family."""
    price = _price(candidate, filters)
    itype = candidate.instance_type
    return (
        price is None,
        price if price is not None else 0.0,
        itype.gpu_count,
        itype.gpu_memory_mib,
        itype.vcpus,
        itype.memory_gib,
        itype.name,
    )


# --------------------------------------------------------------------------------------------
# What the CLI prints
# --------------------------------------------------------------------------------------------


def nothing_fits_message(rec: Recommendation) -> str:
    """Exit-2 message when no instance type is left: what excluded them and what to change."""
    filters = rec.filters
    fits = [r for r in rec.rejected if not r.why.startswith("--")]
    fixes = []
    if filters.spot:
        fixes.append(
            "drop --spot, or configure AWS credentials (--profile, AWS_PROFILE or the "
            "environment) so EC2's spot prices can be read"
            if rec.spot_unavailable
            else "drop --spot"
        )
    if filters.max_usd_per_hour is not None:
        fixes.append(f"raise --max-usd-per-hour (now {filters.max_usd_per_hour:g})")
    if filters.region != PRICE_REGION and filters.max_usd_per_hour is not None:
        fixes.append(f"use --region {PRICE_REGION} (the built-in on-demand prices)")
    if filters.min_context is not None:
        fixes.append(f"lower --min-context (now {filters.min_context})")
    if len(fits) == len(rec.rejected):
        fixes.append(
            f"a quantized build of {rec.model.alias} (`tgiops models`), --quantize, or hardware "
            "beyond the table (--gpu NAME --gpus N)"
        )
    first = rec.rejected[0] if rec.rejected else None
    example = f" (e.g. {first.instance_type}: {first.why})" if first else ""
    return (
        f"no instance type of the table serves {rec.model.alias} with these filters: "
        f"{len(rec.rejected)} rejected{example}. To widen the search: {'; '.join(fixes)}."
    )


def as_dict(rec: Recommendation) -> dict[str, Any]:
    """The documented ``tgiops plan MODEL --json`` object without hardware (README "plan")."""
    return {
        "model": rec.model.alias,
        "region": rec.filters.region,
        "price_date": rec.price_date,
        "candidates": [
            {
                "instance_type": c.instance_type.name,
                "gpu": c.instance_type.gpu,
                "gpus": c.instance_type.gpu_count,
                "fits": c.plan.fits,
                "num_shard": c.plan.num_shard,
                "quantize": c.plan.quantize,
                "max_total_tokens": c.plan.max_total_tokens,
                "kv_cache_tokens": c.plan.memory.kv_cache_tokens,
                "concurrent_requests": c.concurrent_requests,
                "on_demand_usd_per_hour": c.on_demand_usd_per_hour,
                "spot_usd_per_hour": c.spot_usd_per_hour,
                "spot_zone": c.spot.zone if c.spot else None,
                "reasons": [*c.plan.reasons, *c.plan.warnings, *c.price_notes],
            }
            for c in rec.candidates
        ],
        "rejected": [{"instance_type": r.instance_type, "why": r.why} for r in rec.rejected],
    }


def as_text(rec: Recommendation) -> str:
    od_head = (
        f"on-demand $/h ({rec.filters.region} {rec.price_date})"
        if rec.price_date
        else ("on-demand $/h")
    )
    header = (
        "instance type",
        "GPUs",
        "shards",
        "quantize",
        "max_total",
        "KV tokens",
        "full-length",
        od_head,
        "spot $/h (zone)",
    )
    rows = [header]
    for c in rec.candidates:
        spot = f"{c.spot.usd_per_hour:.4g} ({c.spot.zone})" if c.spot else "unavailable"
        od = f"{c.on_demand_usd_per_hour:.4g}" if c.on_demand_usd_per_hour is not None else "-"
        rows.append(
            (
                c.instance_type.name,
                f"{c.instance_type.gpu_count}x {c.instance_type.gpu}",
                str(c.plan.num_shard),
                c.plan.quantize or "none",
                str(c.plan.max_total_tokens),
                str(c.plan.memory.kv_cache_tokens),
                str(c.concurrent_requests),
                od,
                spot,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    market = "spot" if rec.filters.spot else "on-demand"
    priced = any(_price(c, rec.filters) is not None for c in rec.candidates)
    lines = [
        f"{rec.model.alias} on {rec.engine.label} {rec.engine.version_text}: "
        f"{len(rec.candidates)} instance type(s) fit, "
        + (f"cheapest {market} first" if priced else f"smallest first (no {market} prices)")
    ]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if rec.price_date is None:
        lines.append(
            f"on-demand prices: the built-in table is {PRICE_REGION}'s ({PRICE_DATE}); none for "
            f"{rec.filters.region}"
        )
    else:
        lines.append(f"on-demand prices: built-in table, {PRICE_REGION}, {PRICE_DATE}")
    if rec.spot_unavailable:
        lines.append(rec.spot_unavailable)
    lines.append(
        f"{len(rec.rejected)} other type(s) rejected (--json lists why); details for one: "
        f"tgiops plan {rec.model.alias} --instance-type TYPE"
    )
    return "\n".join(lines)
