"""TGI's warmup memory, per GPU and term by term (pure).

What the planner (tgiops/core/plan.py) sizes TGI's limits from, and what
scripts/bench_planner.py scores against real warmups (tests/data/calibration/). The full
derivation, term by term with links per release, is tgiops/docs/tgi-memory-model.md (the
warmup batch's KV reservation, the LM head, Gemma 3's dense masks, the prefill logits, the
wiggle room per release). In short, derived from TGI's own warmup (docs/tgi.md §4,
``flash_causal_lm.py@v3.3.7`` l.1507-1684), per GPU, in bytes:

1. TGI loads the weights. Each shard holds ``weights / num_shard``: linear layers are split
   by rows or columns and the vocabulary is split ``ceil(V / world)`` (§3); norms are
   replicated but negligible.
2. It runs one warmup prefill of ``max_batch_prefill_tokens`` tokens. Its activations stay
   in PyTorch's caching allocator, so they count as used memory when TGI measures.
3. It measures ``free = cuda_free - (1 - cuda_memory_fraction * wiggle_room) * total``
   (``get_cuda_free_memory``) and turns all of it into KV-cache blocks:
   ``kv_tokens = free // kv_bytes_per_token`` rounded down to the attention's block size,
   with ``kv_bytes_per_token = 2 * layers * (kv_heads / num_shard) * head_dim * dtype_bytes``
   (K and V; ``kv_heads / num_shard`` is at least 1).
4. CUDA graphs are captured afterwards, inside the ``1 - wiggle_room`` margin TGI keeps.
5. The router refuses ``max_total_tokens`` above ``kv_tokens`` ("Not enough memory to handle
   `max_total_tokens`"), and warmup fails when the prefill activations do not fit ("Not
   enough memory to handle N prefill tokens").

So, from v3.0.0: ``kv_budget = total * fraction * wiggle - used``; before v3.0.0 the wiggle
room is a share of what is free instead, ``kv_budget = wiggle * (total * fraction - used)``
(``TgiEngine.wiggle_on_free_memory``, flash_causal_lm.py@v2.4.1 l.1549-1553), where
``used = weights_per_gpu + cuda_context + activations + prefill_logits``.

Estimates, and their known limits (none of these numbers is published by TGI):

- Weights: the checkpoint's safetensors bytes where ``models.yaml`` has them (quantized
  checkpoints: their file size, which slightly over-counts packed int4 — docs/models.md note 7);
  else parameters x bytes per parameter of the format (``LINEAR_BYTES_PER_PARAM``), with
  embeddings and lm_head kept 16-bit.
- CUDA context: PyTorch's context plus cuBLAS workspaces, taken as 768 MiB per GPU; NCCL's
  buffers add 512 MiB per GPU when sharded. Real values vary by driver and card.
- Prefill activations: per token, the residual stream and a few copies of it
  (4 x hidden), the attention projections (q, k, v, o per shard) and the MLP at its peak
  (gate and up, the activation and their product: 4 x intermediate per shard, x top-k for
  mixture-of-experts; ``activation_bytes`` cites the line), all 16-bit.
- Prefill logits (``prefill_logits_bytes``), a term of its own: the router's warmup asks for
  ``prefill_logprobs`` (router/client/src/client.rs@v2.0.4 l.148,
  backends/v3/src/client/grpc_client.rs@v3.3.7 l.150-197), so before v3.0.0 the LM head runs
  on *every* prefill token and ``log_softmax`` follows over the full vocabulary
  (``TgiEngine.prefill_logits_copies`` cites the lines per release). They are in the model's
  16-bit dtype: the head's output is ``input.new_empty`` / a 16-bit linear and no model
  class casts it (grep of ``.float()`` on logits in custom_modeling@v2.0.4 and @v2.4.1 finds
  none), and log_softmax keeps its input's dtype. Per GPU and prefill token:
  ``2 bytes x (copies x V + V / num_shard)`` when sharded with a vocabulary that divides
  (``TensorParallelHead.forward``, layers/tensor_parallel.py@v2.4.1 l.34-59, computes the
  local ``V / num_shard`` slice and all-gathers the full ``V`` on every shard), and
  ``2 bytes x copies x V`` otherwise (one shard, or a vocabulary that does not divide: then
  ``TensorParallelHead.load`` replicates the head and skips the gather, l.56-64). A
  gathered head's logits cost more copies: the head returns ``world_out.T``, PyTorch's CUDA
  ``log_softmax`` makes that view contiguous before writing its output (one more up to
  v2.3.1), and 2.4.x's ``out=out`` on that view goes through a contiguous temporary too (two
  more; ``TgiEngine.gathered_logits_extra_copies``). Freed
  tensors stay in PyTorch's caching allocator, so they count as used when warmup measures.
  From v3.0.0 the server drops ``prefill_logprobs`` unless ``REQUEST_LOGPROBS=1``
  (flash_causal_lm.py@v3.0.0 l.298-299), so only the last token per request reaches the
  head: negligible, 0. Links: https://github.com/huggingface/text-generation-inference/blob/
  v2.4.1/server/text_generation_server/models/flash_causal_lm.py and
  .../pull/2661 (in-place log_softmax, v2.4.0), .../pull/2797 (REQUEST_LOGPROBS, v3.0.0).
  The non-flash path (sm < 8.0) is left out: its warmup does not size a KV cache.
- Non-flash models (sm < 8.0) grow a Hugging Face KV cache per request instead of blocks;
  the same budget is used as the ceiling, and the plan warns that it is less exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tgiops.core.catalog import ModelSpec
from tgiops.core.hardware import GpuInventory

if TYPE_CHECKING:  # the engine modules sit above the planner (they call it)
    from tgiops.core.engines.tgi import TgiEngine

MIB = 1024 * 1024
GIB = 1024 * MIB

CUDA_CONTEXT_MIB = 768
NCCL_BUFFERS_MIB = 512

# Bytes per parameter of the quantized linear layers (docs/tgi.md §4 "Weight memory").
LINEAR_BYTES_PER_PARAM = {
    None: 2.0,
    "fp8": 1.0,
    "eetq": 1.0,
    "bitsandbytes": 1.0,
    "compressed-tensors": 1.0,  # the FP8 schemes the catalog holds
    "awq": 0.5 + 2.5 / 128,  # int4 + fp16 scale and 4-bit zero per group of 128
    "gptq": 0.5 + 2.5 / 128,
    "marlin": 0.5 + 2.5 / 128,
    "exl2": 0.5 + 2.5 / 128,
    "bitsandbytes-nf4": 0.5 + 4 / 64,  # 4-bit + one fp32 absmax per block of 64
    "bitsandbytes-fp4": 0.5 + 4 / 64,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """What TGI's warmup should find, per GPU, term by term (tgiops/docs/tgi-memory-model.md).

    ``used_mib`` is what stays allocated when warmup measures free memory; the warmup batch's
    own KV blocks (``warmup_kv_mib``) are allocated before the prefill and become part of the
    KV cache afterwards, so they count for the prefill's peak but not against the cache.
    """

    gpu_memory_mib: int
    usable_mib: float  # total x fraction (x wiggle room from TGI 3.0; see kv_share)
    weights_per_gpu_mib: float  # includes lm_head_mib
    overhead_mib: float  # CUDA context (+ NCCL when sharded)
    activations_mib: float  # warmup prefill
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int  # what TGI should find at warmup
    prefill_logits_mib: float = 0.0  # warmup's logits over every prefill token (TGI < 3.0)
    kv_share: float = 1.0  # the share of free memory TGI makes KV: the wiggle room before 3.0
    warmup_kv_mib: float = 0.0  # KV blocks the warmup batch reserves before its prefill
    dense_attention_mib: float = 0.0  # Gemma 3's dense prefill masks (and SDPA scores)
    lm_head_mib: float = 0.0  # the LM head's share of the weights (a tied head loads twice)
    limit_mib: float = 0.0  # what torch may allocate: total x cuda_memory_fraction

    @property
    def used_mib(self) -> float:
        return (
            self.weights_per_gpu_mib
            + self.overhead_mib
            + self.activations_mib
            + self.prefill_logits_mib
            + self.dense_attention_mib
        )

    @property
    def kv_budget_mib(self) -> float:
        return self.kv_share * (self.usable_mib - self.used_mib)

    @property
    def prefill_peak_mib(self) -> float:
        """Memory in use at the warmup prefill's peak."""
        return self.used_mib + self.warmup_kv_mib

    @property
    def weights_fit(self) -> bool:
        return self.weights_per_gpu_mib + self.overhead_mib <= (self.limit_mib or self.usable_mib)

    @property
    def prefill_fits(self) -> bool:
        """False: TGI's warmup fails with "Not enough memory to handle N prefill tokens"."""
        return self.weights_fit and self.prefill_peak_mib <= (self.limit_mib or self.usable_mib)

    def terms(self) -> dict[str, float]:
        """Every term of the estimate in MiB, in the order warmup meets them."""
        return {
            "weights": self.weights_per_gpu_mib,
            "lm_head_in_weights": self.lm_head_mib,
            "cuda_context_and_nccl": self.overhead_mib,
            "warmup_kv_blocks": self.warmup_kv_mib,
            "prefill_activations": self.activations_mib,
            "prefill_logits": self.prefill_logits_mib,
            "dense_attention": self.dense_attention_mib,
        }


def weight_bytes(model: ModelSpec, quantize: str | None) -> float:
    """GPU bytes of all the weights in format ``quantize`` (None: the checkpoint's 16-bit)."""
    embed_params = model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
    if model.quantization is not None and quantize == model.quantization:
        if model.weight_bytes:
            return float(model.weight_bytes)
    elif quantize is None and model.weight_bytes:
        # A float32 checkpoint is cast to 16 bits at load (see _choose_dtype).
        return model.weight_bytes / (2.0 if model.torch_dtype == "float32" else 1.0)
    params = model.parameters_b * 1e9
    per_param = LINEAR_BYTES_PER_PARAM.get(quantize, 1.0)
    return (params - embed_params) * per_param + embed_params * 2.0


def kv_bytes_per_token_per_gpu(model: ModelSpec, num_shard: int, dtype_bytes: int = 2) -> int:
    """2 (K and V) x layers x kv_heads per shard x head_dim x bytes (docs/tgi.md §4).

    Every text layer counts, mllama's cross-attention layers too: TGI sizes and allocates its
    paged cache for ``text_config.num_hidden_layers`` (``self.num_layers``,
    flash_causal_lm.py@v2.3.1 l.999-1008 and l.1282 ``total_cache_size``, @v3.3.7
    l.1273-1280 and l.1521), although those layers attend to the image and never use it.
    """
    kv_heads_per_shard = max(1, model.num_key_value_heads // num_shard)
    return 2 * model.num_layers * kv_heads_per_shard * model.head_dim * dtype_bytes


def lm_head_bytes_per_gpu(model: ModelSpec, num_shard: int) -> float:
    """The LM head on each GPU: 16-bit in every quantization TGI serves (AWQ/GPTQ/EETQ/
    Marlin keep heads unquantized, layers/tensor_parallel.py@v2.2.0 ``TensorParallelHead.load``),
    split by vocabulary when it divides by ``num_shard``, else loaded whole on every shard
    (the same function, ``except AssertionError``). A tied head is loaded a second time from
    the embedding weights (``suffix = "model.embed_tokens"``,
    custom_modeling/flash_llama_modeling.py@v3.3.7 l.636-650)."""
    head = model.vocab_size * model.hidden_size * 2.0
    return head / num_shard if model.vocab_size % num_shard == 0 else head


def weights_per_gpu_bytes(model: ModelSpec, quantize: str | None, num_shard: int) -> float:
    """Weights on one GPU: the checkpoint split over the shards, with the LM head placed as
    TGI loads it (``lm_head_bytes_per_gpu``): an untied head's file bytes are replaced by its
    per-GPU copy, a tied head is added (the file holds it once, the GPU twice)."""
    head_in_file = 0.0 if model.tie_word_embeddings else model.vocab_size * model.hidden_size * 2.0
    total = weight_bytes(model, quantize)
    return (total - head_in_file) / num_shard + lm_head_bytes_per_gpu(model, num_shard)


def dense_attention_bytes(
    model: ModelSpec, engine: TgiEngine, attention: str, requests: tuple[int, ...], num_shard: int
) -> float:
    """Gemma 3's dense prefill masks for the warmup batch ``requests``
    (``TgiEngine.dense_prefill_attention``).

    The batch is padded to its longest request S, and per cell (``b x S x S``) the forward
    holds:

    - the masks, 10 bytes: the additive mask and its sliding-window copy are float32, as
      ``torch.where(bool_mask, 0, min_dtype)`` with two Python scalars returns the default
      dtype and TGI never sets one (``git grep set_default_dtype`` at v3.2.0 and v3.3.7 finds
      none): 4 + 4; the boolean window mask and the ``ones_like`` it is built from, 1 + 1
      (flash_gemma3_modeling.py@v3.2.1 l.700-753, l.847-866; from v3.3.0 the boolean mask
      ``get_attention_mask(bool_mask=True)`` keeps, vlm_causal_lm.py@v3.3.0 l.1021-1031,
      takes the transient's place);
    - with "sdpa", 9 bytes per head on this shard: PyTorch's math kernel, the only one taking
      both ``attn_mask`` and ``enable_gqa``, upcasts 16-bit q, k and v to float32 (PyTorch
      PR #128922, default since torch 2.5; TGI 3.2.x-3.3.x pin torch 2.6-2.7 in
      server/requirements_cuda.txt), so the scores are float32 (4) and
      ``at::_safe_softmax`` (PR #133882, torch 2.5) holds its float32 softmax (4) and the
      boolean ``-inf`` test of the scores (1) with them
      (aten/src/ATen/native/transformers/attention.cpp, ``_scaled_dot_product_attention_math``).

    A lower bound: releases of ``_safe_softmax`` whose ``where`` writes a new tensor hold 4
    bytes more, and ``get_attention_mask``'s boolean intermediates are freed into PyTorch's
    cache and reused.
    """
    kind = engine.dense_prefill_attention(model.model_type, attention)
    if kind is None or not requests:
        return 0.0
    batch, longest = len(requests), max(requests)
    square = float(batch) * longest * longest
    total = 10.0 * square
    if kind == "sdpa":
        total += 9.0 * square * (model.num_attention_heads // num_shard)
    return total


def warmup_memory(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    *,
    num_shard: int,
    quantize: str | None,
    prefill_tokens: int,
    fraction: float = 1.0,
    flash: bool = True,
    attention: str = "paged",
    max_input_tokens: int | None = None,
    max_total_tokens: int | None = None,
) -> MemoryEstimate:
    """What TGI's warmup should find with exactly these settings, per GPU (see the module
    docstring and tgiops/docs/tgi-memory-model.md): no limits are chosen and nothing is
    checked, so a calibration can compare it with a real warmup (scripts/bench_planner.py).

    ``max_input_tokens`` / ``max_total_tokens`` are the limits the router warms up with (None:
    unknown, TGI 3.x zero config); they shape the warmup batch (``TgiEngine.warmup_requests``)
    and the KV blocks it reserves before the prefill (``TgiEngine.warmup_reserved_tokens``).

    KV tokens follow TGI's own arithmetic (flash_causal_lm.py ``warmup``): the warmup batch's
    KV blocks are allocated before free memory is measured and added back afterwards,
    ``num_blocks = share * free // block_bytes + warmup_blocks``; with the wiggle room folded
    into the fraction (3.0+) that is the same as sharing the whole budget. The prefill fails
    when its peak exceeds what torch may allocate, ``total x cuda_memory_fraction``
    (``set_per_process_memory_fraction``, utils/dist.py@v3.3.7 l.56).
    """
    gpu_mib = inventory.memory_mib
    # Before 3.0 the wiggle room is a share of the free memory, from 3.0 of the total.
    share = engine.wiggle_room if engine.wiggle_on_free_memory else 1.0
    limit_mib = gpu_mib * fraction
    usable_mib = limit_mib * (1.0 if engine.wiggle_on_free_memory else engine.wiggle_room)
    weights_mib = weights_per_gpu_bytes(model, quantize, num_shard) / MIB
    head_mib = lm_head_bytes_per_gpu(model, num_shard) / MIB
    overhead_mib = CUDA_CONTEXT_MIB + (NCCL_BUFFERS_MIB if num_shard > 1 else 0)
    kv_per_token = kv_bytes_per_token_per_gpu(model, num_shard)
    block = engine.attention_block_size(attention)
    act_mib = activation_bytes(model, prefill_tokens, num_shard, engine, quantize) / MIB
    logits_mib = (
        prefill_logits_bytes(model, prefill_tokens, num_shard, engine) / MIB if flash else 0.0
    )
    requests = engine.warmup_requests(prefill_tokens, max_input_tokens)
    dense_mib = (
        dense_attention_bytes(model, engine, attention, requests, num_shard) / MIB if flash else 0.0
    )
    warm_tokens = engine.warmup_reserved_tokens(
        prefill_tokens, max_input_tokens, max_total_tokens, block
    )
    warm_blocks = warm_tokens // block
    warm_mib = warm_tokens * kv_per_token / MIB
    used_mib = weights_mib + overhead_mib + act_mib + logits_mib + dense_mib
    peak_mib = used_mib + warm_mib
    if peak_mib > limit_mib or weights_mib + overhead_mib > limit_mib:
        tokens = 0  # the prefill itself fails: no KV cache is sized
    else:
        free_mib = max(0.0, usable_mib - peak_mib)  # get_free_memory's max(0, ...)
        tokens = (int(share * free_mib * MIB // (kv_per_token * block)) + warm_blocks) * block
    return MemoryEstimate(
        gpu_memory_mib=gpu_mib,
        usable_mib=round(usable_mib, 1),
        weights_per_gpu_mib=round(weights_mib, 1),
        overhead_mib=overhead_mib,
        activations_mib=round(act_mib, 1),
        kv_bytes_per_token_per_gpu=kv_per_token,
        kv_cache_tokens=tokens,
        prefill_logits_mib=round(logits_mib, 1),
        kv_share=share,
        warmup_kv_mib=round(warm_mib, 1),
        dense_attention_mib=round(dense_mib, 1),
        lm_head_mib=round(head_mib, 1),
        limit_mib=round(limit_mib, 1),
    )


def prefill_logits_bytes(
    model: ModelSpec, prefill_tokens: int, num_shard: int, engine: TgiEngine
) -> float:
    """Bytes per GPU of the logits warmup computes over every prefill token (0 from TGI 3.0).

    ``copies`` full-vocabulary 16-bit tensors per token (``TgiEngine.prefill_logits_copies``),
    plus the local ``V / num_shard`` slice a sharded head computes before it all-gathers
    (layers/tensor_parallel.py@v2.4.1 l.34-59); a vocabulary that does not divide by
    ``num_shard`` is not sharded and not gathered (l.56-64). See the module docstring.
    """
    copies = engine.prefill_logits_copies
    if not copies:
        return 0.0
    vocab = model.vocab_size
    gathered = num_shard > 1 and vocab % num_shard == 0
    if gathered:
        # log_softmax over the transposed gathered logits copies them (once up to v2.3.1,
        # twice with 2.4.x's non-contiguous out=): ``TgiEngine.gathered_logits_extra_copies``.
        copies += engine.gathered_logits_extra_copies
    per_token = copies * vocab + (vocab // num_shard if gathered else 0)
    return float(prefill_tokens * per_token * 2)


def activation_bytes(
    model: ModelSpec,
    prefill_tokens: int,
    num_shard: int,
    engine: TgiEngine | None = None,
    quantize: str | None = None,
) -> float:
    """Peak 16-bit activations of one prefill of ``prefill_tokens`` tokens, per GPU."""
    attention = (
        (model.num_attention_heads + 2 * model.num_key_value_heads) * model.head_dim
        + model.num_attention_heads * model.head_dim
    ) / num_shard
    intermediate = model.intermediate_size or 4 * model.hidden_size
    # The MLP holds 4 x intermediate at its peak: gate_up (2 x I), act(gate) (I) and the
    # product (I) are alive together in `down_proj(act(gate_up[:, 0]) * gate_up[:, 1])`
    # (custom_modeling/flash_llama_modeling.py LlamaMLP.forward, @v2.0.0 l.33-36, @v3.3.7).
    mlp = 4 * intermediate * (model.experts_per_token or 1) / num_shard
    if engine is not None and engine.fused_moe_caches(
        model.model_type, quantize or model.quantization
    ):
        # vLLM's fused_moe holds gate_up, act_and_mul's output and the down projection per
        # selected expert: top_k x (2 I + I) / num_shard + top_k x hidden
        # (``TgiEngine.fused_moe_caches`` cites the lines).
        mlp = (model.experts_per_token or 1) * (3 * intermediate / num_shard + model.hidden_size)
    per_token = 4 * model.hidden_size + attention + mlp
    return prefill_tokens * per_token * 2
