"""The emulator's memory account (scripts/vllm_emulator/memory.py) against vLLM's rules and a
measured start-up, and its effect on the KV cache the emulator reports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import A10G, H100, emulator_module

memory = emulator_module("memory")
GIB = memory.GIB
LLAMA_8B = memory.ModelShape(
    num_layers=32,
    hidden_size=4096,
    intermediate_size=14336,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    vocab_size=128256,
)


def inputs(**overrides):
    base = dict(
        shape=LLAMA_8B,
        tp=1,
        total_bytes=int(79.18 * GIB),
        used_by_others_bytes=0,
        gpu_memory_utilization=0.9,
        weight_bytes_per_rank=int(14.99 * GIB),
        dtype_bytes=2,
        kv_dtype_bytes=2,
        max_model_len=131072,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
        enforce_eager=False,
        cudagraph_in_kv_budget=False,
    )
    base.update(overrides)
    return memory.MemoryInputs(**base)


def test_measured_h100_start_up_within_two_percent() -> None:
    # llm-d empirical-vllm-memory-results.md (facts §1.4): H100 79.18 GiB, util 0.9,
    # Llama-3.1-8B: weights 14.99, activation 4.76, non-torch 0.13 -> KV 51.38 GiB.
    account = memory.account(inputs())
    assert account.activation_bytes / GIB == pytest.approx(4.76, rel=0.02)
    assert account.non_torch_bytes / GIB == pytest.approx(0.13, rel=0.01)
    assert account.available_kv_bytes / GIB == pytest.approx(51.38, rel=0.02)


def test_kv_tokens_are_whole_blocks_of_the_page_size() -> None:
    account = memory.account(inputs())
    per_token = 2 * 8 * 128 * 2 * 32  # K and V, 8 KV heads, head 128, fp16, 32 layers
    assert account.page_bytes_all_layers == 16 * per_token
    assert account.kv_tokens == (account.available_kv_bytes // (16 * per_token)) * 16
    assert account.needed_kv_bytes(131072) == 131072 * per_token


def test_fp8_kv_doubles_the_tokens_and_tp_splits_the_heads() -> None:
    base = memory.account(inputs()).kv_tokens
    assert memory.account(inputs(kv_dtype_bytes=1)).kv_tokens == pytest.approx(2 * base, rel=0.001)
    # TP=2 halves the per-rank weights and KV heads: each rank holds twice the tokens' worth.
    tp2 = memory.account(inputs(tp=2, weight_bytes_per_rank=int(14.99 * GIB / 2)))
    assert tp2.kv_tokens > 2 * base


def test_the_utilization_is_of_the_total_memory() -> None:
    account = memory.account(inputs(used_by_others_bytes=10 * GIB))
    assert account.requested_bytes == pytest.approx(0.9 * 79.18 * GIB, abs=1)
    assert account.free_at_init_bytes < account.requested_bytes  # vLLM would refuse to start


def test_cudagraph_estimate_comes_out_of_the_kv_budget_only_from_021() -> None:
    before = memory.account(inputs())
    after = memory.account(inputs(cudagraph_in_kv_budget=True))
    assert after.available_kv_bytes == before.available_kv_bytes - before.cudagraph_bytes
    eager = memory.account(inputs(cudagraph_in_kv_budget=True, enforce_eager=True))
    assert eager.cudagraph_bytes == 0 and eager.available_kv_bytes == before.available_kv_bytes


@pytest.mark.parametrize(
    ("gpu", "seqs", "tokens"),
    [
        (H100, 1024, 8192),  # >= 70 GiB and not an A100
        ({"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}, 256, 2048),
        (A10G, 256, 2048),
    ],
)
def test_batch_defaults_of_the_openai_server(gpu, seqs, tokens) -> None:
    got = memory.batch_defaults(gpu["name"], gpu["memory_mib"] * memory.MIB, 131072, None, None)
    assert (got.max_num_seqs, got.max_num_batched_tokens) == (seqs, tokens)


def test_batch_defaults_are_clamped_by_a_short_model_len() -> None:
    got = memory.batch_defaults("NVIDIA H100 80GB HBM3", 81559 * memory.MIB, 4, None, None)
    assert got.max_num_batched_tokens == 4096  # min(1024 seqs x 4 tokens, 8192)


def test_bigger_batches_shrink_the_reported_kv_cache(vllm, tmp_path) -> None:
    def kv_tokens(args, where, version="0.20.0") -> int:
        emulator = vllm(
            args=["--max-model-len", "1024", *args], data_dir=tmp_path / where, version=version
        )
        emulator.wait_ready()
        (line,) = [m for m in emulator.messages() if m.startswith("GPU KV cache size")]
        emulator.terminate()
        return int(line.split()[4].replace(",", ""))

    small = kv_tokens(["--max-num-seqs", "8"], "a")
    large = kv_tokens(["--max-num-seqs", "1024", "--max-num-batched-tokens", "8192"], "b")
    assert large < small  # the profile run's peak is taken from the KV budget
    graphs = kv_tokens([], "c", version="0.27.1")
    eager = kv_tokens(["--enforce-eager"], "d", version="0.27.1")
    assert graphs < eager  # from v0.21 the CUDA-graph estimate is too


def test_the_emulator_never_reads_tgiops() -> None:
    # Its arithmetic must stay independent of the planner it is used to check.
    package = Path(memory.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        imported = {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
        }
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m == "tgiops" or m.startswith("tgiops.") for m in imported), source
