"""vLLM behind the engine seam (issue 15): VllmEngine, the registry, and plan --engine vllm."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tgiops.core import record
from tgiops.core.catalog import find_model
from tgiops.core.engine_names import ENGINE_NAMES
from tgiops.core.engines import Engine, engine_for, engine_of_image
from tgiops.core.engines.vllm import DEFAULT_VLLM_VERSION, VllmEngine, VllmOverrides
from tgiops.core.errors import InputError
from tgiops.core.hardware import inventory_for_instance_type
from tgiops.core.plan import Overrides
from tgiops.core.request import DeployRequest, plan_request
from tgiops.edges import resources

NOW = datetime(2026, 12, 4, 8, 0, 0, tzinfo=timezone.utc)


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


# --- records, requests and `tgiops plan --engine vllm` ----------------------------------------


CATALOG = resources.load_catalog(environ={})


def vllm_request(**changes: object) -> DeployRequest:
    return DeployRequest(
        model=find_model(CATALOG, "llama-3.1-70b-awq"),
        engine=VllmEngine.release("0.20.0"),
        overrides=VllmOverrides(max_model_len=8192, enforce_eager=True),
        port=8081,
        token_secret="team/hf-token",
        api_key_secret="team/vllm-key",
        **changes,  # type: ignore[arg-type]
    )


def test_a_vllm_record_round_trips_and_rebuilds_the_request() -> None:
    req = vllm_request()
    inventory = inventory_for_instance_type("g5.12xlarge")
    inventory = type(inventory)(**{**inventory.__dict__, "driver_version": "550.54.15"})
    the_plan = plan_request(req, inventory)
    assert the_plan.fits and the_plan.image == "vllm/vllm-openai:v0.20.0-cu129"
    rec = record.from_deploy(req, the_plan, tgiops_version="9.9.9", now=NOW)
    data = json.loads(rec.to_json())
    assert data["spec"]["engine"] == "vllm" and data["spec"]["engine_version"] == "0.20.0"
    assert "tgi_version" not in data["spec"]
    assert data["spec"]["overrides"] == {"enforce_eager": True, "max_model_len": 8192}
    assert data["deployed"]["image"] == "vllm/vllm-openai:v0.20.0-cu129"
    again = record.DeploymentRecord.from_json(rec.to_json(), origin="test")
    assert again == rec
    rebuilt = again.to_request(CATALOG, offline=True)
    assert rebuilt.engine.name == "vllm" and rebuilt.engine.version_text == "0.20.0"
    assert rebuilt.overrides == req.overrides


def test_a_record_without_engine_is_tgi() -> None:
    spec = record.DeploymentSpec.from_dict(
        {
            "model": "phi-3-mini",
            "repo_id": "microsoft/Phi-3-mini-4k-instruct",
            "tgi_version": "3.3.5",
            "unit": "tgiops-phi-3-mini",
        },
        origin="old.json",
    )
    assert spec.engine == "tgi" and spec.engine_version == "3.3.5"
    assert "engine" not in spec.as_dict()  # TGI records are written as before


def test_a_vllm_record_refuses_tgi_overrides_and_bad_versions() -> None:
    base = {"model": "phi-3-mini", "repo_id": "microsoft/Phi-3-mini-4k-instruct",
            "engine": "vllm", "engine_version": "0.20.0", "unit": "tgiops-phi-3-mini"}  # fmt: skip
    with pytest.raises(InputError, match="max_batch_prefill_tokens"):
        record.DeploymentSpec.from_dict(
            {**base, "overrides": {"max_batch_prefill_tokens": 4096}}, origin="x.json"
        )
    with pytest.raises(InputError, match="engine_version"):
        record.DeploymentSpec.from_dict({**base, "engine_version": 3}, origin="x.json")
    with pytest.raises(InputError, match="engine"):
        record.DeploymentSpec.from_dict({**base, "engine": "sglang"}, origin="x.json")


def test_a_request_pairs_engine_and_overrides() -> None:
    plain = DeployRequest(model=find_model(CATALOG, "llama-3.1-8b"), engine=VllmEngine.release())
    assert isinstance(plain.overrides, VllmOverrides)
    with pytest.raises(InputError, match="another engine"):
        DeployRequest(
            model=find_model(CATALOG, "llama-3.1-8b"),
            engine=VllmEngine.release(),
            overrides=Overrides(max_total_tokens=4096),
        )


def tgiops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_plan_engine_vllm_json_keeps_the_plan_shape() -> None:
    tgi = tgiops("plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", "--json")
    out = tgiops("plan", "llama-3.1-8b", "--engine", "vllm", "--instance-type", "g5.xlarge",
                 "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    a, b = json.loads(tgi.stdout), json.loads(out.stdout)
    assert set(a) <= set(b) and set(a["memory"]) == set(b["memory"])
    assert b["engine"] == {"name": "vllm", "version": DEFAULT_VLLM_VERSION}
    assert b["image"] == f"vllm/vllm-openai:v{DEFAULT_VLLM_VERSION}"
    # the predicted `GPU KV cache size: N tokens`, and room for 4 full-length requests
    kv = b["memory"]["kv_cache_tokens"]
    assert kv > 4 * b["vllm"]["max_model_len"] >= 4 * 1024
    assert "--served-model-name" in b["launcher_args"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--engine", "vllm", "--max-total-tokens", "4096"], "--max-model-len"),
        (["--max-model-len", "4096"], "--engine vllm"),
        (["--engine", "vllm", "--tgi-version", "3.3.5"], "--engine-version"),
        (["--engine", "vllm", "--engine-version", "0.5.0"], "0.11.0"),
        (["--engine", "vllm", "--gpu-memory-utilization", "1.5"], "at most 1"),
    ],
)
def test_engine_flags_are_checked(args: list[str], needle: str) -> None:
    out = tgiops("plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", *args)
    assert out.returncode == 2 and needle in out.stderr, out.stderr


def test_tgi_version_keeps_working_and_equals_engine_version() -> None:
    a = tgiops("plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", "--tgi-version", "3.3.5",
               "--json")  # fmt: skip
    b = tgiops("plan", "llama-3.1-8b", "--instance-type", "g5.xlarge", "--engine", "tgi",
               "--engine-version", "3.3.5", "--json")  # fmt: skip
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert json.loads(a.stdout)["engine"] == {"name": "tgi", "version": "3.3.5"}


# --- MXFP4 (gpt-oss) ---------------------------------------------------------------------------


def test_mxfp4_weighs_experts_at_4_25_bits_and_the_rest_at_16() -> None:
    from tgiops.core.engines.vllm_memory import mxfp4_weight_bytes

    model = find_model(CATALOG, "gpt-oss-20b", "vllm")
    experts = 24 * 32 * 3 * 2880 * 2880  # layers x experts x (gate, up, down) x hidden x inter
    expected = experts * 4.25 / 8 + (model.parameters_b * 1e9 - experts) * 2
    assert mxfp4_weight_bytes(model) == pytest.approx(expected)
    assert 12 < expected / 2**30 < 14  # vs ~39 GiB if the experts were 16-bit


@pytest.mark.parametrize(
    ("instance_type", "kernel"),
    [("p5.48xlarge", "native MXFP4"), ("g5.xlarge", "Marlin"), ("g4dn.xlarge", None)],
)
def test_mxfp4_kernels_by_compute_capability(instance_type: str, kernel: str | None) -> None:
    from tgiops.core.engines.vllm import plan_vllm

    model = find_model(CATALOG, "gpt-oss-20b", "vllm")
    inventory = inventory_for_instance_type(instance_type)
    if kernel is None:
        with pytest.raises(InputError, match=r"8\.0\+"):
            plan_vllm(model, inventory)
        return
    plan = plan_vllm(model, inventory)
    assert plan.fits and plan.quantization == "mxfp4" and plan.quantization_flag is None
    assert any(kernel in reason for reason in plan.reasons)


def test_tgi_still_refuses_gpt_oss_by_name() -> None:
    from tgiops.core.errors import PlanInputError

    with pytest.raises(PlanInputError, match="vLLM"):
        find_model(CATALOG, "gpt-oss-20b")
