"""vLLM behind the engine seam (issue 15): VllmEngine, the registry, and plan --engine vllm."""

from __future__ import annotations

import pytest

from tgiops.core.engines import ENGINE_NAMES, Engine, engine_for, engine_of_image
from tgiops.core.engines.vllm import DEFAULT_VLLM_VERSION, VllmEngine
from tgiops.core.errors import InputError


def test_registry_knows_vllm_and_tgi_stays_default() -> None:
    assert set(ENGINE_NAMES) == {"tgi", "vllm"}
    assert engine_for().name == "tgi"
    engine: Engine = engine_for("vllm")
    assert engine.name == "vllm"
    assert engine.image == f"vllm/vllm-openai:v{DEFAULT_VLLM_VERSION}"
    assert engine.token_env_var == "HF_TOKEN"
    assert engine.unit_template == "vllm.service.j2"
    assert engine.container_port == 8000
    with pytest.raises(InputError, match="sglang"):
        engine_for("sglang")


def test_pinned_default_is_a_tag_the_emulator_serves() -> None:
    from scripts.vllm_emulator.versions import image_tags

    served = {t.reference for t in image_tags()}
    engine = VllmEngine.release()
    assert engine.image in served
    assert engine.for_driver("550.54.15").image in served


def test_driver_picks_the_cuda_variant() -> None:
    engine = VllmEngine.release("0.20.0")
    assert engine.for_driver("580.105.08").image == "vllm/vllm-openai:v0.20.0"
    assert engine.for_driver("535.183.01").image == "vllm/vllm-openai:v0.20.0-cu129"
    assert VllmEngine.release("0.11.0").for_driver("535.1").image == "vllm/vllm-openai:v0.11.0"
    with pytest.raises(InputError, match="too old"):
        engine.for_driver("470.82")


def test_engine_of_image_reads_vllm_tags_back() -> None:
    engine = engine_of_image("vllm/vllm-openai:v0.20.0-cu129")
    assert (engine.name, engine.version_text, engine.image) == (
        "vllm",
        "0.20.0",
        "vllm/vllm-openai:v0.20.0-cu129",
    )
    assert engine_of_image("ghcr.io/huggingface/text-generation-inference:3.3.5").name == "tgi"
    # an unknown vLLM tag is read with vLLM's contract, not TGI's
    assert engine_of_image("vllm/vllm-openai:nightly").name == "vllm"


def test_release_refuses_unknown_suffix_and_old_cu129() -> None:
    with pytest.raises(InputError):
        VllmEngine.release("v0.20.0-cu118")
    with pytest.raises(InputError, match=r"from v0\.20\.0"):
        VllmEngine.release("v0.11.0-cu129")


MODELS = {
    "object": "list",
    "data": [
        {
            "id": "llama-3.1-8b",
            "object": "model",
            "root": "meta-llama/Llama-3.1-8B-Instruct",
            "max_model_len": 16384,
        }
    ],
}


def test_info_mismatches_compares_v1_models() -> None:
    engine = VllmEngine.release()
    ok = engine.info_mismatches(
        MODELS,
        expected_model_id="meta-llama/Llama-3.1-8B-Instruct",
        expected_max_total_tokens=16384,
        expected_max_input_tokens=None,
    )
    assert ok == []
    other = engine.info_mismatches(
        MODELS,
        expected_model_id="Qwen/Qwen3-8B",
        expected_max_total_tokens=16384,
        expected_max_input_tokens=None,
    )
    assert other and "Qwen/Qwen3-8B" in other[0]
    length = engine.info_mismatches(
        MODELS,
        expected_model_id="meta-llama/Llama-3.1-8B-Instruct",
        expected_max_total_tokens=8192,
        expected_max_input_tokens=None,
    )
    assert length and "16384" in length[0]
    assert engine.info_mismatches(
        {"data": []},
        expected_model_id="x/y",
        expected_max_total_tokens=None,
        expected_max_input_tokens=None,
    )


def test_diagnose_journal_is_vllms() -> None:
    journal = (
        "ValueError: The model's max seq len (131072) is larger than the maximum number of "
        "tokens that can be stored in KV cache (30000). Try increasing ..."
    )
    assert "--max-model-len 30000 or less" in (VllmEngine.release().diagnose_journal(journal) or "")
    assert engine_for("tgi").diagnose_journal(journal) != VllmEngine.release().diagnose_journal(
        journal
    )
