"""The vLLM memory model against real vLLM startups (issue 15; tests/data/calibration/).

Each case of vllm_startups.yaml with enough facts (GPU, count, a model the catalog holds) is
planned with its reported hardware and flags by tgiops.core.engines.vllm_calibration. Asserted,
as for TGI (test_calibration.py): the outcome agrees (a start vLLM completed is one the planner
expects to fit; a "max seq len ... larger than ... KV cache" or "No available memory for the
cache blocks" is one it expects to fail) in >= 90% of scored cases; the KV error (tokens, or
GiB where the source only gives "Available KV cache memory") has a median <= 15% and none
> 30%. A disagreement the planner cannot close from vLLM's source is a strict xfail with the
reason; nothing is tuned to a case (tgiops/docs/vllm-memory-model.md).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vllm_calibration import evaluate

from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines import vllm_logs

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
CASES = {
    c["id"]: c
    for c in yaml.safe_load((ROOT / "tests/data/calibration/vllm_startups.yaml").read_text())
}
ROWS = {cid: evaluate(case, CATALOG) for cid, case in CASES.items()}

FIT_AGREEMENT = 0.90
MEDIAN_ERROR_PCT = 15.0
MAX_ERROR_PCT = 30.0

# case id -> why the planner cannot agree (a strict xfail). Empty since the sampler term counts
# every tensor _apply_top_k_top_p holds at its scatter (memory model §4): with 27 bytes per
# logit the 1xH100 70B FP8 case predicted a sliver of KV where vLLM had none.
KNOWN_GAPS: dict[str, str] = {}
# case id -> why its KV figure is left out of the error thresholds (the fit verdict still counts).
# Cases whose KV figure the planner cannot yet explain, each with why. gpt-oss-20b left this
# list when MXFP4 became a catalog quantization (vllm_memory.mxfp4_weight_bytes, issue 15).
KNOWN_KV_GAPS: dict[str, str] = {}


def test_at_least_15_public_cases_with_sources():
    assert len(CASES) >= 15
    for case in CASES.values():
        assert case["source"].startswith("https://"), case["id"]
        assert case["log_lines"], case["id"]
        assert case["outcome"] in {"kv_tokens", "available_kv_gib", "max_len_error", "no_kv_memory"}


def test_every_case_has_a_row_and_unscored_rows_say_why():
    for cid, row in ROWS.items():
        assert row.id == cid
        if not row.scored:
            assert row.note, cid


def _scored_ids():
    return [cid for cid, row in ROWS.items() if row.scored]


@pytest.mark.parametrize(
    "cid",
    [
        pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[cid]))
        if cid in KNOWN_GAPS
        else cid
        for cid in _scored_ids()
    ],
)
def test_outcome_agrees(cid):
    row = ROWS[cid]
    assert row.agrees, f"{cid}: vLLM {row.outcome}, planner {row.predicted} ({row.note})"


def test_thresholds_over_scored_cases():
    scored = [r for r in ROWS.values() if r.scored and r.id not in KNOWN_GAPS]
    assert len(scored) >= 4
    agree = sum(1 for r in scored if r.agrees) / len(scored)
    assert agree >= FIT_AGREEMENT
    errors = [
        abs(r.error_pct) for r in scored if r.error_pct is not None and r.id not in KNOWN_KV_GAPS
    ]
    assert errors and statistics.median(errors) <= MEDIAN_ERROR_PCT
    assert max(errors) <= MAX_ERROR_PCT, errors


def test_startup_lines_of_the_set_parse():
    """The parser reads every quoted KV line of the set as the source states it."""
    for case in CASES.values():
        facts = vllm_logs.parse_startup_log("\n".join(case["log_lines"]))
        rep = case["reported"]
        if any("GPU KV cache size" in line for line in case["log_lines"]):
            assert facts.kv_cache_tokens == rep["kv_tokens"], case["id"]
        if case["outcome"] == "max_len_error" and any(
            "max seq len" in line for line in case["log_lines"]
        ):
            assert (facts.max_seq_len, facts.max_len_that_fits) == (
                rep["max_seq_len"],
                rep["kv_tokens"],
            ), case["id"]
        if any("Available KV cache memory" in line for line in case["log_lines"]):
            assert facts.available_kv_gib == rep["available_kv_gib"], case["id"]


def test_bench_planner_prints_the_vllm_table():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_planner.py"), "--engine", "vllm"],
        capture_output=True,
        text=True,
        check=True,
    )
    for cid in _scored_ids():
        assert cid in proc.stdout
    assert "scored" in proc.stdout


def test_known_kv_gaps_are_still_off():
    """When the term lands, the case comes back into the thresholds: this fails first."""
    for cid, why in KNOWN_KV_GAPS.items():
        assert abs(ROWS[cid].error_pct or 0) > MAX_ERROR_PCT, why


def test_gpt_oss_mxfp4_is_within_the_thresholds():
    """gpt-oss' experts are MXFP4 (vllm_memory.mxfp4_weight_bytes): its KV figure is scored again
    (with its experts counted as 16-bit the planner was far off)."""
    row = ROWS["llmd-gpt-oss-20b-1xh100"]
    assert row.error_pct is not None and abs(row.error_pct) <= MAX_ERROR_PCT
