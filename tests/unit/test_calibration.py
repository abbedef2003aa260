"""The planner against real TGI warmups (issue 14 section 2; tests/data/calibration/).

Each case of tgi_warmups.yaml with enough facts (TGI version, a model the catalogs hold, the
shard count) is planned with its reported hardware and flags by scripts/bench_planner.py,
which calls ``tgiops.core.warmup.warmup_memory``. Scored, with the issue's thresholds:

- fit / no-fit: a warmup TGI completed is one the planner expects to complete, and a warmup
  that failed (prefill "Not enough memory", CUDA OOM at warmup) one it expects to fail;
  agreement >= 90% over the scored cases;
- KV-cache tokens of the completed warmups: median |error| <= 15%, none off by more than 30%.

A case the planner still gets wrong after every term derived from TGI's source is an
xfail(strict=True) with the reason (tgiops/docs/tgi-memory-model.md, "Known gaps"): the
thresholds are then checked without it and the report says so. Nothing is tuned to a case
(README.md in the data folder).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

import bench_planner  # noqa: E402

CASES = {case["id"]: case for case in bench_planner.load_cases()}
ROWS = {cid: bench_planner.evaluate(case) for cid, case in CASES.items()}

# Cases whose outcome no derived term predicts: why, per case (docs "Known gaps").
KNOWN_OUTCOME_GAPS = {
    "llama31-405b-fp8-8xh100-tgi220-cudagraph-oom": (
        "CUDA-graph capture memory is not modelled: TGI captures the decode graphs after it has "
        "sized the KV cache (flash_causal_lm.py@v2.2.0 warmup, cuda_graph_warmup after "
        "init_kv_cache), out of the 5% of free memory it leaves; what capture allocates is "
        "not in TGI's source: the documented cause is NCCL >= 2.19's default cuMem "
        "allocation during capture (NVIDIA/nccl#1234, vllm-project/vllm#5091), whose size "
        "depends on the driver (vllm-project/vllm#5517)"
    ),
    "mixtral-8x22b-4xh100-tgi204-kv": (
        "a marginal run: the warmup batch's own blocks are 36864 of the 42768 KV tokens TGI "
        "printed, so ~0.3 GiB per GPU was free when TGI 2.0.4 measured. With the gathered "
        "logits' contiguous copy in log_softmax (layers/tensor_parallel.py@v2.0.4 l.73 returns "
        "world_out.T; flash_causal_lm.py@v2.0.4 l.1142; PyTorch's CUDA host_softmax starts "
        "with input_.contiguous()) and vLLM's fused-MoE caches (Narsil/vllm@b5dfc61d "
        "fused_moe.py l.424-432) the planner's sum is ~0.5 GiB over the 79.6 GiB limit: a "
        "prefill OOM. Both misses (0.5 GiB over, before them 1.6 GiB under) are within the "
        "CUDA context/NCCL estimate (1.25 GiB, not in TGI's source) and PyTorch's allocator "
        "reusing freed activation blocks, which the planner does not model; the reporter's "
        "'H100 70GB' leaves the per-GPU memory unknown"
    ),
}
KNOWN_KV_OUTLIERS = {
    "llama31-8b-1xa10g-tgi220-kv": (
        "TGI 2.2.0 printed 19056 KV tokens: 8192 are the warmup batch's blocks it adds back "
        "(flash_causal_lm.py@v2.2.0 l.1116-1123), so 0.95 x free held 10864 tokens, ~1.40 GiB "
        "free when warmup measured; the planner leaves ~3.15 GiB (+72%). Every TGI term was "
        "checked against v2.2.0: the warmup asks for prefill_logprobs (router/client/src/v3/"
        "client.rs@v2.2.0 l.178), the LM head runs on all 4145 tokens in bf16 "
        "(flash_llama_modeling.py@v2.2.0 l.575-577, a single-shard head does not gather) and "
        "log_softmax makes a second copy (flash_causal_lm.py@v2.2.0 l.1502-1504): both counted "
        "(1.98 GiB). The ~1.75 GiB left is outside TGI's source: the same write-up's nvidia-smi "
        "shows 19882 of 23028 MiB used after launch, ~2.1 GiB beyond weights and KV after "
        "init_kv_cache's empty_cache (l.968-969) against 0.75 GiB of CUDA context assumed, and "
        "the author's A10G reports 'a total capacity of 21.98 GiB' to CUDA (~0.5 GiB under "
        "nvidia-smi's total); neither is derivable from TGI, so nothing is tuned"
    ),
    "llama31-8b-2xl40s-tgi240-kv": (
        "TGI printed 123449 KV tokens (7.5 GiB per GPU at 64 KiB/token), i.e. ~6.7 GiB free "
        "when warmup measured; TGI 2.4.0's arithmetic with the stated flags leaves ~19.7 GiB, "
        "counting log_softmax's temporaries on the sharded head's transposed logits (three "
        "16182 x 128256 bf16 tensors, 11.6 GiB, and the local slice). The case is "
        "low-confidence: the quoted figure may come from another variation of the run (the "
        "reporter tried on-the-fly quantization) in a vendor container, and per-GPU memory is "
        "not stated; no term in TGI's source explains the ~13 GiB left"
    ),
}


def _param(cid: str, gaps: dict[str, str]) -> object:
    if cid in gaps:
        return pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=gaps[cid]))
    return cid


SCORED = sorted(cid for cid, row in ROWS.items() if row.scored)
KV_SCORED = sorted(cid for cid in SCORED if ROWS[cid].error_pct is not None)


def test_the_calibration_set_is_scored_where_it_has_the_facts():
    assert len(CASES) >= 24
    assert len(SCORED) >= 20  # issue 14: at least 20 real warmup results
    for cid, row in ROWS.items():
        if not row.scored:
            # Not scored only for a stated missing fact, never silently.
            assert row.note, cid
            assert any(
                why in row.note
                for why in ("not stated", "not in models.yaml", "not modelled", "several variants")
            ), (cid, row.note)


def test_every_case_quotes_its_source():
    for cid, case in CASES.items():
        assert str(case["source"]).startswith("https://github.com/"), cid
        assert case["log_lines"], cid
        assert case["confidence"] in ("high", "medium", "low"), cid


@pytest.mark.parametrize("cid", [_param(c, KNOWN_OUTCOME_GAPS) for c in SCORED])
def test_the_planner_agrees_with_tgi_on_fit_or_no_fit(cid):
    row = ROWS[cid]
    assert row.agrees, row


@pytest.mark.parametrize("cid", [_param(c, KNOWN_KV_OUTLIERS) for c in KV_SCORED])
def test_predicted_kv_tokens_are_within_30_percent(cid):
    row = ROWS[cid]
    assert row.error_pct is not None
    assert abs(row.error_pct) <= bench_planner.MAX_KV_ERROR_PCT, row


def test_the_whole_set_meets_the_issues_headline_goals_gaps_included():
    """Issue 14's goal: at least 9 in 10 fit verdicts right and the median KV-token error
    within 15%, over every scored case, the documented gaps counted as misses."""
    summary = bench_planner.summarize(list(ROWS.values()))
    assert summary.scored >= 20
    assert summary.agreement_pct >= bench_planner.MIN_AGREEMENT_PCT, summary
    assert summary.median_abs_kv_error_pct is not None
    assert summary.median_abs_kv_error_pct <= bench_planner.MAX_MEDIAN_KV_ERROR_PCT, summary


def test_the_set_meets_the_issue_thresholds_outside_the_documented_gaps():
    rows = [
        row
        for cid, row in ROWS.items()
        if cid not in KNOWN_OUTCOME_GAPS and cid not in KNOWN_KV_OUTLIERS
    ]
    summary = bench_planner.summarize(rows)
    assert summary.scored >= 6
    assert summary.agreement_pct >= bench_planner.MIN_AGREEMENT_PCT, summary
    assert summary.median_abs_kv_error_pct is not None
    assert summary.median_abs_kv_error_pct <= bench_planner.MAX_MEDIAN_KV_ERROR_PCT, summary
    assert summary.max_abs_kv_error_pct is not None
    assert summary.max_abs_kv_error_pct <= bench_planner.MAX_KV_ERROR_PCT, summary


def test_the_full_context_llama_70b_prefill_fails_for_its_logits():
    """Issue #2301: 131122 prefill tokens on 4x H100 with TGI 2.2.0. The prefill logits over
    the whole vocabulary (gathered on every shard, plus log_softmax's copy) are what break it:
    without them, the same warmup would fit."""
    case = CASES["llama31-70b-4xh100-tgi220-prefill-oom"]
    assert ROWS[case["id"]].predicted == "prefill_oom"
    # The same case on a release whose warmup computes no prefill logits (3.0.0) fits.
    without_logits = bench_planner.evaluate({**case, "tgi_version": "3.0.0"})
    assert without_logits.predicted == "kv_tokens", without_logits


def test_the_l4_prefill_budget_moves_with_the_logits_copies_of_pr_2661():
    """TGI PR #2661: on one L4, Llama 3.1 8B's largest prefill budget went from 7192 to 9874
    tokens when the warmup's log_softmax over the prefill logits became in-place. The same
    9874-token prefill fails with 2.3.1's copy and fits with 2.4.0's in-place one: only the
    prefill_logits term differs between them."""
    before = ROWS["llama31-8b-1xl4-pr2661-before-prefill9874-oom"]
    after = ROWS["llama31-8b-1xl4-pr2661-after-prefill9874-kv"]
    assert before.predicted == "prefill_oom", before
    assert after.predicted == "kv_tokens", after
    assert "prefill_logits 4.72" in before.note and "prefill_logits 2.36" in after.note
    # The budget TGI reported for the code before the change still fits with its copy.
    assert ROWS["llama31-8b-1xl4-pr2661-before-prefill7192-kv"].predicted == "kv_tokens"


def test_gemma3_warmup_fails_for_its_dense_masks(monkeypatch):
    """Issue #3130: 31000 prefill tokens on 4x A100 80GB with TGI 3.2.1 fail. Gemma 3's
    image-carrying warmup batch runs padded SDPA with [2, 1, 30000, 30000] masks: without that
    term (the text-only gemma3_text class builds none) the same warmup would fit, so the term
    is what predicts the failure."""
    case = CASES["gemma3-27b-4xa100-80g-tgi321-prefill-oom"]
    row = ROWS[case["id"]]
    assert row.predicted == "prefill_oom", row
    assert "dense_attention" in row.note
    spec = bench_planner.CATALOG["gemma-3-27b"]
    text_only = replace(spec, model_type="gemma3_text", vision=False)
    monkeypatch.setattr(
        bench_planner, "CATALOG", {**bench_planner.CATALOG, "gemma-3-27b": text_only}
    )
    assert bench_planner.evaluate(case).predicted == "kv_tokens"


def test_bench_planner_prints_a_row_per_case_and_the_summary():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_planner.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for cid in CASES:
        assert cid in done.stdout
    assert "agree on fit/no-fit" in done.stdout
    assert "median |error|" in done.stdout


def test_the_failures_of_the_chat_app_write_ups_fail_for_the_reported_reason():
    """Llama 3.1 8B (14.96 GiB bf16) on one T4 (15360 MiB) with TGI 2.2.0 dies loading its
    weights, before any warmup; Llama 3.2 90B Vision on 8x A10G with TGI 2.4.0 loads (~20.7
    GiB per GPU) and fails at the 12582-token warmup prefill, as the sources say."""
    assert ROWS["llama31-8b-1xt4-tgi220-load-oom"].predicted == "cuda_oom_load"
    assert ROWS["llama32-90b-vision-8xa10g-tgi240-prefill-oom"].predicted == "prefill_oom"


def test_llama_3_70b_on_two_a40s_fails_loading_its_weights():
    """camptocamp/self-hosted-llm-models-tests: Llama 3 70B (16-bit) on 2 x A40 dies in "Error
    when initializing model" before any warmup. The planner must fail it for the weights (about
    65 GiB per shard against torch's 44.34 GiB), not at the prefill."""
    row = ROWS["llama3-70b-2xa40-tgi210-load-oom"]
    assert row.predicted == "cuda_oom_load", row
    assert "weights 65." in row.note, row.note


def test_a_gathered_heads_log_softmax_copies_its_transposed_logits():
    """A sharded head returns ``world_out.T`` (layers/tensor_parallel.py@v2.0.4 l.73, @v2.4.1
    l.104). Up to 2.3.1 ``torch.log_softmax(out, -1)`` makes that view contiguous first
    (PyTorch's CUDA host_softmax) next to its new output: three vocabulary-wide tensors plus
    the local slice. 2.4.x's ``log_softmax(out, -1, out=out)`` is in place for one shard
    (one tensor), but on the transposed view PyTorch's ``log_softmax_out`` computes into a
    contiguous ``output_temp`` and the kernel still copies its input: three again. From 3.0
    there are no prefill logits."""
    from tgiops.core.catalog import find_model
    from tgiops.core.catalog_file import parse_catalog
    from tgiops.core.engines.tgi import TgiEngine
    from tgiops.core.warmup import prefill_logits_bytes

    catalog = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
    model = find_model(catalog, "mixtral-8x7b")
    vocab, tokens = model.vocab_size, 1000
    old, new = TgiEngine.release("2.0.4"), TgiEngine.release("2.4.0")
    v3 = TgiEngine.release("3.0.0")
    assert prefill_logits_bytes(model, tokens, 4, old) == tokens * 2 * (3 * vocab + vocab // 4)
    assert prefill_logits_bytes(model, tokens, 1, old) == tokens * 2 * 2 * vocab
    assert prefill_logits_bytes(model, tokens, 4, new) == tokens * 2 * (3 * vocab + vocab // 4)
    assert prefill_logits_bytes(model, tokens, 1, new) == tokens * 2 * vocab
    assert prefill_logits_bytes(model, tokens, 4, v3) == 0


def test_mixtrals_fused_moe_caches_in_the_releases_that_use_vllms_kernel():
    """TGI v2.0.2-v2.2.0 run unquantized Mixtral through vLLM's fused_moe, which allocates
    (M, top_k, 2I/world), (M*top_k, I/world) and (M, top_k, hidden) at once: per token
    top_k x (3 I/world + hidden) where the plain MLP term has 4 I x top_k / world."""
    from tgiops.core.catalog import find_model
    from tgiops.core.catalog_file import parse_catalog
    from tgiops.core.engines.tgi import TgiEngine
    from tgiops.core.warmup import activation_bytes

    catalog = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
    model = find_model(catalog, "mixtral-8x7b")
    inter, hidden, k = model.intermediate_size or 0, model.hidden_size, 2
    plain = activation_bytes(model, 1000, 2)
    fused = activation_bytes(model, 1000, 2, TgiEngine.release("2.0.4"))
    assert fused - plain == 1000 * 2 * (k * (3 * inter / 2 + hidden) - 4 * inter * k / 2)
    assert activation_bytes(model, 1000, 2, TgiEngine.release("2.0.4"), "awq") == plain
    assert activation_bytes(model, 1000, 2, TgiEngine.release("2.4.0")) == plain
    assert activation_bytes(model, 1000, 2, TgiEngine.release("2.0.1")) == plain
