"""The launcher's own max_batch_prefill_tokens when the flag is not passed (v2.4.1 and 3.x).

Written from TGI's launcher source for the emulator alone (never imported from tgiops):
launcher/src/main.rs@v3.3.7 - ``RawConfig``/``Config`` l.200-370 (what it reads from
config.json), ``compute_optimal`` l.28-46, ``vram_maximum`` l.62-88, the card table ``Gpu`` /
``ComputeType`` l.1700-1830 and the defaulting block l.2114-2154. The same block at v3.0.0
(l.2030-2060) has no per-model-type fallback; v3.1.1 added Qwen-VL's 10000 (PR #2943), v3.2.0
Gemma 3's 8000 (PR #3099). v2.4.1 has none of it: 4096 capped at the context (l.1732-1742).

The launcher's own estimates are crude on purpose (its attention term forgets the hidden size,
its MLP bytes per token are vLLM's fused-MoE buffers): they are reproduced as written, because
what the emulator must print is the number TGI prints.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# nvidia-smi gpu_name -> "nvidia-a10g"-style key -> f16 TFLOP/s, with the release that added
# the key. Keys nvidia-smi never prints (its T4 is "Tesla T4", its 4090 "NVIDIA GeForce RTX
# 4090") stay in the table because TGI has them.
_CARDS: dict[str, tuple[int, str]] = {
    "nvidia-4090": (82, "3.0.0"),
    "nvidia-t4": (65, "3.0.0"),
    "nvidia-l4": (121, "3.0.0"),
    "nvidia-l40": (181, "3.0.0"),
    "nvidia-l40s": (363, "3.0.0"),
    "nvidia-a10g": (125, "3.0.0"),
    "nvidia-h100-80gb-hbm3": (900, "3.0.0"),
    "nvidia-a100-sxm4-80gb": (312, "3.0.0"),
    "nvidia-a100": (312, "3.0.0"),
    "nvidia-a40": (149, "3.0.2"),
    "nvidia-h100-nvl": (900, "3.0.2"),
    "nvidia-h100": (900, "3.0.2"),
    "nvidia-a100-sxm4-40gb": (312, "3.0.2"),
    "nvidia-a100-80gb-pcie": (312, "3.0.2"),
    "nvidia-h200": (989, "3.1.0"),
}
# quant_method values the launcher's serde enum accepts (kebab-case ``Quantization``); any
# other value makes config.json unreadable to the launcher (``get_config(...).ok()`` is None).
_QUANT_METHODS = {
    "awq", "compressed-tensors", "eetq", "exl2", "gptq", "marlin", "bitsandbytes",
    "bitsandbytes-nf4", "bitsandbytes-fp4", "fp8",
}  # fmt: skip


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split("."))


@dataclass(frozen=True)
class LauncherView:
    """config.json as the launcher's ``Config`` holds it: top-level fields only."""

    model_type: str | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None  # head_dim, else hidden / heads when it divides
    text_head_dim: int | None  # text_config.head_dim (read from v3.2.1 by get_head_dim)
    hidden: int | None
    intermediate: int | None
    layers: int | None
    experts_per_tok: int
    shared_experts: int
    local_experts: int
    vocab: int | None
    context: int | None
    quantized: bool
    vision: bool

    def head_size(self, version: str) -> int | None:
        if self.head_dim is not None or _ver(version) < (3, 2, 1):
            return self.head_dim
        if self.text_head_dim is not None:
            return self.text_head_dim
        return 256 if self.model_type == "gemma3" and _ver(version) >= (3, 3, 0) else None


def launcher_view(config: dict) -> LauncherView | None:
    """Parse config.json the way the launcher does; None when it fails to (unknown quant)."""
    quant = (config.get("quantization_config") or {}).get("quant_method")
    if quant is not None and quant not in _QUANT_METHODS:
        return None
    hidden = config.get("hidden_size") or config.get("n_embd")
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim")
    if head_dim is None and hidden and heads and hidden % heads == 0:
        head_dim = hidden // heads
    return LauncherView(
        model_type=config.get("model_type"),
        heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        text_head_dim=(config.get("text_config") or {}).get("head_dim"),
        hidden=hidden,
        intermediate=config.get("intermediate_size"),
        layers=config.get("num_hidden_layers"),
        experts_per_tok=config.get("num_experts_per_tok") or 1,
        shared_experts=config.get("n_shared_experts") or 0,
        local_experts=config.get("num_local_experts") or 1,
        vocab=config.get("vocab_size"),
        context=(
            config.get("max_position_embeddings")
            or config.get("max_seq_len")
            or config.get("n_positions")
        ),
        quantized=quant is not None,
        vision="vision_config" in config,
    )


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _human(size: int) -> str:
    """The launcher's human_size(size, "B"): thousands, two decimals (l.48-60)."""
    scaled, units, index = float(size), ("", "K", "M", "G", "T"), 0
    while scaled > 1000.0 and index < len(units) - 1:
        scaled /= 1000.0
        index += 1
    return f"{scaled:.2f}{units[index]}B"


def _all_known(*values: int | None) -> list[int] | None:
    """The values, or None when the launcher lacks one (its `?` on an Option)."""
    return None if any(v is None for v in values) else [int(v or 0) for v in values]


def _model_flop(view: LauncherView, version: str) -> int | None:
    """Config::flop: None for a VLM or a missing field."""
    fields = _all_known(
        view.heads, view.kv_heads, view.head_size(version), view.hidden, view.intermediate,
        view.layers,
    )  # fmt: skip
    if view.vision or fields is None:
        return None
    heads, kv, head, hidden, inter, layers = fields
    q = attn = o = 2 * heads * head * hidden
    k = v = 2 * kv * head * hidden
    mlp = 2 * 3 * hidden * inter * (view.experts_per_tok + view.shared_experts)
    return (q + k + v + attn + o + mlp) * layers


def _vram_bytes(view: LauncherView, version: str) -> tuple[int, int] | None:
    """(model_vram, token_vram), or None when the launcher gives up (quantized, fields missing)."""
    fields = _all_known(
        view.heads, view.kv_heads, view.head_size(version), view.hidden, view.intermediate,
        view.layers, view.vocab,
    )  # fmt: skip
    if view.quantized or fields is None:
        return None
    heads, kv, head, hidden, inter, layers, vocab = fields
    experts = view.local_experts
    layer = 3 * inter * experts * hidden + (heads + 2 * kv) * head + heads * head * hidden
    model = (layer * layers + 2 * hidden * vocab) * 2
    token = kv * 2 * head * 2 * layers + (inter + inter // 2) * experts * 2 * 3
    return model, token


def default_prefill(
    version: str,
    view: LauncherView | None,
    gpu_name: str | None,
    gpu_mib: int,
    num_shard: int,
    memory_fraction: float,
    wiggle_room: float,
) -> tuple[int, list[tuple[str, str]]]:
    """The launcher's default and the warnings it logs on the way (v2.4.1 and later).

    ``gpu_name`` / ``gpu_mib``: what ``nvidia-smi`` prints for the first GPU (None: no
    nvidia-smi, so no compute type at all). ``view`` None: config.json unreadable.
    """
    logs: list[tuple[str, str]] = []
    if _ver(version) < (3, 0, 0):
        context = view.context if view is not None and view.context else 4096
        return min(4096, context), logs
    optimal = None
    if view is not None and gpu_name is not None:  # compute_optimal: config?, compute?
        key = gpu_name.replace(" ", "-").lower()
        card = _CARDS.get(key)
        if card is None or _ver(version) < _ver(card[1]):
            logs.append(("WARN", f"Unkown compute for card {key}"))
        else:
            model_flop = _model_flop(view, version)
            if model_flop:
                ratio = card[0] * 10**12 * num_shard // model_flop
                optimal = ratio if ratio > 100 else None
    fallback = 4096
    if view is not None and view.model_type in ("qwen2_vl", "qwen2_5_vl"):
        fallback = 10_000 if _ver(version) >= (3, 1, 1) else 4096
    elif view is not None and view.model_type == "gemma3" and _ver(version) >= (3, 2, 0):
        fallback = 8000
    default = optimal if optimal is not None else fallback
    value = min(default, view.context) if view is not None and view.context else default
    sizes = _vram_bytes(view, version) if view is not None and gpu_name is not None else None
    if sizes is not None:
        model, token = sizes
        # ((total as f32) * memory_fraction * wiggle_room) as usize, every product in f32.
        total = _f32(gpu_mib * 2**20 * num_shard)
        available = int(_f32(_f32(total * _f32(memory_fraction)) * _f32(wiggle_room)))
        if available >= model:
            allowed = (available - model) // token
            if allowed < value:
                logs.append(
                    (
                        "WARN",
                        f"Reducing the max batch prefill from {default} to {allowed} because "
                        "there is not enough VRAM to support it.",
                    )
                )
                value = allowed
        else:
            logs.append(
                (
                    "WARN",
                    f"Not enough VRAM to run the model: Available: {_human(available)} - "
                    f"Model {_human(model)}.",
                )
            )
    return value, logs
