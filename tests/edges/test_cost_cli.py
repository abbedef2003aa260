"""`tgiops cost` against moto's server: lifecycles, spot price of the zone, totals."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest
from cli_run import run_tgiops

from tgiops.core import hardware

if TYPE_CHECKING:
    from conftest import Moto


def run_instance(instance_type: str, *, spot: bool) -> str:
    params: dict = {
        "ImageId": "ami-12345678",
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": instance_type,
        "Placement": {"AvailabilityZone": "us-east-1b"},
    }
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot"}
    return boto3.client("ec2").run_instances(**params)["Instances"][0]["InstanceId"]


def test_cost_json_prices_spot_and_on_demand(moto: Moto) -> None:
    od = run_instance("g5.xlarge", spot=False)
    sp = run_instance("g5.12xlarge", spot=True)
    result = run_tgiops("cost", "--instance", od, "--instance", sp, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    by_id = {h["instance_id"]: h for h in data["hosts"]}
    spot_now = float(
        boto3.client("ec2").describe_spot_price_history(
            InstanceTypes=["g5.12xlarge"], AvailabilityZone="us-east-1b"
        )["SpotPriceHistory"][0]["SpotPrice"]
    )
    od_price = hardware.find_instance_type("g5.xlarge").on_demand_usd_per_hour
    sp_od = hardware.find_instance_type("g5.12xlarge").on_demand_usd_per_hour
    assert od_price is not None and sp_od is not None
    assert by_id[od]["lifecycle"] == "on-demand"
    assert by_id[od]["usd_per_hour"] == pytest.approx(od_price)
    assert by_id[sp]["lifecycle"] == "spot"
    assert by_id[sp]["usd_per_hour"] == pytest.approx(spot_now)
    assert by_id[sp]["on_demand_usd_per_hour"] == pytest.approx(sp_od)
    totals = data["totals"]
    assert totals["usd_per_hour"] == pytest.approx(od_price + spot_now)
    assert totals["usd_per_30_days"] == pytest.approx((od_price + spot_now) * 720)
    assert totals["on_demand_usd_per_hour"] == pytest.approx(od_price + sp_od)
    assert totals["spot_saving_usd_per_hour"] == pytest.approx(sp_od - spot_now)
    assert totals["unknown_prices"] == 0


def test_cost_text_names_spot_and_saving(moto: Moto) -> None:
    sp = run_instance("g5.12xlarge", spot=True)
    result = run_tgiops("cost", "--instance", sp)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{sp} g5.12xlarge spot running us-east-1b" in out
    assert "on-demand equivalent: $5.672/h" in out
    assert "spot saves" in out


def test_cost_of_a_stopped_instance_is_refused_without_traceback(moto: Moto) -> None:
    iid = run_instance("g5.xlarge", spot=False)
    boto3.client("ec2").stop_instances(InstanceIds=[iid])
    result = run_tgiops("cost", "--instance", iid, "--json")
    # Same target rule as status: stopped instances are not targets (TargetNotFoundError).
    assert result.returncode == 1, result.stdout + result.stderr
    assert iid in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
