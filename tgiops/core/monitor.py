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
vLLM's (docs/vllm.md §1.3): ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc`` (0..1; ``vllm:gpu_cache_usage_perc`` before PR #18354) and the
counter ``vllm:generation_tokens_total`` (keyed with or without ``_total`` by parse_metrics,
as its ``# TYPE`` line names the family).

What the on-host loop reads is ``tgiops status``' own host script (tgiops.core.status
.status_script: nvidia-smi's query interface, the managed units, each unit's /health and
/metrics with curl timeouts), read here by :func:`unit_readings`. :class:`Outbox` holds the
loop's decisions while CloudWatch is unreachable (buffer, drop oldest, say so once per outage,
say when it recovers); :func:`latest_values` reads GetMetricData answers for ``monitor show``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tgiops.core.errors import InputError
from tgiops.core.hardware import Gpu
from tgiops.core.layout import RESERVED_UNITS, TGIOPS_BIN

NAMESPACE = "tgiops"
DEFAULT_INTERVAL_S = 60.0
MIN_INTERVAL_S = 1.0
PUT_METRIC_DATA_MAX = 1000  # metrics per request (docs/aws.md §5)

# The names metric_data() and dimensions() publish, for whoever reads them back (core.alarms'
# queries); tests/unit/test_alarms_core.py checks they are what metric_data() sends.
HEALTHY = "Healthy"
GPU_UTILIZATION = "GPUUtilization"
GENERATED_TOKENS_RATE = "GeneratedTokensPerSecond"
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


def check_interval(seconds: float) -> float:
    if not seconds >= MIN_INTERVAL_S:  # also NaN
        raise InputError(f"--interval {seconds:g}: give seconds >= {MIN_INTERVAL_S:g} (default 60)")
    return seconds


def check_group(name: str) -> str:
    """The Group dimension's value: an ASG name (1-255 printable ASCII characters)."""
    if not name or len(name) > 255 or any(not (" " <= c <= "~") for c in name):
        raise InputError(f"--group {name!r}: give the stack's or Auto Scaling group's name")
    return name


def render_unit(
    template_text: str,
    *,
    tgiops_version: str,
    interval_s: float = DEFAULT_INTERVAL_S,
    group: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
    installed_by: str = "monitor enable",
) -> str:
    """The tgiops-monitor unit (unit_templates/tgiops-monitor.service.j2). ``env`` is the AWS
    SDK's settings, checked by the caller (never a secret: tgiops.commands.monitor.check_env);
    Environment= expands ``%`` specifiers, so they are doubled."""
    import jinja2  # a pure library, as in tgiops.core.render

    from tgiops.core.render import systemd_quote

    check_interval(interval_s)
    argv = [TGIOPS_BIN, "monitor", "run", "--interval", f"{interval_s:g}"]
    if group:
        argv += ["--group", check_group(group)]
    if region:
        argv += ["--region", region]
    environment = [
        '"' + f"{k}={v}".replace("%", "%%") + '"' for k, v in sorted((env or {}).items())
    ]
    jenv = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    return jenv.from_string(template_text).render(
        tgiops_version=tgiops_version,
        installed_by=installed_by,
        interval=f"{interval_s:g}",
        environment=environment,
        exec_start=" ".join(systemd_quote(a) for a in argv),
    )


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
    if now.engine is None:
        return data
    engine = engine_figures(now.engine)
    for name, key in (("RequestsRunning", "running"), ("RequestsWaiting", "waiting")):
        if key in engine:
            data.append(_datum(name, engine[key], "Count", dims, ts))
    if "kv_cache_pct" in engine:
        data.append(_datum("KVCacheUsage", engine["kv_cache_pct"], "Percent", dims, ts))
    tokens_key = "generated_tokens"
    if previous is not None and previous.engine is not None:
        before, after = engine_figures(previous.engine).get(tokens_key), engine.get(tokens_key)
        elapsed = now.timestamp - previous.timestamp
        if before is not None and after is not None and elapsed > 0 and after >= before:
            rate = (after - before) / elapsed
            data.append(_datum(GENERATED_TOKENS_RATE, rate, "Count/Second", dims, ts))
    return data


def engine_figures(values: Mapping[str, float]) -> dict[str, float]:
    """parse_metrics output of either engine -> ``running``, ``waiting``, ``kv_cache_pct``
    (0..100) and ``generated_tokens`` (cumulative), each only when the engine exports it."""
    out: dict[str, float] = {}
    pairs: tuple[tuple[str, str], ...]
    if any(name.startswith("vllm:") for name in values):
        pairs = (
            ("running", "vllm:num_requests_running"),
            ("waiting", "vllm:num_requests_waiting"),
            ("generated_tokens", "vllm:generation_tokens"),
            # The counter keeps its _total when the exposition names its family that way.
            ("generated_tokens", "vllm:generation_tokens_total"),
        )
        usage = values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc"))
        if usage is not None:
            out["kv_cache_pct"] = 100.0 * usage
    else:
        pairs = (
            ("running", "tgi_batch_current_size"),
            ("waiting", "tgi_queue_size"),
            ("generated_tokens", "tgi_request_generated_tokens_sum"),
        )
        budget = values.get("tgi_batch_max_total_tokens")
        if budget and "tgi_batch_current_max_tokens" in values:
            out["kv_cache_pct"] = 100.0 * values["tgi_batch_current_max_tokens"] / budget
    for key, name in pairs:
        if name in values:
            out[key] = values[name]
    return out


# ``docker run --gpus '"device=0,1"'`` in an engine unit (tgiops.core.render.docker_run_args):
# that unit's GPUs; without it the unit sees them all.
_GPU_DEVICES_RE = re.compile(r"--gpus\s+\S*?device=([0-9,]+)")


def unit_readings(report: str, timestamp: float) -> list[tuple[str, Readings]]:
    """``status_script`` output -> one Readings per engine unit tgiops manages on the host
    (its own services, tgiops-bootstrap and the like, are not engines). A unit's GPUs are
    the ones its ``--gpus device=`` names, else all; /metrics that cannot be parsed give
    ``engine=None`` (health and GPUs are still reported)."""
    from tgiops.core.errors import TgiopsError
    from tgiops.core.metrics import parse_metrics
    from tgiops.core.probe import split_sections
    from tgiops.core.status import parse_status_report

    facts = parse_status_report(report)
    sections = split_sections(report)
    out = []
    for unit in facts.units:
        if unit.name in RESERVED_UNITS:
            continue
        devices = _GPU_DEVICES_RE.search(sections.get(f"unit {unit.name}", ""))
        wanted = {int(i) for i in devices.group(1).split(",") if i} if devices else None
        gpus = [g for g in facts.gpus if wanted is None or g.index in wanted]
        engine: dict[str, float] | None = None
        text = sections.get(f"metrics {unit.name}", "")
        if text.strip():
            try:
                engine = parse_metrics(text)
            except TgiopsError:
                engine = None
        out.append((unit.name, Readings(timestamp, gpus, engine, unit.http.health_code == 200)))
    return out


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


@dataclass
class Outbox:
    """The loop's memory between ticks: what is not sent yet and whether CloudWatch is
    failing. Every method returns the log lines to write, so an outage is said once when it
    starts, once when points start being dropped, and once when it ends (never every tick)."""

    buffer: Buffer
    failing_since: float | None = None
    failures: int = 0
    _drop_said: bool = False
    _dropped_at_start: int = 0
    _cause: str | None = None

    def queue(self, data: Iterable[dict[str, Any]]) -> list[str]:
        before = self.buffer.dropped
        self.buffer.add(data)
        if self.buffer.dropped > before and not self._drop_said:
            self._drop_said = True
            return [
                f"the buffer holds at most {self.buffer.limit} points: dropping the oldest "
                "until CloudWatch answers again"
            ]
        return []

    def batches(self) -> list[list[dict[str, Any]]]:
        return self.buffer.batches()

    def failed(self, reason: str, now: float) -> list[str]:
        self.failures += 1
        if self.failing_since is not None:
            # Another cause within the outage (the network is back, CloudWatch now refuses):
            # said once per cause, so a new reason is never hidden behind the first. Causes
            # compare without their numbers ("sending 343 metric points ...").
            if _cause(reason) == self._cause:
                return []
            self._cause = _cause(reason)
            return [f"CloudWatch still does not take the points, now: {reason}"]
        self.failing_since = now
        self._cause = _cause(reason)
        self._dropped_at_start = self.buffer.dropped
        return [
            f"CloudWatch PutMetricData failed: {reason}. Buffering up to {self.buffer.limit} "
            "points and retrying every interval (said once per outage)"
        ]

    def delivered(self, count: int, now: float) -> list[str]:
        self.buffer.sent(count)
        if self.failing_since is None:
            return []
        lost = self.buffer.dropped - self._dropped_at_start
        lines = [
            f"CloudWatch answers again after {now - self.failing_since:.0f} s and "
            f"{self.failures} failed sends; buffered points are being sent"
            + (f" ({lost} oldest points were dropped)" if lost else "")
        ]
        self.failing_since = None
        self.failures = 0
        self._drop_said = False
        return lines


def _cause(reason: str) -> str:
    return re.sub(r"\d+", "N", reason)


# -- `monitor show`: the latest value of each metric, from ListMetrics + GetMetricData -------


def latest_queries(
    metrics: Sequence[Mapping[str, Any]], period_s: int = 60
) -> list[dict[str, Any]]:
    """GetMetricData queries (ids ``m0``, ``m1``...) for ListMetrics' ``metrics``."""
    return [average_query(f"m{i}", m, period_s) for i, m in enumerate(metrics)]


def average_query(query_id: str, metric: Mapping[str, Any], period_s: int) -> dict[str, Any]:
    """One GetMetricData query: ``metric`` (a ListMetrics entry of tgiops' namespace) averaged
    over periods of ``period_s``."""
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": NAMESPACE,
                "MetricName": metric["MetricName"],
                "Dimensions": list(metric.get("Dimensions") or ()),
            },
            "Period": period_s,
            "Stat": "Average",
        },
        "ReturnData": True,
    }


@dataclass(frozen=True)
class HostValues:
    """The latest values of one (instance, unit): per metric, and per GPU index."""

    instance_id: str
    unit: str
    group: str | None
    values: Mapping[str, tuple[float, float]]  # name -> (value, epoch seconds)
    gpus: Mapping[str, Mapping[str, tuple[float, float]]]  # index -> name -> (value, epoch)

    @property
    def latest(self) -> float | None:
        stamps = [t for _, t in self.values.values()]
        stamps += [t for g in self.gpus.values() for _, t in g.values()]
        return max(stamps) if stamps else None


def latest_values(
    metrics: Sequence[Mapping[str, Any]],
    results: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> list[HostValues]:
    """``results``: query id -> (epoch timestamps, values) as GetMetricData answered them.
    Each metric's newest point, grouped per (instance, unit); metrics without points are left
    out, and so are hosts with none."""
    hosts: dict[tuple[str, str], dict[str, Any]] = {}
    for i, metric in enumerate(metrics):
        stamps, values = results.get(f"m{i}", ((), ()))
        if not stamps:
            continue
        newest = max(range(len(stamps)), key=lambda k: stamps[k])
        point = (float(values[newest]), float(stamps[newest]))
        dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions") or ()}
        key = (dims.get("InstanceId", "?"), dims.get("Unit", "?"))
        host = hosts.setdefault(key, {"group": dims.get("Group"), "values": {}, "gpus": {}})
        if "GPU" in dims:
            host["gpus"].setdefault(dims["GPU"], {})[metric["MetricName"]] = point
        else:
            host["values"][metric["MetricName"]] = point
    return [
        HostValues(iid, unit, h["group"], h["values"], dict(sorted(h["gpus"].items())))
        for (iid, unit), h in sorted(hosts.items())
    ]
