"""The emulator's own warmup memory arithmetic, per TGI release (pure).

Derived from TGI's source for every release tag from v2.0.0 to v3.3.7, independently of the
planner (tgiops/core/plan.py, tgiops/core/warmup.py), which the emulator never imports: two
derivations of the same warmup, held to the same real runs (tests/data/calibration,
tests/emulator/test_calibration.py).

What a shard does in `FlashCausalLM.warmup` (server/text_generation_server/models/
flash_causal_lm.py), and where each term comes from:

1. The router's warmup batch (router/client/src/client.rs@v2.0.4, router/client/src/v3/
   client.rs@v2.2.0, backends/v3/src/client/grpc_client.rs@v2.4.1..@v3.3.7): requests of
   `truncate = min(max_input, prefill - n)` tokens until the prefill budget is spent, each with
   `max_new_tokens = max_total - truncate` (1 when max_total is unknown, 3.x zero config). From
   v2.0.2 the first request carries an image (`n_tokens == 0`, router/client/src/client.rs
   @v2.0.2 l.118).
2. `init_kv_cache(batch.num_blocks)`: every request reserves `ceil((truncate + max_new - 1) /
   BLOCK)` blocks (from_pb / from_tokenized), i.e. max_total - 1 slots, before the forward.
3. One prefill forward (`generate_token`): activations stay in PyTorch's caching allocator;
   before v3.0.0 the LM head runs on every prefill token (prefill_logprobs), 2 vocabulary-wide
   16-bit tensors up to v2.3.1, 1 from v2.4.0 (in-place log_softmax), 0 from v3.0.0
   (REQUEST_LOGPROBS); a sharded head adds its V/world slice before the all-gather, and its
   transposed gathered logits cost log_softmax one contiguous copy more (two with 2.4.x's
   non-contiguous out=). Gemma 3
   builds dense [b, 1, S, S] masks (v3.2.x when the batch has an image, which warmup's does;
   every prefill from v3.3.0) and, with SDPA, a score matrix per head.
4. Free memory -> blocks: `get_free_memory(device, fraction)` is
   `max(0, cuda_free - (1 - fraction) x total)`; v2.0.0-v2.2.0 keep 5% of it
   (`free_memory * 0.95`, hard-coded), v2.3.x-v2.4.x `TGI_WIGGLE_ROOM` of it (default 0.95 in
   2.3.x, 0.90 in 2.4.x, models/globals.py), from v3.0.0 the wiggle room joins the fraction:
   `get_free_memory(device, MEMORY_FRACTION * TGI_WIGGLE_ROOM)` (default 0.95 in 3.0.x, 0.93
   in v3.1.0-v3.2.3, 0.90 from v3.3.0). Then `num_blocks = free // block_bytes +
   batch.num_blocks`.
5. Weights: the checkpoint split over the shards; the LM head split by vocabulary when it
   divides, whole on every shard otherwise; a tied head is loaded again from the embedding
   weights (a second 16-bit copy).

The constants that TGI measures rather than computes (CUDA context, NCCL, activation peak) are
the emulator's own estimates (engine.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

RELEASES: tuple[str, ...] = (
    "2.0.0", "2.0.1", "2.0.2", "2.0.3", "2.0.4", "2.1.0", "2.1.1", "2.2.0", "2.3.0", "2.3.1",
    "2.4.0", "2.4.1", "3.0.0", "3.0.1", "3.0.2", "3.1.0", "3.1.1", "3.2.0", "3.2.1", "3.2.2",
    "3.2.3", "3.3.0", "3.3.1", "3.3.2", "3.3.3", "3.3.4", "3.3.5", "3.3.6", "3.3.7",
)  # fmt: skip


@dataclass(frozen=True)
class ReleaseMemoryRules:
    """One release's warmup memory rules (see the module docstring for the sources)."""

    version: str
    # "legacy": 0.95 x free, hard-coded; "free_share": TGI_WIGGLE_ROOM x free;
    # "wiggle": free measured against fraction x TGI_WIGGLE_ROOM.
    wiggle_formula: str
    wiggle_room: float  # TGI_WIGGLE_ROOM's default (the hard-coded 0.95 for "legacy")
    warmup_logits_copies: int  # vocabulary-wide tensors per prefill token
    # [T, V] tensors log_softmax adds over the transposed gathered logits: their contiguous
    # copy (up to v2.3.1), or that copy and the out= temporary (2.4.x)
    gathered_view_extra_copies: int
    # Mixtral's unquantized MoE runs vLLM's fused_moe, which allocates its three caches whole
    vllm_fused_moe: bool
    warmup_image: bool  # the router's first warmup request carries an image
    gemma3_dense_mask: str | None  # None | "with_image" (3.2.x) | "always" (3.3.x)
    chunking_default: bool  # PREFILL_CHUNKING defaults on (v3.0.0)


def version_tuple(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise ValueError(f"not a TGI release: {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def rules_for(version: str) -> ReleaseMemoryRules:
    """The rules of `version` (any release tag from v2.0.0 to v3.3.7)."""
    v = version_tuple(version)
    if not (2, 0, 0) <= v <= (3, 3, 7):
        raise ValueError(f"TGI {version} is outside the releases the emulator knows")
    if v < (2, 3, 0):
        formula, wiggle = "legacy", 0.95
    elif v < (2, 4, 0):
        formula, wiggle = "free_share", 0.95
    elif v < (3, 0, 0):
        formula, wiggle = "free_share", 0.90
    elif v < (3, 1, 0):
        formula, wiggle = "wiggle", 0.95
    elif v < (3, 3, 0):
        formula, wiggle = "wiggle", 0.93
    else:
        formula, wiggle = "wiggle", 0.90
    copies = 2 if v < (2, 4, 0) else (1 if v < (3, 0, 0) else 0)
    if (3, 2, 0) <= v < (3, 3, 0):
        gemma3 = "with_image"
    elif v >= (3, 3, 0):
        gemma3 = "always"
    else:
        gemma3 = None
    return ReleaseMemoryRules(
        version=".".join(map(str, v)),
        wiggle_formula=formula,
        wiggle_room=wiggle,
        warmup_logits_copies=copies,
        # v2.4.0 made it `log_softmax(out, -1, out=out)` (PR #2661): in place for one shard,
        # but on a gathered head `out` is a transposed view, which PyTorch's log_softmax_out
        # (aten/src/ATen/native/SoftMax.cpp) fills through a contiguous `output_temp`
        gathered_view_extra_copies=(1 if v < (2, 4, 0) else 2) if copies else 0,
        # Makefile-vllm pins Narsil/vllm@b5dfc61d (v2.0.2-v2.1.1) and @d243e9dc (v2.2.0); v2.3.0
        # moved to layers/moe (SparseMoELayer). v2.0.0-v2.0.1's OlivierDehaene/vllm is not read.
        vllm_fused_moe=(2, 0, 2) <= v < (2, 3, 0),
        warmup_image=v >= (2, 0, 2),
        gemma3_dense_mask=gemma3,
        chunking_default=v >= (3, 0, 0),
    )


def warmup_batch(prefill: int, max_input: int | None) -> list[int]:
    """The input lengths of the router's warmup requests."""
    lengths: list[int] = []
    n_tokens = 0
    while n_tokens < prefill:
        truncate = prefill - n_tokens
        if max_input is not None:
            truncate = min(max_input, truncate)
        lengths.append(truncate)
        n_tokens += truncate
    return lengths


def reserved_blocks(lengths: list[int], max_total: int | None, block: int) -> int:
    """Blocks `init_kv_cache(batch.num_blocks)` allocates for the warmup batch."""
    blocks = 0
    for truncate in lengths:
        max_new = (max_total - truncate) if max_total is not None else 1
        blocks += math.ceil(max(1, truncate + max_new - 1) / block)
    return blocks


def lm_head_bytes(vocab: int, hidden: int, num_shard: int) -> int:
    """One shard's 16-bit LM head (layers/tensor_parallel.py TensorParallelHead.load)."""
    head = vocab * hidden * 2
    return head // num_shard if vocab % num_shard == 0 else head


def logits_bytes_per_token(rules: ReleaseMemoryRules, vocab: int, num_shard: int) -> int:
    copies = rules.warmup_logits_copies
    if not copies:
        return 0
    gathers = num_shard > 1 and vocab % num_shard == 0
    if gathers:
        # TensorParallelHead.forward gathers into a [V, T] buffer and returns its transpose
        # (layers/tensor_parallel.py@v2.2.0 l.98, l.114); `torch.log_softmax(out, -1)`
        # (flash_causal_lm.py@v2.2.0 l.1504) runs PyTorch's CUDA host_softmax, which starts
        # with `input_.contiguous()` (aten/src/ATen/native/cuda/SoftMax.cu): one more [T, V];
        # 2.4.x's `out=out` (l.2046 at v2.4.0) adds log_softmax_out's `output_temp`.
        copies += rules.gathered_view_extra_copies
    return 2 * (copies * vocab + (vocab // num_shard if gathers else 0))


def gemma3_mask_bytes(
    rules: ReleaseMemoryRules,
    model_type: str,
    lengths: list[int],
    heads_per_shard: int,
    attention: str | None,
) -> int:
    """Dense prefill masks (custom_modeling/flash_gemma3_modeling.py): the additive mask and
    its sliding-window copy, float32 because `torch.where(mask, 0, min_dtype)` has only
    Python-scalar branches (4 + 4 bytes a cell), the boolean window mask and its `ones_like`
    (1 + 1); through SDPA's math kernel, which computes in float32 for 16-bit inputs since
    torch 2.5 (TGI 3.2-3.3 ship torch 2.6-2.7), the scores and `_safe_softmax`'s output (4 + 4)
    and its boolean -inf test (1), per head."""
    if model_type != "gemma3" or rules.gemma3_dense_mask is None or not lengths:
        return 0
    if rules.gemma3_dense_mask == "with_image" and not rules.warmup_image:
        return 0
    cells = len(lengths) * max(lengths) ** 2
    sdpa = rules.gemma3_dense_mask == "with_image" or attention != "flashinfer"
    return cells * 10 + (cells * 9 * heads_per_shard if sdpa else 0)


def free_for_kv(
    rules: ReleaseMemoryRules,
    cuda_free: float,
    total: int,
    fraction: float,
    wiggle_override: float | None = None,
) -> float:
    """Step 4: what warmup turns into KV blocks."""
    wiggle = wiggle_override if wiggle_override is not None else rules.wiggle_room
    if rules.wiggle_formula == "legacy":
        return rules.wiggle_room * max(0.0, cuda_free - (1 - fraction) * total)
    if rules.wiggle_formula == "free_share":
        return wiggle * max(0.0, cuda_free - (1 - fraction) * total)
    return max(0.0, cuda_free - (1 - fraction * wiggle) * total)
