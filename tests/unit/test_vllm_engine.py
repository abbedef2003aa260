"""tgiops.core.engines.vllm: image tags, planning rules, overrides, args, unit; its memory model
(vllm_memory) and parsers (vllm_logs)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core.catalog import find_model
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines import vllm, vllm_logs, vllm_memory
from tgiops.core.engines.vllm import VllmOverrides, plan_vllm
from tgiops.core.errors import DoesNotFitError, InputError, PlanInputError
from tgiops.core.render import UnitOptions

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TEMPLATE = (ROOT / "unit_templates" / "vllm.service.j2").read_text()
PLANTED = "hf_PLANTEDtokenForTestsOnly0123456789abcd"


def inv(itype: str, driver: str | None = None) -> hardware.GpuInventory:
    return replace(hardware.inventory_for_instance_type(itype), driver_version=driver)


def make(alias="llama-3.1-8b", itype="g5.xlarge", driver=None, **overrides):
    return plan_vllm(find_model(CATALOG, alias), inv(itype, driver), VllmOverrides(**overrides))


# ---------------------------------------------------------------- image


@pytest.mark.parametrize(
    "version,driver,tag",
    [
        ("0.27.1", "580.105.08", "vllm/vllm-openai:v0.27.1"),
        ("0.27.1", "595.91", "vllm/vllm-openai:v0.27.1"),
        ("0.27.1", "570.86.15", "vllm/vllm-openai:v0.27.1-cu129"),
        ("0.27.1", "535.230.02", "vllm/vllm-openai:v0.27.1-cu129"),
        ("v0.20.0", "550.1", "vllm/vllm-openai:v0.20.0-cu129"),
        ("0.19.1", "535.1", "vllm/vllm-openai:v0.19.1"),  # before v0.20 plain = CUDA 12
        ("0.27.1", None, "vllm/vllm-openai:v0.27.1"),
    ],
)
def test_image_tag_follows_the_driver(version, driver, tag):
    assert vllm.image_for(version, driver).image == tag


def test_default_is_pinned_never_latest():
    assert "latest" not in vllm.image_for().image
    assert vllm.image_for().image.endswith(":v" + vllm.DEFAULT_VLLM_VERSION)


@pytest.mark.parametrize("driver", ["470.82.01", "515.65"])
def test_driver_too_old_for_any_tag_is_refused_with_fix(driver):
    with pytest.raises(InputError, match=rf"{driver}.*580.*525.*upgrade"):
        vllm.image_for("0.27.1", driver)


@pytest.mark.parametrize("bad", ["latest", "0.5.0", "1.x", ""])
def test_bad_versions_are_refused(bad):
    with pytest.raises(InputError, match="engine-version"):
        vllm.image_for(bad)


def test_plan_picks_the_tag_from_the_probed_driver():
    assert make(driver="570.1").image.endswith("-cu129")
    assert make(driver="580.1").image == "vllm/vllm-openai:v" + vllm.DEFAULT_VLLM_VERSION


# ---------------------------------------------------------------- TP and kernels


def test_tp_is_largest_count_dividing_heads():
    p = make("llama-3.1-70b-awq", "g5.12xlarge")
    assert p.tensor_parallel_size == 4
    assert any("tensor_parallel_size: 4" in r for r in p.reasons)


def test_tp_rules_include_kv_head_replication():
    m = find_model(CATALOG, "llama-3.1-8b")  # 32 heads, 8 KV heads
    assert vllm.tp_divides(m, 8) and vllm.tp_divides(m, 4)
    assert not vllm.tp_divides(m, 3)
    one_kv = replace(m, num_key_value_heads=2)
    assert vllm.tp_divides(one_kv, 8)  # 8 % 2 == 0: each KV head replicated 4x
    assert vllm_memory.kv_heads_per_gpu(one_kv, 8) == 1
    six = replace(m, num_attention_heads=48, num_key_value_heads=4)
    assert not vllm.tp_divides(six, 6)  # heads divide but 4 KV heads cannot be spread over 6


def test_tp_override_checked():
    with pytest.raises(InputError, match=r"--num-shard 3 .*valid here: \[1, 2, 4\]"):
        make("llama-3.1-8b", "g5.12xlarge", num_shard=3)
    with pytest.raises(InputError, match="only 1 GPU"):
        make(num_shard=2)
    assert make("llama-3.1-8b", "g5.12xlarge", num_shard=2).tensor_parallel_size == 2


def test_v100_is_refused_with_reason():
    with pytest.raises(InputError, match=r"7\.0: vLLM needs 7\.5 or higher.*--engine tgi"):
        make("phi-3-mini", "p3.2xlarge")


def test_t4_gets_float16_and_bf16_is_refused():
    p = make("phi-3-mini", "g4dn.xlarge")
    assert p.dtype == "float16" and "--dtype" in p.launch_args()
    with pytest.raises(InputError, match=r"bfloat16.*--dtype float16"):
        make("phi-3-mini", "g4dn.xlarge", dtype="bfloat16")


def test_awq_on_ampere_uses_marlin_and_on_turing_falls_back():
    p = make("llama-3.1-8b-awq", "g5.xlarge")
    assert p.quantization == "awq" and p.quantization_flag is None  # auto-detected
    assert any("awq_marlin" in r for r in p.reasons)
    t = make("llama-3.1-8b-awq", "g4dn.xlarge")
    assert any("Marlin kernels need sm80+" in r for r in t.reasons)
    assert t.dtype == "float16"


def test_fp8_needs_sm80_and_w8a8_sm89():
    with pytest.raises(InputError, match=r"FP8.*8\.0"):
        make("llama-3.1-8b", "g4dn.xlarge", quantize="fp8")
    a = make("llama-3.1-8b", "g5.xlarge", quantize="fp8")
    assert a.quantization_flag == "fp8" and any("weight-only" in r for r in a.reasons)
    lovelace = make("llama-3.1-8b", "g6.xlarge", quantize="fp8")
    assert any("W8A8" in r for r in lovelace.reasons)
    assert "--quantization" in make("llama-3.1-8b", "g5.xlarge", quantize="fp8").launch_args()


def test_awq_group_alignment_is_checked():
    m = replace(find_model(CATALOG, "llama-3.1-8b-awq"), intermediate_size=14336 + 64)
    with pytest.raises(InputError, match="128-column"):
        plan_vllm(m, inv("g5.12xlarge"), VllmOverrides(num_shard=2))


def test_awq_tp_is_chosen_to_keep_whole_groups():
    # 14592 = 128 x 114: whole groups at TP 2 (7296 = 128 x 57), not at TP 4 (3648).
    m = replace(find_model(CATALOG, "llama-3.1-8b-awq"), intermediate_size=14592)
    p = plan_vllm(m, inv("g5.12xlarge"))
    assert p.tensor_parallel_size == 2
    assert any("128-column awq groups" in r for r in p.reasons)
    assert any("2 GPU(s) stay idle" in w for w in p.warnings)
    assert vllm.groups_align(m, 2, "awq") and not vllm.groups_align(m, 4, "awq")
    assert vllm.groups_align(m, 4, None)  # 16-bit weights have no groups


# ---------------------------------------------------------------- memory


def test_batch_defaults_follow_get_batch_defaults():
    assert vllm_memory.batch_defaults("NVIDIA H100 80GB HBM3", 81559) == (8192, 1024)
    assert vllm_memory.batch_defaults("NVIDIA A100-SXM4-80GB", 81920) == (2048, 256)
    assert vllm_memory.batch_defaults("NVIDIA L40S", 46068) == (2048, 256)
    assert make("llama-3.1-8b", "p5.4xlarge").max_num_seqs == 1024


def test_kv_bytes_and_block_rounding():
    m = find_model(CATALOG, "llama-3.1-8b")  # 8 KV heads x 128 dim, 32 layers
    assert vllm_memory.kv_bytes_per_token_per_layer(m, 1) == 2 * 8 * 128 * 2
    assert vllm_memory.kv_bytes_per_token_per_layer(m, 4) == 2 * 2 * 128 * 2
    blocks, tokens = vllm_memory.kv_cache_tokens(10 * vllm_memory.GIB, 4096, 32)
    assert blocks == int(10 * vllm_memory.GIB // (16 * 4096) // 32) and tokens == blocks * 16
    assert tokens % 16 == 0
    assert vllm_memory.kv_cache_tokens(-1, 4096, 32) == (0, 0)


def test_kv_budget_is_utilization_of_total_minus_terms():
    p = make()
    mem = p.memory
    total = hardware.find_gpu_model("A10G").memory_mib
    assert mem.requested_mib == pytest.approx(total * 0.92, abs=1)
    assert mem.available_kv_mib == pytest.approx(
        mem.requested_mib - mem.weights_mib - mem.activations_mib - mem.non_torch_mib
    )
    layers = 32
    per_block = 16 * vllm_memory.kv_bytes_per_token_per_layer(p.model, 1)
    assert mem.num_blocks == int(mem.available_kv_mib * vllm_memory.MIB // per_block // layers)


def test_higher_utilization_more_batching_less_kv():
    base = make().memory.kv_cache_tokens
    assert make(gpu_memory_utilization=0.95).memory.kv_cache_tokens > base
    assert make(max_num_seqs=512, max_num_batched_tokens=4096).memory.kv_cache_tokens < base


def test_max_model_len_capped_by_positions_and_sized_for_requests():
    p = make("llama-3.1-8b", "p5.4xlarge")
    assert p.max_model_len <= p.model.max_position_embeddings
    a = make()
    assert a.max_model_len * 4 <= a.memory.kv_cache_tokens
    assert make(full_length_requests=1).max_model_len > a.max_model_len
    phi = make("phi-3-mini", "g5.xlarge")  # 4096 positions
    assert phi.max_model_len == 4096


def test_max_model_len_above_kv_does_not_fit_and_names_the_fix():
    p = make(max_model_len=120000)
    assert not p.fits and "--max-model-len" in (p.problem or "")
    assert p.launch_args() == ()
    with pytest.raises(DoesNotFitError, match=r"use --max-model-len \d+ or less"):
        vllm.require_fit(p)


def test_weights_that_leave_no_kv_do_not_fit():
    p = make("llama-3.1-8b", "g4dn.xlarge")
    assert not p.fits and "No available memory for the cache blocks" in (p.problem or "")


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization 1.5"),
        ({"gpu_memory_utilization": 0.0}, "--gpu-memory-utilization 0"),
        ({"max_model_len": 0}, "--max-model-len 0"),
        ({"max_model_len": 10**7}, "--max-model-len 10000000 is above"),
        ({"max_num_seqs": -1}, "--max-num-seqs -1"),
        ({"max_num_batched_tokens": 0}, "--max-num-batched-tokens 0"),
        ({"max_num_seqs": 512, "max_num_batched_tokens": 256}, "below --max-num-seqs 512"),
        ({"max_num_seqs": 4096}, "below --max-num-seqs 4096"),  # defaults are raised instead
        ({"quantize": "exl2"}, "--quantize 'exl2'"),
        ({"quantize": "awq"}, "--quantize awq: vLLM only runs awq from a checkpoint"),
        ({"dtype": "int8"}, "--dtype 'int8'"),
        ({"num_shard": 0}, "--num-shard 0"),
    ],
)
def test_bad_overrides_raise_input_error_naming_value(kw, needle):
    if kw == {"max_num_seqs": 4096}:
        p = make(**kw)  # batched defaults to max(2048, 4096): vLLM's own rule holds
        assert p.max_num_batched_tokens >= 4096
        return
    with pytest.raises(InputError) as exc:
        make(**kw)
    assert needle in str(exc.value)


def test_enforce_eager_is_passed():
    assert "--enforce-eager" in make(enforce_eager=True).launch_args()
    assert "--enforce-eager" not in make().launch_args()


def test_free_memory_check():
    p = make()
    gpu = hardware.inventory_for_instance_type("g5.xlarge").gpus[0]
    busy = hardware.GpuInventory((replace(gpu, memory_used_mib=4000),))
    why = vllm.free_memory_problem(p, busy)
    assert why and "less than desired GPU memory utilization" in why and "0.82" in why
    idle = hardware.GpuInventory((replace(gpu, memory_used_mib=300),))
    assert vllm.free_memory_problem(p, idle) is None


# ---------------------------------------------------------------- args and unit


def test_launch_args_have_every_flag_and_no_secret():
    args = make("llama-3.1-70b-awq", "g5.12xlarge").launch_args()
    joined = " ".join(args)
    for flag in (
        "--model hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
        "--served-model-name llama-3.1-70b-awq",
        "--tensor-parallel-size 4",
        "--gpu-memory-utilization 0.92",
        "--max-model-len",
        "--max-num-seqs 256",
        "--max-num-batched-tokens 2048",
        "--dtype float16",
        "--port 8000",
        "--host 0.0.0.0",
    ):
        assert flag in joined
    assert "--quantization" not in joined  # auto-detected from the checkpoint
    assert "HF_TOKEN" not in joined and "api-key" not in joined


VARIANTS = [
    pytest.param(
        make("llama-3.1-70b-awq", "g5.12xlarge"),
        UnitOptions("tgiops-llama-70b", secret_env=("HF_TOKEN",)),
        id="awq-tp4-loopback",
    ),
    pytest.param(
        make("phi-3-mini", "g4dn.xlarge"),
        UnitOptions(
            "tgiops-phi",
            port=9000,
            bind_address="0.0.0.0",
            secret_env=("HF_TOKEN", "VLLM_API_KEY"),
            gpu_devices=(0,),
        ),
        id="turing-public-api-key",
    ),
    pytest.param(
        make("llama-3.1-8b", "g6.xlarge"),
        UnitOptions(
            "tgiops-offline",
            extra_env=vllm.unit_env(offline=True),
            data_dir="/opt/dlami/nvme",
            image_digest="sha256:" + "a" * 64,
        ),
        id="offline-relaunch-digest",
    ),
]


@pytest.fixture(scope="module")
def unit_path_with_docker_stub(tmp_path_factory) -> str:
    stubs = tmp_path_factory.mktemp("stubs")
    (stubs / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    return f"{stubs}:"


@pytest.mark.parametrize("the_plan,options", VARIANTS)
def test_unit_passes_systemd_analyze_verify(
    the_plan, options, tmp_path, unit_path_with_docker_stub
):
    if not shutil.which("systemd-analyze") or not Path("/usr/bin/docker").exists():
        pytest.fail("systemd-analyze and /usr/bin/docker are needed: run scripts/setup")
    text = vllm.render_unit(the_plan, options, TEMPLATE, tgiops_version="test")
    assert text.startswith("# Managed by tgiops")
    unit = tmp_path / f"{options.unit_name}.service"
    unit.write_text(text)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": unit_path_with_docker_stub}
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_unit_exec_line_round_trips_and_keeps_secrets_out():
    p = make("llama-3.1-70b-awq", "g5.12xlarge")
    opts = UnitOptions("tgiops-x", secret_env=("HF_TOKEN", "VLLM_API_KEY"))
    text = vllm.render_unit(p, opts, TEMPLATE, tgiops_version="test")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_line.removeprefix("ExecStart="))
    assert argv == vllm.docker_run_args(p, opts)
    for needle in (
        "--shm-size 16g",
        "-p 127.0.0.1:8080:8000",
        "-v /var/lib/tgiops/data/cache:/root/.cache/huggingface ",
        "-v /var/lib/tgiops/data/cache/vllm:/root/.cache/vllm ",
        "-e HF_TOKEN ",
        "-e VLLM_API_KEY ",
        "vllm/vllm-openai:v" + vllm.DEFAULT_VLLM_VERSION + " --model",
    ):
        assert needle in exec_line
    assert "EnvironmentFile=/etc/tgiops/tgiops-x.env" in text
    assert PLANTED not in text and "HF_HUB_OFFLINE" not in text


def test_offline_unit_sets_hf_hub_offline():
    p = make()
    opts = UnitOptions("tgiops-y", extra_env=vllm.unit_env(offline=True))
    assert "-e HF_HUB_OFFLINE=1" in " ".join(vllm.docker_run_args(p, opts))


# ---------------------------------------------------------------- metrics, logs, diagnosis

TWO_LINE = """\
INFO 05-07 05:30:52 [gpu_worker.py:460] Available KV cache memory: 10.55 GiB
INFO 05-07 05:30:53 [kv_cache_utils.py:1087] GPU KV cache size: 1,234,560 tokens
INFO [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 37.68x
"""
ONE_LINE = (
    "(EngineCore pid=43) INFO [kv_cache_utils.py:1300] GPU KV cache size: 34,952 tokens, "
    "Maximum concurrency for 8,192 tokens per request: 4.27x\n"
)


def test_startup_log_two_line_format():
    s = vllm_logs.parse_startup_log(TWO_LINE)
    assert s.kv_cache_tokens == 1234560 and s.available_kv_gib == 10.55
    assert (s.concurrency_tokens, s.max_concurrency) == (32768, 37.68)


def test_startup_log_one_line_format():
    s = vllm_logs.parse_startup_log(ONE_LINE)
    assert (s.kv_cache_tokens, s.concurrency_tokens, s.max_concurrency) == (34952, 8192, 4.27)


def test_startup_log_kv_errors():
    old = vllm_logs.parse_startup_log(
        "ValueError: The model's max seq len (32768) is larger than the maximum number of "
        "tokens that can be stored in KV cache (16832). Try increasing `gpu_memory_utilization`"
    )
    assert (old.max_seq_len, old.max_len_that_fits) == (32768, 16832)
    new = vllm_logs.parse_startup_log(
        "ValueError: To serve at least one request with the model's max seq len (196608), "
        "23.25 GiB KV cache is needed, which is larger than the available KV cache memory "
        "(22.5 GiB). Based on the available memory, the estimated maximum model length is 190272."
    )
    assert (new.max_seq_len, new.max_len_that_fits) == (196608, 190272)


@pytest.mark.parametrize(
    "journal,needle",
    [
        (
            "ValueError: The model's max seq len (32768) is larger than the maximum number of "
            "tokens that can be stored in KV cache (16832).",
            "--max-model-len 16832 or less",
        ),
        (
            "ValueError: To serve at least one request with the model's max seq len (131072), "
            "16.0 GiB KV cache is needed, which is larger than the available KV cache memory "
            "(9.1 GiB). Based on the available memory, the estimated maximum model length is "
            "74560.",
            "--max-model-len 74560 or less",
        ),
        (
            "ValueError: Free memory on device cuda:0 (65.52/119.63 GiB) on startup is less "
            "than desired GPU memory utilization (0.92, 110.06 GiB).",
            "not enough free GPU memory at start",
        ),
        (
            "INFO Capturing CUDA graphs (mixed prefill-decode, PIECEWISE)\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.",
            "capturing CUDA graphs: deploy with --enforce-eager",
        ),
        (
            'File "gpu_worker.py", line 250, in determine_available_memory\n'
            "    self.model_runner.profile_run()\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.91 GiB.",
            "profile run: lower --max-num-batched-tokens",
        ),
        (
            "ValueError: Bfloat16 is only supported on GPUs with compute capability of at "
            "least 8.0. Your Tesla T4 GPU has compute capability 7.5.",
            "--dtype float16",
        ),
        (
            "ValueError: The quantization method awq_marlin is not supported for the current "
            "GPU. Minimum capability: 80. Current capability: 75.",
            "quantization kernel needs a newer GPU",
        ),
        (
            "ValueError: Total number of attention heads (32) must be divisible by tensor "
            "parallel size (3).",
            "let tgiops choose --num-shard",
        ),
        (
            "RuntimeError: CUDA error: no kernel image is available for execution on the device",
            "compute capability 7.5+",
        ),
        ("ValueError: No available memory for the cache blocks. Try increasing", "more GPUs"),
    ],
)
def test_diagnoses(journal, needle):
    diagnosis = vllm_logs.diagnose_journal("INFO starting\n" + journal + "\nINFO exiting\n")
    assert diagnosis and needle in diagnosis


def test_no_diagnosis_for_a_clean_log():
    assert vllm_logs.diagnose_journal(TWO_LINE) is None


def test_every_catalog_model_on_every_instance_type_plans_or_refuses_cleanly():
    """No model x instance type pair raises anything but InputError, and every plan is
    self-consistent: a fitting plan's length fits its KV tokens and its positions, and only
    a fitting plan has launch args."""
    for model in CATALOG.values():
        for itype in hardware.all_instance_types():
            try:
                p = plan_vllm(model, hardware.inventory_for_instance_type(itype.name))
            except InputError:
                continue
            assert p.tensor_parallel_size <= itype.gpu_count
            assert vllm.tp_divides(model, p.tensor_parallel_size)
            if p.fits:
                assert p.max_model_len <= model.max_position_embeddings
                assert p.max_model_len <= p.memory.kv_cache_tokens
                assert p.memory.kv_cache_tokens % vllm_memory.BLOCK_SIZE == 0
                assert p.launch_args()[:2] == ("--model", model.repo_id)
            else:
                assert p.problem and p.launch_args() == ()
                with pytest.raises(DoesNotFitError):
                    vllm.require_fit(p)


def test_llama_vision_is_refused_by_name_and_tgi_is_named():
    # vLLM >= 0.11.0 (the oldest tgiops plans) has no mllama: PR #24907 (docs/vllm.md §1.6).
    vision = find_model(CATALOG, "llama-3.2-90b-vision")
    with pytest.raises(PlanInputError, match=r"vLLM cannot serve it.*PR #24907.*TGI serves it"):
        plan_vllm(vision, inv("p4de.24xlarge"))
    with pytest.raises(PlanInputError, match=r"llama-3\.2-90b-vision"):
        vllm.VllmEngine.release().require_servable(vision)
    # No other catalog model is refused for itself.
    for spec in CATALOG.values():
        if spec.model_type != "mllama":
            vllm.VllmEngine.release().require_servable(spec)
