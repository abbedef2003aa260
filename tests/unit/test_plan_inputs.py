"""What a new user hits (issue 11): bad input refused with the real range, misfits without a
launcher line, the catalog's quantized sibling offered, idle GPUs turned into replicas.

Through the real console script where the exit code is the point; the pure modules otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_tgiops as tgiops

from tgiops.core import hardware
from tgiops.core.catalog import quantized_siblings
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import CatalogError, PlanInputError
from tgiops.core.hf_config import model_from_hf_config
from tgiops.core.plan import Overrides, plan

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TGI = TgiEngine.release("3.3.7")


def llama_config(**changes: object) -> dict[str, object]:
    config: dict[str, object] = {
        "model_type": "llama",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "torch_dtype": "bfloat16",
    }
    config.update(changes)
    return config


# --- item 10: bad input accepted -------------------------------------------------------------


def test_model_id_with_an_alias_is_refused_naming_both():
    proc = tgiops(
        "plan", "llama-3.1-8b", "--model-id", "acme/other", "--instance-type", "g5.xlarge"
    )
    assert proc.returncode == 2
    assert "--model-id acme/other" in proc.stderr and "llama-3.1-8b" in proc.stderr


def test_a_thousand_gpus_is_refused_with_the_real_bound():
    proc = tgiops("plan", "llama-3.1-8b", "--gpu", "A10G", "--gpus", "1000")
    assert proc.returncode == 2
    assert "--gpus 1000" in proc.stderr and "1 to 8" in proc.stderr
    with pytest.raises(PlanInputError, match="one host"):
        hardware.inventory_from_spec("A10G", hardware.MAX_GPUS_PER_HOST + 1)
    assert hardware.inventory_from_spec("A10G", hardware.MAX_GPUS_PER_HOST).count == 8


@pytest.mark.parametrize("value", ["1e308", "inf", "2000"])
def test_absurd_gpu_memory_says_the_range_not_positive(value):
    proc = tgiops("plan", "llama-3.1-8b", "--gpu", "A10G", "--gpu-memory-gib", value)
    assert proc.returncode == 2
    assert "more than any GPU has" in proc.stderr and "at most 1024" in proc.stderr
    assert "must be a positive number" not in proc.stderr


def test_a_float32_checkpoint_is_not_called_bfloat16s_own_type():
    spec = model_from_hf_config(llama_config(torch_dtype="float32"), "c.json", repo_id="a/b")
    result = plan(spec, hardware.inventory_for_instance_type("g5.2xlarge"), TGI)
    (reason,) = [r for r in result.reasons if r.startswith("dtype:")]
    assert "float32" in reason and "casts the weights to bfloat16" in reason
    assert "own type" not in reason
    on_t4 = plan(spec, hardware.inventory_for_instance_type("g4dn.xlarge"), TGI)
    (reason,) = [r for r in on_t4.reasons if r.startswith("dtype:")]
    assert "float32" in reason and "float16" in reason


def test_an_unknown_model_type_warns_naming_tgis_list():
    spec = model_from_hf_config(llama_config(model_type="zebra"), "c.json", repo_id="a/b")
    result = plan(spec, hardware.inventory_for_instance_type("g5.2xlarge"), TGI)
    (warning,) = [w for w in result.warnings if "zebra" in w]
    assert "models/__init__.py" in warning and "llama" in warning and "AutoModel" in warning
    known = plan(CATALOG["llama-3.1-8b"], hardware.inventory_for_instance_type("g5.2xlarge"), TGI)
    assert not [w for w in known.warnings if "model_type" in w]


def test_known_model_types_follow_the_release():
    assert "gemma2" not in TgiEngine.release("2.0.4").model_types
    assert "gemma2" in TgiEngine.release("2.1.0").model_types
    assert "mllama" in TgiEngine.release("2.3.1").model_types
    assert "ssm" in TgiEngine.release("2.4.0").model_types and "ssm" not in TGI.model_types
    assert "llama4" in TGI.model_types and "phi3" not in TgiEngine.release("2.0.1").model_types


def test_a_context_beyond_tgis_token_counters_is_refused():
    with pytest.raises(CatalogError, match=r"max_position_embeddings.*4294967295"):
        model_from_hf_config(llama_config(max_position_embeddings=10**12), "c.json", "a/b")
    entry = (ROOT / "models.yaml").read_text()
    assert "max_position_embeddings: 4096\n" in entry
    huge = entry.replace(
        "max_position_embeddings: 4096\n", f"max_position_embeddings: {10**13}\n", 1
    )
    with pytest.raises(CatalogError, match="max_position_embeddings"):
        parse_catalog(huge, origin="mine.yaml")


# --- item 11: misfits ------------------------------------------------------------------------


def test_a_plan_that_does_not_fit_prints_no_launcher_line():
    text = tgiops("plan", "llama-3.1-70b", "--instance-type", "g4dn.xlarge")
    assert text.returncode == 1
    assert "DOES NOT FIT" in text.stdout and "--max-input-tokens" not in text.stdout
    assert "launcher " not in text.stdout
    data = json.loads(
        tgiops("plan", "llama-3.1-70b", "--instance-type", "g4dn.xlarge", "--json").stdout
    )
    assert data["fits"] is False and data["launcher_args"] == []


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--max-total-tokens", "1"], "at least 2"),
        (["--max-total-tokens", "200000"], "max_position_embeddings 131072"),
        (["--max-input-tokens", "131072"], "at most 131071"),
    ],
)
def test_an_impossible_token_limit_is_bad_input(flags, fragment):
    proc = tgiops("plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", *flags)
    assert proc.returncode == 2, proc.stdout
    assert fragment in proc.stderr


def test_a_small_limit_asked_for_is_served():
    result = plan(
        CATALOG["llama-3.1-8b"],
        hardware.inventory_for_instance_type("g5.xlarge"),
        TGI,
        Overrides(max_total_tokens=512),
    )
    assert result.fits and result.max_total_tokens == 512


def test_a_16_bit_model_that_fits_nowhere_near_offers_its_quantized_sibling():
    siblings = quantized_siblings(CATALOG, CATALOG["llama-3.1-70b"])
    assert {s.alias for s in siblings} == {"llama-3.1-70b-awq", "llama-3.1-70b-fp8"}
    assert quantized_siblings(CATALOG, CATALOG["llama-3.1-70b-awq"]) == []
    result = plan(
        CATALOG["llama-3.1-70b"],
        hardware.inventory_for_instance_type("g6e.xlarge"),
        TGI,
        instance_types=hardware.all_instance_types(),
        quantized_siblings=siblings,
    )
    assert not result.fits
    first = result.alternatives[0]
    assert "llama-3.1-70b-awq" in first.description and "fits here" in first.description
    assert first.flags == ("llama-3.1-70b-awq",)
    proc = tgiops("plan", "llama-3.1-70b", "--instance-type", "g5.xlarge", "--json")
    described = [a["description"] for a in json.loads(proc.stdout)["alternatives"]]
    assert any("llama-3.1-70b-awq" in d and "g6e.xlarge" in d for d in described), described


# --- item 16: idle GPUs ----------------------------------------------------------------------


def test_a_model_on_one_of_four_t4s_suggests_four_replicas():
    result = plan(
        CATALOG["llama-3.1-8b"], hardware.inventory_for_instance_type("g4dn.12xlarge"), TGI
    )
    assert result.fits and result.num_shard == 1
    (hint,) = [w for w in result.warnings if "replicas" in w]
    assert "3 of 4 GPUs stay idle" in hint
    for gpu in range(4):
        assert f"--gpu-devices {gpu} --unit tgiops-llama-3.1-8b-{gpu} --port {8080 + gpu}" in hint


def test_replicas_keep_the_plans_quantization():
    # Left to choose, one A100 would "fit" Llama 3.2 90B Vision in 4-bit NF4; a replica of the
    # unquantized 8-way plan needs 4 GPUs (44 GiB of weights each).
    result = plan(
        CATALOG["llama-3.2-90b-vision"], hardware.inventory_for_instance_type("p4de.24xlarge"), TGI
    )
    assert result.fits and result.num_shard == 8 and result.quantize is None
    (hint,) = [r for r in result.reasons if "replicas" in r]
    assert "fits on 4 GPU(s) unquantized as here" in hint, hint
    assert "--gpu-devices 0,1,2,3 --unit tgiops-llama-3.2-90b-vision-0" in hint
    assert "--gpu-devices 4,5,6,7 --unit tgiops-llama-3.2-90b-vision-1" in hint
    assert "--quantize" not in hint


def test_quantized_replicas_name_their_quantization():
    result = plan(
        CATALOG["llama-3.1-70b"],
        hardware.inventory_for_instance_type("g6e.12xlarge"),
        TGI,
        Overrides(quantize="fp8"),
    )
    assert result.fits and result.quantize == "fp8"
    (hint,) = [t for t in (*result.warnings, *result.reasons) if "replicas" in t]
    assert "in fp8 as here" in hint
    assert "`tgiops deploy llama-3.1-70b --quantize fp8 --host HOST --gpu-devices 0,1 " in hint


def test_a_model_that_needs_every_gpu_gets_no_replicas_hint():
    result = plan(
        CATALOG["llama-3.1-70b-awq"], hardware.inventory_for_instance_type("g5.12xlarge"), TGI
    )
    assert result.fits and result.num_shard == 4
    assert not [t for t in (*result.warnings, *result.reasons) if "replicas" in t]


def test_gpu_devices_narrow_the_inventory_deploy_plans_for():
    four = hardware.inventory_for_instance_type("g5.12xlarge")
    assert four.select((2,)).count == 1 and four.select((2,)).gpus[0].index == 2
    assert four.select(()) is four
    with pytest.raises(PlanInputError, match="no GPU with index 7"):
        four.select((0, 7))
