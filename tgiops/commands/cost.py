"""`tgiops cost`: the price of each target instance now and the fleet's totals.

The EC2 facts (lifecycle, state, zone, on-demand price, current spot price of the zone) come
from tgiops.commands.status.gather_ec2, the same lookup `status` makes; the arithmetic is
tgiops.core.cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tgiops.commands.status import gather_ec2
from tgiops.core import hardware
from tgiops.core.cost import CostReport, fleet_cost, host_cost


def gather_cost(targets: Sequence[Any], *, aws: Any) -> CostReport:
    """Cost of ``targets`` (tgiops.edges.targets.Target); hosts without an EC2 instance are
    listed with an unknown price."""
    instances = [t.instance for t in targets if t.instance is not None]
    ec2 = gather_ec2(aws, instances) if aws is not None and instances else {}
    hosts = [
        host_cost(t.label, ec2.get(t.instance.instance_id) if t.instance is not None else None)
        for t in targets
    ]
    return fleet_cost(hosts, price_date=hardware.PRICE_DATE, price_source=hardware.PRICE_SOURCE)
