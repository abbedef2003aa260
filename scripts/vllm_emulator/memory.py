"""The emulator's own account of vLLM's GPU memory at startup (pure arithmetic, no I/O).

Derived from vLLM's V1 sources, independently of tgiops (the e2e tests compare tgiops' planner
with what this emulator reports, so the two must not share code or constants):

- `vllm/v1/worker/utils.py request_memory()` / `gpu_worker.py init_device`: after CUDA and
  NCCL are initialised a snapshot is taken; `requested = ceil(total * gpu_memory_utilization)`
  and startup fails when the snapshot's free memory is below it (facts §1.4). The fraction is
  of the TOTAL memory, so any other tenant (and vLLM's own CUDA context) counts against it.
- `gpu_worker.py determine_available_memory()`: a profile run (a dummy forward pass over
  `max_num_batched_tokens` tokens spread over `max_num_seqs` requests, then a dummy sampler run
  on one logit row per request) measures `weights + torch peak increase + non-torch increase`;
  `available_kv = requested - that` (facts §1.4). From v0.21.0 the CUDA-graph estimate is also
  taken out of it ("Estimated CUDA graph memory: X GiB total", then "CUDA graph memory
  profiling is enabled (default since v0.21.0)"); before, graphs are captured after the KV
  cache is allocated, on top of the requested memory, and can OOM there.
- `vllm/v1/core/kv_cache_utils.py`: a full-attention layer's page is
  `2 (K and V) * block_size * num_kv_heads_per_rank * head_size * dtype_bytes`;
  `num_blocks = available // (page * layers)`; "GPU KV cache size: N tokens" is
  `num_blocks * block_size`; "Maximum concurrency for L tokens per request: Cx" is N / L;
  `_check_enough_kv_cache_memory` needs `ceil(max_model_len / block_size) * page * layers`
  and, when short, reports the longest length that fits (its binary search over lengths).
- `vllm/engine/arg_utils.py get_batch_defaults()` for the OpenAI server: 8192 batched tokens
  and 1024 sequences on a GPU with >= 70 GiB whose name lacks "a100", else 2048 and 256; then
  `max_num_batched_tokens = min(max_num_seqs * max_model_len, that)` and
  `max_num_seqs = min(max_num_seqs, max_num_batched_tokens)`.

The sizes of the profile run's tensors are the emulator's estimate (vLLM measures them):
- forward pass, per token: residual + hidden (2 * hidden), the QKV projection
  ((heads + 2 * kv_heads) * head_dim / tp), the gated MLP (gate_up 2 * I / tp plus the
  activation I / tp), all in the model dtype;
- sampler, per logit: 32 bytes (fp32 logits, fp32 logprobs, the top-k/top-p sort's fp32
  values and int64 indices, fp32 softmax probabilities and their fp32 cumulative sum) over
  `max_num_seqs x vocab` (every rank holds the gathered logits);
- non-torch increase: 0.13 GiB (single GPU) as measured for Llama-3.1-8B on an H100 (facts
  §1.4, llm-d empirical-vllm-memory-results.md), plus 0.25 GiB of NCCL/custom all-reduce
  buffers when tensor-parallel;
- vLLM's own CUDA context and cuBLAS workspace: 0.5 GiB in use before the snapshot;
- CUDA graphs: captured sizes up to `min(2 * max_num_seqs, 512)`; their shared pool keeps,
  per layer, one hidden-size output of the largest size (the piecewise graphs' static
  outputs; intermediates are reused within the pool), plus 0.25 GiB for the graphs
  themselves and the full-graph buffers. Public start-up logs report "Estimated CUDA graph
  memory" / "Graph capturing finished ..., took" from 0.3 to 1.6 GiB; this gives 0.38 GiB for
  Llama-3.1-8B and 0.88 GiB per rank for a 70B model on 4 GPUs.
With these constants the measured H100 example (Llama-3.1-8B, util 0.9, 8192 tokens, 1024
seqs: weights 14.99 GiB, activation 4.76 GiB, non-torch 0.13 GiB, KV 51.38 GiB) comes out
within 2% (tests/vllm_emulator/test_memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB
BLOCK_SIZE = 16  # vLLM's default KV block size for CUDA attention backends
CONTEXT_BYTES = 512 * MIB
NON_TORCH_BYTES = int(0.13 * GIB)
TP_COMM_BYTES = 256 * MIB
SAMPLER_BYTES_PER_LOGIT = 32
CUDAGRAPH_MAX_CAPTURE = 512
CUDAGRAPH_BASE_BYTES = 256 * MIB
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
KV_DTYPE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "fp8_ds_mla": 1}


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    experts_per_token: int = 1


@dataclass(frozen=True)
class BatchDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int


def batch_defaults(
    gpu_name: str,
    gpu_total_bytes: int,
    max_model_len: int,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
) -> BatchDefaults:
    """get_batch_defaults() for UsageContext.OPENAI_API_SERVER, then its two clamps."""
    big = gpu_total_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    seqs = max_num_seqs if max_num_seqs is not None else (1024 if big else 256)
    if max_num_batched_tokens is not None:
        tokens = max_num_batched_tokens
    else:
        tokens = min(seqs * max_model_len, 8192 if big else 2048)
    if max_num_seqs is None:
        seqs = min(seqs, tokens)
    return BatchDefaults(max_num_seqs=seqs, max_num_batched_tokens=tokens)


def kv_heads_per_rank(shape: ModelShape, tp: int) -> int:
    """KV heads are split over ranks, replicated when there are fewer heads than ranks."""
    return max(1, shape.num_kv_heads // tp)


def page_bytes(shape: ModelShape, tp: int, kv_dtype_bytes: int) -> int:
    """Bytes of one KV block of one layer on one rank."""
    return 2 * BLOCK_SIZE * kv_heads_per_rank(shape, tp) * shape.head_dim * kv_dtype_bytes


def forward_peak_bytes(shape: ModelShape, tp: int, tokens: int, dtype_bytes: int) -> int:
    per_token = (
        2 * shape.hidden_size
        + (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim // tp
        + 3 * shape.intermediate_size * shape.experts_per_token // tp
    )
    return tokens * per_token * dtype_bytes


def sampler_peak_bytes(shape: ModelShape, seqs: int) -> int:
    return seqs * shape.vocab_size * SAMPLER_BYTES_PER_LOGIT


def cudagraph_bytes(shape: ModelShape, max_num_seqs: int, dtype_bytes: int) -> int:
    largest = min(2 * max_num_seqs, CUDAGRAPH_MAX_CAPTURE)
    return shape.num_layers * largest * shape.hidden_size * dtype_bytes + CUDAGRAPH_BASE_BYTES


@dataclass(frozen=True)
class MemoryInputs:
    shape: ModelShape
    tp: int
    total_bytes: int  # one GPU (all ranks are alike in the testbed; the smallest is used)
    used_by_others_bytes: int
    gpu_memory_utilization: float
    weight_bytes_per_rank: int
    dtype_bytes: int
    kv_dtype_bytes: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enforce_eager: bool
    cudagraph_in_kv_budget: bool


@dataclass(frozen=True)
class MemoryAccount:
    total_bytes: int
    free_at_init_bytes: int
    requested_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    available_kv_bytes: int
    page_bytes_all_layers: int
    num_blocks: int

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * BLOCK_SIZE

    def needed_kv_bytes(self, model_len: int) -> int:
        return math.ceil(model_len / BLOCK_SIZE) * self.page_bytes_all_layers

    def max_len_that_fits(self) -> int:
        """_check_enough_kv_cache_memory's estimate: the longest length whose blocks fit."""
        if self.page_bytes_all_layers <= 0 or self.available_kv_bytes <= 0:
            return 0
        return (self.available_kv_bytes // self.page_bytes_all_layers) * BLOCK_SIZE


def account(inputs: MemoryInputs) -> MemoryAccount:
    shape, tp = inputs.shape, inputs.tp
    context = CONTEXT_BYTES + (TP_COMM_BYTES if tp > 1 else 0)
    free_at_init = inputs.total_bytes - inputs.used_by_others_bytes - context
    requested = math.ceil(inputs.total_bytes * inputs.gpu_memory_utilization)
    seqs = min(inputs.max_num_seqs, inputs.max_num_batched_tokens)
    activation = forward_peak_bytes(
        shape, tp, inputs.max_num_batched_tokens, inputs.dtype_bytes
    ) + sampler_peak_bytes(shape, seqs)
    non_torch = NON_TORCH_BYTES + (TP_COMM_BYTES if tp > 1 else 0)
    graphs = (
        0
        if inputs.enforce_eager
        else cudagraph_bytes(shape, inputs.max_num_seqs, inputs.dtype_bytes)
    )
    available = requested - (inputs.weight_bytes_per_rank + activation + non_torch)
    if inputs.cudagraph_in_kv_budget:
        available -= graphs
    page_all = page_bytes(shape, tp, inputs.kv_dtype_bytes) * shape.num_layers
    blocks = max(0, available) // page_all if page_all > 0 else 0
    return MemoryAccount(
        total_bytes=inputs.total_bytes,
        free_at_init_bytes=free_at_init,
        requested_bytes=requested,
        weights_bytes=inputs.weight_bytes_per_rank,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        cudagraph_bytes=graphs,
        available_kv_bytes=available,
        page_bytes_all_layers=page_all,
        num_blocks=blocks,
    )
