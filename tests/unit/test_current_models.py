"""Models people deploy now (issue 14, item E): each is planned on a usual instance type.

Every architecture fact comes from the model's published config.json (models.yaml cites it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core.catalog import parse_catalog, quantized_siblings
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.plan import plan

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")


@pytest.mark.parametrize(
    ("alias", "instance_type", "num_shard", "quantize"),
    [
        ("llama-3.3-70b", "p4de.24xlarge", 8, None),
        ("llama-3.3-70b-awq", "g6e.12xlarge", 4, "awq"),
        ("llama-3.3-70b-awq", "g5.12xlarge", 4, "awq"),
    ],
)
def test_current_models_plan_on_usual_instance_types(alias, instance_type, num_shard, quantize):
    result = plan(
        CATALOG[alias], hardware.inventory_for_instance_type(instance_type), TgiEngine.release()
    )
    assert result.fits, result.problem
    assert (result.num_shard, result.quantize) == (num_shard, quantize)
    assert result.max_total_tokens >= 8192


def test_a_quantized_sibling_is_the_same_model_not_only_the_same_shapes():
    """Llama 3.3 70B has Llama 3.1 70B's shapes; its AWQ checkpoint is not 3.1's sibling."""
    of_31 = {s.alias for s in quantized_siblings(CATALOG, CATALOG["llama-3.1-70b"])}
    of_33 = {s.alias for s in quantized_siblings(CATALOG, CATALOG["llama-3.3-70b"])}
    assert "llama-3.3-70b-awq" not in of_31 and "llama-3.1-70b-awq" in of_31
    assert of_33 == {"llama-3.3-70b-awq"}


def test_gpt_oss_is_refused_naming_vllm(tmp_path):
    """gpt-oss ships MXFP4 weights, which no TGI release loads: the plan says so, names vLLM."""
    import json
    import subprocess
    import sys

    config = {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "num_hidden_layers": 24,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 201088,
        "intermediate_size": 2880,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "max_position_embeddings": 131072,
        "quantization_config": {"quant_method": "mxfp4"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tgiops.cli",
            "plan",
            "--model-config",
            str(path),
            "--model-id",
            "openai/gpt-oss-20b",
            "--instance-type",
            "g6e.xlarge",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "vLLM" in done.stdout + done.stderr and "mxfp4" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("version", "warned"), [("3.1.1", False), ("3.2.1", True), ("3.3.7", True)]
)
def test_gemma3_plans_warn_of_the_quadratic_warmup_mask(version, warned):
    from dataclasses import replace

    gemma3 = replace(CATALOG["gemma-2-9b"], alias="gemma3-like", model_type="gemma3", vision=True)
    result = plan(
        gemma3, hardware.inventory_for_instance_type("g6e.xlarge"), TgiEngine.release(version)
    )
    assert any("dense" in w and "#3130" in w for w in result.warnings) == warned


@pytest.mark.parametrize("instance_type", ["g6e.xlarge", "g5.2xlarge", "g6.xlarge"])
def test_qwen3_8b_plans_through_tgis_transformers_backend(instance_type):
    result = plan(
        CATALOG["qwen3-8b"],
        hardware.inventory_for_instance_type(instance_type),
        TgiEngine.release(),
    )
    assert result.fits, result.problem
    assert any("model_type 'qwen3'" in w for w in result.warnings)


def test_no_eetq_or_4bit_for_models_tgi_runs_through_transformers():
    """TGI refuses eetq and 4-bit bitsandbytes on its transformers fallback
    (models/__init__.py@v3.3.7 l.1725-1736); on-the-fly choices keep to what it accepts."""
    result = plan(
        CATALOG["qwen3-8b"],
        hardware.inventory_for_instance_type("g4dn.xlarge"),
        TgiEngine.release(),
    )
    assert result.quantize not in ("eetq", "bitsandbytes-nf4", "bitsandbytes-fp4")
    result = plan(
        CATALOG["qwen3-8b"],
        hardware.inventory_from_spec("A10G", 1, 12),
        TgiEngine.release(),
    )
    assert result.quantize not in ("eetq", "bitsandbytes-nf4", "bitsandbytes-fp4")


@pytest.mark.parametrize(
    ("instance_type", "quantize"), [("g6e.12xlarge", None), ("p4de.24xlarge", None)]
)
def test_a_deepseek_r1_distill_plans_with_room_for_long_answers(instance_type, quantize):
    result = plan(
        CATALOG["deepseek-r1-distill-qwen-32b"],
        hardware.inventory_for_instance_type(instance_type),
        TgiEngine.release(),
    )
    assert result.fits, result.problem
    assert result.quantize == quantize
    assert result.max_total_tokens >= 32768


@pytest.mark.parametrize(
    ("instance_type", "num_shard", "quantize"),
    [("g6e.xlarge", 1, "fp8"), ("g6e.12xlarge", 4, None), ("g5.12xlarge", 4, None)],
)
def test_mistral_small_plans_on_usual_instance_types(instance_type, num_shard, quantize):
    """47 GB of 16-bit weights: one L40S needs fp8 (on the fly, sm89), four GPUs do not."""
    result = plan(
        CATALOG["mistral-small-24b"],
        hardware.inventory_for_instance_type(instance_type),
        TgiEngine.release(),
    )
    assert result.fits, result.problem
    assert (result.num_shard, result.quantize) == (num_shard, quantize)
