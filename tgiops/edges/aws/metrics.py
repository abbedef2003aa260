"""CloudWatch metrics for `tgiops monitor`: the on-host loop's PutMetricData (instance role)
and `monitor show`'s ListMetrics + GetMetricData. Limits: docs/aws.md §5."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tgiops.edges.aws.base import AwsBase, epoch_seconds


class MetricCalls(AwsBase):
    """The CloudWatch metric calls of ``Aws``."""

    def put_metric_data(self, namespace: str, data: Sequence[Mapping[str, Any]]) -> None:
        """One PutMetricData request (at most 1000 MetricDatum dicts: core.monitor batches)."""
        self.call(
            "cloudwatch",
            "put_metric_data",
            what=f"sending {len(data)} metric points to CloudWatch ({namespace})",
            iam_action="cloudwatch:PutMetricData",
            Namespace=namespace,
            MetricData=list(data),
        )

    def list_metrics(
        self, namespace: str, dimensions: Sequence[Mapping[str, str]] = ()
    ) -> list[dict[str, Any]]:
        """Every metric of ``namespace`` that has ``dimensions`` (name and value each)."""
        metrics: list[dict[str, Any]] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(100):  # a bound on pages: 500 metrics each
            params: dict[str, Any] = {"Namespace": namespace}
            if dimensions:
                params["Dimensions"] = [dict(d) for d in dimensions]
            if token:
                params["NextToken"] = token
            response = self.call(
                "cloudwatch",
                "list_metrics",
                what=f"listing the CloudWatch metrics of {namespace}",
                iam_action="cloudwatch:ListMetrics",
                **params,
            )
            for m in response.get("Metrics", []):
                metric = {
                    "MetricName": m["MetricName"],
                    "Dimensions": list(m.get("Dimensions") or []),
                }
                # Each metric once: a reader that sums per metric (cost's tokens) must not count
                # one twice (moto's ListMetrics repeats a metric per batch it was sent in).
                key = json.dumps(metric, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    metrics.append(metric)
            token = response.get("NextToken") or None
            if not token:
                break
        return metrics

    def get_metric_data(
        self, queries: Sequence[Mapping[str, Any]], *, start: float, end: float
    ) -> dict[str, tuple[list[float], list[float]]]:
        """query id -> (epoch timestamps, values), for up to any number of queries (GetMetricData
        takes 500 a request, API_GetMetricData)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        begin = datetime.fromtimestamp(start, timezone.utc)
        until = datetime.fromtimestamp(end, timezone.utc)
        for first in range(0, len(queries), 500):
            token: str | None = None
            for _ in range(100):
                params: dict[str, Any] = {
                    "MetricDataQueries": [dict(q) for q in queries[first : first + 500]],
                    "StartTime": begin,
                    "EndTime": until,
                    "ScanBy": "TimestampDescending",
                }
                if token:
                    params["NextToken"] = token
                response = self.call(
                    "cloudwatch",
                    "get_metric_data",
                    what="reading CloudWatch metric data",
                    iam_action="cloudwatch:GetMetricData",
                    **params,
                )
                for result in response.get("MetricDataResults", []):
                    stamps, values = out.setdefault(result["Id"], ([], []))
                    stamps += [epoch_seconds(t) for t in result.get("Timestamps", [])]
                    values += [float(v) for v in result.get("Values", [])]
                token = response.get("NextToken") or None
                if not token:
                    break
        return out
