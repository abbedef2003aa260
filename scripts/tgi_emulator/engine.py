"""What TGI decides between "Starting shard" and "Connected": engine path, failures, memory.

Pure functions (no environment, files or clock): the launcher gathers inputs into a
`LaunchRequest` and turns `Failure`s into log lines and exit codes. The rules, per release
(docs/tgi.md sections in brackets), are written down in the package docstring (__init__.py).

Memory model, per shard: the warmup's steps and their sources are in memory.py, with the
rules of every release tag (memory.rules_for); `warmup_memory` below does the arithmetic:
    budget          = min(fraction x total, total - context)        what torch may allocate
    context         = CUDA_CONTEXT_BYTES (+ NCCL_BYTES when sharded)
    weights         = (checkpoint - untied head) / num_shard + the 16-bit head per shard
                      (a tied head is loaded a second time; on-the-fly 8-bit: /2, 4-bit: /4)
    kv_per_token    = 2 x text layers x kv_heads_per_shard x head_dim x (2, or 1 for fp8 KV)
    warmup KV       = per warmup request, ceil((max_total - 1) / BLOCK) blocks
    prefill         = prefill x activation bytes (+ warmup logits before 3.0)
                      + Gemma 3's dense masks (3.2+)
    prefill OOM     if weights + warmup KV + prefill > budget
    cuda_free       = total - context - weights - warmup KV - prefill   (activations stay cached)
    free            = memory.free_for_kv(rules, cuda_free, ...)  (0.95 x / wiggle x / wiggle in)
    capacity        = (free // (kv_per_token x BLOCK) + warmup blocks) x BLOCK
Activation bytes per prefill token = dtype x (4 x hidden + 4 x intermediate x top_k / shards).
All these constants are the emulator's; TGI measures rather than estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import memory, zeroconfig
from .gpus import MIB, EmulatedGpu
from .versions import VersionProfile

GIB = 1024 * MIB
# torch + CUDA 12 context and cuBLAS workspace: measured values are 0.3-0.8 GiB.
CUDA_CONTEXT_BYTES = 600 * MIB
# NCCL's communicator buffers on each GPU of a sharded model (not in TGI's source; NCCL sizes
# them per peer and channel): the emulator's estimate, ~0.5 GiB per GPU.
NCCL_BYTES = 512 * MIB
BLOCK_SIZES = {"flashinfer": 1, "flashdecoding": 256, "paged": 16, "flashdecoding-ipex": 64}
FLASHINFER_HEAD_DIMS = (64, 128, 256)
# Multimodal model types TGI 3.3.7 builds with support_chunking=False (models/__init__.py).
UNCHUNKED_MODEL_TYPES = frozenset({"mllama", "qwen2_vl", "qwen2_5_vl", "gemma3"})

# Model types with a flash implementation (a Flash* model class in server/text_generation_server/
# models/__init__.py@v3.3.7 l.680-1730), and the name TGI's FLASH_ATT_ERROR_MESSAGE uses for
# them ("Sharded {name} requires Flash Attention enabled models."). Releases that predate a
# type refuse it earlier (VersionProfile.unsupported_model_types).
FLASH_MODEL_NAMES = {
    "deepseek_v2": "Sharded Deepseek V2",
    "deepseek_v3": "Sharded Deepseek V3",
    "gpt_bigcode": "Sharded Santacoder",
    "santacoder": "Sharded Santacoder",
    "gpt2": "Sharded GPT-2",
    "gptj": "Sharded GPT-J",
    "gemma": "Sharded Gemma",
    "gemma2": "Sharded Gemma2",
    "gemma3": "Sharded Gemma3",
    "gemma3_text": "Sharded Gemma3",
    "cohere": "Sharded Cohere",
    "dbrx": "Sharded DBRX",
    "falcon": "Sharded Falcon",
    "mistral": "Sharded Mistral",
    "mixtral": "Sharded Mixtral",
    "starcoder2": "Sharded Starcoder2",
    "qwen2": "Sharded Qwen2",
    "qwen2_vl": "Qwen2_VL",
    "qwen2_5_vl": "Qwen2_5_VL",
    "mllama": "Mllama",
    "idefics2": "Idefics",
    "idefics3": "Idefics",
    "paligemma": "PaliGemma",
    "llava_next": "LlavaNext",
    # f"Sharded {model_type}" (v2.4.1, v3.3.7); v2.0.4 names llama "Sharded Llama".
    "llama": "Sharded llama",
    "phi3": "Sharded phi3",
    "granite": "Sharded granite",
    "baichuan": "Sharded baichuan",
    "gpt_neox": "Sharded gpt_neox",
    "phi": "Sharded phi",
    "phimoe": "Sharded phimoe",
}
# The router's `enum Config` variants (router/src/config.rs) for the types tests use.
ROUTER_CONFIG_NAMES = {
    "llama": "Llama",
    "mistral": "Mistral",
    "mixtral": "Mixtral",
    "qwen2": "Qwen2",
    "gemma": "Gemma",
    "gemma2": "Gemma2",
    "gemma3": "Gemma3",
    "phi3": "Phi3",
    "mllama": "Mllama",
}
# Gemma's config classes default tie_word_embeddings to True when config.json omits it.
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "paligemma"})
# Checkpoint quant_method -> the launcher's Quantization (models/__init__.py @737 l.447-462).
CHECKPOINT_QUANT = {
    "gptq": "gptq",
    "awq": "awq",
    "exl2": "exl2",
    "fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "compressed-tensors": "compressed-tensors",
}
INT4_KERNEL_QUANT = ("awq", "gptq", "exl2", "marlin")


@dataclass(frozen=True)
class ModelArch:
    model_type: str
    # text layers; TGI's paged KV cache has one entry per layer, mllama's cross-attention layers
    # included (flash_causal_lm.py self.num_layers = text_config.num_hidden_layers, l.1280 and
    # total_cache_size l.1521 @v3.3.7; the same from v2.3.1, where mllama arrived)
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    launcher_head_dim: int | None  # the launcher's Config, top level only (None for VLMs)
    text_config_head_dim: int | None  # text_config.head_dim, read by the launcher from v3.2.1
    vocab_size: int
    max_position_embeddings: int | None
    rope_scaling: dict | None
    quant_method: str | None
    quant_group_size: int | None
    experts_per_token: int
    is_vlm: bool
    weight_bytes: int
    tied_embeddings: bool = False  # the LM head is loaded again from the embedding weights
    # config.json as the launcher's Config reads it (None: it cannot parse it)
    launcher_view: zeroconfig.LauncherView | None = None

    @property
    def pretty_name(self) -> str:
        """The router's `Config` variant, as its "Using config Some(...)" line prints it."""
        return ROUTER_CONFIG_NAMES.get(self.model_type, self.model_type)

    def flash_error_name(self, version: str) -> str:
        """What FLASH_ATT_ERROR_MESSAGE.format() gets for this model type (models/__init__.py)."""
        if version == "2.0.4" and self.model_type == "llama":
            return "Sharded Llama"
        return FLASH_MODEL_NAMES.get(self.model_type, f"Sharded {self.model_type}")

    @property
    def rope_type(self) -> str | None:
        if not self.rope_scaling:
            return None
        return self.rope_scaling.get("rope_type") or self.rope_scaling.get("type")


def arch_from_config(config: dict, weight_bytes: int) -> ModelArch:
    """Read the fields TGI uses from a Hugging Face config.json."""
    text = config.get("text_config") or config
    hidden = int(text.get("hidden_size", 0))
    heads = int(text.get("num_attention_heads", 1))
    kv_heads = int(text.get("num_key_value_heads", heads))
    head_dim = int(text.get("head_dim") or (hidden // heads if heads else 0))
    layers = int(text.get("num_hidden_layers", 0))
    # Launcher Config: explicit head_dim, else hidden/heads from the top-level fields only.
    top_hidden = config.get("hidden_size") or config.get("n_embd")
    top_heads = config.get("num_attention_heads")
    launcher_head_dim = config.get("head_dim")
    if launcher_head_dim is None and top_hidden and top_heads and top_hidden % top_heads == 0:
        launcher_head_dim = top_hidden // top_heads
    quant = config.get("quantization_config") or {}
    mpe = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    return ModelArch(
        model_type=str(config.get("model_type", "unknown")),
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=int(text.get("intermediate_size", 4 * hidden)),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        launcher_head_dim=launcher_head_dim,
        text_config_head_dim=(config.get("text_config") or {}).get("head_dim"),
        vocab_size=int(text.get("vocab_size", config.get("vocab_size", 32000))),
        max_position_embeddings=int(mpe) if mpe else None,
        rope_scaling=text.get("rope_scaling"),
        quant_method=quant.get("quant_method"),
        quant_group_size=quant.get("group_size"),
        experts_per_token=int(text.get("num_experts_per_tok", 1)),
        is_vlm="vision_config" in config,
        weight_bytes=weight_bytes,
        tied_embeddings=bool(
            text.get(
                "tie_word_embeddings",
                config.get(
                    "tie_word_embeddings", str(config.get("model_type")) in _TIED_BY_DEFAULT
                ),
            )
        ),
        launcher_view=zeroconfig.launcher_view(config),
    )


@dataclass(frozen=True)
class LaunchRequest:
    profile: VersionProfile
    gpus: tuple[EmulatedGpu, ...]  # visible GPUs
    num_shard: int
    arch: ModelArch  # what the shards load
    launcher_arch: ModelArch | None  # what the launcher could read (None: fetch failed)
    quantize_arg: str | None = None
    dtype_arg: str | None = None
    kv_cache_dtype: str | None = None
    cuda_memory_fraction: float = 1.0
    use_flash_attention_env: str | None = None
    attention_env: str | None = None
    prefix_caching_env: str | None = None
    wiggle_room_env: float | None = None
    lora_adapters: bool = False
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_batch_total_tokens: int | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Failure:
    """A TGI failure. `stage`: launcher | shard | warmup | router."""

    stage: str
    exception: str  # Python exception line(s), e.g. "ValueError: ..."; "" for Rust-only errors
    router_error: str = ""  # Rust Debug text after "Error: " (router / launcher)
    rank: int = 0
    where: str = "text_generation_server/models/__init__.py"
    logs: tuple[tuple[str, str], ...] = ()  # (level, message) logged before failing


@dataclass(frozen=True)
class ShardPlan:
    flash: bool
    attention: str | None
    prefix_caching: bool
    block_size: int
    chunking: bool
    dtype: str
    quantize: str | None
    weights_per_shard: int
    logs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TokenDefaults:
    max_input_tokens: int | None
    max_total_tokens: int | None
    max_batch_prefill_tokens: int
    logs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WarmupResult:
    max_batch_total_tokens: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    supports_auto_total: bool
    logs: tuple[tuple[str, str], ...] = field(default=())


def format_torch_size(num_bytes: float) -> str:
    """torch's CUDA allocator size format (B, KiB, MiB, GiB with two decimals)."""
    if num_bytes < 1024:
        return f"{int(num_bytes)} bytes"
    if num_bytes < MIB:
        return f"{num_bytes / 1024:.2f} KiB"
    if num_bytes < GIB:
        return f"{num_bytes / MIB:.2f} MiB"
    return f"{num_bytes / GIB:.2f} GiB"


def min_capability(gpus: tuple[EmulatedGpu, ...] | list[EmulatedGpu]) -> tuple[int, int]:
    return min(g.compute_capability for g in gpus)


def _launcher_head_dim(version: str, arch: ModelArch) -> int | None:
    """`Config::get_head_dim` (launcher/src/main.rs): the top level's head_dim or hidden/heads;
    from v3.2.1 also text_config.head_dim (PR #3116, 095775e0); from v3.3.0 Gemma 3 without
    one gets 256 (PR #3167, 84ab88d8)."""
    v = memory.version_tuple(version)
    found = arch.launcher_head_dim
    if found is None and v >= (3, 2, 1):
        found = arch.text_config_head_dim
    if found is None and v >= (3, 3, 0) and arch.model_type == "gemma3":
        found = 256
    return found


def resolve_attention(
    profile: VersionProfile,
    launcher_arch: ModelArch | None,
    capability: tuple[int, int] | None,
    attention_env: str | None,
    prefix_caching_env: str | None,
    lora_adapters: bool,
) -> tuple[str, bool, list[tuple[str, str]]]:
    """launcher/src/main.rs resolve_attention (v2.4.0+); 2.0.x always uses paged attention."""
    logs: list[tuple[str, str]] = []
    if not profile.resolves_attention:
        return attention_env or "paged", False, logs
    prefix = prefix_caching_env
    attention = attention_env
    if launcher_arch is not None:
        if prefix is None and launcher_arch.is_vlm:
            logs.append(("INFO", "Disabling prefix caching because of VLM model"))
            prefix = "0"
        fallback = "paged" if capability is not None and capability[0] < 8 else "flashdecoding"
        if _launcher_head_dim(profile.version, launcher_arch) in FLASHINFER_HEAD_DIMS:
            if lora_adapters and prefix is None:
                logs.append(("INFO", "Disabling prefix caching because of lora adapters"))
                prefix = "0"
        else:
            if attention is None:
                logs.append(
                    (
                        "INFO",
                        f"Forcing attention to '{fallback}' because head dim is not supported by "
                        "flashinfer, also disabling prefix caching",
                    )
                )
                attention = fallback
            if prefix is None:
                prefix = "0"
    if attention == "paged" and prefix is None:
        logs.append(("INFO", "Disabling prefix caching on paged attention"))
        prefix = "0"
    attention = attention or "flashinfer"
    prefix = prefix or "true"
    return attention, prefix.lower() in ("1", "true"), logs


def effective_quantize(
    profile: VersionProfile, arch: ModelArch, quantize_arg: str | None
) -> str | None:
    if quantize_arg is not None:
        return quantize_arg
    if arch.quant_method is None:
        return None
    method = CHECKPOINT_QUANT.get(arch.quant_method)
    if method is None or method not in profile.quantize_values:
        return None
    return method


def _checkpoint_quant(arch: ModelArch) -> str | None:
    return CHECKPOINT_QUANT.get(arch.quant_method) if arch.quant_method else None


def _weights_bytes(arch: ModelArch, quantize: str | None, num_bytes: int | None = None) -> int:
    """`num_bytes` of 16-bit checkpoint (default: all of it) after on-the-fly quantization."""
    size = arch.weight_bytes if num_bytes is None else num_bytes
    if _checkpoint_quant(arch) is not None or quantize is None:
        return size
    if quantize in ("bitsandbytes-nf4", "bitsandbytes-fp4"):
        return size // 4
    return size // 2  # fp8 / eetq / bitsandbytes quantize 16-bit linears to 8 bits


def weights_per_shard(arch: ModelArch, quantize: str | None, num_shard: int) -> int:
    """The checkpoint over the shards, with the 16-bit LM head placed as TGI loads it
    (memory.lm_head_bytes): an untied head's file bytes replaced by its per-shard copy, a tied
    head added (loaded a second time from the embedding weights)."""
    head_in_file = 0 if arch.tied_embeddings else arch.vocab_size * arch.hidden_size * 2
    body = _weights_bytes(arch, quantize, max(0, arch.weight_bytes - head_in_file))
    return body // num_shard + memory.lm_head_bytes(arch.vocab_size, arch.hidden_size, num_shard)


def kv_bytes_per_token(arch: ModelArch, num_shard: int, kv_cache_dtype: str | None) -> int:
    """2 x layers x kv_heads/shard x head_dim x bytes (docs/tgi.md §3: KVH/world if KVH > 1)."""
    per_shard = arch.num_kv_heads // num_shard if arch.num_kv_heads > 1 else 1
    element = 1 if kv_cache_dtype else 2
    return 2 * arch.num_layers * max(1, per_shard) * arch.head_dim * element


def activation_bytes_per_token(
    rules: memory.ReleaseMemoryRules,
    arch: ModelArch,
    num_shard: int,
    quantize: str | None = None,
) -> int:
    # The MLP at its peak holds gate_up (2 x I), act(gate) (I) and their product (I) per token:
    # `down_proj(act(gate_up[:, 0]) * gate_up[:, 1])` (flash_llama_modeling.py LlamaMLP).
    mlp = 4 * arch.intermediate_size * arch.experts_per_token // num_shard
    if rules.vllm_fused_moe and arch.model_type == "mixtral" and quantize is None:
        # BlockSparseMoE (chosen when quantize is None, flash_mixtral_modeling.py@v2.2.0
        # l.484) calls vLLM's fused_moe, which allocates (M, top_k, 2I/world),
        # (M * top_k, I/world) and (M, top_k, hidden) at once (Narsil/vllm@b5dfc61d
        # vllm/model_executor/layers/fused_moe/fused_moe.py l.424-432).
        ffn = arch.intermediate_size // num_shard
        mlp = arch.experts_per_token * (3 * ffn + arch.hidden_size)
    hidden = 2 * (4 * arch.hidden_size + mlp)
    # Warmup logits (memory.ReleaseMemoryRules.warmup_logits_copies) in the model's 16-bit
    # dtype. With tensor parallelism TensorParallelHead.forward (layers/tensor_parallel.py
    # @v2.4.1 l.34-59) writes this shard's vocab/world slice, then all-gathers the whole
    # vocabulary on every shard; when the vocabulary does not divide, load() keeps the whole
    # head on each shard and does not gather (l.56-64).
    return hidden + memory.logits_bytes_per_token(rules, arch.vocab_size, num_shard)


def compute_token_defaults(req: LaunchRequest) -> TokenDefaults | Failure:
    """Launcher-side defaults for max_input / max_total / prefill (docs/tgi.md §1b)."""
    profile = req.profile
    logs: list[tuple[str, str]] = []
    mpe = req.launcher_arch.max_position_embeddings if req.launcher_arch else None
    max_input, max_total, prefill = (
        req.max_input_tokens,
        req.max_total_tokens,
        req.max_batch_prefill_tokens,
    )
    if profile.defaults_mode == "launcher":
        max_default = 4096
        effective = max_default
        if mpe is not None:
            if mpe > max_default:
                if max_input is None and max_total is None and prefill is None:
                    logs.append(
                        (
                            "INFO",
                            f"Model supports up to {mpe} but tgi will now set its default to "
                            f"{max_default} instead. This is to save VRAM by refusing large "
                            "prompts in order to allow more users on the same hardware. You can "
                            "increase that size using "
                            f"`--max-batch-prefill-tokens={mpe + 50} --max-total-tokens={mpe} "
                            f"--max-input-tokens={mpe - 1}`.",
                        )
                    )
            else:
                effective = mpe
        if max_input is None:
            max_input = effective - 1
            logs.append(("INFO", f"Default `max_input_length` to {max_input}"))
        if max_total is None:
            max_total = effective
            logs.append(("INFO", f"Default `max_total_tokens` to {max_total}"))
        if prefill is None:
            prefill = req.max_batch_size * max_input if req.max_batch_size else max_input + 50
            logs.append(("INFO", f"Default `max_batch_prefill_tokens` to {prefill}"))
    elif prefill is None:
        # The launcher's own choice (zeroconfig.py): FLOPs, context and VRAM from 3.0, 4096
        # capped at the context in 2.4.1. Its VRAM step reads TGI_WIGGLE_ROOM, default 0.95.
        first = req.gpus[0] if req.gpus else None
        prefill, warnings = zeroconfig.default_prefill(
            profile.version,
            req.launcher_arch.launcher_view if req.launcher_arch else None,
            first.name if first else None,
            first.memory_mib if first else 0,
            req.num_shard,
            req.cuda_memory_fraction,
            req.wiggle_room_env if req.wiggle_room_env is not None else 0.95,
        )
        logs.extend(warnings)
        logs.append(("INFO", f"Default `max_batch_prefill_tokens` to {prefill}"))
    if max_input is not None and max_total is not None and max_input >= max_total:
        # The launcher's text: launcher/src/main.rs@v2.0.4 l.1419 (quote misplaced), reworded
        # with the values from v2.4.1 (l.1748; @v3.3.7 l.2160).
        text = (
            f"`max_input_tokens`({max_input}) must be < `max_total_tokens`({max_total})"
            if profile.defaults_mode != "launcher"
            else "`max_input_tokens must be < `max_total_tokens`"
        )
        return Failure(stage="launcher", exception="", router_error=f'ArgumentValidation("{text}")')
    return TokenDefaults(max_input, max_total, int(prefill), tuple(logs))


def _shard_failure(exception: str, where: str, rank: int = 0, logs=()) -> Failure:
    return Failure(stage="shard", exception=exception, where=where, rank=rank, logs=tuple(logs))


def load_shards(req: LaunchRequest) -> ShardPlan | Failure:
    """Everything that happens while the shards import TGI and load weights."""
    profile, arch = req.profile, req.arch
    logs: list[tuple[str, str]] = []
    if not req.gpus:
        return _shard_failure(
            "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an "
            "NVIDIA GPU and installed a driver from http://www.nvidia.com/Download/index.aspx",
            "torch/cuda/__init__.py",
        )
    if req.num_shard > len(req.gpus):
        return _shard_failure(
            "RuntimeError: CUDA error: invalid device ordinal\n"
            "CUDA kernel errors might be asynchronously reported at some other API call, so the "
            "stacktrace below might be incorrect.\n"
            "For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            "text_generation_server/utils/dist.py",
            rank=len(req.gpus),
        )
    used = req.gpus[: req.num_shard]
    cc = min_capability(used)
    cc_text = f"{cc[0]} {cc[1]}"

    if arch.model_type in profile.unsupported_model_types:
        return _shard_failure(
            f"ValueError: The checkpoint you are trying to load has model type `{arch.model_type}` "
            "but Transformers does not recognize this architecture. This could be because of an "
            "issue with the checkpoint, or because your version of Transformers is out of date.",
            "transformers/models/auto/configuration_auto.py",
        )
    if arch.rope_type in profile.unsupported_rope_types:
        return _shard_failure(
            "ValueError: `rope_scaling` must be a dictionary with two fields, `type` and "
            f"`factor`, got {arch.rope_scaling!r}",
            "transformers/models/llama/configuration_llama.py",
        )

    quantize = effective_quantize(profile, arch, req.quantize_arg)
    ckpt = _checkpoint_quant(arch)
    flash_known = arch.model_type in FLASH_MODEL_NAMES

    # --- Flash attention availability (docs/tgi.md §2; package docstring "Engine path").
    # The launcher already logged the decision; the shards inherit ATTENTION / PREFIX_CACHING.
    attention: str | None
    attention, prefix, _ = resolve_attention(
        profile, req.launcher_arch, cc, req.attention_env, req.prefix_caching_env, req.lora_adapters
    )
    flash = False
    if (req.use_flash_attention_env or "").lower() == "false":
        logs.append(
            (
                "WARN",
                "Could not import Flash Attention enabled models: `USE_FLASH_ATTENTION` is false.",
            )
        )
    elif cc >= (8, 0):
        flash = True
    elif cc == (7, 5):
        if profile.sm75_flash_v1:
            flash = True
            logs.append(
                (
                    "WARN",
                    "Unable to use Flash Attention V2: GPU with CUDA capability 7 5 is not "
                    "supported for Flash Attention V2",
                )
            )
        elif attention == "flashinfer":
            flash = True  # flashinfer is built for 7.5 (Makefile-flashinfer @737)
        else:
            return _shard_failure(
                "ImportError: FlashAttention only supports Ampere GPUs or newer.",
                "text_generation_server/layers/attention/cuda.py",
            )
    else:
        if profile.resolves_attention:
            text = (
                "ImportError: FlashAttention only supports Ampere GPUs or newer.\n\n"
                "The above exception was the direct cause of the following exception:\n\n"
                f"ImportError: GPU with CUDA capability {cc_text} is not supported"
            )
        else:
            text = f"ImportError: GPU with CUDA capability {cc_text} is not supported"
        return _shard_failure(text, "text_generation_server/layers/attention/cuda.py")
    if not flash_known:
        flash = False

    if not flash and req.num_shard > 1:
        if flash_known:
            text = (
                f"NotImplementedError: {arch.flash_error_name(profile.version)} requires Flash "
                "Attention enabled models."
            )
        else:
            text = "NotImplementedError: sharded is not supported for AutoModel"
        return _shard_failure(text, "text_generation_server/models/__init__.py", logs=logs)

    # --- Quantization vs checkpoint and hardware (§2 "Quantization vs hardware").
    if quantize == "marlin":
        if cc < (8, 0):
            return _shard_failure(
                "NotImplementedError: Using quantized Marlin models requires a GPU with CUDA "
                "capability 8.0 or later.",
                "text_generation_server/layers/marlin/util.py",
                logs=logs,
            )
        if ckpt != "marlin":
            return _shard_failure(
                "RuntimeError: Cannot load `marlin` weight, make sure the model is already "
                "quantized.",
                "text_generation_server/layers/marlin/marlin.py",
                logs=logs,
            )
    is_fp8 = quantize == "fp8" or (
        quantize == "compressed-tensors" and ckpt == "compressed-tensors"
    )
    if is_fp8 and cc < profile.fp8_min_capability:
        return _shard_failure(
            "RuntimeError: torch._scaled_mm is only supported on CUDA devices with compute "
            "capability >= 9.0 or 8.9, or ROCm MI300+",
            "text_generation_server/layers/fp8.py",
            logs=logs,
        )
    if req.quantize_arg is not None and ckpt is not None:
        same = req.quantize_arg == ckpt or (
            req.quantize_arg == "fp8" and ckpt in ("fp8", "compressed-tensors")
        )
        if not same:
            return _shard_failure(
                "RuntimeError: weight model.layers.0.self_attn.q_proj.weight does not exist",
                "text_generation_server/utils/weights.py",
                logs=logs,
            )
    if req.quantize_arg in ("awq", "gptq", "exl2") and ckpt is None:
        return _shard_failure(
            "RuntimeError: weight model.layers.0.self_attn.q_proj.qweight does not exist",
            "text_generation_server/utils/weights.py",
            logs=logs,
        )

    # --- Tensor-parallel divisibility (§3).
    n = req.num_shard
    if n > 1:
        if arch.num_heads % n:
            return _shard_failure(
                f"ValueError: `num_heads` must be divisible by `num_shards` (got `num_heads`: "
                f"{arch.num_heads} and `num_shards`: {n}",
                "text_generation_server/models/custom_modeling/flash_llama_modeling.py",
                logs=logs,
            )
        if arch.num_kv_heads > 1 and arch.num_kv_heads % n:
            return _shard_failure(
                f"ValueError: `num_key_value_heads` must be divisible by `num_shards` (got "
                f"`num_key_value_heads`: {arch.num_kv_heads} and `num_shards`: {n}",
                "text_generation_server/models/custom_modeling/flash_llama_modeling.py",
                logs=logs,
            )
        inter = arch.intermediate_size
        group = arch.quant_group_size if quantize in ("awq", "gptq") else None
        if inter % n or (group and group > 0 and (inter // n) % group):
            return _shard_failure(
                f"AssertionError: The choosen size {inter} is not compatible with sharding on "
                f"{n} shards",
                "text_generation_server/utils/weights.py",
                logs=logs,
            )

    dtype = req.dtype_arg or "float16"
    if quantize in INT4_KERNEL_QUANT:
        dtype = "float16"  # these kernels only take fp16 activations

    # --- Weights must fit (torch allocator limit: fraction x total, and the physical rest).
    weights = weights_per_shard(arch, quantize, n)
    gpu = used[0]
    budget = min(req.cuda_memory_fraction * gpu.memory_bytes, gpu.memory_bytes - CUDA_CONTEXT_BYTES)
    if weights > budget:
        chunk = arch.intermediate_size * arch.hidden_size * 2 // n
        if ckpt in INT4_KERNEL_QUANT or quantize in ("bitsandbytes-nf4", "bitsandbytes-fp4"):
            chunk //= 4
        loaded = max(0.0, budget - chunk / 2)
        free = max(0, gpu.memory_bytes - CUDA_CONTEXT_BYTES - loaded)
        return _shard_failure(
            f"{profile.torch_oom_name}: CUDA out of memory. Tried to allocate "
            f"{format_torch_size(chunk)}. GPU 0 has a total capacity of "
            f"{format_torch_size(gpu.memory_bytes)} of which {format_torch_size(free)} is free. "
            f"Including non-PyTorch memory, this process has "
            f"{format_torch_size(loaded + CUDA_CONTEXT_BYTES)} memory in use. Of the allocated "
            f"memory {format_torch_size(loaded)} is allocated by PyTorch, and 0 bytes is reserved "
            "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
            "documentation for Memory Management  "
            "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
            "text_generation_server/utils/weights.py",
            logs=logs,
        )

    if flash:
        block = BLOCK_SIZES.get(attention, 16)
    else:
        attention, prefix, block = None, False, 1
    # Model.__init__ turns chunking off for other attentions (models/model.py@v3.3.7 l.82-90);
    # these model classes are built with support_chunking=False (models/__init__.py@v3.3.7).
    chunking = (
        flash
        and profile.chunking
        and attention in ("flashinfer", "flashdecoding")
        and arch.model_type not in UNCHUNKED_MODEL_TYPES
    )
    return ShardPlan(
        flash=flash,
        attention=attention,
        prefix_caching=prefix,
        block_size=block,
        chunking=chunking,
        dtype=dtype,
        quantize=quantize,
        weights_per_shard=weights,
        logs=tuple(logs),
    )


def _warmup_failure(profile: VersionProfile, exception: str, where: str) -> Failure:
    message = exception.split(": ", 1)[1] if ": " in exception else exception
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    inner = f'Warmup(Generation("{escaped}"))'
    router_error = (
        inner if profile.max_total_error == "argument_validation" else f"Backend({inner})"
    )
    return Failure(stage="warmup", exception=exception, router_error=router_error, where=where)


def _argument_error(text: str) -> Failure:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return Failure(stage="router", exception="", router_error=f'ArgumentValidation("{escaped}")')


def warmup(req: LaunchRequest, plan: ShardPlan, defaults: TokenDefaults) -> WarmupResult | Failure:
    """The router's warmup call and the checks around it (backends/v3/src/lib.rs, main.rs)."""
    profile, arch = req.profile, req.arch
    used = req.gpus[: req.num_shard]
    cc = min_capability(used)
    gpu = used[0]
    prefill = defaults.max_batch_prefill_tokens
    # Every release names `max_input_tokens` in these texts, 2.0.x too although its flag is
    # --max-input-length (router/src/main.rs@v2.0.4 l.126-130, launcher l.1419-1424).
    input_name = "max_input_tokens"
    logs: list[tuple[str, str]] = []

    # 2.0.x routers check this before connecting to the shards.
    if (
        not profile.resolves_attention
        and defaults.max_input_tokens is not None
        and defaults.max_input_tokens > prefill
    ):
        return _argument_error(
            f"`max_batch_prefill_tokens` must be >= `{input_name}`. Given: {prefill} and "
            f"{defaults.max_input_tokens}"
        )
    if plan.quantize in ("awq", "exl2") and cc < (8, 0):
        # The llm-awq / exllamav2 kernels are built for 8.0;8.6;9.0+PTX only (Dockerfile l.76).
        return _warmup_failure(
            profile,
            "RuntimeError: CUDA error: no kernel image is available for execution on the device",
            "text_generation_server/layers/awq/quantize/qmodule.py",
        )
    if plan.dtype == "bfloat16" and cc < (8, 0):
        return _warmup_failure(
            profile,
            "RuntimeError: Bfloat16 is only supported on GPUs with compute capability of at "
            f"least 8.0. Your {gpu.name} GPU has compute capability {cc[0]}.{cc[1]}.",
            "text_generation_server/models/flash_causal_lm.py",
        )

    mpe = arch.max_position_embeddings
    if not plan.flash:
        max_total = defaults.max_total_tokens
        if max_total is None:
            max_total = min(mpe, 4096) if mpe else 4096
        max_input = (
            defaults.max_input_tokens if defaults.max_input_tokens is not None else max_total - 1
        )
        total_tokens = req.max_batch_total_tokens or max(16000, max_total, prefill)
        logs.append(("WARN", "Model does not support automatic max batch total tokens"))
        result = WarmupResult(total_tokens, max_input, max_total, prefill, False, tuple(logs))
        return _router_checks(req, plan, result)

    rules = memory.rules_for(profile.version)
    found = warmup_memory(
        rules,
        arch,
        gpu_bytes=gpu.memory_bytes,
        num_shard=req.num_shard,
        weights_per_shard=plan.weights_per_shard,
        kv_cache_dtype=req.kv_cache_dtype,
        attention=plan.attention,
        block=plan.block_size,
        prefill=prefill,
        max_input=defaults.max_input_tokens,
        max_total=defaults.max_total_tokens,
        fraction=req.cuda_memory_fraction,
        quantize=plan.quantize,
        wiggle_env=req.wiggle_room_env,
    )
    if found is None:
        return _warmup_failure(
            profile,
            f"RuntimeError: Not enough memory to handle {prefill} prefill tokens. You need to "
            "decrease `--max-batch-prefill-tokens`",
            "text_generation_server/models/flash_causal_lm.py",
        )
    capacity = found

    max_total = defaults.max_total_tokens
    if max_total is None and plan.chunking:
        max_total = min(capacity, mpe) if mpe else capacity
    elif max_total is None:
        max_total = prefill  # without chunking: the size of the warmup batch (§1b)
    max_input = (
        defaults.max_input_tokens if defaults.max_input_tokens is not None else max_total - 1
    )
    if req.max_batch_total_tokens is not None:
        logs.append(
            ("WARN", "`--max-batch-total-tokens` is deprecated for Flash Attention models.")
        )
        logs.append(("WARN", f"Inferred max batch total tokens: {capacity}"))
    result = WarmupResult(capacity, max_input, max_total, prefill, True, tuple(logs))
    return _router_checks(req, plan, result)


def warmup_memory(
    rules: memory.ReleaseMemoryRules,
    arch: ModelArch,
    *,
    gpu_bytes: int,
    num_shard: int,
    weights_per_shard: int,
    kv_cache_dtype: str | None,
    attention: str | None,
    block: int,
    prefill: int,
    max_input: int | None,
    max_total: int | None,
    fraction: float,
    wiggle_env: float | None = None,
    quantize: str | None = None,
) -> int | None:
    """The KV-cache tokens one shard's warmup finds, or None when its prefill fails
    (memory.py, steps 1-4; the module docstring of this file for the constants)."""
    kv_tok = kv_bytes_per_token(arch, num_shard, kv_cache_dtype)
    lengths = memory.warmup_batch(prefill, max_input)
    warm_blocks = memory.reserved_blocks(lengths, max_total, block)
    warm_kv = warm_blocks * block * kv_tok
    act = prefill * activation_bytes_per_token(rules, arch, num_shard, quantize)
    act += memory.gemma3_mask_bytes(
        rules, arch.model_type, lengths, arch.num_heads // num_shard, attention
    )
    context = CUDA_CONTEXT_BYTES + (NCCL_BYTES if num_shard > 1 else 0)
    budget = min(fraction * gpu_bytes, gpu_bytes - context)
    if weights_per_shard + warm_kv + act > budget:
        return None
    cuda_free = gpu_bytes - context - weights_per_shard - warm_kv - act
    free = memory.free_for_kv(rules, cuda_free, gpu_bytes, fraction, wiggle_env)
    return (int(free // (kv_tok * block)) + warm_blocks) * block


def _router_checks(
    req: LaunchRequest, plan: ShardPlan, result: WarmupResult
) -> WarmupResult | Failure:
    profile = req.profile
    capacity = result.max_batch_total_tokens
    input_name = "max_input_tokens"  # in every release, see warmup()
    if result.max_input_tokens >= result.max_total_tokens:
        return _argument_error(f"`{input_name}` must be < `max_total_tokens`")
    if result.supports_auto_total and result.max_total_tokens > capacity:
        if profile.max_total_error == "not_enough_memory":
            return Failure(
                stage="router",
                exception="",
                router_error=f"Backend(NotEnoughMemory({result.max_total_tokens}))",
            )
        return _argument_error(
            f"`max_total_tokens` must be <= `max_batch_total_tokens`. Given: "
            f"{result.max_total_tokens} and {capacity}"
        )
    if (
        profile.resolves_attention
        and not plan.chunking
        and result.max_input_tokens > result.max_batch_prefill_tokens
    ):
        return _argument_error(
            f"`max_batch_prefill_tokens` must be >= `{input_name}`. Given: "
            f"{result.max_batch_prefill_tokens} and {result.max_input_tokens}"
        )
    if result.max_batch_prefill_tokens > capacity:
        return _argument_error(
            f"`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`. Given: "
            f"{result.max_batch_prefill_tokens} and {capacity}"
        )
    return result
