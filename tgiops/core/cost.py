"""What a fleet costs now: pure arithmetic over EC2 facts (tgiops.core.status.Ec2Facts).

On-demand prices come from tgiops.core.hardware's dated table (its PRICE_SOURCE); spot prices
are the current price of each instance's zone, looked up by the AWS edge (DescribeSpotPriceHistory)
and passed in with the facts. A stopped instance is priced at 0: EC2 charges no instance usage
while it is stopped (its EBS volumes are still billed, which tgiops does not price), per AWS's
"Stop and start Amazon EC2 instances" user-guide page
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Stop_Start.html; docs/aws.md §7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tgiops.core.status import Ec2Facts

# 30 days of 24 hours: the projection `tgiops cost` prints (the current price held constant).
HOURS_PER_30_DAYS = 30 * 24
BILLED_STATES = frozenset({"pending", "running"})


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


@dataclass(frozen=True)
class CostReport:
    hosts: tuple[HostCost, ...]
    usd_per_hour: float  # over the hosts whose price is known
    on_demand_usd_per_hour: float  # the same hosts, all on-demand
    unknown: int  # hosts whose price is unknown (left out of the totals)
    price_date: str
    price_source: str

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


def host_cost(label: str, facts: Ec2Facts | None) -> HostCost:
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
