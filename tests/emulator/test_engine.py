"""The emulator's decision and memory rules, called directly (no subprocess)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from tgi_emulator import engine, hub, memory, versions
from tgi_emulator.args import ClapError, parse_args
from tgi_emulator.gpus import parse_gpus, select_visible

from .conftest import A10G, A100_80, SCRIPTS, T4


def gpus(*specs):
    return tuple(parse_gpus(json.dumps(list(specs))))


def arch(repo_id: str) -> engine.ModelArch:
    repo = hub.load_repo(repo_id)
    return engine.arch_from_config(repo.config, repo.weight_bytes)


def request(version="3.3.7", model="meta-llama/Llama-3.1-8B-Instruct", devices=(A10G,), **kw):
    a = arch(model)
    return engine.LaunchRequest(
        profile=versions.get_profile(version),
        gpus=gpus(*devices),
        num_shard=kw.pop("num_shard", 1),
        arch=a,
        launcher_arch=a,
        **kw,
    )


def start(req):
    defaults = engine.compute_token_defaults(req)
    plan = engine.load_shards(req)
    assert isinstance(plan, engine.ShardPlan), plan
    return plan, engine.warmup(req, plan, defaults)


@pytest.mark.parametrize(
    ("model", "shards", "kib"),
    [  # docs/models.md note 1 (KiB per token at 16-bit)
        ("meta-llama/Llama-3.1-8B-Instruct", 1, 128),
        ("meta-llama/Llama-3.1-70B-Instruct", 1, 320),
        ("meta-llama/Llama-3.2-3B-Instruct", 1, 112),
        ("Qwen/Qwen2.5-7B-Instruct", 1, 56),
        ("google/gemma-2-9b-it", 1, 336),
        ("microsoft/Phi-3-mini-4k-instruct", 1, 384),
        ("meta-llama/Llama-3.1-405B-Instruct-FP8", 1, 504),
        # all 100 text layers: TGI allocates the paged cache for the cross-attention layers too
        ("meta-llama/Llama-3.2-90B-Vision-Instruct", 1, 400),
        ("meta-llama/Llama-3.1-70B-Instruct", 4, 80),
    ],
)
def test_kv_bytes_per_token(model, shards, kib):
    assert engine.kv_bytes_per_token(arch(model), shards, None) == kib * 1024
    assert engine.kv_bytes_per_token(arch(model), shards, "fp8_e4m3fn") == kib * 512


def test_capacity_follows_the_documented_formula_3x():
    req = request(max_batch_prefill_tokens=4096)
    plan, result = start(req)
    a, gpu = req.arch, req.gpus[0]
    kv = 2 * 32 * 8 * 128 * 2
    act = 4096 * 2 * (4 * 4096 + 4 * 14336)  # no prefill logits from v3.0
    cuda_free = gpu.memory_bytes - engine.CUDA_CONTEXT_BYTES - a.weight_bytes - 4096 * kv - act
    free = cuda_free - (1 - 1.0 * 0.90) * gpu.memory_bytes
    assert plan.attention == "flashinfer" and plan.block_size == 1
    assert result.max_batch_total_tokens == int(free // kv) + 4096
    assert (
        result.max_total_tokens == result.max_batch_total_tokens
    )  # chunking: min(capacity, 131072)
    assert result.max_input_tokens == result.max_total_tokens - 1


def test_legacy_wiggle_in_2_0():
    req = request(
        "2.0.4",
        model="mistralai/Mistral-7B-Instruct-v0.3",
        max_batch_prefill_tokens=1050,
        max_input_tokens=1000,
        max_total_tokens=2000,
    )
    plan, result = start(req)
    gpu = req.gpus[0]
    kv = 2 * 32 * 8 * 128 * 2
    # The warmup batch: requests of 1000 and 50 tokens, each reserving max_total - 1 = 1999
    # slots (memory.py, steps 1-2), not just the 1050 prefill tokens.
    blocks = 2 * -(-1999 // 16)
    act = 1050 * (2 * (4 * 4096 + 4 * 14336) + 4 * 32768)
    cuda_free = (
        gpu.memory_bytes
        - engine.CUDA_CONTEXT_BYTES
        - req.arch.weight_bytes
        - blocks * 16 * kv
        - act
    )
    assert plan.attention == "paged" and plan.block_size == 16
    assert result.max_batch_total_tokens == (int(0.95 * cuda_free // (kv * 16)) + blocks) * 16


def test_memory_knobs_move_capacity_the_right_way():
    base = start(request(max_batch_prefill_tokens=2048))[1].max_batch_total_tokens
    assert (
        start(request(max_batch_prefill_tokens=2048, kv_cache_dtype="fp8_e5m2"))[
            1
        ].max_batch_total_tokens
        > 1.9 * base
    )
    assert (
        start(request(max_batch_prefill_tokens=2048, cuda_memory_fraction=0.9))[
            1
        ].max_batch_total_tokens
        < base
    )
    assert (
        start(request(max_batch_prefill_tokens=2048, wiggle_room_env=0.95))[
            1
        ].max_batch_total_tokens
        > base
    )
    assert start(request(max_batch_prefill_tokens=8192))[1].max_batch_total_tokens < base


def test_prefill_logits_cost_before_3_0():
    """Warmup computes 16-bit logits for every prefill token before 3.0 (Addendum): two
    vocabulary-wide tensors up to 2.3 (log_softmax into a new one), one from 2.4.0 (in place,
    PR #2661), none from 3.0; a sharded head adds its local slice before the all-gather, and
    log_softmax over its transposed gathered logits makes 2.4.x's out= go through a contiguous
    temporary and a contiguous input copy (three tensors again)."""
    a = arch("meta-llama/Llama-3.1-8B-Instruct")
    vocab = a.vocab_size  # 128256, divisible by 2
    per_token = {
        v: engine.activation_bytes_per_token(memory.rules_for(v), a, 1)
        for v in ("2.0.4", "2.4.1", "3.3.7")
    }
    assert per_token["2.0.4"] - per_token["3.3.7"] == 4 * vocab
    assert per_token["2.4.1"] - per_token["3.3.7"] == 2 * vocab
    sharded = {
        v: engine.activation_bytes_per_token(memory.rules_for(v), a, 2) for v in ("2.4.1", "3.3.7")
    }
    assert sharded["2.4.1"] - sharded["3.3.7"] == 2 * 3 * vocab + 2 * (vocab // 2)
    # Qwen2.5 7B (vocab 152064) on one A10G with a 16384-token prefill: 2.0.4's 9.3 GiB of
    # logits do not fit; 3.x computes none.
    big = request(
        "2.0.4",
        model="Qwen/Qwen2.5-7B-Instruct",
        max_input_tokens=16383,
        max_total_tokens=16384,
        max_batch_prefill_tokens=16384,
    )
    failure = engine.warmup(big, engine.load_shards(big), engine.compute_token_defaults(big))
    assert isinstance(failure, engine.Failure) and "16384 prefill tokens" in failure.exception
    same_on_3x = request(
        "3.3.7",
        model="Qwen/Qwen2.5-7B-Instruct",
        max_input_tokens=16383,
        max_total_tokens=16384,
        max_batch_prefill_tokens=16384,
    )
    assert isinstance(start(same_on_3x)[1], engine.WarmupResult)


def test_flashdecoding_blocks_are_256():
    plan, result = start(request(model="microsoft/Phi-3-mini-4k-instruct", devices=(A100_80,)))
    assert plan.attention == "flashdecoding"
    assert result.max_batch_total_tokens % 256 == 0
    assert result.max_total_tokens == 4096  # capped by max_position_embeddings


def test_resolve_attention_rules():
    profile = versions.get_profile("3.3.7")
    phi3, mllama, llama = (
        arch("microsoft/Phi-3-mini-4k-instruct"),
        arch("meta-llama/Llama-3.2-90B-Vision-Instruct"),
        arch("tgiops-test/tiny-llama"),
    )
    assert engine.resolve_attention(profile, phi3, (7, 5), None, None, False)[:2] == (
        "paged",
        False,
    )
    assert engine.resolve_attention(profile, phi3, (8, 6), None, None, False)[:2] == (
        "flashdecoding",
        False,
    )
    assert engine.resolve_attention(profile, mllama, (9, 0), None, None, False)[:2] == (
        "flashdecoding",
        False,
    )
    assert engine.resolve_attention(profile, llama, (7, 5), None, None, False)[:2] == (
        "flashinfer",
        True,
    )
    assert engine.resolve_attention(profile, llama, (8, 0), "paged", None, False)[:2] == (
        "paged",
        False,
    )
    assert engine.resolve_attention(profile, None, (8, 0), None, None, False)[:2] == (
        "flashinfer",
        True,
    )
    assert (
        engine.resolve_attention(versions.get_profile("2.0.4"), llama, (8, 0), None, None, False)[0]
        == "paged"
    )


def test_the_launcher_reads_gemma3s_head_dim_from_text_config_from_3_2_1():
    """Config::get_head_dim: top level only at v3.2.0 (Gemma 3's fields are in text_config,
    so the launcher falls back from flashinfer), text_config.head_dim from v3.2.1 (PR #3116);
    Llama 3.2 Vision states it nowhere, so it falls back in every release."""
    gemma3, mllama = arch("google/gemma-3-27b-it"), arch("meta-llama/Llama-3.2-90B-Vision-Instruct")
    assert engine._launcher_head_dim("3.2.0", gemma3) is None
    assert engine._launcher_head_dim("3.2.1", gemma3) == 128
    assert engine._launcher_head_dim("3.3.7", gemma3) == 128
    assert engine._launcher_head_dim("3.3.7", mllama) is None
    profile = versions.get_profile("3.3.7")
    assert engine.resolve_attention(profile, gemma3, (9, 0), None, None, False)[0] == "flashinfer"
    without = replace(gemma3, text_config_head_dim=None)  # v3.3.0's Gemma 3 fallback: 256
    assert engine._launcher_head_dim("3.3.0", without) == 256
    assert engine._launcher_head_dim("3.2.3", without) is None


def test_token_defaults_per_version():
    d20 = engine.compute_token_defaults(request("2.0.4", model="Qwen/Qwen2.5-7B-Instruct"))
    assert (d20.max_input_tokens, d20.max_total_tokens, d20.max_batch_prefill_tokens) == (
        4095,
        4096,
        4145,
    )
    d24 = engine.compute_token_defaults(request("2.4.1", model="microsoft/Phi-3-mini-4k-instruct"))
    assert (d24.max_input_tokens, d24.max_total_tokens, d24.max_batch_prefill_tokens) == (
        None,
        None,
        4096,
    )
    no_config = replace(request("2.0.4"), launcher_arch=None)
    assert engine.compute_token_defaults(no_config).max_total_tokens == 4096


def test_awq_memory_uses_checkpoint_size_and_shards():
    req = request(
        model="hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
        devices=(A10G,) * 4,
        num_shard=4,
    )
    plan = engine.load_shards(req)
    assert plan.quantize == "awq" and plan.dtype == "float16"
    assert plan.weights_per_shard == 39_770_000_000 // 4


def test_qwen_awq_padding_allows_8_shards():
    ok = engine.load_shards(
        request(model="Qwen/Qwen2.5-72B-Instruct-AWQ", devices=(A10G,) * 8, num_shard=8)
    )
    assert isinstance(ok, engine.ShardPlan)
    unpadded = replace(arch("Qwen/Qwen2.5-72B-Instruct-AWQ"), intermediate_size=29568)
    failure = engine.load_shards(replace(request(devices=(A10G,) * 8, num_shard=8), arch=unpadded))
    assert isinstance(failure, engine.Failure) and "The choosen size 29568" in failure.exception


def test_t4_rules_per_version():
    tiny_t4 = {
        v: engine.load_shards(request(v, model="tgiops-test/tiny-llama", devices=(T4,)))
        for v in versions.SUPPORTED_VERSIONS
    }
    assert isinstance(tiny_t4["2.0.4"], engine.ShardPlan)  # flash-attn v1
    assert isinstance(tiny_t4["3.3.7"], engine.ShardPlan)  # flashinfer
    assert isinstance(tiny_t4["2.4.1"], engine.ShardPlan)
    assert tiny_t4["3.3.7"].attention == "flashinfer"


def test_image_env_and_entrypoint():
    assert versions.SUPPORTED_VERSIONS == ("2.0.4", "2.4.1", "3.3.7")
    assert versions.IMAGE_ENV["2.0.4"] == {
        "HUGGINGFACE_HUB_CACHE": "/data",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "PORT": "80",
        "TGI_EMULATOR_VERSION": "2.0.4",
    }
    for v in ("2.4.1", "3.3.7"):
        assert versions.IMAGE_ENV[v] == {
            "HF_HOME": "/data",
            "HF_HUB_ENABLE_HF_TRANSFER": "1",
            "NVIDIA_VISIBLE_DEVICES": "all",
            "PORT": "80",
            "TGI_EMULATOR_VERSION": v,
        }
    script = (SCRIPTS / "tgi_emulator/entrypoint.sh").read_text()
    assert 'exec python3 -m tgi_emulator "$@"' in script


def test_hub_index_matches_model_facts():
    repos = hub.list_repos()
    assert len(repos) >= 15
    for repo_id in repos:
        repo = hub.load_repo(repo_id)
        assert re.fullmatch(r"[0-9a-f]{40}", repo.sha)
        assert repo.weight_files and repo.weight_bytes > 0
    assert hub.load_repo("meta-llama/Llama-3.1-8B-Instruct").weight_bytes == 16_060_522_496
    assert arch("google/gemma-2-9b-it").head_dim == 256
    assert arch("Qwen/Qwen2.5-72B-Instruct-AWQ").intermediate_size == 29696
    assert hub.load_repo("meta-llama/Llama-3.1-8B-Instruct").gated is True
    assert hub.load_repo("microsoft/Phi-3-mini-4k-instruct").gated is False


def test_cache_dir_resolution():
    assert str(hub.resolve_cache_dir({"HF_HOME": "/data"}, None)) == "/data/hub"
    assert str(hub.resolve_cache_dir({"HUGGINGFACE_HUB_CACHE": "/data"}, None)) == "/data"
    assert str(hub.resolve_cache_dir({"HF_HOME": "/data"}, "/mnt/c")) == "/mnt/c"
    assert str(hub.resolve_cache_dir({"HF_HUB_CACHE": "/x", "HF_HOME": "/data"}, "/mnt/c")) == "/x"


def test_args_env_and_clap_behaviour():
    profile = versions.get_profile("3.3.7")
    args = parse_args(
        ["--num-shard", "2"],
        {"NUM_SHARD": "4", "TRUST_REMOTE_CODE": "false", "QUANTIZE": "awq", "PORT": "80"},
        profile,
    )
    assert (
        args.num_shard == 2
        and args.trust_remote_code is False
        and args.quantize == "awq"
        and args.port == 80
    )
    assert parse_args([], {"TRUST_REMOTE_CODE": "1"}, profile).trust_remote_code is True
    assert parse_args([], {"HOSTNAME": ""}, profile).hostname == "0.0.0.0"  # empty env = unset
    with pytest.raises(ClapError, match="cannot be used multiple times"):
        parse_args(["--port", "1", "--port", "2"], {}, profile)
    with pytest.raises(ClapError, match="value was not a boolean"):
        parse_args(["--sharded", "yes"], {}, profile)
    text = parse_args(["--api-key", "hunter2"], {}, profile).debug_text(True)
    assert "hunter2" not in text and 'api_key: Some("<redacted>")' in text


def test_cuda_visible_devices_selects_gpus():
    all_gpus = parse_gpus(json.dumps([A10G, T4, A100_80]))
    assert [g.name for g in select_visible(all_gpus, "2,0")] == [
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A10G",
    ]
    assert len(select_visible(all_gpus, None)) == 3
