"""The TGI emulator's warmup arithmetic against real TGI warmups (issue 14 section 2).

The same calibration set as the planner's (tests/data/calibration/tgi_warmups.yaml, each case
quoted from a public TGI issue), scored with the same thresholds, through the emulator's own
arithmetic (scripts/tgi_emulator/memory.py and engine.warmup_memory) and the warmup rules of
each case's own TGI release (memory.rules_for), never the planner's: an e2e test is only as
good as its double. Model facts come from the catalogs' YAML (read here as plain data), GPU
memory from nvidia-smi's memory.total of each card.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import pytest
import yaml
from tgi_emulator import engine, memory, zeroconfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "calibration"
CASES = {c["id"]: c for c in yaml.safe_load((DATA / "tgi_warmups.yaml").read_text())}
MODELS = {
    **yaml.safe_load((REPO / "models.yaml").read_text())["models"],
    **yaml.safe_load((DATA / "models.yaml").read_text())["models"],
}
# nvidia-smi memory.total (MiB) of the cards the cases name (docs/testbed.md / the issues'
# own nvidia-smi output): H100 80GB HBM3 81559, A100 80GB 81920, ...
GPU_MIB = {
    ("H100", None): 81559,
    ("H100", 80): 81559,
    ("A100", 80): 81920,
    ("RTX 3090", None): 24576,
    ("L40S", None): 46068,
    ("RTX A6000", None): 49140,
    ("L4", None): 23034,
    ("L4", 24): 23034,  # the TGI v3 overview's "L4 (24GB)": nvidia-smi's total for the card
    # the chat-app write-up's own nvidia-smi for these runs (tgi_warmups.yaml, llama31-8b-1x*)
    ("A10G", None): 23028,
    ("T4", None): 15360,
    # swallow-7b-1xa10-tgi203-kv (OCI A10, memory not stated): "NVIDIA A10, 23028 MiB" as
    # nvidia-smi prints it on public A10 hosts (tgiops/core/hardware.py's sources)
    ("A10", None): 23028,
    # llama3-70b-2xa40-tgi210-load-oom: torch's "total capacity of 44.34 GiB" from the case's
    # own OOM line (the A40's nvidia-smi total is 46068 MiB, tgiops/core/hardware.py)
    ("A40", 44.34): round(44.34 * 1024),
}
# Repositories renamed since the case was reported (same checkpoints).
RENAMED = {
    "meta-llama/meta-llama-3.1-8b-instruct": "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/meta-llama-3.1-70b-instruct": "meta-llama/llama-3.1-70b-instruct",
    "meta-llama-3.1-405b-instruct-fp8": "meta-llama/llama-3.1-405b-instruct-fp8",
    "/model_data/mistral7b-free": "mistralai/mistral-7b-instruct-v0.3",
    "unsloth/llama-3.2-11b-vision-instruct": "meta-llama/llama-3.2-11b-vision-instruct",
}
ASSUMED_SHARDS = {"llama31-405b-fp8-8xh100-tgi220-cudagraph-oom": 8}
_BYTES_PER_PARAM = {None: 2.0, "fp8": 1.0, "compressed-tensors": 1.0, "awq": 0.5625}
# The name nvidia-smi prints for the cards of the zero-config cases (the 3.x launcher looks its
# FLOPs up by it): the issues' own nvidia-smi output where quoted (#2823: "NVIDIA A100 80GB
# PCIe"), else the card's only name.
GPU_SMI_NAME = {
    ("A100", 80): "NVIDIA A100 80GB PCIe",
    ("RTX A6000", None): "NVIDIA RTX A6000",
    ("L4", None): "NVIDIA L4",
    ("L4", 24): "NVIDIA L4",
    ("A10G", None): "NVIDIA A10G",
    ("RTX 3090", None): "NVIDIA GeForce RTX 3090",
    ("L40S", None): "NVIDIA L40S",
    ("H100", 80): "NVIDIA H100 80GB HBM3",
}
# Model types whose config.json keeps the text model's fields under text_config (the
# launcher then reads none of them); Qwen2-VL and Qwen2.5-VL keep them at the top level.
_NESTED_TEXT_CONFIG = {"gemma3", "mllama", "mistral3"}
# MoE configs whose raw fields the catalog's facts do not reproduce (moe_intermediate_size,
# num_experts): the launcher's view of them is unknown here.
_RAW_MOE_FIELDS_DIFFER = {"qwen2_moe", "qwen3_moe"}

KNOWN_OUTCOME_GAPS = {
    "llama31-405b-fp8-8xh100-tgi220-cudagraph-oom": (
        "CUDA-graph capture memory is not modelled: TGI 2.2.0 allocates little per graph; the "
        "documented cause is NCCL >= 2.19's default cuMem allocation during capture "
        "(NVIDIA/nccl#1234), whose size depends on the driver (docs Known gaps)"
    ),
    "mixtral-8x22b-4xh100-tgi204-kv": (
        "a marginal run (~0.3 GiB free at TGI's measurement): with 2.0.4's derived logits copy "
        "and fused-MoE caches the sum of terms is a little over the H100; the residual is in "
        "the CUDA context/NCCL estimate and the allocator's block reuse, not in TGI's source"
    ),
}
KNOWN_KV_OUTLIERS = {
    "llama31-8b-1xa10g-tgi220-kv": (
        "~1.4 GiB free at TGI 2.2.0's measurement against ~3.4 GiB here: every v2.2.0 term is "
        "counted (logits x2 in bf16); the rest is CUDA context / card memory outside TGI's source"
    ),
    "llama31-8b-2xl40s-tgi240-kv": "low-confidence case, a ~13 GiB gap no TGI term explains",
}


def _version(text: str) -> tuple[int, int, int]:
    major, minor, *patch = (int(p) for p in str(text).split("."))
    return major, minor, patch[0] if patch else 0


def _model(case: dict) -> dict | None:
    wanted = str(case.get("model_id") or "").casefold()
    wanted = RENAMED.get(wanted, wanted)
    for entry in MODELS.values():
        if str(entry["repo_id"]).casefold() == wanted:
            return entry
    return None


def _arch(entry: dict) -> engine.ModelArch:
    config: dict = {
        "model_type": entry["model_type"],
        "hidden_size": entry["hidden_size"],
        "num_attention_heads": entry["num_attention_heads"],
        "num_key_value_heads": entry["num_key_value_heads"],
        "head_dim": entry.get("head_dim"),
        "num_hidden_layers": entry["num_layers"],
        "intermediate_size": entry.get("intermediate_size") or 4 * entry["hidden_size"],
        "vocab_size": entry["vocab_size"],
        "max_position_embeddings": entry["max_position_embeddings"],
        "num_experts_per_tok": entry.get("experts_per_token") or 1,
        "tie_word_embeddings": bool(entry.get("tie_word_embeddings")),
    }
    if (entry.get("num_experts") or 0) > 1:
        config["num_local_experts"] = entry["num_experts"]
    if entry.get("quantization"):
        config["quantization_config"] = {"quant_method": entry["quantization"]}
    if entry.get("vision"):
        config["vision_config"] = {}
        if entry["model_type"] in _NESTED_TEXT_CONFIG:
            text = {k: v for k, v in config.items() if k not in ("model_type", "vision_config")}
            config = {"model_type": entry["model_type"], "vision_config": {}, "text_config": text}
    weight = entry.get("weight_bytes") or int(
        entry["parameters_b"] * 1e9 * _BYTES_PER_PARAM.get(entry.get("quantization"), 2.0)
    )
    return engine.arch_from_config(config, weight)


def _attention(case: dict, version: tuple[int, int, int], arch: engine.ModelArch) -> str:
    """The launcher's resolve_attention from v2.3 (flashinfer for head_dim 64/128/256, else
    flashdecoding on sm80+), paged before (launcher/src/main.rs@v2.3.1, @v3.3.7 l.131-199)."""
    given = (case.get("env") or {}).get("ATTENTION")
    if given:
        return str(given)
    if version < (2, 3, 0):
        return "paged"
    return "flashinfer" if arch.head_dim in (64, 128, 256) else "flashdecoding"


def evaluate(cid: str) -> tuple[str, int | None, int | None] | None:
    """(outcome, predicted KV tokens, reported KV tokens), or None when the case lacks a fact."""
    case = CASES[cid]
    if not case.get("tgi_version"):
        return None
    version = _version(case["tgi_version"])
    entry = _model(case)
    if entry is None:
        return None
    flags = case.get("flags") or {}
    shards = flags.get("num_shard") or (1 if case["gpus"] == 1 else ASSUMED_SHARDS.get(cid))
    mib = GPU_MIB.get((case["gpu"], case.get("gpu_memory_gib")))
    if shards is None or mib is None:
        return None
    arch = _arch(entry)
    rules = memory.rules_for(case["tgi_version"])
    mpe = int(entry["max_position_embeddings"])
    given_input = flags.get("max_input_tokens") or flags.get("max_input_length")
    if version < (2, 4, 1):  # the launcher's defaults (launcher/src/main.rs@v2.0.0, @v2.4.0)
        capped = min(mpe, 4096)
        max_input = int(given_input or capped - 1)
        max_total = int(flags.get("max_total_tokens") or capped)
        prefill = flags.get("max_batch_prefill_tokens") or max_input + 50
    else:  # zero config: limits left to warmup, the launcher's own prefill budget
        max_input = int(given_input) if given_input else None
        total = flags.get("max_total_tokens")
        max_total = int(total) if total else None
        prefill = flags.get("max_batch_prefill_tokens")
        if prefill is None:
            smi_name = GPU_SMI_NAME.get((case["gpu"], case.get("gpu_memory_gib")))
            if smi_name is None or entry["model_type"] in _RAW_MOE_FIELDS_DIFFER:
                return None
            prefill, _ = zeroconfig.default_prefill(
                case["tgi_version"],
                arch.launcher_view,
                smi_name,
                mib,
                int(shards),
                float(flags.get("cuda_memory_fraction") or 1.0),
                0.95,
            )
    reported = case.get("reported") or {}
    if case["outcome"] == "prefill_oom" and "prefill_tokens" in reported:
        prefill = reported["prefill_tokens"]
    quantize = flags.get("quantize") or entry.get("quantization")
    attention = _attention(case, version, arch)
    block = engine.BLOCK_SIZES.get(attention, 16)
    found = engine.warmup_memory(
        rules,
        arch,
        gpu_bytes=mib * 2**20,
        num_shard=int(shards),
        weights_per_shard=engine.weights_per_shard(arch, quantize, int(shards)),
        kv_cache_dtype=None,
        attention=attention,
        block=block,
        prefill=int(prefill),
        max_input=max_input,
        max_total=max_total,
        fraction=float(flags.get("cuda_memory_fraction") or 1.0),
        quantize=quantize,
    )
    # the router's figure (the minimum over the shards) before rank 0's "KV-cache blocks"
    if "max_batch_total_tokens" in reported:
        real = int(reported["max_batch_total_tokens"])
    elif "kv_cache_blocks" in reported:
        real = int(reported["kv_cache_blocks"]) * int(reported.get("kv_block_size", 1))
    else:
        real = None
    return ("kv_tokens" if found is not None else "no_fit"), found, real


RESULTS = {cid: evaluate(cid) for cid in CASES}
SCORED = sorted(cid for cid, r in RESULTS.items() if r is not None)
# Completed warmups both sides, where the source gives TGI's KV figure (some give only the fit).
KV_SCORED = sorted(
    cid
    for cid in SCORED
    if CASES[cid]["outcome"] == "kv_tokens"
    and RESULTS[cid][0] == "kv_tokens"  # type: ignore[index]
    and RESULTS[cid][2] is not None  # type: ignore[index]
)


def _error_pct(cid: str) -> float:
    _, found, real = RESULTS[cid]  # type: ignore[misc]
    assert found is not None and real
    return 100.0 * (found - real) / real


def _param(cid: str, gaps: dict[str, str]) -> object:
    if cid in gaps:
        return pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=gaps[cid]))
    return cid


def test_the_emulator_scores_the_cases_the_planner_scores():
    assert len(SCORED) >= 20, SCORED


def test_the_emulator_meets_the_issues_headline_goals_gaps_included():
    """As the planner (tests/unit/test_calibration.py): every scored case, the documented gaps
    counted as misses: >= 90% fit agreement, median KV-token error <= 15%."""
    agree = sum(
        (RESULTS[c][0] == "kv_tokens") == (CASES[c]["outcome"] == "kv_tokens")  # type: ignore[index]
        for c in SCORED
    )
    assert 100.0 * agree / len(SCORED) >= 90.0, (agree, len(SCORED))
    assert median(abs(_error_pct(c)) for c in KV_SCORED) <= 15.0


@pytest.mark.parametrize("cid", [_param(c, KNOWN_OUTCOME_GAPS) for c in SCORED])
def test_the_emulator_agrees_with_tgi_on_fit_or_no_fit(cid):
    fits = RESULTS[cid][0] == "kv_tokens"  # type: ignore[index]
    assert fits == (CASES[cid]["outcome"] == "kv_tokens"), RESULTS[cid]


@pytest.mark.parametrize("cid", [_param(c, KNOWN_KV_OUTLIERS) for c in KV_SCORED])
def test_the_emulators_kv_tokens_are_within_30_percent(cid):
    assert abs(_error_pct(cid)) <= 30.0, RESULTS[cid]


def test_the_emulator_meets_the_issue_thresholds_outside_the_documented_gaps():
    scored = [c for c in SCORED if c not in KNOWN_OUTCOME_GAPS and c not in KNOWN_KV_OUTLIERS]
    agree = sum(
        (RESULTS[c][0] == "kv_tokens") == (CASES[c]["outcome"] == "kv_tokens")  # type: ignore[index]
        for c in scored
    )
    assert 100.0 * agree / len(scored) >= 90.0
    errors = [abs(_error_pct(c)) for c in KV_SCORED if c in scored]
    assert errors and median(errors) <= 15.0 and max(errors) <= 30.0, errors


def test_each_release_has_its_own_rules():
    """Not several releases mapped onto one profile: the rules differ where TGI's source
    does (wiggle room per tag, logits copies, Gemma 3 masks)."""
    assert {memory.rules_for(v).wiggle_room for v in memory.RELEASES} == {0.95, 0.93, 0.90}
    assert memory.rules_for("2.2.0").wiggle_formula == "legacy"
    assert memory.rules_for("2.3.1").wiggle_formula == "free_share"
    assert memory.rules_for("2.3.1").wiggle_room == 0.95
    assert memory.rules_for("2.4.0").wiggle_room == 0.90
    assert memory.rules_for("3.0.1").wiggle_room == 0.95
    assert memory.rules_for("3.2.3").wiggle_room == 0.93
    assert [memory.rules_for(v).warmup_logits_copies for v in ("2.3.1", "2.4.0", "3.0.0")] == [
        2,
        1,
        0,
    ]
    assert memory.rules_for("3.1.1").gemma3_dense_mask is None
    assert memory.rules_for("3.2.1").gemma3_dense_mask == "with_image"
    assert memory.rules_for("3.3.7").gemma3_dense_mask == "always"


def test_the_warmup_batch_reserves_max_total_tokens_per_request():
    assert memory.warmup_batch(131122, 131072) == [131072, 50]
    assert memory.reserved_blocks([131072, 50], 139264, 16) == 2 * 139264 // 16
    assert memory.reserved_blocks([4096], None, 1) == 4096


def test_gemma3_runs_its_flash_class_sharded_on_3_3_and_is_unknown_to_2_4():
    """models/__init__.py@v3.3.7: gemma3 has a flash VLM class (it shards; only without flash
    attention would TGI refuse "Sharded Gemma3"); ModelType gained gemma3 in v3.2.0."""
    from tgi_emulator import versions
    from tgi_emulator.gpus import parse_gpus

    from .conftest import A100_80

    gemma3 = _arch(MODELS["gemma-3-27b"])
    assert "gemma3" in engine.FLASH_MODEL_NAMES and gemma3.tied_embeddings

    def load(version: str) -> object:
        req = engine.LaunchRequest(
            profile=versions.get_profile(version),
            gpus=tuple(parse_gpus(json.dumps([A100_80, A100_80]))),
            num_shard=2,
            arch=gemma3,
            launcher_arch=gemma3,
        )
        return engine.load_shards(req)

    plan = load("3.3.7")
    assert isinstance(plan, engine.ShardPlan) and plan.flash, plan
    assert isinstance(load("2.4.1"), engine.Failure)


def test_a_gathered_heads_log_softmax_copies_its_transposed_logits():
    """The emulator's own rule: the gathered logits (a transposed view) cost log_softmax one
    contiguous [T, V] copy up to v2.3.1, and that copy plus log_softmax_out's contiguous
    temporary with 2.4.x's out=; one shard is in place from v2.4.0; none from v3.0.0."""
    vocab = 32000
    old, new = memory.rules_for("2.0.4"), memory.rules_for("2.4.0")
    assert memory.logits_bytes_per_token(old, vocab, 4) == 2 * (3 * vocab + vocab // 4)
    assert memory.logits_bytes_per_token(old, vocab, 1) == 2 * 2 * vocab
    assert memory.logits_bytes_per_token(new, vocab, 4) == 2 * (3 * vocab + vocab // 4)
    assert memory.logits_bytes_per_token(new, vocab, 1) == 2 * vocab
    assert memory.logits_bytes_per_token(memory.rules_for("3.0.0"), vocab, 4) == 0


def test_mixtrals_fused_moe_caches_in_the_releases_that_use_vllms_kernel():
    """The emulator's own rule: unquantized Mixtral on v2.0.2-v2.2.0 holds vLLM fused_moe's
    three caches, top_k x (3 I/world + hidden) per token, in place of the plain MLP peak."""
    config = {
        "model_type": "mixtral", "hidden_size": 4096, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 14336,
        "vocab_size": 32000, "max_position_embeddings": 32768, "num_experts_per_tok": 2,
    }  # fmt: skip
    arch = engine.arch_from_config(config, 93_000_000_000)
    fused = engine.activation_bytes_per_token(memory.rules_for("2.2.0"), arch, 2)
    plain = engine.activation_bytes_per_token(memory.rules_for("2.3.0"), arch, 2)
    logits_delta = memory.logits_bytes_per_token(
        memory.rules_for("2.2.0"), 32000, 2
    ) - memory.logits_bytes_per_token(memory.rules_for("2.3.0"), 32000, 2)
    assert fused - plain - logits_delta == 2 * (2 * (3 * 7168 + 4096) - 4 * 14336 * 2 // 2)
    quantized = engine.activation_bytes_per_token(memory.rules_for("2.2.0"), arch, 2, "awq")
    assert quantized - plain - logits_delta == 0
