"""Prometheus text from an engine's ``/metrics`` as plain numbers (every engine exposes it)."""

from __future__ import annotations

import math

from tgiops.core.errors import HealthError


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name: value}, summed over label sets.

    Counters are keyed by their family name (TGI's names, e.g. ``tgi_request_count``; a
    counter exposed as ``x_total`` is keyed ``x``). Histogram buckets and summary quantiles are
    left out; for every histogram or summary
    ``NAME`` the result also has ``NAME_mean`` = ``NAME_sum`` / ``NAME_count`` when the count is
    non-zero, e.g. ``tgi_request_mean_time_per_token_duration_mean`` (seconds per token).
    Parsing is prometheus_client's, never by hand.
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    distributions: list[str] = []
    try:
        for family in text_string_to_metric_families(text):
            if family.type in ("histogram", "summary"):
                distributions.append(family.name)
            for sample in family.samples:
                if sample.name.endswith(("_bucket", "_created")) or "quantile" in sample.labels:
                    continue
                if not math.isfinite(sample.value):
                    continue
                name = sample.name
                if family.type == "counter" and name == f"{family.name}_total":
                    # The parser renames counters the OpenMetrics way (TGI's tgi_request_count
                    # comes back as tgi_request_count_total): key them by the exposed name.
                    name = family.name
                values[name] = values.get(name, 0.0) + float(sample.value)
    except ValueError as exc:
        raise HealthError(f"cannot parse the /metrics text: {exc}") from exc
    for name in distributions:
        count = values.get(f"{name}_count")
        if count:
            values[f"{name}_mean"] = values.get(f"{name}_sum", 0.0) / count
    return values
