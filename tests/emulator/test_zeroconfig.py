"""The emulator's launcher picks the prefill budget TGI picks when the flag is not passed.

scripts/tgi_emulator/zeroconfig.py, from launcher/src/main.rs (@v2.4.1 l.1732-1742; @v3.3.7
compute_optimal, vram_maximum, the card table and l.2114-2154). The figures are worked out by
hand in the comments from the real config.json files the emulator's hub holds.
"""

from __future__ import annotations

import json

from tgi_emulator import engine, hub, versions
from tgi_emulator.gpus import parse_gpus

from .conftest import A10G, T4

A6000 = {"name": "NVIDIA RTX A6000", "memory_mib": 49140, "compute_capability": "8.6"}
L4 = {"name": "NVIDIA L4", "memory_mib": 23034, "compute_capability": "8.9"}


def defaults(version: str, model: str, gpu: dict, shards: int = 1, **env: float):
    repo = hub.load_repo(model)
    assert repo is not None
    arch = engine.arch_from_config(repo.config, repo.weight_bytes)
    found = engine.compute_token_defaults(
        engine.LaunchRequest(
            profile=versions.get_profile(version),
            gpus=tuple(parse_gpus(json.dumps([gpu] * shards))),
            num_shard=shards,
            arch=arch,
            launcher_arch=arch,
            **env,
        )
    )
    assert isinstance(found, engine.TokenDefaults), found
    return found.max_batch_prefill_tokens, [message for _, message in found.logs]


def test_a_card_in_tgis_table_gets_its_flop_budget():
    # Llama 3.1 8B: (3 x 2 x 32 x 128 x 4096 + 2 x 2 x 8 x 128 x 4096 + 6 x 4096 x 14336) x 32
    # = 15032385536 FLOP per token; an A10G's 125e12 / that = 8315.3. The VRAM cap, (23028 MiB x
    # 0.95 - 14449770496) // 260096 = 32639, is larger.
    prefill, logs = defaults("3.3.7", "meta-llama/Llama-3.1-8B-Instruct", A10G)
    assert prefill == 8315
    assert logs[-1] == "Default `max_batch_prefill_tokens` to 8315"
    assert not any("Unkown" in line or "Reducing" in line for line in logs)
    # Two L4s: 2 x 121e12 / 15032385536 = 16098.
    assert defaults("3.3.7", "meta-llama/Llama-3.1-8B-Instruct", L4, shards=2)[0] == 16098


def test_tesla_t4_is_unknown_to_the_table_and_the_vram_cap_applies():
    # nvidia-smi's "Tesla T4" -> "tesla-t4", not TGI's "nvidia-t4": 4096, then
    # (15360 MiB x 0.95 - 14449770496) // 260096 = 3272.
    prefill, logs = defaults("3.3.7", "meta-llama/Llama-3.1-8B-Instruct", T4)
    assert prefill == 3272
    assert "Unkown compute for card tesla-t4" in logs
    assert (
        "Reducing the max batch prefill from 4096 to 3272 because there is not enough VRAM to "
        "support it." in logs
    )
    # TGI_WIGGLE_ROOM moves the launcher's cap too: (15360 MiB x 0.80 - 14449770496) < 0, so
    # the model "does not fit" and 4096 stands.
    prefill, logs = defaults("3.3.7", "meta-llama/Llama-3.1-8B-Instruct", T4, wiggle_room_env=0.80)
    assert prefill == 4096
    assert any(line.startswith("Not enough VRAM to run the model: Available:") for line in logs)


def test_a_quantized_checkpoint_is_not_capped_by_vram():
    # AWQ: the FLOP budget (config.flop ignores quantization), no VRAM step (model_vram None).
    prefill, logs = defaults("3.3.7", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", T4)
    assert prefill == 4096 and "Unkown compute for card tesla-t4" in logs
    assert not any("Reducing" in line for line in logs)
    assert defaults("3.3.7", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", A10G)[0] == 8315


def test_a_config_the_launcher_cannot_parse_leaves_4096():
    # quant_method fbgemm_fp8 is no variant of the launcher's Quantization enum: no config,
    # so no card lookup, no context cap and no VRAM step.
    prefill, logs = defaults("3.3.7", "meta-llama/Llama-3.1-405B-Instruct-FP8", A10G)
    assert prefill == 4096
    assert logs == ["Default `max_batch_prefill_tokens` to 4096"]


def test_gemma3_on_an_unknown_card_gets_its_own_default():
    # A VLM has no FLOP figure; Gemma 3's default is 8000 from v3.2.0, and its config nests
    # the text fields, so neither the context nor the VRAM step applies.
    prefill, logs = defaults("3.3.7", "google/gemma-3-27b-it", A6000, shards=2)
    assert prefill == 8000
    assert logs == [
        "Unkown compute for card nvidia-rtx-a6000",
        "Default `max_batch_prefill_tokens` to 8000",
    ]


def test_2_4_1_takes_4096_capped_at_the_context():
    assert defaults("2.4.1", "meta-llama/Llama-3.1-8B-Instruct", A10G)[0] == 4096
    # Llama 2 70B GPTQ: max_position_embeddings 2048 (and no FLOP step before 3.0).
    assert defaults("2.4.1", "TheBloke/Llama-2-70B-chat-GPTQ", A10G)[0] == 2048


def test_the_launcher_prints_its_choice_before_the_shards_start(emulators):
    """The process, not just the rule: TGI's launcher line, before the shards start."""
    emulator = emulators(model_id="Qwen/Qwen2.5-7B-Instruct", gpus=[A10G])
    emulator.wait_ready()
    chosen = next(
        i for i, line in enumerate(emulator.lines) if "Default `max_batch_prefill" in line
    )
    started = next(i for i, line in enumerate(emulator.lines) if "Starting shard" in line)
    assert chosen < started
    # Qwen2.5 7B: (3 x 2 x 28 x 128 x 3584 + 2 x 2 x 4 x 128 x 3584 + 6 x 3584 x 18944) x 28
    # = 13769900032 FLOP per token; an A10G's 125e12 / that = 9077.8. Its context (32768) and
    # the launcher's VRAM estimate (~37900 tokens) are larger.
    assert emulator.lines[chosen].endswith("Default `max_batch_prefill_tokens` to 9077")
