"""A Hugging Face ``config.json`` (already parsed into a dict) as a ``ModelSpec``, for models
in no catalog (``--hf-config``), and the parameter count estimated from its shapes (pure)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tgiops.core.catalog import QUANT_METHOD_TO_TGI, TORCH_DTYPES, ModelSpec
from tgiops.core.catalog_file import (
    POSITIVE_INT,
    REPO_RE,
    catalog_error,
    check_consistency,
)

logger = logging.getLogger(__name__)


# MllamaTextConfig/MllamaVisionConfig defaults. transformers writes nested sub-configs as a diff
# against these defaults, so a real mllama config.json omits them (docs/models.md S12 lists only
# non-default fields). Source: huggingface/transformers
# src/transformers/models/mllama/configuration_mllama.py @032b32a.
_MLLAMA_SOURCE = "MllamaTextConfig default (transformers configuration_mllama.py)"


_MLLAMA_TEXT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "cross_attention_layers": (3, 8, 13, 18, 23, 28, 33, 38),
    }
)


_MLLAMA_VISION_DEFAULTS: Mapping[str, int] = MappingProxyType(
    {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_global_layers": 8,
        "intermediate_size": 5120,
        "vision_output_dim": 7680,
    }
)


# tie_word_embeddings is left out of config.json when it equals the class default; these
# classes default to tied (docs/models.md row 11: Gemma2Config default = true).
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2"})


def estimate_parameters(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    intermediate_size: int,
    num_experts: int | None = None,
    tie_word_embeddings: bool = False,
    extra: int = 0,
) -> int:
    """Parameter count of a decoder-only transformer from its config.json shapes.

    With V vocab, H hidden, L layers, A heads, K kv heads, d head_dim, I intermediate size and
    E experts (1 if dense)::

        P = V*H * (1 if tied else 2)                  embeddings (+ lm_head)
          + L * ( H*d*(2A + 2K)                       q, o and k, v projections
                + E*3*H*I + (E*H if E > 1)            gated MLP (gate, up, down) + router
                + 2*H )                               the two RMSNorms
          + H                                         final norm
          + extra                                     e.g. a vision tower

    Biases and model-specific extras (qkv bias, gemma's 4 norms) are ignored: they are <0.1%.
    Checks: Llama-3.1-8B 8.03B, Mixtral-8x7B 46.70B, gemma-2-9b 9.24B, Phi-3-mini 3.82B.
    """
    experts = num_experts if num_experts and num_experts > 1 else 1
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    attention = hidden_size * head_dim * (2 * num_attention_heads + 2 * num_key_value_heads)
    mlp = experts * 3 * hidden_size * intermediate_size + (
        experts * hidden_size if experts > 1 else 0
    )
    per_layer = attention + mlp + 2 * hidden_size
    return embeddings + num_layers * per_layer + hidden_size + extra


def _mllama_vision_parameters(vision: Mapping[str, Any], text_hidden: int) -> int:
    """Vision tower + projector of mllama: (Lv+Lg)*(4*Hv^2 + 2*Hv*Iv) + Ov*H."""

    def get(key: str) -> int:
        value = vision.get(key, _MLLAMA_VISION_DEFAULTS[key])
        return (
            int(value)
            if isinstance(value, int) and not isinstance(value, bool)
            else _MLLAMA_VISION_DEFAULTS[key]
        )

    hv, iv = get("hidden_size"), get("intermediate_size")
    layers = get("num_hidden_layers") + get("num_global_layers")
    return layers * (4 * hv * hv + 2 * hv * iv) + get("vision_output_dim") * text_hidden


def model_from_hf_config(
    config: Mapping[str, Any], origin: str, repo_id: str | None = None
) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` dict (for models not in a catalog).

    Reads num_hidden_layers, hidden_size, intermediate_size, num_attention_heads,
    num_key_value_heads (default: num_attention_heads), head_dim (explicit, else hidden/heads),
    vocab_size, max_position_embeddings, num_local_experts (or num_experts) /
    num_experts_per_tok, tie_word_embeddings, torch_dtype (or dtype) and
    quantization_config (quant_method -> TGI name; bits). Multimodal configs with a nested
    ``text_config`` (mllama) are read from it; mllama's cross-attention layers hold no per-token
    KV cache, so kv_layers = layers - len(cross_attention_layers). The parameter count is
    estimated from the shapes (``estimate_parameters``).
    """
    if not isinstance(config, Mapping):
        raise catalog_error(
            origin,
            None,
            None,
            None,
            f"config.json must be a JSON object, got {type(config).__name__}.",
        )
    cfg_source = f"config.json ({origin})"
    sources: dict[str, str] = {}

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise catalog_error(
            origin, None, None, "model_type", "missing from config.json (or not a string)."
        )

    repo = repo_id
    if repo is None:
        name_or_path = config.get("_name_or_path")
        if isinstance(name_or_path, str) and REPO_RE.fullmatch(name_or_path):
            repo = name_or_path
    if repo is None or not REPO_RE.fullmatch(repo):
        raise catalog_error(
            origin,
            None,
            None,
            "repo_id",
            f"config.json does not say which Hugging Face repository it belongs to (got "
            f"{repo!r}); pass the repository id with --model-id ORG/NAME.",
        )
    alias = repo.split("/")[-1].lower()

    text_config = config.get("text_config")
    nested = isinstance(text_config, Mapping) and "num_hidden_layers" not in config
    text: Mapping[str, Any] = text_config if nested else config  # type: ignore[assignment]
    prefix = "text_config." if nested else ""
    defaults = _MLLAMA_TEXT_DEFAULTS if model_type == "mllama" else {}

    def read(key: str, spec_field: str, *, required: bool = True) -> Any:
        value = text.get(key)
        if value is None and key in defaults:
            value = defaults[key]
            sources[spec_field] = _MLLAMA_SOURCE
        elif value is not None:
            sources[spec_field] = cfg_source
        if value is None:
            if required:
                raise catalog_error(origin, None, alias, prefix + key, "missing from config.json.")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise catalog_error(
                origin, None, alias, prefix + key, f"must be {POSITIVE_INT}, got {value!r}."
            )
        return value

    num_layers = read("num_hidden_layers", "num_layers")
    hidden = read("hidden_size", "hidden_size")
    heads = read("num_attention_heads", "num_attention_heads")
    intermediate = read("intermediate_size", "intermediate_size")
    vocab = read("vocab_size", "vocab_size")
    max_pos = read("max_position_embeddings", "max_position_embeddings")
    kv_heads = read("num_key_value_heads", "num_key_value_heads", required=False)
    if kv_heads is None:
        kv_heads = heads
        sources["num_key_value_heads"] = f"{cfg_source}: absent, so equal to num_attention_heads"
    head_dim = read("head_dim", "head_dim", required=False)
    if head_dim is None:
        if hidden % heads:
            raise catalog_error(
                origin,
                None,
                alias,
                prefix + "head_dim",
                f"missing, and hidden_size {hidden} is not divisible by "
                f"num_attention_heads {heads}.",
            )
        head_dim = hidden // heads
        sources["head_dim"] = f"{cfg_source}: hidden_size / num_attention_heads"

    num_experts = read("num_local_experts", "num_experts", required=False)
    if num_experts is None:
        num_experts = read("num_experts", "num_experts", required=False)
    experts_per_token = read("num_experts_per_tok", "experts_per_token", required=False)
    if num_experts is None:
        experts_per_token = None
        sources.pop("experts_per_token", None)

    tie = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    if isinstance(tie, bool):
        sources["tie_word_embeddings"] = cfg_source
    elif "tie_word_embeddings" in defaults:
        tie = defaults["tie_word_embeddings"]
        sources["tie_word_embeddings"] = _MLLAMA_SOURCE
    elif model_type in _TIED_BY_DEFAULT:
        tie = True
        sources["tie_word_embeddings"] = (
            f"{model_type} config class default (true); absent in config.json"
        )
    else:
        tie = None

    dtype = config.get("torch_dtype", config.get("dtype", text.get("torch_dtype")))
    torch_dtype = dtype if dtype in TORCH_DTYPES else None
    if torch_dtype is not None:
        sources["torch_dtype"] = cfg_source

    quantization, bits = _quantization_of(config.get("quantization_config"), origin, alias)
    if quantization is not None:
        sources["quantization"] = f"{cfg_source}: quantization_config"
        if bits is not None:
            sources["quantization_bits"] = f"{cfg_source}: quantization_config"

    kv_layers = None
    extra_parameters = 0
    vision_config = config.get("vision_config")
    vision = isinstance(vision_config, Mapping) or model_type == "mllama"
    if model_type == "mllama":
        cross = text.get("cross_attention_layers", _MLLAMA_TEXT_DEFAULTS["cross_attention_layers"])
        if not isinstance(cross, (list, tuple)) or len(cross) >= num_layers:
            raise catalog_error(
                origin,
                None,
                alias,
                prefix + "cross_attention_layers",
                f"expected a list of layer indexes, got {cross!r}.",
            )
        kv_layers = num_layers - len(cross)
        sources["kv_layers"] = f"{cfg_source}: num_hidden_layers - len(cross_attention_layers)"
        extra_parameters = _mllama_vision_parameters(
            vision_config if isinstance(vision_config, Mapping) else {}, hidden
        )
    if vision:
        sources["vision"] = cfg_source

    parameters = estimate_parameters(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        num_experts=num_experts,
        tie_word_embeddings=bool(tie),
        extra=extra_parameters,
    )
    sources["parameters_b"] = (
        "estimated from config.json shapes (tgiops.core.hf_config.estimate_parameters)"
    )
    sources["model_type"] = cfg_source
    sources["repo_id"] = cfg_source if repo_id is None else "given with the config"

    spec = ModelSpec(
        alias=alias,
        repo_id=repo,
        revision=None,
        gated=None,
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        num_experts=num_experts,
        experts_per_token=experts_per_token,
        tie_word_embeddings=tie,
        torch_dtype=torch_dtype,
        parameters_b=round(parameters / 1e9, 3),
        quantization=quantization,
        quantization_bits=bits,
        weight_bytes=None,
        kv_layers=kv_layers,
        vision=vision,
        sources=sources,
        origin=origin,
    )
    check_consistency(spec, lambda fld, msg: catalog_error(origin, None, alias, fld, msg))
    return spec


# Checkpoint formats TGI cannot load but another engine serves, named in the refusal.
# MXFP4 (gpt-oss): TGI 3.3.7 has neither a `gpt_oss` ModelType nor an mxfp4 --quantize value
# (server/text_generation_server/models/__init__.py, launcher/src/main.rs @v3.3.7); vLLM has
# GptOssForCausalLM (vllm/model_executor/models/gpt_oss.py, docs.vllm.ai v0.10.2 API) and a
# gpt-oss recipe (github.com/vllm-project/recipes OpenAI/GPT-OSS.md).
# Engine support for MXFP4 (tgiops/docs/gpus-and-instances.md "gpt-oss"): vLLM from 0.10.1
# (launched as the vllm==0.10.1+gptoss build, openai/openai-cookbook#1990); its recipe runs it
# on Hopper and Blackwell (H100, H200, B200) and on Ampere (A100) through Marlin MXFP4 MoE
# kernels (github.com/vllm-project/recipes OpenAI/GPT-OSS.md).
MXFP4_ENGINES = (
    "TGI has no gpt_oss model class and no MXFP4 kernels in any release up to 3.3.7, its last; "
    "serve it with vLLM >= 0.10.1 (`vllm serve openai/gpt-oss-20b`), which runs MXFP4 on "
    "Hopper/Blackwell (H100, H200, B200: p5, p5e/p5en) and on Ampere A100 through Marlin "
    "kernels (p4d/p4de)"
)


_OTHER_ENGINES = {"mxfp4": f" {MXFP4_ENGINES}."}


def _quantization_of(qc: Any, origin: str, alias: str) -> tuple[str | None, int | None]:
    """(TGI --quantize name, bits) from a config.json quantization_config."""
    if qc is None:
        return None, None
    if not isinstance(qc, Mapping):
        raise catalog_error(
            origin, None, alias, "quantization_config", f"must be an object, got {qc!r}."
        )
    method = qc.get("quant_method")
    if not isinstance(method, str) or method.lower() not in QUANT_METHOD_TO_TGI:
        raise catalog_error(
            origin,
            None,
            alias,
            "quantization_config.quant_method",
            f"{method!r} is not a quantization TGI detects from config.json "
            f"({', '.join(sorted(QUANT_METHOD_TO_TGI))})."
            + _OTHER_ENGINES.get(str(method).lower(), ""),
        )
    tgi_name = QUANT_METHOD_TO_TGI[method.lower()]
    bits: Any
    if tgi_name == "fp8":
        bits = 8
    elif tgi_name == "compressed-tensors":
        bits = _compressed_tensors_bits(qc.get("config_groups"))
    else:
        bits = qc.get("bits", qc.get("w_bit"))
    if isinstance(bits, float) and bits.is_integer():
        bits = int(bits)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        bits = None  # exl2's fractional bits per weight, or not stated
    return tgi_name, bits


def _compressed_tensors_bits(groups: Any) -> int | None:
    if not isinstance(groups, Mapping):
        return None
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping) and isinstance(weights.get("num_bits"), int):
            return int(weights["num_bits"])
    return None
