"""The model catalog: aliases -> checkpoint + architecture facts (pure: text in, facts out).

``models.yaml`` (shipped) and user catalogs (``--catalog FILE`` / ``TGIOPS_MODELS``) share one
format, read by ``parse_catalog``; the caller reads the file and passes its text and a name
for messages. ``model_from_hf_config`` turns a Hugging Face ``config.json`` (already parsed
into a dict) into the same ``ModelSpec`` for models that are not in any catalog.

Every error is a ``CatalogError`` (exit 2) that names where the text came from, the model alias,
the field and, where known, the line.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tgiops.core.errors import PlanInputError, UnknownModelError

logger = logging.getLogger(__name__)


# TGI's --quantize values in its newest release (the engine module keeps them per version).
# The quantization names a catalog entry may give: the checkpoint formats tgiops plans for, in
# TGI's spelling (its --quantize values at 3.3.7, plus NON_TGI_QUANTIZE_VALUES; every engine maps
# them to its own flags, and tests/unit/test_catalog.py checks this list against
# TgiEngine.accepted_quantize).
QUANTIZE_VALUES: tuple[str, ...] = (
    "awq",
    "eetq",
    "gptq",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
    "exl2",
    "marlin",
    "compressed-tensors",
    # Not TGI's: MXFP4 (gpt-oss' experts), which no TGI release runs; vLLM does (from 0.10.1,
    # tgiops.core.engines.vllm). The catalog names what a checkpoint IS; each engine says what
    # it can serve (TGI refuses these entries with unsupported_by_tgi).
    "mxfp4",
)
# The names above that are no TGI --quantize value (tests/unit/test_catalog.py).
NON_TGI_QUANTIZE_VALUES: tuple[str, ...] = ("mxfp4",)
# config.json quantization_config.quant_method -> TGI --quantize name. TGI auto-detects exactly
# these (server/text_generation_server/models/__init__.py@737 l.447-462, docs/tgi.md §1).
QUANT_METHOD_TO_TGI: Mapping[str, str] = MappingProxyType(
    {
        "awq": "awq",
        "gptq": "gptq",
        "exl2": "exl2",
        "fp8": "fp8",
        "fbgemm_fp8": "fp8",
        "compressed-tensors": "compressed-tensors",
        "compressed_tensors": "compressed-tensors",
    }
)
TORCH_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class ModelSpec:
    """One servable checkpoint and the architecture facts the planner needs."""

    alias: str  # what users type, e.g. "llama-3.1-70b-awq"
    repo_id: str  # Hugging Face repository
    revision: str | None  # pinned commit/branch where it matters, else None
    gated: bool | None  # None = not verified
    model_type: str  # config.json model_type
    num_layers: int  # num_hidden_layers (mllama: text layers incl. cross-attention)
    hidden_size: int
    intermediate_size: int | None
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int  # explicit when config.json has it (gemma-2: 256), else hidden/heads
    vocab_size: int
    max_position_embeddings: int
    num_experts: int | None  # MoE: num_local_experts
    experts_per_token: int | None  # MoE: num_experts_per_tok
    tie_word_embeddings: bool | None
    torch_dtype: str | None  # "bfloat16" | "float16" | "float32" | None (unknown)
    parameters_b: float  # parameters in billions
    quantization: str | None  # TGI --quantize name of the checkpoint's quantization; None=16-bit
    quantization_bits: int | None
    weight_bytes: int | None  # safetensors bytes where verified, else None
    kv_layers: int | None  # layers with a per-token KV cache when != num_layers (mllama: 80)
    vision: bool  # multimodal
    sources: Mapping[str, str] = field(hash=False)  # fact name -> source
    origin: str  # where it was loaded from
    notes: tuple[str, ...] = ()  # caveats worth showing to a user (e.g. revision advice)
    # Why no TGI release serves this checkpoint, naming the engine that does (gpt-oss: MXFP4);
    # None when TGI serves it. find_model refuses such an alias (exit 2).
    unsupported_by_tgi: str | None = None

    def __post_init__(self) -> None:
        # Freeze the mutable inputs so a spec can be shared safely.
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def kv_cache_layers(self) -> int:
        """Layers that keep a per-token KV cache (mllama: only the self-attention layers)."""
        return self.kv_layers if self.kv_layers is not None else self.num_layers

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V for one token over all KV layers and heads (docs/models.md note 1)."""
        return 2 * self.kv_cache_layers * self.num_key_value_heads * self.head_dim * dtype_bytes

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None and self.num_experts > 1

    def describe(self) -> str:
        """``llama-3.1-70b-awq (hugging-quants/...-AWQ-INT4, 70.55B params, awq 4-bit)``."""
        quant = (
            f"{self.quantization} {self.quantization_bits}-bit"
            if self.quantization and self.quantization_bits
            else (self.quantization or self.torch_dtype or "16-bit")
        )
        return f"{self.alias} ({self.repo_id}, {self.parameters_b:g}B params, {quant})"


# --------------------------------------------------------------------------------------------
# Merging and lookup
# --------------------------------------------------------------------------------------------


def merge_catalogs(
    base: Mapping[str, ModelSpec], overlay: Mapping[str, ModelSpec]
) -> dict[str, ModelSpec]:
    """Base entries plus the overlay's; an overlay alias replaces the base entry of that alias."""
    merged = dict(base)
    for alias, spec in overlay.items():
        if alias in merged:
            logger.info(
                "model %s from %s overrides the one from %s",
                alias,
                spec.origin,
                merged[alias].origin,
            )
        merged[alias] = spec
    return merged


def find_model(catalog: Mapping[str, ModelSpec], alias: str, engine: str = "tgi") -> ModelSpec:
    """A model by alias (exact, then case-insensitive) or by Hugging Face repo id, that
    ``engine`` can serve (TGI: not ``unsupported_by_tgi``; other engines check in their planner).

    Raises UnknownModelError carrying the closest aliases.
    """
    spec = _find_model(catalog, alias)
    return require_tgi_servable(spec) if engine == "tgi" else spec


def _find_model(catalog: Mapping[str, ModelSpec], alias: str) -> ModelSpec:
    if alias in catalog:
        return catalog[alias]
    wanted = alias.strip().casefold()
    for name in sorted(catalog):
        if name.casefold() == wanted:
            return catalog[name]
    by_repo = [name for name in sorted(catalog) if catalog[name].repo_id.casefold() == wanted]
    if by_repo:
        if len(by_repo) > 1:
            logger.info(
                "repo %s is in the catalog as %s; using %s", alias, ", ".join(by_repo), by_repo[0]
            )
        return catalog[by_repo[0]]
    raise UnknownModelError(alias, closest_models(catalog, alias))


def require_tgi_servable(spec: ModelSpec) -> ModelSpec:
    """The spec, or PlanInputError (exit 2) when no TGI release serves it: plan and deploy refuse
    it by name before touching anything, and the message names the engine that can."""
    if spec.unsupported_by_tgi:
        raise PlanInputError(
            f"{spec.alias} ({spec.repo_id}, {spec.origin}): TGI cannot serve it. "
            f"{spec.unsupported_by_tgi}"
        )
    return spec


def quantized_siblings(catalog: Mapping[str, ModelSpec], model: ModelSpec) -> list[ModelSpec]:
    """Pre-quantized checkpoints of ``model``'s architecture in ``catalog`` (70b -> 70b-awq).

    Same model type, layers, widths, heads and vocabulary, and an alias that extends the
    model's (``llama-3.1-70b`` -> ``llama-3.1-70b-awq``): the same network with its weights
    quantized. The shape alone is not enough: Llama 3.3 70B has Llama 3.1 70B's shapes but
    other weights. Empty for a model that is itself quantized.
    """
    if model.quantization is not None:
        return []

    def shape(spec: ModelSpec) -> tuple[Any, ...]:
        return (
            spec.model_type,
            spec.num_layers,
            spec.hidden_size,
            spec.num_attention_heads,
            spec.num_key_value_heads,
            spec.head_dim,
            spec.vocab_size,
        )

    return [
        spec
        for _, spec in sorted(catalog.items())
        if spec.quantization is not None
        and shape(spec) == shape(model)
        and spec.alias.startswith(model.alias + "-")
    ]


def closest_models(catalog: Mapping[str, ModelSpec], alias: str, n: int = 3) -> list[str]:
    """Aliases whose name or repo id resembles ``alias`` (best first)."""
    keys: dict[str, str] = {}
    for name in sorted(catalog):
        keys.setdefault(name.casefold(), name)
    for name in sorted(catalog):
        spec = catalog[name]
        keys.setdefault(spec.repo_id.casefold(), name)
        keys.setdefault(spec.repo_id.split("/")[-1].casefold(), name)
    matches = difflib.get_close_matches(alias.strip().casefold(), list(keys), n=n * 3, cutoff=0.5)
    result: list[str] = []
    for match in matches:
        name = keys[match]
        if name not in result:
            result.append(name)
    return result[:n]


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------
