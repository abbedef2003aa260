"""What vLLM prints, read (pure: no I/O): its startup log and its journal.

(Its /metrics are read with TGI's by tgiops/core/metrics.py and tgiops/core/status.py.)
``parse_startup_log`` reads the KV-cache facts of a start (the figure the memory model in
tgiops/core/engines/vllm_memory.py predicts); ``diagnose_journal`` names the likeliest cause
of a failed start (``VllmEngine.diagnose_journal``, tgiops/core/engines/vllm.py). The patterns
are vLLM's own messages; memory model §7 (tgiops/docs/vllm-memory-model.md) quotes the KV
length errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tgiops.core.engines.vllm_memory import BLOCK_SIZE


@dataclass(frozen=True)
class StartupFacts:
    kv_cache_tokens: int | None = None  # GPU KV cache size: N tokens
    concurrency_tokens: int | None = None  # Maximum concurrency for N tokens per request
    max_concurrency: float | None = None  # ... : X x
    available_kv_gib: float | None = None  # Available KV cache memory: X GiB
    max_seq_len: int | None = None  # the failing max seq len, on the KV error
    max_len_that_fits: int | None = None  # what vLLM says would fit, on the KV error


_NUM = r"(\d[\d,]*)"
_KV_TOKENS_RE = re.compile(r"GPU KV cache size: " + _NUM + r" tokens")
_CONCURRENCY_RE = re.compile(
    r"Maximum concurrency for " + _NUM + r" tokens per request(?: changes from [\d.]+x to)?:?"
    r"\s*([\d.]+)x"
)
_AVAILABLE_RE = re.compile(r"Available KV cache memory: (-?[\d.]+) GiB")
# Older: "The model's max seq len (32768) is larger than the maximum number of tokens that can
# be stored in KV cache (16832)". Newer: "To serve at least one request with the model's max
# seq len (196608), 23.25 GiB KV cache is needed, which is larger than the available KV cache
# memory (22.5 GiB). Based on the available memory, the estimated maximum model length is N."
_OLD_KV_ERR_RE = re.compile(
    r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in "
    r"KV cache \((\d+)\)"
)
_NEW_KV_ERR_RE = re.compile(r"the model's max seq len \((\d+)\)")
_ESTIMATED_RE = re.compile(r"estimated maximum model length is (\d+)")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def parse_startup_log(text: str) -> StartupFacts:
    """The KV-cache facts of a vLLM start from its log (one- and two-line formats alike)."""
    kv = conc_len = max_seq = fits = None
    conc = avail = None
    for line in text.splitlines():
        if m := _KV_TOKENS_RE.search(line):
            kv = _int(m[1])
        if m := _CONCURRENCY_RE.search(line):
            conc_len, conc = _int(m[1]), float(m[2])
        if m := _AVAILABLE_RE.search(line):
            avail = float(m[1])
        if m := _OLD_KV_ERR_RE.search(line):
            max_seq, fits = int(m[1]), int(m[2])
        elif m := _NEW_KV_ERR_RE.search(line):
            max_seq = int(m[1])
        if m := _ESTIMATED_RE.search(line):
            fits = int(m[1])
    return StartupFacts(kv, conc_len, conc, avail, max_seq, fits)


# (pattern, diagnosis): the first pattern found, scanning the journal from its last line back,
# names the cause (the shape of tgiops/core/probe.py _DIAGNOSES). Patterns are vLLM's own messages.
_DIAGNOSES: tuple[tuple[str, str], ...] = (
    (
        "less than desired GPU memory utilization",
        "not enough free GPU memory at start: vLLM asks for --gpu-memory-utilization x the "
        "GPU's TOTAL memory and something else holds part of it; stop the other process "
        "(a leftover container?) or lower --gpu-memory-utilization",
    ),
    (
        "No available memory for the cache blocks",
        "the weights and the profile run leave no memory for the KV cache: use more GPUs, a "
        "quantized model, or a larger instance type (see `tgiops plan --engine vllm`)",
    ),
    (
        "Bfloat16 is only supported on GPUs with compute capability",
        "this GPU has no bfloat16 (below sm80): deploy with --dtype float16",
    ),
    (
        "is not supported for the current GPU",
        "the quantization kernel needs a newer GPU (Marlin AWQ/GPTQ: sm80+; FP8 W8A8: sm89+): "
        "use a checkpoint this GPU runs, or a newer instance type",
    ),
    (
        "no kernel image is available for execution on the device",
        "this vLLM build has no kernels for this GPU (vLLM needs compute capability 7.5+): "
        "use --engine tgi here or a newer instance type",
    ),
    (
        "must be divisible by tensor parallel size",
        "the tensor parallel size does not divide the model's heads: let tgiops choose --num-shard",
    ),
    (
        "not aligned with the quantized weight shape",
        "the quantized MLP does not split evenly across the GPUs: use a smaller --num-shard",
    ),
    (
        "CUDA driver version is insufficient",
        "the host's NVIDIA driver is too old for this image: below 580, use the -cu129 tag "
        "(tgiops picks it from the probed driver), or upgrade the driver",
    ),
    (
        "forward compatibility was attempted on non supported HW",
        "the host's NVIDIA driver is too old for this CUDA 13 image: use the -cu129 tag or "
        "upgrade the driver to 580+",
    ),
    (
        "Found no NVIDIA driver",
        "the container sees no GPU: check the NVIDIA driver and "
        "Container Toolkit (`docker run --gpus all ... nvidia-smi`)",
    ),
    (
        "could not select device driver",
        "docker has no NVIDIA runtime: install the NVIDIA Container Toolkit and restart docker",
    ),
    (
        "401 Client Error",
        "the Hugging Face token was refused or lacks access: accept the "
        "model's licence on huggingface.co and store a token that has access (`tgiops secret set`)",
    ),
    (
        "Cannot access gated repo",
        "the model is gated: the token must belong to an account that accepted its licence",
    ),
    (
        "LocalEntryNotFoundError",
        "offline start without the model in the cache: deploy once "
        "with network access to fill the data volume",
    ),
    ("unrecognized arguments", "vLLM rejected a flag: check --engine-version against the flags"),
)


def diagnose_journal(text: str) -> str | None:
    """The likeliest cause of a failed vLLM start, in words, from the unit's journal lines."""
    lines = text.splitlines()
    for line in reversed(lines):
        if m := _OLD_KV_ERR_RE.search(line):
            fit = int(m[2]) // BLOCK_SIZE * BLOCK_SIZE
            return (
                f"--max-model-len {m[1]} is above the {m[2]} tokens the KV cache holds: deploy "
                f"with --max-model-len {fit} or less (or more GPUs / a quantized model)"
            )
        if _NEW_KV_ERR_RE.search(line):
            est = _ESTIMATED_RE.search(line)
            hint = f"--max-model-len {est[1]} or less" if est else "a smaller --max-model-len"
            seq = _NEW_KV_ERR_RE.search(line)
            assert seq is not None
            return (
                f"--max-model-len {seq[1]} needs more KV cache than is left: deploy with "
                f"{hint} (or more GPUs / a quantized model)"
            )
        if "CUDA out of memory" in line or "OutOfMemoryError" in line:
            return _oom_diagnosis(lines)
        for pattern, diagnosis in _DIAGNOSES:
            if pattern in line:
                return diagnosis
    return None


def _oom_diagnosis(lines: Iterable[str]) -> str:
    text = "\n".join(lines).lower()
    if "capturing cuda graph" in text or "capture_model" in text or "graph capturing" in text:
        return (
            "CUDA out of memory while capturing CUDA graphs: deploy with --enforce-eager, or "
            "lower --gpu-memory-utilization a little to leave room for the graphs"
        )
    if "profile_run" in text or "determine_available_memory" in text or "dummy" in text:
        return (
            "CUDA out of memory in vLLM's profile run: lower --max-num-batched-tokens / "
            "--max-num-seqs (they size it), or use more GPUs"
        )
    return (
        "CUDA out of memory: the weights do not fit the GPUs' memory; use more GPUs, a "
        "quantized model, or a larger instance type (see `tgiops plan --engine vllm`)"
    )
