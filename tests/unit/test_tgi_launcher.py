"""TGI 3.x's zero-config prefill budget (tgiops/core/engines/tgi_launcher.py).

Each expected figure is worked out by hand in the comment next to it from the rule in
launcher/src/main.rs (the module docstring cites the lines), not read back from the code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi_launcher import (
    LauncherConfig,
    card_f16_flops,
    launcher_config,
    zero_config_prefill_tokens,
)

REPO = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((REPO / "models.yaml").read_text(encoding="utf-8"), "models.yaml")
V300, V302, V310 = (3, 0, 0), (3, 0, 2), (3, 1, 0)
V311, V320, V337 = (3, 1, 1), (3, 2, 0), (3, 3, 7)


def _prefill(
    alias: str, version: tuple[int, int, int], name: str, mib: int, shards: int = 1
) -> int:
    config = launcher_config(CATALOG[alias])
    assert config is not None
    return zero_config_prefill_tokens(
        version, config, nvidia_smi_name=name, gpu_memory_mib=mib, num_shard=shards
    )


def test_llama_8b_on_an_l4_takes_the_flop_budget():
    # Llama 3.1 8B per token: per layer q, attention and o 3 x 2 x 32 x 128 x 4096 = 100663296,
    # k and v 2 x 2 x 8 x 128 x 4096 = 16777216, MLP 6 x 4096 x 14336 = 352321536; x 32 layers
    # = 15032385536 FLOP. An L4's 121e12 / 15032385536 = 8049.3 -> 8049; the VRAM cap (about
    # 32k tokens) and max_position_embeddings (131072) are larger.
    assert _prefill("llama-3.1-8b", V300, "NVIDIA L4", 23034) == 8049
    # Two shards double the FLOP/s (and the memory): 16098.
    assert _prefill("llama-3.1-8b", V300, "NVIDIA L4", 23034, shards=2) == 16098


def test_a_card_nvidia_smi_names_otherwise_falls_back_to_4096_then_the_vram_cap():
    # nvidia-smi says "Tesla T4": key "tesla-t4", not the table's "nvidia-t4". 4096, then the
    # VRAM cap: 15360 MiB x 0.95 = 15300820992 B (exact in f32); model_vram for Llama 3.1 8B =
    # 2 x ((3 x 14336 x 4096 + (32 + 16) x 128 + 32 x 128 x 4096) x 32 + 2 x 4096 x 128256)
    # = 14449770496 B; token_vram = 8 x 2 x 128 x 2 x 32 + (14336 + 7168) x 6 = 260096 B;
    # (15300820992 - 14449770496) // 260096 = 3272.
    assert card_f16_flops(V337, "Tesla T4") is None
    assert _prefill("llama-3.1-8b", V337, "Tesla T4", 15360) == 3272
    # The table's own key, if a driver printed it, would give 65e12 / 15032385536 = 4324,
    # still capped at 3272 by memory.
    assert _prefill("llama-3.1-8b", V337, "NVIDIA T4", 15360) == 3272


def test_the_card_table_grows_with_the_release():
    assert card_f16_flops(V300, "NVIDIA A40") is None
    assert card_f16_flops(V302, "NVIDIA A40") == 149 * 10**12
    assert card_f16_flops(V302, "NVIDIA H200") is None
    assert card_f16_flops(V310, "NVIDIA H200") == 989 * 10**12
    # H100 SXM prints "NVIDIA H100 80GB HBM3", known from 3.0.0; the PCIe card never matches.
    assert card_f16_flops(V300, "NVIDIA H100 80GB HBM3") == 900 * 10**12
    assert card_f16_flops(V337, "NVIDIA H100 PCIe") is None


def test_a_quantized_checkpoint_keeps_the_flop_budget_without_the_vram_cap():
    # AWQ: Config::flop ignores quantization; model_vram is None, so nothing caps it.
    # Llama 3.1 70B per token: per layer 3 x 2 x 64 x 128 x 8192 + 2 x 2 x 8 x 128 x 8192 +
    # 6 x 8192 x 28672 = 402653184 + 33554432 + 1409286144 = 1845493760; x 80 = 147639500800.
    # One A10G: 125e12 / 147639500800 = 846.6 -> 846, though the weights alone fill the card.
    assert _prefill("llama-3.1-70b-awq", V337, "NVIDIA A10G", 23028) == 846
    config = launcher_config(CATALOG["llama-3.1-70b-awq"])
    assert config is not None and config.model_vram() is None and config.token_vram() is None


def test_vlm_defaults_follow_the_release():
    # A VLM has no FLOP figure. Gemma 3 nests its text fields (no top-level context either):
    # 4096 until v3.2.0 gave it 8000. On an unknown card ("nvidia-rtx-a6000") the launcher
    # logs "Unkown compute for card" and prints the fixed default.
    assert _prefill("gemma-3-27b", V311, "NVIDIA RTX A6000", 49140, shards=2) == 4096
    assert _prefill("gemma-3-27b", V320, "NVIDIA RTX A6000", 49140, shards=2) == 8000
    qwen_vl = replace(
        CATALOG["qwen2.5-7b"], model_type="qwen2_5_vl", vision=True, max_position_embeddings=128000
    )
    config = launcher_config(qwen_vl)
    assert config is not None and config.flop() is None
    defaults = [
        zero_config_prefill_tokens(
            version, config, nvidia_smi_name="NVIDIA RTX A6000", gpu_memory_mib=49140, num_shard=1
        )
        for version in (V310, V311)
    ]
    assert defaults == [4096, 10000]


def test_models_whose_raw_fields_the_catalog_does_not_hold_are_not_guessed():
    # Qwen3 MoE: the launcher reads intermediate_size (6144), the catalog holds the experts'
    # 768; fbgemm_fp8 / fp8 configs differ in whether the launcher can parse them at all.
    assert launcher_config(CATALOG["qwen3-30b-a3b"]) is None
    assert launcher_config(CATALOG["llama-3.1-405b-fp8"]) is None


def test_2_4_1_caps_4096_at_the_context_and_earlier_releases_have_no_zero_config_budget():
    config = launcher_config(CATALOG["llama-3.1-8b"])
    short = launcher_config(replace(CATALOG["phi-3-mini"], max_position_embeddings=2048))
    assert config is not None and short is not None

    def prefill(version: tuple[int, int, int], chosen: LauncherConfig) -> int:
        return zero_config_prefill_tokens(
            version, chosen, nvidia_smi_name="NVIDIA L4", gpu_memory_mib=23034, num_shard=1
        )

    # v2.4.1: no FLOP or VRAM step; a 2048-token context caps the 4096.
    assert prefill((2, 4, 1), config) == 4096
    assert prefill((2, 4, 1), short) == 2048
    with pytest.raises(ValueError, match="max_input_tokens"):
        prefill((2, 4, 0), config)
