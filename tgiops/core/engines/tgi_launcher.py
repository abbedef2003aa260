"""The prefill budget TGI's launcher picks when ``--max-batch-prefill-tokens`` is not given.

tgiops always passes the budget it planned, so deploys never depend on this rule. It matters for
reading a real TGI run that left the flag out ("zero config", the 3.x default way of running
TGI): the calibration set (tests/data/calibration/tgi_warmups.yaml, scripts/bench_planner.py)
can only score such a run with the budget TGI itself chose. The rule, with its sources, is
also in tgiops/docs/tgi.md §1b.

The rule (launcher/src/main.rs, the ``max_batch_prefill_tokens`` block; @v3.0.0 l.2030-2060,
@v3.3.7 l.2114-2154, unchanged in substance in between except where noted):

1. ``compute_optimal``: the card's f16 FLOP/s (a table keyed by nvidia-smi's name) times the
   shard count, divided by the model's FLOPs per token (``Config::flop``, None for a VLM);
   kept only above 100 tokens.
2. Otherwise a fixed default: 4096; from v3.1.1 10000 for qwen2_vl / qwen2_5_vl (c1cf36c0,
   PR #2943), from v3.2.0 8000 for gemma3 (ed46c2c4, PR #3099).
3. Capped at ``max_position_embeddings`` (top-level config.json field) when present.
4. Capped at ``vram_maximum``: (nvidia-smi memory.total x shards x cuda_memory_fraction x
   TGI_WIGGLE_ROOM (0.95), in f32) minus ``model_vram``, divided by ``token_vram``; skipped for a
   checkpoint with a ``quantization_config`` and when the model does not fit. Unlike step 1 it
   applies to every card, known to the FLOP table or not.

The launcher's memory estimates are its own rough ones (``attn_vram`` leaves out the hidden
size; ``mlp_vram_per_tok`` is borrowed from vLLM's fused MoE): they are copied as written, not
corrected, because what is modelled is what TGI chose.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tgiops.core.catalog import ModelSpec

# Card key (nvidia-smi's gpu_name with spaces as dashes, lower case: ``compute_type``) -> f16
# TFLOP/s and the first release that knows the key (``impl From<&str> for Gpu`` and
# ``ComputeType::f16_flop``, launcher/src/main.rs@v3.0.0 l.1645-1731; v3.0.2 added the A40 and
# four more H100/A100 names, v3.1.0 the H200; v3.3.7 l.1712-1790 holds the same table). Names
# nvidia-smi really prints that miss a key ("Tesla T4" -> "tesla-t4", "NVIDIA GeForce RTX 4090",
# "NVIDIA H100 PCIe") are unknown cards to TGI, which then falls back to step 2.
_V300, _V302, _V310 = (3, 0, 0), (3, 0, 2), (3, 1, 0)
CARD_TFLOPS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "nvidia-4090": (82, _V300),
    "nvidia-t4": (65, _V300),
    "nvidia-l4": (121, _V300),
    "nvidia-l40": (181, _V300),
    "nvidia-l40s": (363, _V300),
    "nvidia-a10g": (125, _V300),
    "nvidia-h100-80gb-hbm3": (900, _V300),
    "nvidia-a100-sxm4-80gb": (312, _V300),
    "nvidia-a100": (312, _V300),
    "nvidia-a40": (149, _V302),
    "nvidia-h100-nvl": (900, _V302),
    "nvidia-h100": (900, _V302),
    "nvidia-a100-sxm4-40gb": (312, _V302),
    "nvidia-a100-80gb-pcie": (312, _V302),
    "nvidia-h200": (989, _V310),
}

# VLMs whose config.json holds the text model's fields at the top level, where the launcher
# reads them (Qwen2-VL, Qwen2.5-VL); Gemma 3, Mistral 3 and Llama 3.2 Vision nest them in
# text_config, so the launcher sees no size, layer or context field for those.
_TOP_LEVEL_TEXT_VLMS = ("qwen2_vl", "qwen2_5_vl")
# Model types whose catalog facts are not the raw fields the launcher reads: their MoE width is
# moe_intermediate_size (the launcher reads intermediate_size) and their expert count is
# num_experts (the launcher reads num_local_experts) or they have shared experts.
_RAW_FIELDS_DIFFER = ("qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")
# Catalog quantization names that are exactly the config.json quant_method the launcher's serde
# enum accepts (kebab-case ``Quantization``, launcher/src/main.rs@v3.0.0 l.376-395). "fp8" and
# "compressed-tensors" may come from fbgemm_fp8 / compressed_tensors, which the enum refuses (the
# launcher then runs with no config at all), and mxfp4 is refused: those are not reproducible.
_ACCEPTED_QUANT_METHODS = ("awq", "gptq", "exl2", "marlin", "eetq", "bitsandbytes")


@dataclass(frozen=True)
class LauncherText:
    """The text model's fields where the launcher reads them, at config.json's top level."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int | None
    num_layers: int
    vocab_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class LauncherConfig:
    """config.json as the 3.x launcher's ``Config`` holds it (``impl From<RawConfig>``)."""

    model_type: str
    text: LauncherText | None  # None: nested in text_config, where the launcher does not look
    num_experts_per_token: int  # num_experts_per_tok, default 1
    num_experts: int  # num_local_experts, default 1
    quantized: bool  # a quantization_config the launcher parsed
    vision: bool  # a vision_config

    @property
    def max_position_embeddings(self) -> int | None:
        return self.text.max_position_embeddings if self.text else None

    def flop(self) -> int | None:
        """FLOPs per token (``Config::flop``, l.254-281 @v3.0.0), None for a VLM."""
        t = self.text
        if self.vision or t is None or t.intermediate_size is None:
            return None
        # num_shared_experts is 0: no model type the catalog reproduces has shared experts.
        q_attn_o = 3 * 2 * t.num_heads * t.head_dim * t.hidden_size
        k_v = 2 * 2 * t.num_kv_heads * t.head_dim * t.hidden_size
        mlp = 2 * 3 * t.hidden_size * t.intermediate_size * self.num_experts_per_token
        return (q_attn_o + k_v + mlp) * t.num_layers

    def model_vram(self) -> int | None:
        """The launcher's weight estimate in bytes (``model_vram``), None when quantized."""
        t = self.text
        if self.quantized or t is None or t.intermediate_size is None:
            return None
        attn = (t.num_heads + 2 * t.num_kv_heads) * t.head_dim  # sic: no x hidden
        o_proj = t.num_heads * t.head_dim * t.hidden_size
        mlp = 3 * t.intermediate_size * self.num_experts * t.hidden_size
        return ((mlp + attn + o_proj) * t.num_layers + 2 * t.hidden_size * t.vocab_size) * 2

    def token_vram(self) -> int | None:
        """Bytes per token (``token_vram``: ``kv_vram_per_tok`` + ``mlp_vram_per_tok``)."""
        t = self.text
        if self.quantized or t is None or t.intermediate_size is None:
            return None
        kv = t.num_kv_heads * 2 * t.head_dim * 2 * t.num_layers
        mlp = (t.intermediate_size + t.intermediate_size // 2) * self.num_experts * 2 * 3
        return kv + mlp


def launcher_config(model: ModelSpec) -> LauncherConfig | None:
    """What the launcher reads from the model's config.json; None when the catalog's facts
    cannot reproduce it (see ``_RAW_FIELDS_DIFFER`` and ``_ACCEPTED_QUANT_METHODS``)."""
    if model.model_type in _RAW_FIELDS_DIFFER:
        return None
    if model.quantization is not None and model.quantization not in _ACCEPTED_QUANT_METHODS:
        return None
    top_level = not model.vision or model.model_type in _TOP_LEVEL_TEXT_VLMS
    text = LauncherText(
        num_heads=model.num_attention_heads,
        num_kv_heads=model.num_key_value_heads,
        head_dim=model.head_dim,
        hidden_size=model.hidden_size,
        intermediate_size=model.intermediate_size,
        num_layers=model.num_layers,
        vocab_size=model.vocab_size,
        max_position_embeddings=model.max_position_embeddings,
    )
    return LauncherConfig(
        model_type=model.model_type,
        text=text if top_level else None,
        num_experts_per_token=model.experts_per_token or 1,
        num_experts=model.num_experts or 1,
        quantized=model.quantization is not None,
        vision=model.vision,
    )


def _f32(value: float) -> float:
    """Round to IEEE single precision, as the launcher's ``f32`` arithmetic does."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def card_key(nvidia_smi_name: str) -> str:
    """The launcher's card key: nvidia-smi's name, spaces as dashes, lower case."""
    return nvidia_smi_name.replace(" ", "-").lower()


def card_f16_flops(version: tuple[int, int, int], nvidia_smi_name: str) -> int | None:
    """One card's f16 FLOP/s as the release's launcher knows it; None for an unknown card."""
    known = CARD_TFLOPS.get(card_key(nvidia_smi_name))
    if known is None or version < known[1]:
        return None
    return known[0] * 10**12


def fixed_default(version: tuple[int, int, int], model_type: str) -> int:
    """Step 2: the default when compute_optimal gives nothing."""
    if version >= (3, 1, 1) and model_type in ("qwen2_vl", "qwen2_5_vl"):
        return 10_000
    if version >= (3, 2, 0) and model_type == "gemma3":
        return 8000
    return 4096


def zero_config_prefill_tokens(
    version: tuple[int, int, int],
    config: LauncherConfig,
    *,
    nvidia_smi_name: str,
    gpu_memory_mib: int,
    num_shard: int,
    cuda_memory_fraction: float = 1.0,
    wiggle_room: float = 0.95,
) -> int:
    """max_batch_prefill_tokens as the launcher defaults it from v2.4.1 (module docstring, steps
    1-4 from v3.0.0).

    ``nvidia_smi_name`` and ``gpu_memory_mib`` are the first GPU's, as nvidia-smi prints them;
    the launcher multiplies both by the shard count.
    """
    if version < (2, 4, 1):
        raise ValueError("before 2.4.1 the launcher's prefill default is max_input_tokens + 50")
    if version < (3, 0, 0):
        # v2.4.1 already leaves the token limits to warmup but its prefill default is 4096
        # capped at the context (launcher/src/main.rs@v2.4.1 l.1697-1712, l.1732-1742).
        return min(4096, config.max_position_embeddings or 4096)
    flops, model_flop = card_f16_flops(version, nvidia_smi_name), config.flop()
    optimal = flops * num_shard // model_flop if flops and model_flop else 0
    value = optimal if optimal > 100 else fixed_default(version, config.model_type)
    if config.max_position_embeddings is not None:
        value = min(value, config.max_position_embeddings)
    model_bytes, token_bytes = config.model_vram(), config.token_vram()
    # Any card nvidia-smi names has a memory figure, known to the FLOP table or not.
    if model_bytes is not None and token_bytes:
        total = _f32(float(gpu_memory_mib * 2**20 * num_shard))
        available = int(_f32(_f32(total * _f32(cuda_memory_fraction)) * _f32(wiggle_room)))
        if available >= model_bytes:
            value = min(value, (available - model_bytes) // token_bytes)
    return value
