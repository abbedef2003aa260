"""Turn results into what the CLI prints: JSON objects for scripts, text for people.

Pure: returns strings and dicts; the CLI writes them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tgiops.core.catalog import ModelSpec
from tgiops.core.plan import Plan
from tgiops.core.recovery import GP3_BASELINE_MIB_S
from tgiops.core.status_schema import SCHEMA as STATUS_SCHEMA

if TYPE_CHECKING:  # annotations only: `tgiops plan` need not import deploy (start-up time)
    from tgiops.core.request import DeployResult

MIB_PER_GIB = 1024


def plan_as_text(plan: Plan) -> str:
    mem = plan.memory
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines = [
        f"{plan.model.alias} ({plan.model.repo_id}) on {plan.inventory.describe()}: {verdict}",
    ]
    if plan.problem:
        lines.append(f"  why: {plan.problem}")
    lines += [
        "",
        f"  engine      {plan.image}",
        f"  num_shard   {plan.num_shard}",
        f"  quantize    {plan.quantize or 'none'}",
        f"  dtype       {plan.dtype}",
        f"  attention   {'flash' if plan.flash_attention else 'non-flash fallback'}",
        f"  tokens      input {plan.max_input_tokens}, total {plan.max_total_tokens}, "
        f"prefill {plan.max_batch_prefill_tokens}",
        f"  memory/GPU  {mem.gpu_memory_mib / MIB_PER_GIB:.1f} GiB: weights "
        f"{mem.weights_per_gpu_mib / MIB_PER_GIB:.1f}, overhead "
        f"{mem.overhead_mib / MIB_PER_GIB:.2f}, activations "
        f"{mem.activations_mib / MIB_PER_GIB:.2f}, prefill logits "
        f"{mem.prefill_logits_mib / MIB_PER_GIB:.2f}, KV cache {mem.kv_cache_tokens} tokens "
        f"({mem.kv_bytes_per_token_per_gpu // 1024} KiB/token)",
        "  warmup      "
        + ", ".join(f"{k} {v / MIB_PER_GIB:.2f}" for k, v in mem.terms().items())
        + " GiB per GPU",
        "",
    ]
    if plan.launcher_args:  # none for a plan that does not fit
        lines.append("  launcher    " + " ".join(plan.launcher_args))
    if plan.env:
        lines.append("  env         " + " ".join(f"{k}={v}" for k, v in plan.env.items()))
    lines += ["", "Why:"] + [f"  - {r}" for r in plan.reasons]
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"  ! {w}" for w in plan.warnings]
    if plan.alternatives:
        lines += ["", "Alternatives:"] + [f"  * {a.description}" for a in plan.alternatives]
    return "\n".join(lines)


def models_as_rows(models: Iterable[ModelSpec]) -> list[dict[str, Any]]:
    return [
        {
            "alias": m.alias,
            "repo_id": m.repo_id,
            "parameters_b": m.parameters_b,
            "quantization": m.quantization,
            "gated": m.gated,
            "max_position_embeddings": m.max_position_embeddings,
        }
        for m in sorted(models, key=lambda m: m.alias)
    ]


MODELS_FOOTNOTE = (
    "quantization: the checkpoint's own (- = none, 16-bit weights). gated: yes = accept the "
    "licence on Hugging Face and deploy with a token that has access; no = public; - = not "
    "verified (deploy with a token to be safe). context: the model's context length in tokens."
)


def models_as_text(rows: list[dict[str, Any]]) -> str:
    """The `tgiops models` table, with what its columns mean."""
    table = rows_as_table(
        [{**r, "context": r["max_position_embeddings"]} for r in rows],
        ["alias", "repo_id", "parameters_b", "quantization", "gated", "context"],
    )
    return table + "\n\n" + "\n".join(textwrap.wrap(MODELS_FOOTNOTE, 79))


def rows_as_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned table (rich is used on a TTY by the CLI; this is the pipe form)."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    table = [columns] + [[cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def deploy_as_text(result: DeployResult) -> str:
    p = result.plan
    summary = (
        f"{p.model.alias}: num_shard {p.num_shard}, quantize {p.quantize or 'none'}, "
        f"dtype {p.dtype}, max_total_tokens {p.max_total_tokens}"
    )
    if result.dry_run:
        return "\n".join(
            [
                f"{result.host}: dry run, nothing changed ({summary})",
                "",
                f"--- {result.unit}.service ---",
                result.unit_text.rstrip(),
                "",
                f"--- /etc/tgiops/{result.unit}.env (mode 0600) ---",
                result.env_text_redacted.rstrip(),
                "",
                "--- remote commands ---",
                *result.remote_commands,
            ]
        )
    if result.healthy:
        what = "deployed" if result.changed else "unchanged"
        return (
            f"{result.host}: {what}, healthy in {result.elapsed_s:.1f}s — {result.unit} serves "
            f"{result.endpoint} ({summary})"
        )
    lines = [f"{result.host}: FAILED after {result.elapsed_s:.1f}s — {result.failure}"]
    if result.diagnosis:
        lines.append(f"  likely cause: {result.diagnosis}")
    lines.append(f"  now serving: {result.restored}")
    if result.journal_tail:
        lines += ["  last journal lines:"] + [
            f"    {line}" for line in result.journal_tail.splitlines()[-12:]
        ]
    return "\n".join(lines)


# --- alarms (issue 17) -------------------------------------------------------------------------
# JSON: AlarmsResult.as_dict / AlarmsListing.as_dict (tgiops.commands.alarms), printed as is.


def alarms_result_as_text(result: Any) -> str:
    """`alarms set` / `alarms delete`: one line per alarm, topic, subscription, budget."""
    who = result.owner.as_dict()
    name = f"stack {who['stack']}" if who["stack"] else f"group {who['asg']}"
    head = f"alarms of {name} (Group={who['group']}) in {result.region}"
    lines = [head + (" (dry run: nothing changed)" if result.dry_run else "") + ":"]
    for i in result.items:
        where = "" if i.region in (result.region, "global") else f" [{i.region}]"
        lines.append(f"  {i.status:<13} {i.kind:<12} {i.name}{where}")
        if i.detail:
            lines.append(f"{'':16}{i.detail}")
    if not result.items:
        lines.append("  nothing tgiops made for it")
    if result.action == "set" and result.topic_arn:
        mine = "created by tgiops" if result.topic_created_by_tgiops else "given, not tgiops'"
        lines.append(f"notifications: {result.topic_arn} ({mine})")
    lines.extend(f"warning: {w}" for w in result.warnings)
    lines.extend(f"not done: {p}" for p in result.problems)
    return "\n".join(lines)


_COMPARISON = {"LessThanThreshold": "<", "GreaterThanThreshold": ">"}


def alarms_listing_as_text(listing: Any) -> str:
    """`alarms list`: state, threshold and what each alarm watches; the budget, the topics."""
    who = listing.owner.as_dict()
    lines = [f"alarms of {who['stack'] or who['asg']} (Group={who['group']}):"]
    for a in listing.alarms:
        span = (a.period_s or 0) * a.evaluation_periods
        op = _COMPARISON.get(a.comparison, a.comparison)
        where = "" if a.region == listing.region else f" [{a.region}]"
        lines.append(f"  {a.state:<17} {a.name}{where}: {op} {a.threshold:g} over {span // 60} min")
        lines.append(f"{'':20}{a.watches}")
    if not listing.alarms:
        lines.append("  no alarms (tgiops alarms set)")
    if listing.budget:
        b = listing.budget
        lines.append(f"budget: {b['name']} ${b['usd_per_month']:g} {b['time_unit']}")
    lines.extend(f"topic: {t}" for t in listing.topics)
    return "\n".join(lines)


# --- status, undeploy (appended for issue 5) --------------------------------------------------

STATUS_COLUMNS = [
    "host",
    "unit",
    "verdict",
    "model",
    "systemd",
    "up",
    "restarts",
    "reqs",
    "queue",
    "batch",
    "ms/tok",
    "reason",
]
_VERDICT_STYLE = {
    "healthy": "bold green",
    "loading": "bold cyan",
    "degraded": "bold yellow",
    "failed": "bold red",
    "not-deployed": "dim",
    "unreachable": "bold magenta",
}
_INFO_KEYS = (
    "model_id",
    "model_sha",
    "version",
    "max_input_tokens",
    "max_total_tokens",
    "max_concurrent_requests",
    "max_batch_total_tokens",
)


_INFO_TEXT = ("model_id", "model_sha", "version")


def _typed(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        return None
    return value


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _status_unit_as_dict(host: Any, u: Any) -> dict[str, Any]:
    f = u.facts
    data: dict[str, Any] = {
        "unit": u.unit,
        "verdict": u.verdict,
        "reason": u.reason,
        "model": None,
        "endpoint": None,
        "plan": None,
        "systemd": None,
        "container": None,
        "container_error": None,
        "tgi": None,
        "diagnosis": None,
    }
    if f is None:
        return data
    p = f.plan
    data["model"] = {"alias": p.alias, "model_id": p.model_id}
    data["endpoint"] = f.http.endpoint
    data["plan"] = {
        "image": p.image,
        "engine": {"name": p.engine[0], "version": p.engine[1]} if p.engine else None,
        "model_id": p.model_id,
        "num_shard": p.num_shard,
        "quantize": p.quantize,
        "max_input_tokens": p.max_input_tokens,
        "max_total_tokens": p.max_total_tokens,
        "bind_address": p.bind_address,
        "port": p.port,
        "data_dir": p.data_dir,
    }
    if f.systemd is not None:
        st = f.systemd.state
        since = f.systemd.since_epoch_s
        data["systemd"] = {
            "load_state": st.load_state,
            "active_state": st.active_state,
            "sub_state": st.sub_state,
            "unit_file_state": st.unit_file_state,
            "result": st.result,
            "exec_main_status": st.exec_main_status,
            "main_pid": st.main_pid,
            "n_restarts": st.n_restarts,
            "since": f.systemd.since_iso or f.systemd.since_text,
            "active_for_s": (
                host.now_epoch_s - since
                if host.now_epoch_s is not None and since is not None
                else None
            ),
        }
    if f.container is not None:
        c = f.container
        data["container"] = {
            "id": c.id,
            "image": c.image,
            "state": c.status,
            "running": c.running,
            "started_at": c.started_at,
            "exit_code": c.exit_code,
            "restart_count": c.restart_count,
        }
    data["container_error"] = f.container_error
    h = f.http
    info = None
    if h.info is not None:
        # Typed as the schema says, whatever the endpoint answered (it may not be TGI).
        info = {k: _typed(h.info.get(k), str if k in _INFO_TEXT else int) for k in _INFO_KEYS}
        if info["max_input_tokens"] is None:  # TGI 2.0.x names it max_input_length
            info["max_input_tokens"] = _typed(h.info.get("max_input_length"), int)
    metrics = None
    if h.metrics is not None:
        m = h.metrics
        metrics = {
            "request_count": m.request_count,
            "request_success": m.request_success,
            "request_failure": m.request_failure,
            "queue_size": m.queue_size,
            "batch_size": m.batch_size,
            "mean_time_per_token_ms": _round(
                None if m.mean_time_per_token_s is None else m.mean_time_per_token_s * 1000
            ),
            "kv_cache_usage": m.kv_cache_usage,
            "generation_tokens": m.generation_tokens,
        }
    data["tgi"] = {
        "health_status": h.health_code,
        "health_detail": h.detail,
        "info": info,
        "info_error": h.info_error,
        "metrics": metrics,
        "metrics_error": h.metrics_error,
    }
    data["diagnosis"] = f.diagnosis
    return data


def _ec2_as_dict(e: Any) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "instance_id": e.instance_id,
        "name": e.name,
        "instance_type": e.instance_type,
        "lifecycle": e.lifecycle,
        "state": e.state,
        "availability_zone": e.availability_zone,
        "public_ip": e.public_ip,
        "elastic_ip": e.elastic_ip,
        "on_demand_usd_per_hour": e.on_demand_usd_per_hour,
        "spot_usd_per_hour": e.spot_usd_per_hour,
        "price_date": e.price_date,
        "price_source": e.price_source,
        "error": e.error,
        "warnings": list(e.warnings),
    }


def status_as_dict(report: Any) -> dict[str, Any]:
    """The documented `tgiops status --json` object (README: "Status JSON")."""
    return {
        "schema": STATUS_SCHEMA,
        "generated_at": report.generated_at,
        "elapsed_s": round(report.elapsed_s, 3),
        "healthy": report.healthy,
        "counts": report.counts(),
        "hosts": [
            {
                "target": h.target,
                "destination": h.destination,
                "reachable": h.reachable,
                "error": h.error,
                "round_trips": h.round_trips,
                "elapsed_s": round(h.elapsed_s, 3),
                "ec2": _ec2_as_dict(h.ec2),
                "gpus": [
                    {
                        "index": g.index,
                        "name": g.name,
                        "utilization_pct": g.utilization_pct,
                        "memory_used_mib": g.memory_used_mib,
                        "memory_total_mib": g.memory_mib,
                    }
                    for g in h.gpus
                ],
                "gpus_error": h.gpus_error,
                "units": [_status_unit_as_dict(h, u) for u in h.units],
            }
            for h in report.hosts
        ],
    }


def _number(value: float | None, fmt: str = "{:g}") -> str | None:
    return None if value is None else fmt.format(value)


def _up_for(host: Any, facts: Any) -> str | None:
    from tgiops.core.status import format_duration

    sd = facts.systemd if facts else None
    if sd is None or sd.since_epoch_s is None or host.now_epoch_s is None:
        return None
    if sd.state.active_state != "active":  # ActiveEnterTimestamp is the last activation
        return None
    return format_duration(host.now_epoch_s - sd.since_epoch_s)


def status_rows(report: Any) -> list[dict[str, Any]]:
    """One row per (host, unit) with the STATUS_COLUMNS, as text (None shows as '-')."""
    rows = []
    for h in report.hosts:
        for u in h.units:
            f = u.facts
            st = f.systemd.state if f and f.systemd else None
            m = f.http.metrics if f else None
            model = None
            if f is not None:
                model = f.plan.alias or f.plan.model_id
            rows.append(
                {
                    "host": h.target,
                    "unit": u.unit,
                    "verdict": u.verdict,
                    "model": model,
                    "systemd": f"{st.active_state}/{st.sub_state}" if st else None,
                    "up": _up_for(h, f),
                    "restarts": st.n_restarts if st else None,
                    "reqs": _number(m.request_count if m else None),
                    "queue": _number(m.queue_size if m else None),
                    "batch": _number(m.batch_size if m else None),
                    "ms/tok": _number(
                        m.mean_time_per_token_s * 1000
                        if m and m.mean_time_per_token_s is not None
                        else None,
                        "{:.1f}",
                    ),
                    "reason": u.reason,
                }
            )
    return rows


def _gpus_text(h: Any) -> str:
    if h.gpus_error:
        return f"GPUs: {h.gpus_error}"
    if not h.gpus:
        return "GPUs: -" if not h.reachable else "GPUs: none"
    parts = [
        f"{g.index}:{g.utilization_pct}% {g.memory_used_mib / MIB_PER_GIB:.1f}/"
        f"{g.memory_mib / MIB_PER_GIB:.1f}GiB"
        for g in h.gpus
    ]
    return f"GPUs ({len(h.gpus)}x {h.gpus[0].name}): " + ", ".join(parts)


def _ec2_text(e: Any) -> str:
    if e is None:
        return "not an EC2 target"
    ip = e.public_ip or "no public IP"
    if e.elastic_ip:
        ip += " (Elastic IP)"
    elif e.elastic_ip is False and e.public_ip:
        ip += " (not the Elastic IP)"
    price = []
    if e.spot_usd_per_hour is not None:
        price.append(f"${e.spot_usd_per_hour:.4g}/h spot")
    if e.on_demand_usd_per_hour is not None:
        price.append(f"${e.on_demand_usd_per_hour:.4g}/h on-demand")
    name = f" ({e.name})" if e.name else ""
    text = (
        f"{e.instance_id}{name} {e.instance_type} {e.lifecycle} {e.state} "
        f"{e.availability_zone} {ip}" + (f", {' / '.join(price)}" if price else "")
    )
    return text + (f" [{e.error}]" if e.error else "")


def status_host_lines(report: Any) -> list[str]:
    return [f"{h.target}: {_ec2_text(h.ec2)}; {_gpus_text(h)}" for h in report.hosts]


def _status_footer(report: Any) -> list[str]:
    counts = report.counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    lines = [f"{summary or 'no units'} ({report.elapsed_s:.1f}s)"]
    prices = [h.ec2 for h in report.hosts if h.ec2 is not None]
    if prices:
        from tgiops.core.cost import fleet_cost, host_cost

        cost = fleet_cost(
            [host_cost(h.target, h.ec2) for h in report.hosts if h.ec2 is not None],
            price_date=prices[0].price_date,
            price_source=prices[0].price_source,
        )
        unknown = f", {cost.unknown} unknown price(s) left out" if cost.unknown else ""
        lines.append(
            f"total: ${cost.usd_per_hour:,.4g}/h, ${cost.usd_per_30_days:,.4g} per 30 days"
            f"{unknown} (`tgiops cost` for the spot saving)"
        )
        lines.append(
            f"on-demand prices as of {prices[0].price_date}: {prices[0].price_source}; "
            "spot: latest DescribeSpotPriceHistory"
        )
    return lines


# Narrow layouts keep these columns first (the reason goes on its own line below the row);
# the rest join while they fit the width. `-o wide` shows STATUS_COLUMNS on one line.
_REQUIRED_COLUMNS = ("host", "unit", "verdict")
_OPTIONAL_COLUMNS = ("model", "up", "restarts", "systemd", "reqs", "queue", "batch", "ms/tok")
_GAP = "  "
_REASON_INDENT = "    "
DEFAULT_WIDTH = 80


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _wrap(text: str, width: int, indent: str = "", subsequent: str = "  ") -> list[str]:
    return textwrap.wrap(
        text,
        width=max(width, len(subsequent) + 8),
        initial_indent=indent,
        subsequent_indent=subsequent,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _fits(rows: list[dict[str, Any]], columns: list[str], width: int) -> bool:
    widths = [max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns]
    return sum(widths) + len(_GAP) * (len(columns) - 1) <= width


def status_table_lines(
    report: Any, width: int | None = DEFAULT_WIDTH, *, wide: bool = False
) -> list[tuple[str, tuple[int, int] | None, str | None]]:
    """The unit table as (line, span of the verdict in it or None, verdict) for ``width``.

    Never cuts a value: columns are dropped instead (least useful first) and the reason goes on
    its own indented, wrapped line; when even host, unit and verdict do not fit side by side,
    each unit becomes a wrapped block. ``wide`` (or no width): every column on one line.
    """
    rows = status_rows(report)
    out: list[tuple[str, tuple[int, int] | None, str | None]] = []
    if wide or width is None:
        columns = list(STATUS_COLUMNS)
    else:
        columns = list(_REQUIRED_COLUMNS)
        for column in _OPTIONAL_COLUMNS:
            if _fits(rows, [*columns, column], width):
                columns.append(column)
        if not _fits(rows, columns, width):
            return _status_blocks(rows, width)
    widths = [max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns]
    start = sum(w + len(_GAP) for w in widths[: columns.index("verdict")])

    def line(values: list[str]) -> str:
        return _GAP.join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out.append((line(columns), None, None))
    for r in rows:
        verdict = _cell(r["verdict"])
        out.append((line([_cell(r[c]) for c in columns]), (start, start + len(verdict)), verdict))
        if "reason" not in columns and r["reason"]:
            out += [
                (text, None, None)
                for text in _wrap(r["reason"], width or 0, _REASON_INDENT, _REASON_INDENT)
            ]
    return out


def _status_blocks(
    rows: list[dict[str, Any]], width: int
) -> list[tuple[str, tuple[int, int] | None, str | None]]:
    out: list[tuple[str, tuple[int, int] | None, str | None]] = []
    for r in rows:
        verdict = _cell(r["verdict"])
        head = _wrap(f"{_cell(r['host'])} {_cell(r['unit'])}", width)
        out += [(text, None, None) for text in head]
        out.append((f"  {verdict}", (2, 2 + len(verdict)), verdict))
        details = ", ".join(f"{c} {r[c]}" for c in _OPTIONAL_COLUMNS if r[c] is not None)
        for text in (details, r["reason"]):
            if text:
                out += [(t, None, None) for t in _wrap(text, width, "  ", "    ")]
    return out


def _status_notes(report: Any, width: int | None) -> list[str]:
    lines = [*status_host_lines(report), "", *_status_footer(report)]
    if width is None:
        return lines
    return [wrapped for text in lines for wrapped in (_wrap(text, width) if text else [""])]


def status_as_text(report: Any, width: int | None = DEFAULT_WIDTH, *, wide: bool = False) -> str:
    """The plain form (pipes, files); ``status_as_rich`` styles the same lines on a TTY."""
    table = [text for text, _, _ in status_table_lines(report, width, wide=wide)]
    notes = _status_notes(report, None if wide else width)
    return "\n".join([*table, "", *notes])


def status_as_rich(report: Any, width: int | None = DEFAULT_WIDTH, *, wide: bool = False) -> Any:
    """A rich renderable of ``status_as_text``'s lines, the verdicts coloured. Print it with
    ``soft_wrap=wide``: a wide table is left to the terminal to wrap, never cropped."""
    from rich.console import Group
    from rich.text import Text

    parts = []
    for number, (text, span, verdict) in enumerate(status_table_lines(report, width, wide=wide)):
        if number == 0 and span is None and text.startswith("host "):
            text = text.upper()  # the table's header (a block layout has none)
        line = Text(text, style="bold" if number == 0 else "", no_wrap=True, overflow="ignore")
        if span is not None and verdict is not None:
            line.stylize(_VERDICT_STYLE.get(verdict, ""), *span)
        parts.append(line)
    notes = _status_notes(report, None if wide else width)
    parts.append(Text(""))
    parts += [Text(text, style="dim", no_wrap=True, overflow="ignore") for text in notes]
    return Group(*parts)


def undeploy_as_text(result: Any, *, already_absent: bool = False) -> str:
    if already_absent:
        what = result.unit or "no tgiops unit"
        return f"{result.host}: {what} already absent; nothing to undo"
    if result.removed:
        head = f"{result.host}: removed {result.unit} (unit, env file, container)"
    else:
        head = f"{result.host}: {result.unit} NOT fully removed: " + "; ".join(result.leftovers)
    cache = {
        "kept": "model cache kept: " + ", ".join(result.cache_paths) + " (--purge-cache)",
        "none": "no model cache found",
        "purged": "model cache removed",
        "unknown": "model cache location unknown; nothing purged",
    }.get(result.cache, "model cache " + result.cache)
    others = (
        f"; other tgiops units left running: {', '.join(result.other_units)}"
        if result.other_units
        else ""
    )
    return f"{head}; {cache}{others}"


# --- spot relaunch: bootstrap and reconcile ---------------------------------------------------


def _restored_line(u: Any) -> str:
    mode = "offline (HF_HUB_OFFLINE=1)" if u.offline else "online"
    text = f"  {u.unit} ({u.model}): {u.action}, " + ("healthy" if u.healthy else "NOT healthy")
    text += f", started {mode}, model cache {u.cache}"
    if u.boot_to_healthy_s is not None:
        text += f", healthy {u.boot_to_healthy_s:.1f} s after boot"
    if u.failure:
        text += f"\n    why: {u.failure}"
    return text


def _eip_line(e: Any) -> str:
    where = f"{e.allocation_id}" + (f" ({e.public_ip})" if e.public_ip else "")
    if e.changed:
        return f"  Elastic IP {where}: moved from {e.before or 'nowhere'} to {e.after}"
    return f"  Elastic IP {where}: stays on {e.after}"


def bootstrap_as_text(result: Any) -> str:
    lines = [f"{result.instance_id} ({result.region}): record from {result.record_source}"]
    lines += [_restored_line(u) for u in result.units]
    if result.elastic_ip:
        lines.append(_eip_line(result.elastic_ip))
    lines += [f"  note: {n}" for n in result.notes]
    lines.append(
        f"  {'changed' if result.changed else 'nothing changed'}; took {result.elapsed_s:.1f} s"
    )
    return "\n".join(lines)


def reconcile_as_text(result: Any) -> str:
    lines = [f"{result.selector}: {len(result.instances)} live instance(s)"]
    for i in result.instances:
        lines.append(f"{i.instance_id} via {i.destination or '-'}: record from {i.record_source}")
        lines += [_restored_line(u) for u in i.units]
        if i.failure:
            lines.append(f"  failed: {i.failure}")
    if result.elastic_ip:
        lines.append(_eip_line(result.elastic_ip))
    tg = result.target_group
    if tg:
        lines.append(
            f"  target group: registered {', '.join(tg.registered) or 'none'}; "
            f"deregistered {', '.join(tg.deregistered) or 'none'}"
        )
    lines += [f"  note: {n}" for n in result.notes]
    lines.append(
        f"  {'changed' if result.changed else 'nothing changed'}; "
        f"{'healthy' if result.healthy else 'NOT healthy'}; took {result.elapsed_s:.1f} s"
    )
    return "\n".join(lines)


def recovery_as_dict(rec: Any) -> dict[str, Any]:
    """``plan --json``'s ``recovery``: reading the weights on a replacement (recovery.py)."""
    return {
        "weight_gb": round(rec.weight_bytes / 1e9, 2),
        "gp3_baseline_mib_s": GP3_BASELINE_MIB_S,
        "gp3_baseline_read_s": rec.gp3_baseline_s,
        "data_volume_throughput_mib_s": rec.provisioned_mib_s,
        "data_volume_read_s": rec.provisioned_s,
        "local_nvme_gb": rec.local_nvme_gb,
        "local_nvme_read_s": rec.local_nvme_s,
        "recovery_target_s": rec.target_s,
        "recommended_throughput_mib_s": rec.recommended_mib_s,
        "advice": rec.advice or None,
    }


def recovery_as_text(rec: Any) -> str:
    """The recovery lines appended to ``plan``'s text output."""
    gb = rec.weight_bytes / 1e9
    lines = [
        "",
        "Recovery (reading the weights on a replacement instance; TGI's load comes on top):",
        f"  - weights {gb:.1f} GB: {rec.gp3_baseline_s:g} s at gp3's baseline "
        f"{GP3_BASELINE_MIB_S} MiB/s",
    ]
    if rec.provisioned_mib_s is not None:
        lines.append(f"  - {rec.provisioned_s:g} s at {rec.provisioned_mib_s} MiB/s provisioned")
    if rec.local_nvme_gb:
        lines.append(
            f"  - ~{rec.local_nvme_s:g} s from the local NVMe instance store ({rec.local_nvme_gb} "
            "GB, wiped on stop and spot reclaim)"
        )
    if rec.advice:
        lines.append(f"  - {rec.advice}")
    return "\n".join(lines) + "\n"


def error_as_dict(kind: str, message: str, exit_code: int, exc: BaseException | None = None):
    """The one JSON shape of every verb's failure (README: "Errors as JSON")."""
    data: dict[str, Any] = {
        "ok": False,
        "exit_code": exit_code,
        "error": {"type": kind, "message": message},
    }
    plan = getattr(exc, "plan", None)
    if plan is not None:  # a plan that does not fit: what was planned, and the alternatives
        from tgiops.core.request import any_plan_as_dict

        data["plan"] = any_plan_as_dict(plan)
    return data
