"""The monitor's pure part: readings of one host (GPUs, the engine's /metrics, health) turned
into CloudWatch MetricDatum dicts for one batched PutMetricData, and the bounded buffer that
holds them while CloudWatch is unreachable.

Namespace ``tgiops``; dimensions are few and low-cardinality (stack or ASG, unit, instance; the
GPU index on per-GPU metrics) because every distinct name+dimensions is a billed custom metric
(docs/aws.md §5). A PutMetricData request takes at most
1000 metrics (same §5): one host sends far fewer.

The engine names are TGI's /metrics (docs/tgi.md §5, TGI
docs/source/reference/metrics.md@737): ``tgi_batch_current_size`` (requests running),
``tgi_queue_size`` (waiting), ``tgi_request_generated_tokens`` (a histogram: its ``_sum`` counts
the tokens of finished requests), ``tgi_batch_current_max_tokens`` over
``tgi_batch_max_total_tokens`` (set at warmup): the share of the token budget the current
batch reserves, tgiops' estimate of KV-cache use (TGI exports no KV-usage gauge of its own).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tgiops.core.hardware import Gpu

NAMESPACE = "tgiops"
PUT_METRIC_DATA_MAX = 1000  # metrics per request (aws-provisioning-and-cost.md §5)

# The names metric_data() and dimensions() publish, for whoever reads them back (core.alarms'
# queries); tests/unit/test_alarms_core.py checks they are what metric_data() sends.
HEALTHY = "Healthy"
GPU_UTILIZATION = "GPUUtilization"
REQUESTS_WAITING = "RequestsWaiting"
GROUP_DIMENSION = "Group"
UNIT_DIMENSION = "Unit"
INSTANCE_DIMENSION = "InstanceId"
GPU_DIMENSION = "GPU"


@dataclass(frozen=True)
class Readings:
    """One sample of a host. ``engine``: parse_metrics(/metrics) or None when unreadable."""

    timestamp: float  # epoch seconds
    gpus: Sequence[Gpu]
    engine: Mapping[str, float] | None
    healthy: bool


def dimensions(*, group: str | None, unit: str, instance_id: str) -> list[dict[str, str]]:
    """The dimensions every datum carries: the stack or ASG (when there is one), unit, instance."""
    dims = [{"Name": "Unit", "Value": unit}, {"Name": "InstanceId", "Value": instance_id}]
    if group:
        dims.insert(0, {"Name": "Group", "Value": group})
    return dims


def _datum(
    name: str, value: float, unit: str, dims: list[dict[str, str]], ts: float
) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Value": float(value),
        "Unit": unit,
        "Dimensions": dims,
        "Timestamp": ts,
    }


def metric_data(
    now: Readings, dims: list[dict[str, str]], *, previous: Readings | None = None
) -> list[dict[str, Any]]:
    """MetricDatum dicts for ``now``. Generated tokens per second need ``previous`` (a rate of
    the cumulative ``tgi_request_generated_tokens_sum``); a counter that went down (the engine
    restarted) gives no rate for this sample rather than a negative one."""
    ts = now.timestamp
    data = [_datum("Healthy", 1.0 if now.healthy else 0.0, "None", dims, ts)]
    for gpu in now.gpus:
        gdims = [*dims, {"Name": "GPU", "Value": str(gpu.index)}]
        data.append(_datum("GPUUtilization", gpu.utilization_pct, "Percent", gdims, ts))
        data.append(_datum("GPUMemoryUsed", gpu.memory_used_mib, "Megabytes", gdims, ts))
    engine = now.engine
    if engine is None:
        return data
    for name, key in (
        ("RequestsRunning", "tgi_batch_current_size"),
        ("RequestsWaiting", "tgi_queue_size"),
    ):
        if key in engine:
            data.append(_datum(name, engine[key], "Count", dims, ts))
    budget = engine.get("tgi_batch_max_total_tokens")
    if budget and "tgi_batch_current_max_tokens" in engine:
        used = 100.0 * engine["tgi_batch_current_max_tokens"] / budget
        data.append(_datum("KVCacheUsage", used, "Percent", dims, ts))
    tokens_key = "tgi_request_generated_tokens_sum"
    if previous is not None and previous.engine is not None:
        before, after = previous.engine.get(tokens_key), engine.get(tokens_key)
        elapsed = now.timestamp - previous.timestamp
        if before is not None and after is not None and elapsed > 0 and after >= before:
            rate = (after - before) / elapsed
            data.append(_datum("GeneratedTokensPerSecond", rate, "Count/Second", dims, ts))
    return data


@dataclass
class Buffer:
    """Data not yet sent, at most ``limit`` points: the oldest are dropped first. ``dropped``
    counts them; ``first_drop`` is True once, for the one log line the loop writes."""

    limit: int
    points: deque[dict[str, Any]] = field(default_factory=deque)
    dropped: int = 0

    def add(self, data: Iterable[dict[str, Any]]) -> bool:
        """Append ``data``; True when this call dropped points for the first time."""
        before = self.dropped
        for datum in data:
            if len(self.points) >= self.limit:
                self.points.popleft()
                self.dropped += 1
            self.points.append(datum)
        return before == 0 and self.dropped > 0

    def batches(self) -> list[list[dict[str, Any]]]:
        """The buffered points in PutMetricData-sized batches, oldest first."""
        pts = list(self.points)
        return [pts[i : i + PUT_METRIC_DATA_MAX] for i in range(0, len(pts), PUT_METRIC_DATA_MAX)]

    def sent(self, count: int) -> None:
        """The oldest ``count`` points reached CloudWatch."""
        for _ in range(min(count, len(self.points))):
            self.points.popleft()
