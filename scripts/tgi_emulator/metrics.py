"""The router's Prometheus metrics (docs/tgi.md §5, docs/source/reference/metrics.md@737).

Names are TGI's; values move with the emulator's requests. Rendered in the text format that
`metrics-exporter-prometheus` writes (counters without a `_total` suffix, histograms as
`_bucket{le=...}`, `_sum`, `_count`).
"""

from __future__ import annotations

import threading

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LENGTH_BUCKETS = (1.0, 8.0, 32.0, 128.0, 512.0, 2048.0, 8192.0, 32768.0, 131072.0)

COUNTERS = (
    "tgi_request_count",
    "tgi_request_success",
    "tgi_batch_inference_count",
    "tgi_batch_inference_success",
)
GAUGES = (
    "tgi_queue_size",
    "tgi_batch_current_size",
    "tgi_batch_current_max_tokens",
    "tgi_batch_next_size",
    "tgi_batch_max_total_tokens",
)
DURATION_HISTOGRAMS = (
    "tgi_request_duration",
    "tgi_request_queue_duration",
    "tgi_request_validation_duration",
    "tgi_request_inference_duration",
    "tgi_request_mean_time_per_token_duration",
    "tgi_batch_inference_duration",
    "tgi_batch_forward_duration",
    "tgi_batch_decode_duration",
    "tgi_batch_filter_duration",
)
LENGTH_HISTOGRAMS = (
    "tgi_request_input_length",
    "tgi_request_generated_tokens",
    "tgi_request_max_new_tokens",
    "tgi_request_skipped_tokens",
)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, float] = {name: 0 for name in COUNTERS}
        self.failures: dict[str, int] = {}
        self.gauges: dict[str, float] = {name: 0 for name in GAUGES}
        self.histograms: dict[str, _Histogram] = {
            **{n: _Histogram(_DURATION_BUCKETS) for n in DURATION_HISTOGRAMS},
            **{n: _Histogram(_LENGTH_BUCKETS) for n in LENGTH_HISTOGRAMS},
        }

    def inc(self, name: str, value: float = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + value

    def fail(self, err: str) -> None:
        with self._lock:
            self.failures[err] = self.failures.get(err, 0) + 1

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def add_gauge(self, name: str, delta: float) -> None:
        with self._lock:
            self.gauges[name] = self.gauges.get(name, 0) + delta

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self.histograms[name].observe(value)

    def record_request(
        self, input_length: int, generated: int, max_new_tokens: int, duration_s: float
    ) -> None:
        self.inc("tgi_request_success")
        self.inc("tgi_batch_inference_count")
        self.inc("tgi_batch_inference_success")
        self.observe("tgi_request_duration", duration_s)
        self.observe("tgi_request_queue_duration", duration_s * 0.01)
        self.observe("tgi_request_validation_duration", duration_s * 0.01)
        self.observe("tgi_request_inference_duration", duration_s * 0.98)
        self.observe("tgi_request_mean_time_per_token_duration", duration_s / max(1, generated))
        self.observe("tgi_batch_inference_duration", duration_s * 0.98)
        self.observe("tgi_batch_forward_duration", duration_s * 0.9)
        self.observe("tgi_batch_decode_duration", duration_s * 0.05)
        self.observe("tgi_batch_filter_duration", duration_s * 0.01)
        self.observe("tgi_request_input_length", input_length)
        self.observe("tgi_request_generated_tokens", generated)
        self.observe("tgi_request_max_new_tokens", max_new_tokens)
        self.observe("tgi_request_skipped_tokens", 0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, value in self.counters.items():
                lines += [f"# TYPE {name} counter", f"{name} {_num(value)}"]
            if self.failures:
                lines.append("# TYPE tgi_request_failure counter")
                for err, value in sorted(self.failures.items()):
                    lines.append(f'tgi_request_failure{{err="{err}"}} {value}')
            for name, value in self.gauges.items():
                lines += [f"# TYPE {name} gauge", f"{name} {_num(value)}"]
            for name, hist in self.histograms.items():
                lines.append(f"# TYPE {name} histogram")
                for bound, count in zip(hist.buckets, hist.counts, strict=True):
                    lines.append(f'{name}_bucket{{le="{_num(bound)}"}} {count}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {hist.count}')
                lines.append(f"{name}_sum {_num(hist.total)}")
                lines.append(f"{name}_count {hist.count}")
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
