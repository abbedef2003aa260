"""`tgiops plan` and `tgiops models` through the real console script: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tgiops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


PLAN_KEYS = {
    "fits",
    "engine",
    "image",
    "num_shard",
    "quantize",
    "dtype",
    "max_input_tokens",
    "max_total_tokens",
    "max_batch_prefill_tokens",
    "cuda_memory_fraction",
    "env",
    "launcher_args",
    "memory",
    "reasons",
    "warnings",
    "alternatives",
}
MEMORY_KEYS = {
    "gpu_memory_gib",
    "weights_per_gpu_gib",
    "kv_bytes_per_token_per_gpu",
    "kv_cache_tokens",
    "overhead_gib",
}


def test_plan_json_has_the_documented_fields():
    proc = tgiops("plan", "llama-3.1-70b-awq", "--instance-type", "g5.12xlarge", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data.keys() >= PLAN_KEYS
    assert data["memory"].keys() >= MEMORY_KEYS
    assert data["num_shard"] == 4 and data["quantize"] == "awq" and data["fits"] is True
    assert data["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.7"
    assert data["launcher_args"][:2] == [
        "--model-id",
        "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
    ]


def test_plan_human_output_explains_each_decision():
    proc = tgiops("plan", "llama-3.1-8b", "--gpu", "T4", "--gpus", "1")
    assert proc.returncode == 0, proc.stderr
    for needle in ("num_shard", "dtype: float16", "USE_FLASH_ATTENTION=false", "launcher"):
        assert needle in proc.stdout


def test_plan_that_does_not_fit_exits_1_and_still_prints_json():
    proc = tgiops("plan", "llama-3.1-70b-awq", "--instance-type", "g4dn.xlarge", "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["fits"] is False and data["alternatives"]


@pytest.mark.parametrize(
    "args,needle",
    [
        pytest.param(
            ["plan", "llama-3.1-70b-awk", "--instance-type", "g5.12xlarge"],
            "llama-3.1-70b-awq",
            id="unknown-alias-suggests-closest",
        ),
        pytest.param(
            ["plan", "llama-3.1-8b", "--instance-type", "g5.13xlarge"],
            "g5.13xlarge",
            id="unknown-instance-type",
        ),
        pytest.param(
            ["plan", "llama-3.1-70b", "--instance-type", "g5.48xlarge", "--num-shard", "3"],
            "does not divide",
            id="shards-not-dividing-heads",
        ),
        # No hardware flag at all ranks the instance table (tests/unit/test_recommend.py);
        # --gpus without --gpu names no hardware.
        pytest.param(["plan", "llama-3.1-8b", "--gpus", "2"], "--instance-type", id="no-hardware"),
        pytest.param(["plan", "--instance-type", "g5.xlarge"], "which model", id="no-model"),
        pytest.param(
            ["plan", "llama-3.1-8b", "--gpu", "RTX 6000 Ada"], "RTX 6000 Ada", id="unknown-gpu"
        ),
        pytest.param(
            ["plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", "--tgi-version", "9"],
            "--tgi-version",
            id="bad-version",
        ),
        pytest.param(
            ["plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", "--num-shard", "x"],
            "invalid int",
            id="non-numeric-shards",
        ),
        pytest.param(["deploy-everything"], "invalid choice", id="unknown-command"),
        pytest.param(
            ["plan", "--model-config", "/nonexistent/config.json", "--gpu", "A10G"],
            "/nonexistent/config.json",
            id="missing-model-config",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_value(args, needle):
    proc = tgiops(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_model_config_plans_any_model(tmp_path):
    config = {  # Mistral-7B-Instruct-v0.3's config.json (docs/models.md S20)
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32768,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = tgiops(
        "plan",
        "--model-config",
        str(path),
        "--model-id",
        "acme/my-mistral",
        "--instance-type",
        "g5.12xlarge",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["num_shard"] == 4
    assert data["memory"]["kv_bytes_per_token_per_gpu"] == 2 * 32 * 2 * 128 * 2
    assert "acme/my-mistral" in data["launcher_args"]


def test_user_catalog_adds_a_model(tmp_path):
    builtin = (ROOT / "models.yaml").read_text()
    import yaml

    entry = yaml.safe_load(builtin)["models"]["llama-3.1-8b"]
    entry["repo_id"] = "acme/llama-3.1-8b-finetune"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "models": {"acme-8b": entry}}))
    proc = tgiops("models", "--json", "--catalog", str(path))
    assert proc.returncode == 0, proc.stderr
    rows = {r["alias"]: r for r in json.loads(proc.stdout)}
    assert rows["acme-8b"]["repo_id"] == "acme/llama-3.1-8b-finetune"
    assert "llama-3.1-70b-awq" in rows


def test_models_lists_the_catalog():
    proc = tgiops("models")
    assert proc.returncode == 0
    for alias in ("llama-3.1-70b-awq", "gemma-2-9b", "mixtral-8x7b", "phi-3-mini"):
        assert alias in proc.stdout


def test_version_and_help():
    assert tgiops("--version").stdout.startswith("tgiops ")
    help_text = tgiops("--help").stdout
    assert "plan" in help_text and "models" in help_text
