"""Score the vLLM memory model against real startups (tests/data/calibration/vllm_startups.yaml).

Pure: a case (one parsed YAML mapping) and the catalog in, one ``Row`` out. Used by
tests/unit/test_vllm_calibration.py and ``scripts/bench_planner.py --engine vllm``. A case
without the facts to plan (GPU or model not stated, model not in the catalog) is listed with
the reason and not scored. Nothing here is tuned to a case (tgiops/docs/vllm-memory-model.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tgiops.core import hardware
from tgiops.core.catalog import ModelSpec
from tgiops.core.engines import vllm
from tgiops.core.errors import InputError

# Checkpoints a case names that the catalog does not hold, mapped to a catalog entry with the
# same architecture and weight format (a stated approximation, shown in the table).
STAND_INS: dict[str, tuple[str, str]] = {
    "redhatai/llama-3.3-70b-instruct-fp8-dynamic": (
        "llama-3.1-70b-fp8",
        "stand-in llama-3.1-70b-fp8: Llama 3.3 70B has Llama 3.1 70B's architecture, FP8 weights",
    ),
}


@dataclass(frozen=True)
class Row:
    id: str
    confidence: str
    outcome: str  # what vLLM reported
    predicted: str  # "fits" | "max_len_error" | "no_kv_memory" | ""
    predicted_value: float | None  # tokens, or GiB for available_kv_gib cases
    reported_value: float | None
    error_pct: float | None
    agrees: bool | None  # None: not scored
    note: str

    @property
    def scored(self) -> bool:
        return self.agrees is not None


def _model(
    case: Mapping[str, Any], catalog: Mapping[str, ModelSpec]
) -> tuple[ModelSpec | None, str]:
    model_id = case.get("model_id")
    if not model_id:
        return None, "model not stated"
    key = str(model_id).casefold()
    for spec in catalog.values():
        if spec.repo_id.casefold() == key:
            return spec, ""
    if key in STAND_INS:
        alias, why = STAND_INS[key]
        return catalog[alias], why
    return None, f"{model_id} is not in models.yaml"


def _unscored(case: Mapping[str, Any], why: str) -> Row:
    reported = case.get("reported") or {}
    value = reported.get("kv_tokens", reported.get("available_kv_gib"))
    return Row(case["id"], case["confidence"], case["outcome"], "", None, value, None, None, why)


def evaluate(case: Mapping[str, Any], catalog: Mapping[str, ModelSpec]) -> Row:
    """Plan the case's model on its hardware with its flags; compare with what vLLM printed."""
    model, why = _model(case, catalog)
    if model is None:
        return _unscored(case, why)
    if not case.get("gpu") or not case.get("gpus"):
        return _unscored(case, "GPU not stated")
    flags = case.get("flags") or {}
    total_gib = case.get("device_total_gib")
    try:
        inventory = hardware.inventory_from_spec(str(case["gpu"]), int(case["gpus"]))
    except InputError as exc:
        return _unscored(case, str(exc))
    max_len = flags.get("max_model_len")
    overrides: dict[str, Any] = {
        "num_shard": flags.get("tensor_parallel_size") or 1,
        "gpu_memory_utilization": flags.get("gpu_memory_utilization"),
        "max_num_seqs": flags.get("max_num_seqs"),
        "max_num_batched_tokens": flags.get("max_num_batched_tokens"),
    }
    notes = [why] if why else []
    if case.get("engine") == "v0" and not overrides["max_num_batched_tokens"]:
        # V0 without chunked prefill: max_num_batched_tokens = max(max_model_len, 2048)
        # (vllm/config.py SchedulerConfig, V0), so its profile run is sized by the length.
        overrides["max_num_batched_tokens"] = max(
            int(max_len or model.max_position_embeddings), 2048
        )
        overrides["max_num_seqs"] = overrides["max_num_seqs"] or 256
        notes.append("V0: profile sized by max_model_len")
    plan = vllm.plan_vllm(
        model,
        inventory,
        vllm.VllmOverrides(**overrides),
        device_total_mib=total_gib * 1024 if total_gib else None,
    )
    mem = plan.memory
    tokens = mem.kv_cache_tokens
    avail_gib = mem.available_kv_mib / 1024
    if mem.available_kv_mib <= 0:
        predicted = "no_kv_memory"
    elif max_len is not None and int(max_len) > tokens:
        predicted = "max_len_error"
    else:
        predicted = "fits"
    reported = case.get("reported") or {}
    outcome = case["outcome"]
    expected = {"kv_tokens": "fits", "available_kv_gib": "fits"}.get(outcome, outcome)
    if outcome == "available_kv_gib":
        pred_value: float | None = round(avail_gib, 2)
        rep_value = reported.get("available_kv_gib")
    elif outcome == "no_kv_memory":
        pred_value, rep_value = round(avail_gib, 2), reported.get("available_kv_gib")
    else:
        pred_value, rep_value = float(tokens), reported.get("kv_tokens")
    error = (
        round(100.0 * (pred_value - rep_value) / abs(rep_value), 1)
        if pred_value is not None and rep_value and outcome != "no_kv_memory"
        else None
    )
    notes.append(
        f"tp {plan.tensor_parallel_size}, util {plan.gpu_memory_utilization:g}, weights "
        f"{mem.weights_mib / 1024:.2f} GiB, activations {mem.activations_mib / 1024:.2f} GiB, "
        f"non-torch {mem.non_torch_mib / 1024:.2f} GiB, KV {avail_gib:.2f} GiB = {tokens} tokens"
    )
    return Row(
        case["id"],
        case["confidence"],
        outcome,
        predicted,
        pred_value,
        rep_value,
        error,
        predicted == expected,
        "; ".join(notes),
    )


def table(rows: list[Row]) -> str:
    lines = [f"{'case':42} {'conf':6} {'reported':26} {'predicted':26} {'error %':>8}"]
    for r in rows:
        rep = r.outcome + (f" {r.reported_value:g}" if r.reported_value is not None else "")
        pred = (
            r.predicted + (f" {r.predicted_value:g}" if r.predicted_value is not None else "")
        ) or "-"
        err = f"{r.error_pct:+.1f}" if r.error_pct is not None else "-"
        mark = "" if r.agrees is None else ("  agrees" if r.agrees else "  DISAGREES")
        lines.append(f"{r.id:42} {r.confidence:6} {rep:26} {pred:26} {err:>8}{mark}")
        lines.append(f"{'':42} {r.note}")
    scored = [r for r in rows if r.scored]
    agree = sum(1 for r in scored if r.agrees)
    lines.append(f"\n{len(rows)} cases, {len(scored)} scored, {agree} agree on the outcome")
    return "\n".join(lines)
