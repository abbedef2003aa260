"""tgiops.core.cost: the price of a host now and the fleet's totals (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tgiops.core.cost import (
    HOURS_PER_30_DAYS,
    Usage,
    fleet_cost,
    host_cost,
    usage_from,
    usage_queries,
)
from tgiops.core.status_schema import Ec2Facts


def facts(lifecycle: str = "on-demand", **kw: object) -> Ec2Facts:
    base = Ec2Facts(
        instance_id="i-1",
        name=None,
        instance_type="g5.xlarge",
        lifecycle=lifecycle,
        state="running",
        availability_zone="us-east-1a",
        public_ip=None,
        elastic_ip=None,
        on_demand_usd_per_hour=1.0,
        spot_usd_per_hour=0.4 if lifecycle == "spot" else None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_on_demand_pays_the_table_price() -> None:
    h = host_cost("a", facts())
    assert (h.usd_per_hour, h.on_demand_usd_per_hour, h.note) == (1.0, 1.0, None)


def test_spot_pays_the_zone_price_and_knows_its_on_demand_equivalent() -> None:
    h = host_cost("a", facts("spot"))
    assert (h.usd_per_hour, h.on_demand_usd_per_hour) == (0.4, 1.0)


def test_stopped_instance_costs_no_compute() -> None:
    h = host_cost("a", facts(state="stopped"))
    assert (h.usd_per_hour, h.on_demand_usd_per_hour) == (0.0, 0.0)
    assert h.note is not None and "stopped" in h.note


def test_unknown_prices_are_named_and_left_out_of_totals() -> None:
    hosts = [
        host_cost("od", facts()),
        host_cost("spot", facts("spot", instance_id="i-2")),
        host_cost("nospot", facts("spot", spot_usd_per_hour=None, error="throttled")),
        host_cost("odd", facts(instance_type="x9.huge", on_demand_usd_per_hour=None)),
        host_cost("plain", None),
    ]
    assert [h.note is None for h in hosts] == [True, True, False, False, False]
    assert hosts[2].note is not None and "throttled" in hosts[2].note
    report = fleet_cost(hosts, price_date="d", price_source="s")
    assert report.unknown == 3
    assert report.usd_per_hour == pytest.approx(1.4)
    assert report.on_demand_usd_per_hour == pytest.approx(2.0)
    assert report.usd_per_30_days == pytest.approx(1.4 * 720)
    assert HOURS_PER_30_DAYS == 720
    assert report.spot_saving_usd_per_hour == pytest.approx(0.6)
    assert report.spot_saving_fraction == pytest.approx(0.3)


def test_empty_fleet_has_no_saving_fraction() -> None:
    report = fleet_cost([], price_date="d", price_source="s")
    assert (report.usd_per_hour, report.spot_saving_fraction) == (0.0, None)


def test_other_lifecycles_are_not_priced_from_the_on_demand_table() -> None:
    h = host_cost("a", facts("capacity-block"))
    assert h.usd_per_hour is None and h.note is not None


# --- usage from the monitor's metrics (last 24 h) --------------------------------------------

GPU0 = {"MetricName": "GPUUtilization", "Dimensions": [{"Name": "GPU", "Value": "0"}]}
GPU1 = {"MetricName": "GPUUtilization", "Dimensions": [{"Name": "GPU", "Value": "1"}]}
TOKENS = {"MetricName": "GeneratedTokensPerSecond", "Dimensions": []}
HEALTHY = {"MetricName": "Healthy", "Dimensions": []}


def test_usage_queries_ask_hourly_averages_of_tokens_and_gpus_only() -> None:
    queries = usage_queries([GPU0, HEALTHY, TOKENS])
    assert [q["Id"] for q in queries] == ["u0", "u2"]  # ids keep the metric's position
    assert {q["MetricStat"]["Period"] for q in queries} == {3600}
    assert {q["MetricStat"]["Stat"] for q in queries} == {"Average"}


def test_usage_counts_tokens_and_hours_where_every_gpu_idled() -> None:
    results = {
        "u0": ([1000.0, 4600.0, 8200.0], [50.0, 1.0, 2.0]),
        "u1": ([1000.0, 4600.0, 8200.0], [0.0, 30.0, 4.9]),
        "u2": ([1000.0, 4600.0], [20.0, 5.0]),
    }
    usage = usage_from([GPU0, GPU1, TOKENS], results, idle_percent=5.0)
    assert usage is not None
    assert usage.hours_observed == 3
    assert usage.idle_hours == 1  # only the hour at 8200: both GPUs under 5%
    assert usage.generated_tokens == pytest.approx((20.0 + 5.0) * 3600)


def test_no_gpu_reading_means_no_usage() -> None:
    assert usage_from([TOKENS], {"u0": ([1.0], [3.0])}) is None


def test_cost_per_million_tokens_prices_the_observed_hours() -> None:
    usage = Usage(hours_observed=2, generated_tokens=720_000, idle_hours=0, idle_percent=5.0)
    busy = host_cost("a", facts(), usage)  # $1/h on-demand
    idle = host_cost("b", facts(instance_id="i-2"), Usage(3, 0.0, 3, 5.0))
    assert busy.usd_per_million_tokens == pytest.approx(2.0 / 0.72)
    assert idle.usd_per_million_tokens is None  # no tokens: no price per token
    report = fleet_cost([busy, idle], price_date="d", price_source="s")
    assert report.generated_tokens == pytest.approx(720_000)
    assert report.idle_hours == 3
    assert report.usd_per_million_tokens == pytest.approx((2.0 + 3.0) / 0.72)


def test_a_fleet_without_metrics_has_no_usage_totals() -> None:
    report = fleet_cost([host_cost("a", facts())], price_date="d", price_source="s")
    assert report.generated_tokens is None and report.usd_per_million_tokens is None
