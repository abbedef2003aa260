"""Turn results into what the CLI prints: JSON objects for scripts, text for people.

Pure: returns strings and dicts; the CLI writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tgiops.catalog import ModelSpec
from tgiops.deploy import DeployResult
from tgiops.plan import Plan

MIB_PER_GIB = 1024


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The documented `tgiops plan --json` object (README: "Plan JSON")."""
    mem = plan.memory
    return {
        "fits": plan.fits,
        "problem": plan.problem,
        "model": {
            "alias": plan.model.alias,
            "repo_id": plan.model.repo_id,
            "revision": plan.model.revision,
        },
        "hardware": {
            "gpus": plan.inventory.count,
            "gpu": plan.inventory.gpus[0].name,
            "compute_capability": "{}.{}".format(*plan.inventory.compute_capability),
            "instance_type": plan.inventory.instance_type,
        },
        "engine": {"name": plan.engine.name, "version": plan.engine.version_text},
        "image": plan.image,
        "num_shard": plan.num_shard,
        "quantize": plan.quantize,
        "dtype": plan.dtype,
        "flash_attention": plan.flash_attention,
        "max_input_tokens": plan.max_input_tokens,
        "max_total_tokens": plan.max_total_tokens,
        "max_batch_prefill_tokens": plan.max_batch_prefill_tokens,
        "cuda_memory_fraction": plan.cuda_memory_fraction,
        "env": dict(plan.env),
        "launcher_args": list(plan.launcher_args),
        "memory": {
            "gpu_memory_gib": round(mem.gpu_memory_mib / MIB_PER_GIB, 2),
            "usable_gib": round(mem.usable_mib / MIB_PER_GIB, 2),
            "weights_per_gpu_gib": round(mem.weights_per_gpu_mib / MIB_PER_GIB, 2),
            "overhead_gib": round(mem.overhead_mib / MIB_PER_GIB, 2),
            "activations_gib": round(mem.activations_mib / MIB_PER_GIB, 2),
            "kv_bytes_per_token_per_gpu": mem.kv_bytes_per_token_per_gpu,
            "kv_cache_tokens": mem.kv_cache_tokens,
        },
        "reasons": list(plan.reasons),
        "warnings": list(plan.warnings),
        "alternatives": [
            {
                "description": a.description,
                "instance_type": a.instance_type,
                "usd_per_hour": a.usd_per_hour,
                "flags": list(a.flags),
            }
            for a in plan.alternatives
        ],
    }


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
        f"{mem.activations_mib / MIB_PER_GIB:.2f}, KV cache {mem.kv_cache_tokens} tokens "
        f"({mem.kv_bytes_per_token_per_gpu // 1024} KiB/token)",
        "",
        "  launcher    " + " ".join(plan.launcher_args),
    ]
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


def deploy_as_dict(result: DeployResult) -> dict[str, Any]:
    """The documented `tgiops deploy --json` object (README: "Deploy JSON")."""
    data: dict[str, Any] = {
        "host": result.host,
        "unit": result.unit,
        "changed": result.changed,
        "healthy": result.healthy,
        "dry_run": result.dry_run,
        "endpoint": result.endpoint,
        "elapsed_s": round(result.elapsed_s, 2),
        "round_trips": result.round_trips,
        "rolled_back": result.rolled_back,
        "restored": result.restored,
        "failure": result.failure,
        "diagnosis": result.diagnosis,
        "plan": plan_as_dict(result.plan),
    }
    if result.dry_run:
        data["unit_text"] = result.unit_text
        data["env_file"] = result.env_text_redacted
        data["remote_commands"] = list(result.remote_commands)
    if result.journal_tail:
        data["journal_tail"] = result.journal_tail.splitlines()
    return data


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
