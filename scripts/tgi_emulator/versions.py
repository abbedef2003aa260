"""Per-version behaviour of the emulated TGI releases.

Every difference the emulator models between 2.0.4, 2.4.1 and 3.3.7 lives in one
`VersionProfile`, so the rest of the package asks the profile instead of comparing version
strings. Sources are the sections of tgiops/docs/tgi.md ("§n") and the TGI
sources cited there.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_VERSIONS: tuple[str, ...] = ("2.0.4", "2.4.1", "3.3.7")
DEFAULT_VERSION = "3.3.7"

# The environment the official image sets for each release (§6: HF_HOME=/data,
# HF_HUB_ENABLE_HF_TRANSFER=1, PORT=80 from v2.3.0, commit 952b450a; HUGGINGFACE_HUB_CACHE=/data
# before), plus the variable that tells the emulator which release it is. The image's base,
# nvidia/cuda (§6), sets NVIDIA_VISIBLE_DEVICES=all (`ENV NVIDIA_VISIBLE_DEVICES all` in NVIDIA's
# CUDA Dockerfiles, as copied by e.g. osrf/rocker's cuda snippet): that value is what triggers
# the <= 3.3.6 "num_shard = 1" bug when --num-shard is omitted (§3).
IMAGE_ENV: dict[str, dict[str, str]] = {
    "2.0.4": {
        "HUGGINGFACE_HUB_CACHE": "/data",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "PORT": "80",
        "TGI_EMULATOR_VERSION": "2.0.4",
    },
    "2.4.1": {
        "HF_HOME": "/data",
        "HF_HUB_ENABLE_HF_TRANSFER": "1",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "PORT": "80",
        "TGI_EMULATOR_VERSION": "2.4.1",
    },
    "3.3.7": {
        "HF_HOME": "/data",
        "HF_HUB_ENABLE_HF_TRANSFER": "1",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "PORT": "80",
        "TGI_EMULATOR_VERSION": "3.3.7",
    },
}

# `enum Quantization` of the launcher, in declaration order (clap lists them in this order).
_QUANTIZE_2_0 = (
    "awq",
    "eetq",
    "gptq",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)
_QUANTIZE_2_4_1 = (
    "awq",
    "compressed-tensors",
    "eetq",
    "exl2",
    "gptq",
    "marlin",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)


# Model types TGI's ModelType gained after a release (server/text_generation_server/models/
# __init__.py at each tag): 2.1.0 gemma2; 2.2.0 deepseek_v2, paligemma; 2.3.0 gptj; 2.3.1
# mllama, phimoe; 2.4.0 granite; 2.4.1 qwen2_vl; 3.0.2 idefics3; 3.1.0 deepseek_v3; 3.1.1
# qwen2_5_vl; 3.2.0 gemma3, gemma3_text; 3.2.3 llama4. A release refuses the later ones.
_TYPES_AFTER_2_4_1 = frozenset(
    {"idefics3", "deepseek_v3", "qwen2_5_vl", "gemma3", "gemma3_text", "llama4"}
)
_TYPES_AFTER_2_0_4 = _TYPES_AFTER_2_4_1 | frozenset(
    {"gemma2", "deepseek_v2", "paligemma", "gptj", "mllama", "phimoe", "granite", "qwen2_vl"}
)


@dataclass(frozen=True)
class VersionProfile:
    """What differs between emulated releases (each field cites its source)."""

    version: str
    # /info "version": the Cargo version string. v3.3.7's Cargo.toml still says 3.3.6-dev0 (§0).
    info_version: str
    # /info "sha" (the image's GIT_SHA); None where docs/tgi.md gives no commit for the tag.
    git_sha: str | None
    quantize_values: tuple[str, ...]
    # Launcher flags that exist in this release beyond the common set (§1).
    extra_flags: frozenset[str]
    # Token variables the hub client honours, in order of preference (§1 "Token env vars").
    token_env: tuple[str, ...]
    # Where the launcher copies HF_API_TOKEN to (§1: HUGGING_FACE_HUB_TOKEN in 2.0, HF_TOKEN later).
    hf_api_token_target: str
    # Env var the launcher's own config.json fetch reads (§1: only HF_TOKEN from v2.2.0).
    launcher_config_token_env: tuple[str, ...]
    # Warmup memory rules (wiggle room, warmup logits, Gemma 3 masks) are per release in
    # memory.py (memory.rules_for(version)), for every tag, not only the emulated images.
    # Prefill chunking (default from v3.0; needs flashinfer/flashdecoding) (§1b).
    chunking: bool
    # How token limits are defaulted: "launcher" (<= v2.3), "warmup_prefill" (v2.4), "warmup" (v3).
    defaults_mode: str
    # Launcher picks attention with resolve_attention (flashinfer default) from v2.4.0 (§2).
    resolves_attention: bool
    # find_num_shards counts "all" in NVIDIA_VISIBLE_DEVICES as one device up to 3.3.6 (§3).
    visible_devices_all_bug: bool
    # /info field set: "2.0" (extra backend fields, max_input_length) or "2.3" (§5).
    info_fields: str
    waiting_served_ratio: float
    # Router check when max_total_tokens exceeds the KV capacity: 2.0 routers raise
    # ArgumentValidation, the v3 backend NotEnoughMemory (backends/v3/src/lib.rs).
    max_total_error: str
    # Exception name torch prints for an OOM (torch.OutOfMemoryError exists from torch 2.5).
    torch_oom_name: str
    # Module path huggingface_hub prints for its errors (huggingface_hub.errors from 0.24).
    hub_errors_module: str
    # flash-attn v1 still served Turing in 2.0.x (#2037: 2.0.3 worked on T4, 2.1.0 did not).
    sm75_flash_v1: bool
    # fp8 kernels: H100-only in the 2.0 docs (torch._scaled_mm, sm89+); FP8-Marlin on sm80+
    # from v2.2.0 (cb150eb2) (§2 quantization table).
    fp8_min_capability: tuple[int, int]
    # Model types / rope types the release's server cannot build (Llama 3.1's "llama3" rope and
    # Gemma 2 / mllama postdate 2.0.4).
    unsupported_model_types: frozenset[str]
    unsupported_rope_types: frozenset[str]
    # OpenAI streams end with "data: [DONE]" in later routers.
    sse_done_marker: bool
    # /generate without max_new_tokens: 100 in 2.x, "up to max_total_tokens" in 3.x.
    default_max_new_tokens: int | None
    # Args are logged with {:?} in 2.0 and {:#?} later.
    args_pretty: bool
    # Log text of the download span.
    download_start_log: str
    download_done_log: str

    def has_flag(self, name: str) -> bool:
        return name in self.extra_flags

    @property
    def docker_label(self) -> str | None:
        return None if self.git_sha is None else f"sha-{self.git_sha[:7]}"


_PROFILES: dict[str, VersionProfile] = {
    "2.0.4": VersionProfile(
        version="2.0.4",
        info_version="2.0.4",
        git_sha=None,
        quantize_values=_QUANTIZE_2_0,
        extra_flags=frozenset({"max-input-length"}),
        token_env=("HUGGING_FACE_HUB_TOKEN",),
        hf_api_token_target="HUGGING_FACE_HUB_TOKEN",
        launcher_config_token_env=("HUGGING_FACE_HUB_TOKEN",),
        chunking=False,
        defaults_mode="launcher",
        resolves_attention=False,
        visible_devices_all_bug=True,
        info_fields="2.0",
        waiting_served_ratio=1.2,
        max_total_error="argument_validation",
        torch_oom_name="torch.cuda.OutOfMemoryError",
        hub_errors_module="huggingface_hub.utils._errors",
        sm75_flash_v1=True,
        fp8_min_capability=(8, 9),
        unsupported_model_types=_TYPES_AFTER_2_0_4,
        unsupported_rope_types=frozenset({"llama3"}),
        sse_done_marker=False,
        default_max_new_tokens=100,
        args_pretty=False,
        download_start_log="Starting download process.",
        download_done_log="Successfully downloaded weights.",
    ),
    "2.4.1": VersionProfile(
        version="2.4.1",
        info_version="2.4.1",
        git_sha="d2ed52f531cf8098ca62375248e007022eaadc65",
        quantize_values=_QUANTIZE_2_4_1,
        extra_flags=frozenset(
            {
                "max-input-tokens",
                "max-input-length",
                "kv-cache-dtype",
                "api-key",
                "usage-stats",
                "lora-adapters",
                "otlp-service-name",
            }
        ),
        token_env=("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
        hf_api_token_target="HF_TOKEN",
        launcher_config_token_env=("HF_TOKEN",),
        chunking=False,
        defaults_mode="warmup_prefill",
        resolves_attention=True,
        visible_devices_all_bug=True,
        info_fields="2.3",
        waiting_served_ratio=0.3,
        max_total_error="not_enough_memory",
        torch_oom_name="torch.cuda.OutOfMemoryError",
        hub_errors_module="huggingface_hub.errors",
        sm75_flash_v1=False,
        fp8_min_capability=(8, 0),
        unsupported_model_types=_TYPES_AFTER_2_4_1,
        unsupported_rope_types=frozenset(),
        sse_done_marker=True,
        default_max_new_tokens=100,
        args_pretty=True,
        download_start_log="Starting check and download process for {model_id}",
        download_done_log="Successfully downloaded weights for {model_id}",
    ),
    "3.3.7": VersionProfile(
        version="3.3.7",
        info_version="3.3.6-dev0",
        git_sha="dfb3fbe78e0d1d69251bd33065591c61bafdfaa8",
        quantize_values=_QUANTIZE_2_4_1,
        extra_flags=frozenset(
            {
                "max-input-tokens",
                "max-input-length",
                "kv-cache-dtype",
                "api-key",
                "usage-stats",
                "lora-adapters",
                "otlp-service-name",
                "payload-limit",
                "graceful-termination-timeout",
                "prometheus-port",
                "enable-prefill-logprobs",
            }
        ),
        token_env=("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
        hf_api_token_target="HF_TOKEN",
        launcher_config_token_env=("HF_TOKEN",),
        chunking=True,
        defaults_mode="warmup",
        resolves_attention=True,
        visible_devices_all_bug=False,
        info_fields="2.3",
        waiting_served_ratio=0.3,
        max_total_error="not_enough_memory",
        torch_oom_name="torch.OutOfMemoryError",
        hub_errors_module="huggingface_hub.errors",
        sm75_flash_v1=False,
        fp8_min_capability=(8, 0),
        unsupported_model_types=frozenset(),
        unsupported_rope_types=frozenset(),
        sse_done_marker=True,
        default_max_new_tokens=None,
        args_pretty=True,
        download_start_log="Starting check and download process for {model_id}",
        download_done_log="Successfully downloaded weights for {model_id}",
    ),
}


def get_profile(version: str) -> VersionProfile:
    """The profile of `version`; ValueError names the supported ones."""
    try:
        return _PROFILES[version]
    except KeyError:
        raise ValueError(
            f"TGI_EMULATOR_VERSION={version!r} is not emulated; "
            f"supported: {', '.join(SUPPORTED_VERSIONS)}"
        ) from None
