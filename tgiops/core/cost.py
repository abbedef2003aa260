"""What a fleet costs now: pure arithmetic over EC2 facts (tgiops.core.status_schema.Ec2Facts).

On-demand prices come from tgiops.core.hardware's dated table (its PRICE_SOURCE); spot prices
are the current price of each instance's zone, looked up by the AWS edge (DescribeSpotPriceHistory)
and passed in with the facts. A stopped instance is priced at 0: EC2 charges no instance usage
while it is stopped (its EBS volumes are still billed, which tgiops does not price), per AWS's
"Stop and start Amazon EC2 instances" user-guide page
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Stop_Start.html; docs/aws.md §7).

With `tgiops monitor` sending metrics, the last 24 hours of each instance come from CloudWatch as
hourly averages (``usage_queries``): the generated-tokens rate times 3600 s is the hour's tokens
(an estimate that assumes the monitor sampled the whole hour), and an hour in which every GPU
averaged below the idle threshold (core/alarms.py's default, 5%) is an idle hour. The cost per
million tokens prices the observed hours at the price paid now (spot prices move: an estimate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tgiops.core.alarm_defaults import DEFAULT_IDLE_PERCENT
from tgiops.core.monitor import GENERATED_TOKENS_RATE, GPU_UTILIZATION, average_query
from tgiops.core.status_schema import Ec2Facts

# 30 days of 24 hours: the projection `tgiops cost` prints (the current price held constant).
HOURS_PER_30_DAYS = 30 * 24
BILLED_STATES = frozenset({"pending", "running"})
USAGE_WINDOW_S = 24 * 3600
USAGE_PERIOD_S = 3600


@dataclass(frozen=True)
class Usage:
    """What one instance did over the usage window, from the monitor's metrics."""

    hours_observed: int  # hours with a GPU reading
    generated_tokens: float
    idle_hours: int  # observed hours in which every GPU averaged below idle_percent
    idle_percent: float


def usage_queries(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """GetMetricData queries (ids ``u0``, ``u1``... by position in ``metrics``: ListMetrics'
    answer for one instance) for the hourly averages ``usage_from`` reads."""
    return [
        average_query(f"u{i}", m, USAGE_PERIOD_S)
        for i, m in enumerate(metrics)
        if m["MetricName"] in (GENERATED_TOKENS_RATE, GPU_UTILIZATION)
    ]


def usage_from(
    metrics: Sequence[Mapping[str, Any]],
    results: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    idle_percent: float = DEFAULT_IDLE_PERCENT,
) -> Usage | None:
    """``results``: query id -> (epoch timestamps, values) for ``usage_queries(metrics)``.
    None when the window holds no GPU reading (the monitor was off)."""
    busiest_gpu: dict[float, float] = {}  # hour -> the highest GPU average of that hour
    tokens = 0.0
    for i, metric in enumerate(metrics):
        stamps, values = results.get(f"u{i}", ((), ()))
        if metric["MetricName"] == GPU_UTILIZATION:
            for stamp, value in zip(stamps, values, strict=False):
                busiest_gpu[stamp] = max(busiest_gpu.get(stamp, 0.0), float(value))
        elif metric["MetricName"] == GENERATED_TOKENS_RATE:
            tokens += sum(float(v) * USAGE_PERIOD_S for v in values)
    if not busiest_gpu:
        return None
    return Usage(
        hours_observed=len(busiest_gpu),
        generated_tokens=tokens,
        idle_hours=sum(1 for v in busiest_gpu.values() if v < idle_percent),
        idle_percent=idle_percent,
    )


def usd_per_million_tokens(usd_observed: float, tokens: float) -> float | None:
    return usd_observed / tokens * 1e6 if tokens > 0 else None


@dataclass(frozen=True)
class HostCost:
    label: str
    instance_id: str | None
    instance_type: str | None
    lifecycle: str | None
    state: str | None
    availability_zone: str | None
    usd_per_hour: float | None  # the price paid now; 0.0 when not running; None: unknown
    on_demand_usd_per_hour: float | None  # what the same instance costs on-demand, when running
    note: str | None = None
    usage: Usage | None = None  # None: no monitor metrics (or they could not be read)
    usage_note: str | None = None

    @property
    def usd_observed(self) -> float | None:
        """The observed hours at the price paid now."""
        if self.usage is None or self.usd_per_hour is None:
            return None
        return self.usd_per_hour * self.usage.hours_observed

    @property
    def usd_per_million_tokens(self) -> float | None:
        spent = self.usd_observed
        if spent is None or self.usage is None:
            return None
        return usd_per_million_tokens(spent, self.usage.generated_tokens)


@dataclass(frozen=True)
class CostReport:
    hosts: tuple[HostCost, ...]
    usd_per_hour: float  # over the hosts whose price is known
    on_demand_usd_per_hour: float  # the same hosts, all on-demand
    unknown: int  # hosts whose price is unknown (left out of the totals)
    price_date: str
    price_source: str

    @property
    def generated_tokens(self) -> float | None:
        """Over the hosts with usage; None when no host has any."""
        used = [h.usage for h in self.hosts if h.usage is not None]
        return sum(u.generated_tokens for u in used) if used else None

    @property
    def idle_hours(self) -> int | None:
        used = [h.usage for h in self.hosts if h.usage is not None]
        return sum(u.idle_hours for u in used) if used else None

    @property
    def usd_per_million_tokens(self) -> float | None:
        """Over the hosts whose usage and price are both known."""
        priced = [h for h in self.hosts if h.usd_observed is not None and h.usage is not None]
        spent = sum(h.usd_observed or 0.0 for h in priced)
        return usd_per_million_tokens(
            spent, sum(h.usage.generated_tokens for h in priced if h.usage)
        )

    @property
    def usd_per_30_days(self) -> float:
        return self.usd_per_hour * HOURS_PER_30_DAYS

    @property
    def on_demand_usd_per_30_days(self) -> float:
        return self.on_demand_usd_per_hour * HOURS_PER_30_DAYS

    @property
    def spot_saving_usd_per_hour(self) -> float:
        return self.on_demand_usd_per_hour - self.usd_per_hour

    @property
    def spot_saving_fraction(self) -> float | None:
        if self.on_demand_usd_per_hour <= 0:
            return None
        return self.spot_saving_usd_per_hour / self.on_demand_usd_per_hour


def host_cost(
    label: str,
    facts: Ec2Facts | None,
    usage: Usage | None = None,
    usage_note: str | None = None,
) -> HostCost:
    """The price one host costs now. ``facts`` None: not an EC2 instance tgiops could find."""
    if facts is None:
        return HostCost(
            label=label,
            instance_id=None,
            instance_type=None,
            lifecycle=None,
            state=None,
            availability_zone=None,
            usd_per_hour=None,
            on_demand_usd_per_hour=None,
            note="not a known EC2 instance (give --instance/--asg/--all to price it)",
        )
    running = facts.state in BILLED_STATES
    on_demand = facts.on_demand_usd_per_hour
    note = None
    price: float | None
    if not running:
        price, on_demand, note = 0.0, 0.0, f"{facts.state}: no compute billed"
    elif facts.lifecycle == "spot":
        price = facts.spot_usd_per_hour
        if price is None:
            note = f"no current spot price for {facts.instance_type} in {facts.availability_zone}"
            if facts.error:
                note += f" ({facts.error})"
    elif facts.lifecycle == "on-demand":
        price = on_demand
    else:  # scheduled / capacity-block: priced by reservation, not by the on-demand table
        price, note = None, f"lifecycle {facts.lifecycle}: price not known to tgiops"
    if running and on_demand is None:
        note = note or f"{facts.instance_type} is not in tgiops' price table"
    return HostCost(
        label=label,
        instance_id=facts.instance_id,
        instance_type=facts.instance_type,
        lifecycle=facts.lifecycle,
        state=facts.state,
        availability_zone=facts.availability_zone,
        usd_per_hour=price,
        on_demand_usd_per_hour=on_demand,
        note=note,
        usage=usage,
        usage_note=usage_note,
    )


def fleet_cost(hosts: Sequence[HostCost], *, price_date: str, price_source: str) -> CostReport:
    """Totals over the hosts whose price and on-demand equivalent are both known; the others are
    counted in ``unknown`` so a partial total is never mistaken for the whole."""
    known = [
        h for h in hosts if h.usd_per_hour is not None and h.on_demand_usd_per_hour is not None
    ]
    return CostReport(
        hosts=tuple(hosts),
        usd_per_hour=sum(h.usd_per_hour or 0.0 for h in known),
        on_demand_usd_per_hour=sum(h.on_demand_usd_per_hour or 0.0 for h in known),
        unknown=len(hosts) - len(known),
        price_date=price_date,
        price_source=price_source,
    )
