"""What differs between TGI releases, as data (pure).

The serving engine is a parameter of every plan, not a constant of the code: TGI is in
maintenance mode since 2025-12-11 (tgi-facts.md §7) and its authors point to vLLM and SGLang,
so a second engine must be able to slot in beside this one.

Every rule here cites ../shared/reference/tgi-facts.md (section numbers), which cites TGI's source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tgiops.errors import InputError

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference"

# 3.3.7 is TGI's newest release (2025-12-18, tgi-facts §0): its CI publishes an image per
# release tag (§6). If a registry lacks it, `--tgi-version 3.3.5` is the tag TGI's own docs
# show; tgiops passes --num-shard explicitly, so 3.3.7's num_shard fix is not relied upon.
DEFAULT_TGI_VERSION = "3.3.7"
OLDEST_SUPPORTED = (2, 0, 0)
NEWEST_SUPPORTED = (3, 3, 99)

Version = tuple[int, int, int]

_QUANTIZE_2_0 = (
    "awq",
    "eetq",
    "gptq",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)


def parse_version(text: str) -> Version:
    """'3.3.5' -> (3, 3, 5). Bad input names the value and the supported range."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise InputError(f"--tgi-version {text!r} is not a version like 3.3.5")
    version = (int(match[1]), int(match[2]), int(match[3] or 0))
    if not OLDEST_SUPPORTED <= version <= NEWEST_SUPPORTED:
        raise InputError(
            f"--tgi-version {text} is outside what tgiops knows (2.0.0 to 3.3.x); "
            f"use e.g. {DEFAULT_TGI_VERSION}"
        )
    return version


@dataclass(frozen=True)
class Engine:
    """One TGI release: the flag and environment names it understands."""

    version_text: str
    version: Version

    name = "tgi"

    @classmethod
    def tgi(cls, version_text: str = DEFAULT_TGI_VERSION) -> Engine:
        return cls(version_text=version_text.lstrip("v"), version=parse_version(version_text))

    @property
    def image(self) -> str:
        return f"{TGI_IMAGE}:{self.version_text}"

    @property
    def token_env_var(self) -> str:
        # §1 "Token env vars": <= 2.0.4 reads only HUGGING_FACE_HUB_TOKEN; 2.1+ reads HF_TOKEN
        # (and 2.2+'s launcher config fetch reads only HF_TOKEN).
        return "HF_TOKEN" if self.version >= (2, 1, 0) else "HUGGING_FACE_HUB_TOKEN"

    @property
    def max_input_flag(self) -> str:
        # §1/§5: 2.0.x speaks max_input_length; later releases max_input_tokens (legacy alias kept).
        return "--max-input-tokens" if self.version >= (2, 1, 0) else "--max-input-length"

    @property
    def accepted_quantize(self) -> tuple[str, ...]:
        """The `--quantize` values this release's clap enum accepts (§1 table)."""
        values: tuple[str, ...] = _QUANTIZE_2_0
        if self.version >= (2, 1, 0):
            values += ("exl2", "marlin")
        if self.version >= (2, 4, 1):
            values += ("compressed-tensors",)
        return values

    @property
    def chunked_prefill(self) -> bool:
        # §1b: prefill chunking is the default from v3.0; without it a prompt is one prefill,
        # so max_batch_prefill_tokens must cover max_input_tokens.
        return self.version >= (3, 0, 0)

    @property
    def fp8_marlin_on_ampere(self) -> bool:
        # §2 quantization table: fp8 on sm80-88 (FP8-Marlin W8A16) arrived in v2.2.0 (cb150eb2).
        return self.version >= (2, 2, 0)

    @property
    def awq_marlin(self) -> bool:
        # §2: AWQ -> GPTQ-Marlin on sm80+ since v2.2.0; before, the llm-awq GEMM kernel
        # (built for 8.0/8.6/9.0 only). Either way: sm80+.
        return self.version >= (2, 2, 0)

    @property
    def wiggle_room(self) -> float:
        # §2 "Server side": TGI_WIGGLE_ROOM is 0.95 in v2.3/v3.0, 0.93 in v3.1, 0.90 at v3.3.7.
        # Older releases are not documented; 0.95 is the closest known value.
        if self.version >= (3, 2, 0):
            return 0.90
        if self.version >= (3, 1, 0):
            return 0.93
        return 0.95

    def non_flash_env(self) -> dict[str, str]:
        """Environment that keeps this release off the FlashAttention kernels (sm < 8.0).

        `USE_FLASH_ATTENTION=false` makes the attention layer raise ImportError, so TGI takes
        its non-flash model classes (§2 "USE_FLASH_ATTENTION"). From v2.3 the launcher also
        picks an attention backend and prefix caching for the shards; pin them to the paged
        path with prefix caching off, which is what TGI itself falls back to below sm80
        (§2 "Attention selection"; `USE_PREFIX_CACHING` in 2.3.x, `PREFIX_CACHING` from 2.4).
        """
        env = {"USE_FLASH_ATTENTION": "false"}
        if self.version >= (2, 3, 0):
            env["ATTENTION"] = "paged"
            env["PREFIX_CACHING" if self.version >= (2, 4, 0) else "USE_PREFIX_CACHING"] = "0"
        return env

    def attention_block_size(self, flash: bool) -> int:
        """KV-cache block size of the attention backend TGI will pick (§2 BLOCK_SIZE)."""
        if not flash:
            return 16  # paged
        if self.version >= (2, 3, 0):
            return 1  # flashinfer, the default from v2.3 on sm80+
        return 16  # paged attention of the 2.0-2.2 flash models

    def cache_dir_in_container(self, repo_id: str) -> str:
        """Where this release's image caches a model (§6: HF_HOME=/data from 2.3)."""
        folder = "models--" + repo_id.replace("/", "--")
        return f"/data/hub/{folder}" if self.version >= (2, 3, 0) else f"/data/{folder}"
