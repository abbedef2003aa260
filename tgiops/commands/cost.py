"""`tgiops cost`: the price of each target instance now, the fleet's totals and, where
`tgiops monitor` sends metrics, the last 24 hours' tokens, idle hours and cost per million tokens.

The EC2 facts (lifecycle, state, zone, on-demand price, current spot price of the zone) come
from tgiops.commands.status.gather_ec2, the same lookup `status` makes; the usage is CloudWatch's
hourly averages of the monitor's metrics (ListMetrics + GetMetricData); the arithmetic is
tgiops.core.cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tgiops.commands.status import gather_ec2
from tgiops.core import hardware
from tgiops.core.cost import (
    USAGE_WINDOW_S,
    CostReport,
    Usage,
    fleet_cost,
    host_cost,
    usage_from,
    usage_queries,
)
from tgiops.core.errors import AWSError
from tgiops.core.monitor import INSTANCE_DIMENSION, NAMESPACE


def gather_usage(aws: Any, instance_id: str, now: float) -> tuple[Usage | None, str | None]:
    """(usage, why there is none). CloudWatch trouble (no permission, unreachable) costs the
    usage columns only, never the prices."""
    try:
        metrics = aws.list_metrics(NAMESPACE, [{"Name": INSTANCE_DIMENSION, "Value": instance_id}])
        queries = usage_queries(metrics)
        if not queries:
            return None, "no monitor metrics (`tgiops monitor enable`)"
        results = aws.get_metric_data(queries, start=now - USAGE_WINDOW_S, end=now)
    except AWSError as exc:
        return None, f"usage unknown: {exc}"
    usage = usage_from(metrics, results)
    return usage, None if usage is not None else "no monitor metrics in the last 24 h"


def gather_cost(targets: Sequence[Any], *, aws: Any, now: float | None = None) -> CostReport:
    """Cost of ``targets`` (tgiops.edges.targets.Target); hosts without an EC2 instance are
    listed with an unknown price."""
    instances = [t.instance for t in targets if t.instance is not None]
    ec2 = gather_ec2(aws, instances) if aws is not None and instances else {}
    moment = time.time() if now is None else now
    hosts = []
    for t in targets:
        if t.instance is None or aws is None:
            hosts.append(host_cost(t.label, None))
            continue
        usage, why = gather_usage(aws, t.instance.instance_id, moment)
        hosts.append(host_cost(t.label, ec2.get(t.instance.instance_id), usage, why))
    return fleet_cost(hosts, price_date=hardware.PRICE_DATE, price_source=hardware.PRICE_SOURCE)
