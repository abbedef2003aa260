"""tgiops.core.monitor: readings -> MetricDatum dicts, and the bounded buffer (pure)."""

from __future__ import annotations

import pytest

from tgiops.core.hardware import Gpu
from tgiops.core.monitor import PUT_METRIC_DATA_MAX, Buffer, Readings, dimensions, metric_data

GPUS = (
    Gpu(0, "NVIDIA A10G", 23028, (8, 6), memory_used_mib=20000, utilization_pct=87),
    Gpu(1, "NVIDIA A10G", 23028, (8, 6), memory_used_mib=1000, utilization_pct=3),
)
DIMS = dimensions(group="llm-asg", unit="tgiops-phi", instance_id="i-1")


def by_name(data: list[dict]) -> dict[tuple[str, str | None], dict]:
    out = {}
    for d in data:
        gpu = next((x["Value"] for x in d["Dimensions"] if x["Name"] == "GPU"), None)
        out[(d["MetricName"], gpu)] = d
    return out


def engine(tokens: float, **kw: float) -> dict[str, float]:
    return {
        "tgi_batch_current_size": 3,
        "tgi_queue_size": 5,
        "tgi_batch_current_max_tokens": 2500,
        "tgi_batch_max_total_tokens": 10000,
        "tgi_request_generated_tokens_sum": tokens,
        **kw,
    }


def test_dimensions_are_few_and_group_is_optional() -> None:
    assert [d["Name"] for d in DIMS] == ["Group", "Unit", "InstanceId"]
    assert [d["Name"] for d in dimensions(group=None, unit="u", instance_id="i")] == [
        "Unit",
        "InstanceId",
    ]


def test_gpu_engine_and_rate() -> None:
    before = Readings(100.0, GPUS, engine(1000), healthy=True)
    now = Readings(160.0, GPUS, engine(4000), healthy=True)
    data = by_name(metric_data(now, DIMS, previous=before))
    assert data[("GPUUtilization", "0")]["Value"] == 87
    assert data[("GPUUtilization", "1")]["Unit"] == "Percent"
    assert data[("GPUMemoryUsed", "0")]["Value"] == 20000
    assert data[("RequestsRunning", None)]["Value"] == 3
    assert data[("RequestsWaiting", None)]["Value"] == 5
    assert data[("KVCacheUsage", None)]["Value"] == pytest.approx(25.0)
    assert data[("GeneratedTokensPerSecond", None)]["Value"] == pytest.approx(50.0)
    assert data[("Healthy", None)]["Value"] == 1.0
    assert all(d["Timestamp"] == 160.0 for d in data.values())
    assert data[("Healthy", None)]["Dimensions"] == DIMS


def test_no_rate_without_previous_or_after_a_restart() -> None:
    now = Readings(160.0, GPUS, engine(10), healthy=True)
    assert ("GeneratedTokensPerSecond", None) not in by_name(metric_data(now, DIMS))
    restarted = metric_data(now, DIMS, previous=Readings(100.0, GPUS, engine(5000), True))
    assert ("GeneratedTokensPerSecond", None) not in by_name(restarted)


def test_unhealthy_engine_without_metrics_still_reports_gpus_and_health() -> None:
    data = by_name(metric_data(Readings(1.0, GPUS, None, healthy=False), DIMS))
    assert data[("Healthy", None)]["Value"] == 0.0
    assert set(data) == {("Healthy", None)} | {
        (m, str(i)) for m in ("GPUUtilization", "GPUMemoryUsed") for i in (0, 1)
    }


def test_buffer_drops_oldest_and_says_so_once() -> None:
    buf = Buffer(limit=3)
    assert buf.add([{"n": 1}, {"n": 2}]) is False
    assert buf.add([{"n": 3}, {"n": 4}]) is True
    assert buf.add([{"n": 5}]) is False  # already said
    assert [p["n"] for p in buf.points] == [3, 4, 5]
    assert buf.dropped == 2
    buf.sent(2)
    assert [p["n"] for p in buf.points] == [5]


def test_buffer_batches_fit_put_metric_data() -> None:
    buf = Buffer(limit=2500)
    buf.add({"n": i} for i in range(2500))
    sizes = [len(b) for b in buf.batches()]
    assert sizes == [PUT_METRIC_DATA_MAX, PUT_METRIC_DATA_MAX, 500]
