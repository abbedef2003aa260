"""`tgiops cost`: the parser and what it prints."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from tgiops.cli.args import add_json_arg, add_target_args, fleet_targets

if TYPE_CHECKING:  # the verb imports what it runs when it runs (start-up time of --help)
    from tgiops.core.cost import CostReport, HostCost, Usage


def add_cost_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "cost",
        help="what the target instances cost now: $/h, 30-day projection, spot saving",
        description="Each target instance's lifecycle and its price now: on-demand from "
        "tgiops' dated price table, spot from the current spot price of its zone "
        "(DescribeSpotPriceHistory). Totals in $/h and for 30 days, and what the same fleet "
        "would cost on-demand. A stopped instance costs no compute. Where `tgiops monitor` "
        "sends metrics: the last 24 hours' generated tokens, cost per million tokens and idle "
        "hours (every GPU below 5%). Exit 0 when every price is known, 1 when some are not "
        "(left out of the totals).",
    )
    add_target_args(c)
    c.add_argument(
        "--all", action="store_true", help="every running EC2 instance tagged tgiops:managed=true"
    )
    add_json_arg(c, "one JSON object {hosts, totals, price_date, price_source} on stdout")
    c.set_defaults(func=cmd_cost)


def cmd_cost(args: argparse.Namespace) -> int:
    from tgiops.cli.status import _status_aws
    from tgiops.commands.cost import gather_cost

    targets, _, _ = fleet_targets(args, allow_all=True)
    report = gather_cost(targets, aws=_status_aws(args, targets))
    if args.json:
        print(json.dumps(cost_as_dict(report), indent=2))
    else:
        print(cost_as_text(report))
    return 0 if report.unknown == 0 else 1


def _host_dict(h: HostCost) -> dict[str, Any]:
    return {
        "host": h.label,
        "instance_id": h.instance_id,
        "instance_type": h.instance_type,
        "lifecycle": h.lifecycle,
        "state": h.state,
        "availability_zone": h.availability_zone,
        "usd_per_hour": h.usd_per_hour,
        "on_demand_usd_per_hour": h.on_demand_usd_per_hour,
        "note": h.note,
        "usage": _usage_dict(h.usage, h),
        "usage_note": h.usage_note,
    }


def _usage_dict(u: Usage | None, h: HostCost) -> dict[str, Any] | None:
    if u is None:
        return None
    from tgiops.core.cost import USAGE_WINDOW_S

    return {
        "window_hours": USAGE_WINDOW_S // 3600,
        "hours_observed": u.hours_observed,
        "generated_tokens": round(u.generated_tokens),
        "idle_hours": u.idle_hours,
        "idle_percent": u.idle_percent,
        "usd_observed": h.usd_observed,
        "usd_per_million_tokens": h.usd_per_million_tokens,
    }


def cost_as_dict(report: CostReport) -> dict[str, Any]:
    from tgiops.core.cost import HOURS_PER_30_DAYS

    return {
        "hosts": [_host_dict(h) for h in report.hosts],
        "totals": {
            "usd_per_hour": report.usd_per_hour,
            "usd_per_30_days": report.usd_per_30_days,
            "on_demand_usd_per_hour": report.on_demand_usd_per_hour,
            "on_demand_usd_per_30_days": report.on_demand_usd_per_30_days,
            "spot_saving_usd_per_hour": report.spot_saving_usd_per_hour,
            "spot_saving_fraction": report.spot_saving_fraction,
            "hours_projected": HOURS_PER_30_DAYS,
            "unknown_prices": report.unknown,
            "generated_tokens_24h": (
                None if report.generated_tokens is None else round(report.generated_tokens)
            ),
            "idle_hours_24h": report.idle_hours,
            "usd_per_million_tokens": report.usd_per_million_tokens,
        },
        "price_date": report.price_date,
        "price_source": report.price_source,
    }


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:,.4g}"


def cost_as_text(report: CostReport) -> str:
    lines = []
    for h in report.hosts:
        what = " ".join(
            x
            for x in (h.instance_id, h.instance_type, h.lifecycle, h.state, h.availability_zone)
            if x
        )
        line = f"{h.label}: {what or '-'}  {_usd(h.usd_per_hour)}/h"
        if h.lifecycle == "spot" and h.on_demand_usd_per_hour:
            line += f" (on-demand {_usd(h.on_demand_usd_per_hour)}/h)"
        if h.note:
            line += f"  [{h.note}]"
        lines.append(line)
        if h.usage is not None:
            u = h.usage
            per_million = h.usd_per_million_tokens
            lines.append(
                f"  last 24 h ({u.hours_observed} h observed): {u.generated_tokens:,.0f} tokens"
                + (f", {_usd(per_million)} per million" if per_million is not None else "")
                + f", {u.idle_hours} idle h (every GPU < {u.idle_percent:g}%)"
            )
        elif h.usage_note and h.instance_id:
            lines.append(f"  usage: {h.usage_note}")
    lines.append(
        f"total: {_usd(report.usd_per_hour)}/h, {_usd(report.usd_per_30_days)} per 30 days"
        + (f" ({report.unknown} host(s) with unknown price left out)" if report.unknown else "")
    )
    saving = report.spot_saving_fraction
    lines.append(
        f"on-demand equivalent: {_usd(report.on_demand_usd_per_hour)}/h, "
        f"{_usd(report.on_demand_usd_per_30_days)} per 30 days"
        + (
            f"; spot saves {_usd(report.spot_saving_usd_per_hour)}/h ({saving:.0%})"
            if saving
            else ""
        )
    )
    if report.generated_tokens is not None:
        per_million = report.usd_per_million_tokens
        lines.append(
            f"last 24 h: {report.generated_tokens:,.0f} tokens generated"
            + (f", {_usd(per_million)} per million tokens" if per_million is not None else "")
            + f", {report.idle_hours} idle GPU-host hours"
        )
    lines.append(
        f"on-demand prices as of {report.price_date}: {report.price_source}; "
        "spot: latest DescribeSpotPriceHistory of the instance's zone"
    )
    return "\n".join(lines)
