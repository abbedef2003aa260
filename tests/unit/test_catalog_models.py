"""Models people deploy now (issue 14, item E): each is planned on a usual instance type.

Every architecture fact comes from the model's published config.json (models.yaml cites it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_tgiops

from tgiops.core import hardware
from tgiops.core.catalog import quantized_siblings
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import PlanInputError
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


# -- issue 14 §6: Qwen3 32B and 30B-A3B, Gemma 3, gpt-oss, Mistral Small 3.1 -----------------


@pytest.mark.parametrize(
    ("alias", "instance_type", "num_shard", "quantize"),
    [
        ("qwen3-32b", "g6e.12xlarge", 4, None),  # 4x L40S, 16-bit
        ("qwen3-32b", "p5.4xlarge", 1, None),  # one H100 80GB
        ("qwen3-32b", "g6e.xlarge", 1, "fp8"),  # one L40S: 16-bit weights alone are ~61 GiB
        ("qwen3-30b-a3b", "g6e.12xlarge", 4, None),
        ("qwen3-30b-a3b", "p5.4xlarge", 1, None),
        ("qwen3-30b-a3b", "g6e.xlarge", 1, "fp8"),
        ("gemma-3-12b", "g6e.xlarge", 1, None),
        ("gemma-3-12b", "g5.12xlarge", 4, None),
        ("gemma-3-27b", "g6e.12xlarge", 4, None),
        ("gemma-3-27b", "p5.4xlarge", 1, None),
    ],
)
def test_new_models_plan_on_the_instance_types_they_are_served_on(
    alias, instance_type, num_shard, quantize
):
    result = plan(
        CATALOG[alias], hardware.inventory_for_instance_type(instance_type), TgiEngine.release()
    )
    assert result.fits, result.problem
    assert (result.num_shard, result.quantize) == (num_shard, quantize)
    assert result.max_total_tokens >= 4096
    assert result.memory.kv_cache_tokens >= result.max_total_tokens


def test_the_moe_entry_keeps_every_expert_on_the_gpus():
    """Qwen3-30B-A3B: 128 experts of 768 (moe_intermediate_size), 8 per token; the weights are
    all 30.5B parameters, not the ~3B active ones."""
    moe = CATALOG["qwen3-30b-a3b"]
    assert (moe.num_experts, moe.experts_per_token, moe.intermediate_size) == (128, 8, 768)
    result = plan(moe, hardware.inventory_for_instance_type("p5.4xlarge"), TgiEngine.release())
    assert result.memory.weights_per_gpu_mib * 1024 * 1024 > 55e9  # ~61 GB of 16-bit weights


def test_gemma3_needs_tgi_3_2():
    """TGI has a gemma3 class from 3.2.0 (engine.py _MODEL_TYPES_CHANGED): before, the plan
    warns that TGI may refuse the model."""
    assert "gemma3" in TgiEngine.release("3.2.0").model_types
    assert "gemma3" not in TgiEngine.release("3.1.1").model_types
    model, p5 = CATALOG["gemma-3-27b"], hardware.inventory_for_instance_type("p5.4xlarge")
    assert any("gemma3" in w for w in plan(model, p5, TgiEngine.release("3.1.1")).warnings)
    assert not any("may refuse" in w for w in plan(model, p5, TgiEngine.release("3.2.0")).warnings)


@pytest.mark.parametrize("alias", ["gpt-oss-20b", "gpt-oss-120b"])
def test_gpt_oss_from_the_catalog_is_refused_naming_vllm_and_its_release(alias):
    done = run_tgiops("plan", alias, "--instance-type", "p5.4xlarge", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    message = json.loads(done.stdout)["error"]["message"]
    assert "TGI cannot serve it" in message and "MXFP4" in message
    assert "vLLM >= 0.10.1" in message and "p5" in message
    # Without hardware (the instance-type ranking) the same one refusal, not 43 rejections.
    done = run_tgiops("plan", alias)
    assert done.returncode == 2 and "vLLM >= 0.10.1" in done.stderr
    with pytest.raises(PlanInputError, match="vLLM"):
        plan(
            CATALOG[alias], hardware.inventory_for_instance_type("p5.4xlarge"), TgiEngine.release()
        )


def test_llama_vision_on_vllm_is_refused_naming_tgi():
    done = run_tgiops(
        "plan", "llama-3.2-90b-vision", "--engine", "vllm", "--instance-type", "p4de.24xlarge",
        "--json",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    message = json.loads(done.stdout)["error"]["message"]
    assert "vLLM cannot serve it" in message and "TGI serves it" in message
    # Without hardware: the same one refusal, not one rejection per instance type.
    done = run_tgiops("plan", "llama-3.2-90b-vision", "--engine", "vllm")
    assert done.returncode == 2 and "PR #24907" in done.stderr
    assert "Traceback" not in done.stderr


def test_mistral_small_3_1_is_refused_naming_vllm_and_the_tgi_alternative():
    done = run_tgiops("plan", "mistral-small-3.1-24b", "--instance-type", "g6e.12xlarge")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "vLLM" in done.stderr and "mistral-small-24b" in done.stderr and "#3133" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "alias",
    [
        "qwen3-32b",
        "qwen3-30b-a3b",
        "gemma-3-12b",
        "gemma-3-27b",
        "gpt-oss-20b",
        "gpt-oss-120b",
        "mistral-small-3.1-24b",
    ],
)
def test_every_new_fact_names_its_source(alias):
    from tgiops.core.catalog_file import spec_fact_fields

    spec = CATALOG[alias]
    unsourced = [
        name
        for name in spec_fact_fields()
        if getattr(spec, name) not in (None, False) and not spec.sources.get(name)
    ]
    assert unsourced == []
    assert "huggingface.co/" + spec.repo_id in spec.sources["num_layers"]
