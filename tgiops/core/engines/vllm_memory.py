"""vLLM's memory model: what one GPU's profile run leaves for the KV cache (pure: no I/O).

vLLM's startup, per GPU: it asks for ``gpu_memory_utilization`` x the GPU's total memory,
loads its shard of the weights, runs one profile forward pass and sampler at the batch limits,
and turns what is left, after the non-torch growth, into KV-cache blocks: the ``GPU KV cache
size: N tokens`` figure (``memory_estimate``, ``VllmMemory``). Each term is derived from
vLLM's source in ``tgiops/docs/vllm-memory-model.md`` (cited below as "memory model §N").
The planner (tgiops/core/engines/vllm.py) sizes ``--max-model-len`` from it, and
scripts/bench_planner.py --engine vllm scores it against real startups
(tests/data/calibration/vllm_startups.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tgiops.core.catalog import ModelSpec
from tgiops.core.hardware import MIB_PER_GIB
from tgiops.core.warmup import weight_bytes

if TYPE_CHECKING:  # the planner module sits above this one (it calls memory_estimate)
    from tgiops.core.engines.vllm import Version

MIB = 1024 * 1024
GIB = 1024 * MIB
BLOCK_SIZE = 16  # CacheConfig.block_size default on CUDA (vllm/config/cache.py)
# MXFP4 (OCP Microscaling Formats (MX) Specification v1.0, §5 "MXFP4": FP4 E2M1 elements in
# blocks of 32 sharing one 8-bit E8M0 scale) costs 4 bits per value + 8 bits per 32 values.
MXFP4_BYTES_PER_PARAM = (4 + 8 / 32) / 8
# Bytes per parameter of quantized linear layers for on-the-fly quantization (as core/warmup.py).
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class VllmMemory:
    """One GPU's budget, in MiB (memory model §1-§6). The worker with the least wins; the GPUs
    of one plan are alike, so one is enough."""

    total_mib: float  # what cudaMemGetInfo calls total (nvidia-smi's memory.total unless given)
    requested_mib: float  # ceil(total x utilization): request_memory()
    weights_mib: float  # this GPU's shard of the weights
    activations_mib: float  # the profile run's torch peak above the weights
    non_torch_mib: float  # non-torch growth during profiling (cuBLAS, NCCL)
    cudagraph_mib: float  # CUDA-graph estimate charged to the budget (0: not derived, §5)
    kv_bytes_per_token: int  # all KV layers of this GPU's shard
    kv_layers: int
    block_size: int
    num_blocks: int
    kv_cache_tokens: int  # the `GPU KV cache size: N tokens` figure

    @property
    def available_kv_mib(self) -> float:
        return (
            self.requested_mib
            - self.weights_mib
            - self.activations_mib
            - self.non_torch_mib
            - self.cudagraph_mib
        )


def batch_defaults(gpu_name: str, gpu_memory_mib: float) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for its OpenAI server.

    EngineArgs.get_batch_defaults (vllm/engine/arg_utils.py): device memory >= 70 GiB and "a100"
    not in the device name -> 8192 / 1024, else 2048 / 256 (memory model §3)."""
    if gpu_memory_mib >= 70 * MIB_PER_GIB and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads one GPU holds: total/tp, or 1 replicated head when tp exceeds them
    (QKVParallelLinear; ModelConfig.get_num_kv_heads: max(1, total // tp))."""
    return max(1, model.num_key_value_heads // tp)


def kv_bytes_per_token_per_layer(model: ModelSpec, tp: int, dtype_bytes: int = 2) -> int:
    """K and V of one token in one layer on one GPU (FullAttentionSpec.page_size_bytes / block)."""
    return 2 * kv_heads_per_gpu(model, tp) * model.head_dim * dtype_bytes


def sampler_bytes_per_logit(dtype_bytes: int) -> int:
    """Bytes per (request x vocab) logit alive at the sampler's peak in the profile run (memory
    model §4). The dummy sampler run asks for top-k and top-p (gpu_model_runner
    _dummy_sampler_run: top_k = vocab - 1, top_p = 0.9), so vllm/v1/sample/sampler.py's
    _apply_top_k_top_p runs; at its final scatter these are alive: the model-dtype logits
    (held by the caller), their float32 copy (4), the sorted values (4) and int64 indices (8),
    the top-k mask (1), the top-p softmax (4) and its cumsum (4), the top-p mask (1) and the
    scatter's output (4)."""
    return dtype_bytes + 4 + 4 + 8 + 1 + 4 + 4 + 1 + 4


def profile_activation_bytes(
    model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int, dtype_bytes: int
) -> float:
    """Torch peak of the profile run above the weights (memory model §4): the larger of the
    forward pass at max_num_batched_tokens (residual + hidden + one layer's MLP: gate_up and
    its activation) and the sampler on min(max_num_seqs, tokens) rows, with the final hidden
    states still alive."""
    tokens = max_num_batched_tokens
    reqs = min(max_num_seqs, tokens)
    inter = model.intermediate_size or 4 * model.hidden_size
    if model.is_moe and model.experts_per_token:
        inter *= model.experts_per_token  # routed tokens each run a top-k expert's MLP
    hidden = tokens * model.hidden_size * dtype_bytes
    forward = 2 * hidden + tokens * (3 * inter // tp) * dtype_bytes
    sampler = hidden + reqs * model.vocab_size * sampler_bytes_per_logit(dtype_bytes)
    return float(max(forward, sampler))


def non_torch_bytes(tp: int) -> float:
    """Non-torch memory growth during profiling (memory model §2): vLLM's own logs on an H100
    report 0.13 GiB at TP=1 and 0.55 GiB per GPU at TP=2 (llm-d empirical results); larger TP
    is taken as TP=2's (NCCL and custom all-reduce buffers; not derived beyond that)."""
    return (0.13 if tp == 1 else 0.55) * GIB


def kv_cache_tokens(
    available_bytes: float, kv_bytes_per_token_layer: int, layers: int, block_size: int = BLOCK_SIZE
) -> tuple[int, int]:
    """(num_blocks, tokens): kv_cache_utils: num_blocks = available // page_size // layers,
    page_size = block_size x bytes per token per layer; tokens = num_blocks x block_size."""
    if available_bytes <= 0:
        return 0, 0
    page = block_size * kv_bytes_per_token_layer
    blocks = int(available_bytes // page // layers)
    return blocks, blocks * block_size


def memory_estimate(
    model: ModelSpec,
    *,
    gpu_name: str,
    total_mib: float,
    tp: int,
    quantize: str | None,
    dtype: str,
    utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    enforce_eager: bool = False,
    version: Version = (0, 27, 1),
) -> VllmMemory:
    """One GPU's budget and the KV tokens vLLM will report (memory model §1-§6)."""
    del gpu_name, enforce_eager, version  # §5: the CUDA-graph term is not derived (0)
    dtype_bytes = _DTYPE_BYTES[dtype]
    total = total_mib * MIB
    requested = math.ceil(total * utilization)  # request_memory(), vllm/v1/worker/utils.py
    weights = (
        mxfp4_weight_bytes(model) if quantize == "mxfp4" else weight_bytes(model, quantize)
    ) / tp
    if dtype_bytes == 4 and quantize is None:
        weights *= 2  # float32 weights: twice the 16-bit bytes
    activations = profile_activation_bytes(
        model, tp, max_num_batched_tokens, max_num_seqs, min(dtype_bytes, 2)
    )
    non_torch = non_torch_bytes(tp)
    per_layer = kv_bytes_per_token_per_layer(model, tp, dtype_bytes)
    available = requested - weights - activations - non_torch
    blocks, tokens = kv_cache_tokens(available, per_layer, model.kv_cache_layers)
    return VllmMemory(
        total_mib=total_mib,
        requested_mib=requested / MIB,
        weights_mib=weights / MIB,
        activations_mib=activations / MIB,
        non_torch_mib=non_torch / MIB,
        cudagraph_mib=0.0,
        kv_bytes_per_token=per_layer * model.kv_cache_layers,
        kv_layers=model.kv_cache_layers,
        block_size=BLOCK_SIZE,
        num_blocks=blocks,
        kv_cache_tokens=tokens,
    )


def mxfp4_weight_bytes(model: ModelSpec) -> float:
    """An MXFP4 MoE checkpoint on the GPU: the experts' gate/up and down projections
    (layers x experts x 3 x hidden x intermediate) at MXFP4_BYTES_PER_PARAM, everything else
    (attention, router, embeddings, head, biases) 16-bit, as vLLM loads them (mxfp4.py: MoE
    layers only)."""
    experts = model.num_experts or 0
    inter = model.intermediate_size or 0
    expert_params = model.num_layers * experts * 3 * model.hidden_size * inter
    rest = max(0.0, model.parameters_b * 1e9 - expert_params)
    return expert_params * MXFP4_BYTES_PER_PARAM + rest * 2.0
