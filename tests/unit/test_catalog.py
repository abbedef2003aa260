"""The model catalog: the shipped models.yaml, user catalogs, lookups and config.json input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tgiops.core.catalog import ModelSpec, find_model, merge_catalogs
from tgiops.core.catalog_file import parse_catalog, spec_fact_fields, validate_model
from tgiops.core.errors import CatalogError, UnknownModelError
from tgiops.core.hf_config import estimate_parameters, model_from_hf_config

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_TEXT = (REPO_ROOT / "models.yaml").read_text(encoding="utf-8")

REQUIRED_ALIASES = (
    "llama-3.1-8b",
    "llama-3.1-8b-awq",
    "llama-3.1-70b",
    "llama-3.1-70b-awq",
    "llama-3.1-70b-fp8",
    "llama-3.1-405b-fp8",
    "llama-3.2-3b",
    "llama-3.2-90b-vision",
    "mistral-7b",
    "mixtral-8x7b",
    "qwen2.5-7b",
    "qwen2.5-72b-awq",
    "gemma-2-9b",
    "phi-3-mini",
)


@pytest.fixture(scope="module")
def builtin() -> dict[str, ModelSpec]:
    return parse_catalog(BUILTIN_TEXT, "models.yaml")


# --------------------------------------------------------------------------------------------
# the shipped catalog
# --------------------------------------------------------------------------------------------


def test_builtin_catalog_has_every_required_alias(builtin: dict[str, ModelSpec]) -> None:
    missing = [alias for alias in REQUIRED_ALIASES if alias not in builtin]
    assert missing == []
    assert all(spec.origin == "models.yaml" for spec in builtin.values())


@pytest.mark.parametrize("alias", REQUIRED_ALIASES)
def test_every_builtin_fact_names_its_source(builtin: dict[str, ModelSpec], alias: str) -> None:
    spec = builtin[alias]
    unsourced = [
        name
        for name in spec_fact_fields()
        if getattr(spec, name) not in (None, False) and not spec.sources.get(name)
    ]
    assert unsourced == []


@pytest.mark.parametrize(
    ("alias", "facts"),
    [
        pytest.param(
            "gemma-2-9b",
            {"head_dim": 256, "hidden_size": 3584, "num_attention_heads": 16},
            id="gemma2-explicit-head-dim-256-not-224",
        ),
        pytest.param(
            "mixtral-8x7b",
            {"num_experts": 8, "experts_per_token": 2, "model_type": "mixtral", "is_moe": True},
            id="mixtral-experts",
        ),
        pytest.param(
            "llama-3.1-70b-awq",
            {
                "repo_id": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
                "quantization": "awq",
                "quantization_bits": 4,
                "torch_dtype": "float16",
            },
            id="70b-awq-checkpoint",
        ),
        pytest.param(
            "llama-3.1-70b-fp8",
            {
                "repo_id": "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8",
                "quantization": "compressed-tensors",
                "quantization_bits": 8,
                "weight_bytes": None,
            },
            id="70b-fp8-compressed-tensors-size-unknown",
        ),
        pytest.param(
            "llama-3.1-405b-fp8",
            {"num_key_value_heads": 8, "quantization": "fp8", "revision": None, "num_layers": 126},
            id="405b-fp8-8-kv-heads",
        ),
        pytest.param(
            "llama-3.2-90b-vision",
            {"num_layers": 100, "kv_layers": 80, "kv_cache_layers": 80, "vision": True},
            id="mllama-cross-attention-layers-hold-no-kv",
        ),
        pytest.param(
            "qwen2.5-72b-awq",
            {"intermediate_size": 29696, "num_key_value_heads": 8},
            id="qwen72b-awq-padded-intermediate",
        ),
        pytest.param(
            "phi-3-mini",
            {"num_key_value_heads": 32, "head_dim": 96, "gated": False},
            id="phi3-mha",
        ),
        pytest.param(
            "llama-3.1-8b",
            {"gated": True, "weight_bytes": 16060522496, "kv_cache_layers": 32},
            id="llama-8b-gated-with-index-size",
        ),
        pytest.param(
            "llama-3.1-8b-awq",
            {"quantization": "awq", "torch_dtype": None, "gated": None},
            id="8b-awq-unverified-fields-left-empty",
        ),
    ],
)
def test_builtin_facts(builtin: dict[str, ModelSpec], alias: str, facts: dict[str, Any]) -> None:
    spec = builtin[alias]
    assert {name: getattr(spec, name) for name in facts} == facts


def test_405b_says_why_no_revision_is_pinned(builtin: dict[str, ModelSpec]) -> None:
    spec = builtin["llama-3.1-405b-fp8"]
    assert "8-kv-heads" in spec.sources["num_key_value_heads"]
    assert any("8-kv-heads" in note and "revision" in note for note in spec.notes)


def test_8b_awq_architecture_is_marked_as_the_base_models(builtin: dict[str, ModelSpec]) -> None:
    assert (
        "base model meta-llama/Llama-3.1-8B-Instruct"
        in builtin["llama-3.1-8b-awq"].sources["num_layers"]
    )


# KV cache KiB per token at 16-bit, docs/models.md "Notes for the memory planner" 1.
@pytest.mark.parametrize(
    ("alias", "kib"),
    [
        pytest.param("llama-3.1-8b", 128, id="llama-8b"),
        pytest.param("llama-3.1-70b-awq", 320, id="llama-70b-awq"),
        pytest.param("llama-3.2-3b", 112, id="llama-3b"),
        pytest.param("mistral-7b", 128, id="mistral"),
        pytest.param("mixtral-8x7b", 128, id="mixtral"),
        pytest.param("qwen2.5-7b", 56, id="qwen-7b"),
        pytest.param("qwen2.5-72b-awq", 320, id="qwen-72b-awq"),
        pytest.param("gemma-2-9b", 336, id="gemma2"),
        pytest.param("phi-3-mini", 384, id="phi3"),
        pytest.param("llama-3.1-405b-fp8", 504, id="405b"),
        pytest.param("llama-3.2-90b-vision", 320, id="mllama-self-attention-only"),
    ],
)
def test_kv_cache_bytes_per_token_match_the_reference(
    builtin: dict[str, ModelSpec], alias: str, kib: int
) -> None:
    assert builtin[alias].kv_cache_bytes_per_token() == kib * 1024


@pytest.mark.parametrize("alias", REQUIRED_ALIASES)
def test_shape_estimate_agrees_with_published_parameters(
    builtin: dict[str, ModelSpec], alias: str
) -> None:
    """Catches a typo in any shape: the formula lands within 3% of the published count."""
    spec = builtin[alias]
    assert spec.intermediate_size is not None
    estimate = estimate_parameters(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        num_experts=spec.num_experts,
        tie_word_embeddings=bool(spec.tie_word_embeddings),
    )
    assert estimate / 1e9 == pytest.approx(spec.parameters_b, rel=0.03)


def test_model_spec_is_frozen_and_hashable(builtin: dict[str, ModelSpec]) -> None:
    spec = builtin["llama-3.1-8b"]
    with pytest.raises(AttributeError):
        spec.num_layers = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.sources["num_layers"] = "x"  # type: ignore[index]
    assert len({spec, builtin["llama-3.1-8b"]}) == 1


# --------------------------------------------------------------------------------------------
# bad catalogs
# --------------------------------------------------------------------------------------------

GOOD_ENTRY: dict[str, Any] = {
    "repo_id": "org/model",
    "model_type": "llama",
    "num_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "parameters_b": 7.0,
}


def catalog_text(alias: str = "my-model", **changes: Any) -> str:
    entry = copy.deepcopy(GOOD_ENTRY)
    for key, value in changes.items():
        if value is _DELETE:
            entry.pop(key)
        else:
            entry[key] = value
    return yaml.safe_dump({"schema_version": 1, "models": {alias: entry}}, sort_keys=False)


_DELETE = object()
HEAD = "schema_version: 1\nmodels:\n  my-model:\n    repo_id: org/model\n"


def test_minimal_user_entry_parses_and_derives_head_dim() -> None:
    spec = parse_catalog(catalog_text(), "user.yaml")["my-model"]
    assert (spec.head_dim, spec.vision, spec.quantization, spec.origin) == (
        128,
        False,
        None,
        "user.yaml",
    )
    assert "derived" in spec.sources["head_dim"]


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        pytest.param(
            catalog_text(num_layer=32), "num_layer", "Did you mean 'num_layers'", id="unknown-key"
        ),
        pytest.param(
            catalog_text(num_layers="32"),
            "num_layers",
            "positive whole number",
            id="string-for-int",
        ),
        pytest.param(
            catalog_text(hidden_size=True),
            "hidden_size",
            "positive whole number",
            id="bool-for-int",
        ),
        pytest.param(
            catalog_text(num_layers=0), "num_layers", "positive whole number", id="zero-layers"
        ),
        pytest.param(
            catalog_text(vocab_size=_DELETE), "vocab_size", "missing required", id="missing-fact"
        ),
        pytest.param(
            catalog_text(repo_id=None), "repo_id", "missing required", id="null-required-fact"
        ),
        pytest.param(
            catalog_text(repo_id="just-a-name"), "repo_id", "org/name", id="repo-without-org"
        ),
        pytest.param(catalog_text(gated="yes"), "gated", "true or false", id="string-for-bool"),
        pytest.param(
            catalog_text(parameters_b="7B"), "parameters_b", "positive number", id="params-as-text"
        ),
        pytest.param(
            catalog_text(parameters_b=7_000_000_000),
            "parameters_b",
            "in billions",
            id="params-raw-count",
        ),
        pytest.param(
            catalog_text(num_key_value_heads=5),
            "num_key_value_heads",
            "not divisible",
            id="heads-vs-kv-heads",
        ),
        pytest.param(
            catalog_text(head_dim=0), "head_dim", "positive whole number", id="head-dim-zero"
        ),
        pytest.param(
            catalog_text(hidden_size=4000, num_attention_heads=24, num_key_value_heads=8),
            "head_dim",
            "not divisible",
            id="head-dim-not-derivable",
        ),
        pytest.param(
            catalog_text(kv_layers=40), "kv_layers", "only 32 layers", id="kv-layers-too-many"
        ),
        pytest.param(
            catalog_text(num_experts=8), "experts_per_token", "needs both", id="experts-half-given"
        ),
        pytest.param(
            catalog_text(num_experts=2, experts_per_token=4),
            "experts_per_token",
            "only 2",
            id="top-k-over-experts",
        ),
        pytest.param(
            catalog_text(quantization="fbgemm_fp8"),
            "quantization",
            "Did you mean 'fp8'",
            id="checkpoint-quant-name",
        ),
        pytest.param(
            catalog_text(quantization_bits=4), "quantization_bits", "null", id="bits-without-quant"
        ),
        pytest.param(catalog_text(torch_dtype="fp16"), "torch_dtype", "bfloat16", id="bad-dtype"),
        pytest.param(
            catalog_text(sources={"layers": "S1"}),
            "sources",
            "unknown fact 'layers'",
            id="bad-source-key",
        ),
        pytest.param(
            catalog_text(notes=[1, 2]), "notes", "list of strings", id="notes-not-strings"
        ),
        pytest.param(
            HEAD + "    hidden_size: 4096: 1\n",
            "hidden_size",
            "not valid YAML",
            id="yaml-syntax-error",
        ),
        pytest.param(
            HEAD + "    num_layers: [32\n",
            "num_layers",
            "not valid YAML",
            id="yaml-unclosed-list",
        ),
    ],
)
def test_bad_entry_names_origin_alias_and_field(text: str, field: str, fragment: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "user.yaml")
    message = str(caught.value)
    assert message.startswith("user.yaml")
    assert "model 'my-model'" in message
    assert f"field {field!r}" in message
    assert fragment in message
    assert caught.value.exit_code == 2


def test_error_gives_the_line_of_the_bad_field() -> None:
    text = catalog_text(num_layers="many")
    line = 1 + next(
        i for i, raw in enumerate(text.splitlines()) if raw.strip().startswith("num_layers")
    )
    with pytest.raises(CatalogError, match=rf"^user\.yaml, line {line}: model 'my-model'"):
        parse_catalog(text, "user.yaml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "a catalog is a YAML mapping", id="empty-file"),
        pytest.param("- a\n- b\n", "got list", id="list-document"),
        pytest.param(
            "schema_version: 1\nmodel:\n  x: {}\n",
            "field 'model': unknown top-level key",
            id="typo-top-level",
        ),
        pytest.param(
            catalog_text().replace("schema_version: 1", "schema_version: 2"),
            "schema_version 1",
            id="future-schema",
        ),
        pytest.param("schema_version: 1\nmodels: {}\n", "non-empty mapping", id="no-models"),
        pytest.param(catalog_text(alias="bad alias"), "an alias is letters", id="alias-with-space"),
        pytest.param(
            catalog_text() + "  my-model:\n    repo_id: org/other\n",
            "duplicate key 'my-model'",
            id="duplicate-alias",
        ),
    ],
)
def test_bad_catalog_structure(text: str, fragment: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "user.yaml")
    assert str(caught.value).startswith("user.yaml")
    assert fragment in str(caught.value)


def test_validate_model_rejects_a_hand_built_inconsistent_spec(
    builtin: dict[str, ModelSpec],
) -> None:
    import dataclasses

    broken = dataclasses.replace(builtin["llama-3.1-8b"], num_key_value_heads=7)
    with pytest.raises(CatalogError, match=r"model 'llama-3\.1-8b', field 'num_key_value_heads'"):
        validate_model(broken)


# --------------------------------------------------------------------------------------------
# merge and lookup
# --------------------------------------------------------------------------------------------


def test_overlay_replaces_and_adds_without_touching_the_base(builtin: dict[str, ModelSpec]) -> None:
    overlay = parse_catalog(
        catalog_text(alias="mistral-7b", repo_id="me/my-mistral")
        + "  extra-model:\n"
        + "".join(f"    {k}: {v}\n" for k, v in GOOD_ENTRY.items()),
        "/home/me/models.yaml",
    )
    merged = merge_catalogs(builtin, overlay)
    assert merged["mistral-7b"].repo_id == "me/my-mistral"
    assert merged["mistral-7b"].origin == "/home/me/models.yaml"
    assert merged["extra-model"].origin == "/home/me/models.yaml"
    assert merged["gemma-2-9b"] is builtin["gemma-2-9b"]
    assert builtin["mistral-7b"].repo_id == "mistralai/Mistral-7B-Instruct-v0.3"
    assert len(merged) == len(builtin) + 1


@pytest.mark.parametrize(
    ("query", "alias"),
    [
        pytest.param("llama-3.1-70b-awq", "llama-3.1-70b-awq", id="alias"),
        pytest.param("Llama-3.1-70B-AWQ", "llama-3.1-70b-awq", id="alias-any-case"),
        pytest.param(
            "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "llama-3.1-70b-awq", id="repo-id"
        ),
        pytest.param("google/GEMMA-2-9B-IT", "gemma-2-9b", id="repo-id-any-case"),
    ],
)
def test_find_model(builtin: dict[str, ModelSpec], query: str, alias: str) -> None:
    assert find_model(builtin, query).alias == alias


@pytest.mark.parametrize(
    ("query", "expected_first"),
    [
        pytest.param("llama-3.1-70b-awk", "llama-3.1-70b-awq", id="typo"),
        pytest.param("mixtral-8x7", "mixtral-8x7b", id="truncated"),
        pytest.param("Mistral-7B-Instruct-v0.3", "mistral-7b", id="repo-name-without-org"),
    ],
)
def test_unknown_model_suggests_closest(
    builtin: dict[str, ModelSpec], query: str, expected_first: str
) -> None:
    with pytest.raises(UnknownModelError) as caught:
        find_model(builtin, query)
    assert caught.value.closest[0] == expected_first
    assert expected_first in str(caught.value)
    assert caught.value.exit_code == 2


def test_unknown_model_with_nothing_close(builtin: dict[str, ModelSpec]) -> None:
    with pytest.raises(UnknownModelError) as caught:
        find_model(builtin, "zzzzzzzz")
    assert caught.value.closest == []


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------

# mistralai/Mistral-7B-Instruct-v0.3 config.json (docs/models.md S20, the primary file).
MISTRAL_V03_CONFIG: dict[str, Any] = {
    "architectures": ["MistralForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0",
    "use_cache": True,
    "vocab_size": 32768,
}

# google/gemma-2-9b-it config.json fields (docs/models.md #11, S32): explicit head_dim, no
# tie_word_embeddings key.
GEMMA2_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma2ForCausalLM"],
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 16,
    "num_hidden_layers": 42,
    "num_key_value_heads": 8,
    "sliding_window": 4096,
    "torch_dtype": "bfloat16",
    "vocab_size": 256000,
}

# Llama-3.2-90B-Vision config as transformers writes it: text_config holds only the values that
# differ from MllamaTextConfig's defaults (docs/models.md S12).
MLLAMA_90B_CONFIG: dict[str, Any] = {
    "_name_or_path": "meta-llama/Llama-3.2-90B-Vision-Instruct",
    "architectures": ["MllamaForConditionalGeneration"],
    "model_type": "mllama",
    "torch_dtype": "bfloat16",
    "text_config": {
        "cross_attention_layers": [
            3,
            8,
            13,
            18,
            23,
            28,
            33,
            38,
            43,
            48,
            53,
            58,
            63,
            68,
            73,
            78,
            83,
            88,
            93,
            98,
        ],
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "model_type": "mllama_text_model",
        "num_attention_heads": 64,
        "num_hidden_layers": 100,
        "rope_scaling": {"factor": 8.0, "rope_type": "llama3"},
        "torch_dtype": "bfloat16",
    },
    "vision_config": {"image_size": 560, "model_type": "mllama_vision_model"},
}

# hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4 config.json (docs/models.md #3, S8).
AWQ_70B_CONFIG: dict[str, Any] = {
    "_name_or_path": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
    "architectures": ["LlamaForCausalLM"],
    "head_dim": 128,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "quantization_config": {
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": None,
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vocab_size": 128256,
}


def test_config_json_mistral() -> None:
    spec = model_from_hf_config(
        MISTRAL_V03_CONFIG, "config.json", repo_id="mistralai/Mistral-7B-Instruct-v0.3"
    )
    assert (spec.alias, spec.repo_id, spec.head_dim, spec.num_key_value_heads) == (
        "mistral-7b-instruct-v0.3",
        "mistralai/Mistral-7B-Instruct-v0.3",
        128,
        8,
    )
    assert (spec.vocab_size, spec.max_position_embeddings, spec.torch_dtype) == (
        32768,
        32768,
        "bfloat16",
    )
    assert spec.quantization is None and spec.weight_bytes is None and spec.gated is None
    # a copy of the index reports 7,248,023,552 parameters (docs/models.md S21)
    assert spec.parameters_b == pytest.approx(7.248, abs=0.01)
    assert "estimated from config.json" in spec.sources["parameters_b"]
    assert spec.origin == "config.json"


def test_config_json_gemma2_keeps_explicit_head_dim_and_default_tie() -> None:
    spec = model_from_hf_config(GEMMA2_CONFIG, "gemma.json", repo_id="google/gemma-2-9b-it")
    assert spec.head_dim == 256
    assert spec.tie_word_embeddings is True
    assert spec.parameters_b == pytest.approx(9.24, abs=0.02)  # index: 9,241,705,984
    assert spec.kv_cache_bytes_per_token() == 336 * 1024


def test_config_json_mllama_reads_nested_text_config_and_defaults() -> None:
    spec = model_from_hf_config(MLLAMA_90B_CONFIG, "mllama.json")
    assert spec.repo_id == "meta-llama/Llama-3.2-90B-Vision-Instruct"
    assert (spec.num_layers, spec.kv_layers, spec.kv_cache_layers, spec.vision) == (
        100,
        80,
        80,
        True,
    )
    assert (spec.num_key_value_heads, spec.vocab_size, spec.max_position_embeddings) == (
        8,
        128256,
        131072,
    )
    assert "MllamaTextConfig default" in spec.sources["num_key_value_heads"]
    assert spec.parameters_b == pytest.approx(88.8, rel=0.02)  # Meta card "90B (88.8)"


def test_config_json_awq_quantization() -> None:
    spec = model_from_hf_config(AWQ_70B_CONFIG, "awq.json")
    assert spec.repo_id == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert (spec.quantization, spec.quantization_bits, spec.torch_dtype) == ("awq", 4, "float16")
    assert spec.kv_cache_bytes_per_token() == 320 * 1024


@pytest.mark.parametrize(
    ("quantization_config", "expected"),
    [
        pytest.param(
            {"quant_method": "gptq", "bits": 4, "group_size": 128}, ("gptq", 4), id="gptq"
        ),
        pytest.param(
            {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0},
            ("fp8", 8),
            id="fbgemm-fp8",
        ),
        pytest.param({"quant_method": "fp8", "activation_scheme": "dynamic"}, ("fp8", 8), id="fp8"),
        pytest.param(
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {"weights": {"num_bits": 8, "type": "float"}, "targets": ["Linear"]}
                },
            },
            ("compressed-tensors", 8),
            id="compressed-tensors-fp8",
        ),
        pytest.param(
            {"quant_method": "exl2", "bits": 4.65}, ("exl2", None), id="exl2-fractional-bits"
        ),
    ],
)
def test_config_json_quantization_methods(
    quantization_config: dict[str, Any], expected: tuple[str, int | None]
) -> None:
    config = {**MISTRAL_V03_CONFIG, "quantization_config": quantization_config}
    spec = model_from_hf_config(config, "q.json", repo_id="org/quantized")
    assert (spec.quantization, spec.quantization_bits) == expected


def test_config_json_without_kv_heads_is_multi_head() -> None:
    config = {k: v for k, v in MISTRAL_V03_CONFIG.items() if k != "num_key_value_heads"}
    spec = model_from_hf_config(config, "c.json", repo_id="org/mha")
    assert spec.num_key_value_heads == 32


@pytest.mark.parametrize(
    ("config", "repo_id", "field"),
    [
        pytest.param(
            {k: v for k, v in MISTRAL_V03_CONFIG.items() if k != "num_hidden_layers"},
            "org/m",
            "num_hidden_layers",
            id="missing-layers",
        ),
        pytest.param(
            {k: v for k, v in MISTRAL_V03_CONFIG.items() if k != "model_type"},
            "org/m",
            "model_type",
            id="missing-type",
        ),
        pytest.param(
            {**MISTRAL_V03_CONFIG, "hidden_size": "4096"},
            "org/m",
            "hidden_size",
            id="string-hidden",
        ),
        pytest.param(
            {**MISTRAL_V03_CONFIG, "num_key_value_heads": 5},
            "org/m",
            "num_key_value_heads",
            id="kv-5",
        ),
        pytest.param(
            {
                **MISTRAL_V03_CONFIG,
                "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True},
            },
            "org/m",
            "quantization_config.quant_method",
            id="quant-tgi-cannot-detect",
        ),
        pytest.param(
            {**MISTRAL_V03_CONFIG, "_name_or_path": "/mnt/nvme1/model"},
            None,
            "repo_id",
            id="no-repo-id",
        ),
    ],
)
def test_bad_config_json_names_the_field(
    config: dict[str, Any], repo_id: str | None, field: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        model_from_hf_config(config, "/tmp/config.json", repo_id=repo_id)
    assert str(caught.value).startswith("/tmp/config.json")
    assert f"field {field!r}" in str(caught.value)


def test_the_catalog_quantize_names_are_the_newest_tgi_releases_values():
    """catalog.QUANTIZE_VALUES is spelled like TGI's --quantize, kept apart so the catalog does
    not depend on an engine; this keeps the two lists the same."""
    from tgiops.core.catalog import NON_TGI_QUANTIZE_VALUES, QUANTIZE_VALUES
    from tgiops.core.engines.tgi import TgiEngine

    tgi = set(TgiEngine.release().accepted_quantize)
    assert set(QUANTIZE_VALUES) == tgi | set(NON_TGI_QUANTIZE_VALUES)
    assert not tgi & set(NON_TGI_QUANTIZE_VALUES)  # a name TGI gains moves to its list
