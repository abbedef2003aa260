"""Spot prices (DescribeSpotPriceHistory): reconcile's price check, `tgiops recommend`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tgiops.edges.aws.base import AwsBase, epoch_seconds


class SpotCalls(AwsBase):
    """The spot price calls of ``Aws``."""

    def spot_price(self, instance_type: str, availability_zone: str) -> float | None:
        """The current Linux spot price in USD/hour, or None when EC2 reports none."""
        response = self.call(
            "ec2",
            "describe_spot_price_history",
            what=f"looking up the spot price of {instance_type} in {availability_zone}",
            iam_action="ec2:DescribeSpotPriceHistory",
            InstanceTypes=[instance_type],
            AvailabilityZone=availability_zone,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(timezone.utc),
        )
        history = [
            entry
            for entry in response.get("SpotPriceHistory", [])
            if entry.get("InstanceType") == instance_type
            and entry.get("AvailabilityZone", availability_zone) == availability_zone
        ]
        if not history:
            return None
        latest = max(history, key=lambda e: epoch_seconds(e.get("Timestamp")))
        return float(latest["SpotPrice"])

    def lowest_spot_prices(self, instance_types: Sequence[str]) -> dict[str, tuple[float, str]]:
        """Per instance type, the lowest current Linux spot price (USD/h) over the region's
        availability zones and that zone: one paginated ``DescribeSpotPriceHistory`` with
        ``StartTime`` now, which returns the price in force in each zone
        (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html).
        Types EC2 reports no price for are absent (never guessed)."""
        entries: list[Mapping[str, Any]] = []
        token: str | None = None
        now = datetime.now(timezone.utc)
        for _ in range(100):  # a bound on pages: 1000 entries each
            params: dict[str, Any] = {
                "InstanceTypes": list(instance_types),
                "ProductDescriptions": ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                "StartTime": now,
                "MaxResults": 1000,
            }
            if token:
                params["NextToken"] = token
            response = self.call(
                "ec2",
                "describe_spot_price_history",
                what=f"reading spot prices in {self.region}",
                iam_action="ec2:DescribeSpotPriceHistory",
                **params,
            )
            entries.extend(response.get("SpotPriceHistory", []))
            token = response.get("NextToken") or None
            if not token:
                break
        return lowest_spot_by_type(entries, set(instance_types))


def lowest_spot_by_type(
    history: Iterable[Mapping[str, Any]], wanted: set[str]
) -> dict[str, tuple[float, str]]:
    """(lowest price, its zone) per instance type from SpotPriceHistory entries: the latest
    entry of each (type, zone) is the price in force there; ties go to the first zone by name."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for entry in history:
        key = (str(entry.get("InstanceType", "")), str(entry.get("AvailabilityZone", "")))
        if key[0] not in wanted or not key[1]:
            continue
        seen = latest.get(key)
        if seen is None or epoch_seconds(entry.get("Timestamp")) > epoch_seconds(
            seen.get("Timestamp")
        ):
            latest[key] = entry
    lowest: dict[str, tuple[float, str]] = {}
    for (itype, zone), entry in sorted(latest.items()):
        try:
            price = float(entry["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            continue  # an entry without a readable price is no price
        if itype not in lowest or price < lowest[itype][0]:
            lowest[itype] = (price, zone)
    return lowest
