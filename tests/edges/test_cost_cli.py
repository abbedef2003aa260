"""`tgiops cost` against moto's server: lifecycles, spot price of the zone, totals."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
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


def send_monitor_sample(
    iid: str, when: float, gpu_pct: tuple[int, ...], tokens_sum: tuple[float, float]
) -> None:
    """Two samples 60 s apart, as `tgiops monitor run` builds them (core.monitor.metric_data),
    sent to moto's CloudWatch: the GPU readings and the generated-tokens rate between them."""
    from tgiops.core.hardware import Gpu
    from tgiops.core.monitor import NAMESPACE, Readings, dimensions, metric_data

    gpus = tuple(
        Gpu(i, "NVIDIA A10G", 23028, (8, 6), utilization_pct=p) for i, p in enumerate(gpu_pct)
    )
    dims = dimensions(group=None, unit="tgiops-llm", instance_id=iid)
    before = Readings(when - 60, gpus, {"tgi_request_generated_tokens_sum": tokens_sum[0]}, True)
    now = Readings(when, gpus, {"tgi_request_generated_tokens_sum": tokens_sum[1]}, True)
    data = metric_data(now, dims, previous=before)
    for datum in data:
        datum["Timestamp"] = datetime.fromtimestamp(datum["Timestamp"], timezone.utc)
    boto3.client("cloudwatch").put_metric_data(Namespace=NAMESPACE, MetricData=data)


def test_cost_reads_the_monitors_tokens_and_idle_hours(moto: Moto) -> None:
    iid = run_instance("g5.12xlarge", spot=False)
    quiet = run_instance("g5.xlarge", spot=False)  # no monitor: prices only
    now = time.time()
    send_monitor_sample(iid, now - 2 * 3600, (50, 0, 0, 0), (0.0, 60_000.0))  # 1000 tok/s
    send_monitor_sample(iid, now - 5 * 3600, (1, 2, 0, 4), (0.0, 0.0))  # every GPU idle
    result = run_tgiops("cost", "--instance", iid, "--instance", quiet, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    by_id = {h["instance_id"]: h for h in data["hosts"]}
    usage = by_id[iid]["usage"]
    assert usage["hours_observed"] == 2
    assert usage["idle_hours"] == 1
    assert usage["generated_tokens"] == 1000 * 3600  # the hour's average rate x 3600 s
    price = hardware.find_instance_type("g5.12xlarge").on_demand_usd_per_hour
    assert price is not None
    assert usage["usd_per_million_tokens"] == pytest.approx(price * 2 / 3.6)
    assert by_id[quiet]["usage"] is None
    assert "tgiops monitor enable" in by_id[quiet]["usage_note"]
    assert data["totals"]["generated_tokens_24h"] == 3_600_000
    assert data["totals"]["idle_hours_24h"] == 1

    text = run_tgiops("cost", "--instance", iid).stdout
    assert "last 24 h (2 h observed): 3,600,000 tokens" in text
    assert "1 idle h" in text
