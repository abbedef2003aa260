"""tgiops.core.cost: the price of a host now and the fleet's totals (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tgiops.core.cost import HOURS_PER_30_DAYS, fleet_cost, host_cost
from tgiops.core.status import Ec2Facts


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
