"""vLLM as a serving engine: image tag, plan, launch args, unit (pure: no I/O).

Everything here is a function of its arguments: the model facts (``tgiops.core.catalog.ModelSpec``),
the GPUs (``tgiops.core.hardware.GpuInventory``) and the user's overrides. Each vLLM behaviour
rule cites vLLM's source or docs. The memory model the plan sizes from is
tgiops/core/engines/vllm_memory.py, derived term by term in ``tgiops/docs/vllm-memory-model.md``
(cited below as "memory model §N"); kernel rules and image tags are in that file's last
sections. What vLLM prints (/metrics, the startup log, the journal) is read by
tgiops/core/engines/vllm_logs.py.

The lead wires this module into the Engine seam (issue 13); nothing here imports an edge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tgiops.core.catalog import ModelSpec
from tgiops.core.engines.vllm_logs import diagnose_journal
from tgiops.core.engines.vllm_memory import BLOCK_SIZE, VllmMemory, batch_defaults, memory_estimate
from tgiops.core.errors import DoesNotFitError, InputError, PlanInputError
from tgiops.core.hardware import MIB_PER_GIB, GpuInventory
from tgiops.core.plan import hardware_as_dict, model_as_plan_dict
from tgiops.core.render import (
    UnitContext,
    UnitOptions,
    cache_dir,
    docker_run_command,
    image_ref,
    render_engine_unit,
)

# --------------------------------------------------------------------------------------------
# Image and version
# --------------------------------------------------------------------------------------------

VLLM_IMAGE = "vllm/vllm-openai"
# v0.27.1: a vLLM release whose Docker Hub image `vllm/vllm-openai:v0.27.1` was pushed on
# 2026-08-11 (tgiops/docs/vllm-memory-model.md "Image tags": vllm-project/vllm-metal#603 "Bump
# vLLM to 0.27.1", 2026-08-13). Never `latest`: a relaunched spot instance must run the plan.
DEFAULT_VLLM_VERSION = "0.27.1"
OLDEST_SUPPORTED = (0, 11, 0)  # V1 only, and V1 runs on sm75 since 0.10.2 (PRs #23614, #24022)
NEWEST_SUPPORTED = (0, 99, 99)
# From v0.20.0 the unsuffixed tags are CUDA 13.0 builds and `-cu129` is the CUDA 12.9 variant
# (vllm-project/vllm PR #39878, "Switch default CUDA to 13.0").
CUDA13_DEFAULT_FROM = (0, 20, 0)
# CUDA 13.x needs an R580+ driver; CUDA 12.x runs on R525+ through minor-version compatibility
# (NVIDIA's CUDA minor-version compatibility; tgiops/docs/vllm-memory-model.md "Image tags").
CUDA13_MIN_DRIVER = (580, 0)
CUDA12_MIN_DRIVER = (525, 60)
# CUDA-graph memory is profiled into the KV budget by default from v0.21 (memory model §5).
CUDAGRAPH_PROFILED_FROM = (0, 21, 0)
# --gpu-memory-utilization default: 0.92 in current vllm/config/cache.py since PR #38284 (2026-04;
# 0.9 before, e.g. in v0.15.1). tgiops always passes it.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
CONTAINER_PORT = 8000  # `vllm serve --port` default
TOKEN_ENV = "HF_TOKEN"
API_KEY_ENV = "VLLM_API_KEY"  # vllm/envs.py: the --api-key value from the environment
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1"}
CONTAINER_HF_HOME = "/root/.cache/huggingface"  # the docs' `-v ~/.cache/huggingface:...`
# VLLM_CACHE_ROOT: torch.compile and Triton artifacts; vLLM's docker docs suggest a volume there
# so a restarted container reuses them (a relaunched spot instance starts faster).
CONTAINER_VLLM_CACHE = "/root/.cache/vllm"
VLLM_CACHE_SUBDIR = "vllm"  # inside the model cache dir the container already writes
DEFAULT_FULL_LENGTH_REQUESTS = 4  # the same default as the TGI planner (tgiops/core/plan.py)
MIN_USEFUL_MODEL_LEN = 1024
SHM_SIZE = "16g"  # docker_run_args: a cap on the container's /dev/shm tmpfs

Version = tuple[int, int, int]


# Model types no vLLM release from OLDEST_SUPPORTED loads, with why and what serves them.
# Llama 3.2 Vision (mllama) is a cross-attention encoder-decoder model that only vLLM's V0
# engine ran; vllm-project/vllm PR #24907 ("Remove V0 Encoder-Decoder Support", merged
# September 2025, before v0.11.0 completed the V0 removal) dropped every encoder-decoder model
# but Whisper (tgiops/docs/vllm.md §1.6).
UNSERVABLE_MODEL_TYPES: Mapping[str, str] = {
    "mllama": (
        "Llama 3.2 Vision (mllama) ran only on vLLM's V0 engine, and vLLM dropped it with every "
        "encoder-decoder model but Whisper (PR #24907, before v0.11.0, the oldest release "
        "tgiops plans). TGI serves it: leave out --engine vllm."
    ),
}


def require_vllm_servable(model: ModelSpec) -> ModelSpec:
    """The model, or PlanInputError (exit 2) when no vLLM release tgiops plans loads it."""
    why = UNSERVABLE_MODEL_TYPES.get(model.model_type)
    if why:
        raise PlanInputError(f"{model.alias} ({model.repo_id}): vLLM cannot serve it. {why}")
    return model


def parse_version(text: str) -> Version:
    """'0.27.1' or 'v0.27.1' -> (0, 27, 1); anything else is an InputError naming the range."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(text).strip())
    if not match:
        raise InputError(
            f"--engine-version {text!r} is not a vLLM version like {DEFAULT_VLLM_VERSION}"
        )
    version = (int(match[1]), int(match[2]), int(match[3] or 0))
    if not OLDEST_SUPPORTED <= version <= NEWEST_SUPPORTED:
        raise InputError(
            f"--engine-version {text}: tgiops plans vLLM 0.11.0 and newer (the V1 engine); "
            f"use e.g. {DEFAULT_VLLM_VERSION}"
        )
    return version


def _driver(text: str) -> tuple[int, int]:
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", text)
    if not match:
        raise InputError(f"NVIDIA driver version {text!r} is not like 580.105.08")
    return int(match[1]), int(match[2] or 0)


@dataclass(frozen=True)
class ImageChoice:
    image: str  # vllm/vllm-openai:v0.27.1 or ...-cu129
    cuda: str  # "13.0" | "12.9" | "12.x"
    reason: str


def image_for(
    version: str = DEFAULT_VLLM_VERSION, driver_version: str | None = None
) -> ImageChoice:
    """The image tag for ``version`` on a host with ``driver_version`` (None: not probed).

    From v0.20 the plain tag is CUDA 13.0 (driver >= 580) and ``-cu129`` serves R525..R575
    drivers; older releases' plain tags are CUDA 12 builds. A driver too old for either is an
    InputError with the fix.
    """
    v = parse_version(version)
    tag = f"v{v[0]}.{v[1]}.{v[2]}"
    if v < CUDA13_DEFAULT_FROM:
        if driver_version is not None and _driver(driver_version) < CUDA12_MIN_DRIVER:
            raise InputError(
                f"NVIDIA driver {driver_version} is too old for vLLM {tag}'s CUDA 12 image "
                "(needs 525.60 or newer): upgrade the driver (e.g. a current AWS Deep Learning "
                "Base AMI ships 580+)"
            )
        return ImageChoice(f"{VLLM_IMAGE}:{tag}", "12.x", f"{tag} images before v0.20 are CUDA 12")
    if driver_version is None:
        return ImageChoice(
            f"{VLLM_IMAGE}:{tag}",
            "13.0",
            f"{tag} is a CUDA 13.0 build: it needs NVIDIA driver 580+ (deploy reads the host's "
            "driver and picks -cu129 for older ones)",
        )
    driver = _driver(driver_version)
    if driver >= CUDA13_MIN_DRIVER:
        return ImageChoice(
            f"{VLLM_IMAGE}:{tag}", "13.0", f"driver {driver_version} >= 580 runs the CUDA 13 tag"
        )
    if driver >= CUDA12_MIN_DRIVER:
        return ImageChoice(
            f"{VLLM_IMAGE}:{tag}-cu129",
            "12.9",
            f"driver {driver_version} < 580 cannot run CUDA 13 images; {tag}-cu129 is the "
            "CUDA 12.9 build of the same release",
        )
    raise InputError(
        f"NVIDIA driver {driver_version} is too old for vLLM {tag}: the plain tag needs 580+ "
        "(CUDA 13) and -cu129 needs 525.60+ (CUDA 12.9); upgrade the host's driver (a current "
        "AWS Deep Learning Base AMI ships 580+)"
    )


_TAG_RE = re.compile(r"v?(\d+\.\d+(?:\.\d+)?)(-cu\d+)?")


@dataclass(frozen=True)
class VllmEngine:
    """One vLLM release, and the CUDA variant of its image (tgiops.core.engines.Engine).

    ``cuda_suffix`` is "" (the plain tag) or "-cu129": the release's CUDA 12.9 build for hosts
    whose driver is below 580 (``image_for``; ``for_driver`` picks it from the probed driver)."""

    version_text: str
    version: Version
    cuda_suffix: str = ""

    name = "vllm"
    unit_template = "vllm.service.j2"
    container_port = CONTAINER_PORT
    # vLLM's API server binds its port only after load, profiling and graph capture, and
    # /health answers 200 from then on (vllm/entrypoints/openai/api_server.py).
    health_path = "/health"
    token_env_var = TOKEN_ENV
    api_key_env_var = API_KEY_ENV

    @classmethod
    def release(cls, version_text: str = DEFAULT_VLLM_VERSION) -> VllmEngine:
        """'0.27.1', 'v0.27.1' or an image tag 'v0.27.1-cu129' (what a unit's image names)."""
        match = _TAG_RE.fullmatch(str(version_text).strip())
        suffix = (match[2] or "") if match else ""
        if suffix and suffix != "-cu129":
            raise InputError(f"vLLM image tag {version_text!r}: tgiops knows -cu129 only")
        v = parse_version(match[1] if match else version_text)
        if suffix and v < CUDA13_DEFAULT_FROM:
            raise InputError(f"vLLM {version_text}: -cu129 tags exist from v0.20.0")
        return cls(version_text=f"{v[0]}.{v[1]}.{v[2]}", version=v, cuda_suffix=suffix)

    @property
    def image(self) -> str:
        return f"{VLLM_IMAGE}:v{self.version_text}{self.cuda_suffix}"

    def for_driver(self, driver_version: str | None) -> VllmEngine:
        """This release with the image variant the host's driver runs (``image_for``: an
        InputError with the fix when the driver is too old for both)."""
        choice = image_for(self.version_text, driver_version)
        suffix = "-cu129" if choice.image.endswith("-cu129") else ""
        return VllmEngine(self.version_text, self.version, suffix)

    def cache_dir_in_container(self, repo_id: str) -> str:
        # HF_HOME is /root/.cache/huggingface in the image; the hub cache is its hub/.
        return f"{CONTAINER_HF_HOME}/hub/models--" + repo_id.replace("/", "--")

    # -- ranking instance types (tgiops.core.recommend through tgiops.core.engines.Engine) -----

    label = "vLLM"
    max_total_flag = "--max-model-len"  # one request's prompt + output

    def require_servable(self, model: ModelSpec) -> None:
        """PlanInputError for a model no vLLM release tgiops plans can load (``require_vllm_
        servable``); the other refusals depend on the GPU or an override, so ``plan_on`` gives
        them per instance type."""
        require_vllm_servable(model)

    def default_overrides(self) -> VllmOverrides:
        return VllmOverrides()

    @staticmethod
    def max_total_of(overrides: VllmOverrides) -> int | None:
        return overrides.max_model_len

    @staticmethod
    def with_max_total(overrides: VllmOverrides, tokens: int) -> VllmOverrides:
        return replace(overrides, max_model_len=tokens)

    def plan_on(
        self, model: ModelSpec, inventory: GpuInventory, overrides: VllmOverrides
    ) -> VllmPlan:
        """vLLM's plan (``plan_vllm``) for this release; what vLLM refuses on this hardware (a
        GPU below compute capability 7.5, a tensor-parallel size that does not divide the heads)
        is a PlanInputError, as TGI's planner gives it: a rejection of this type, not of all."""
        try:
            return plan_vllm(model, inventory, overrides, version=self.version_text)
        except PlanInputError:
            raise
        except InputError as exc:
            raise PlanInputError(str(exc)) from exc

    def info_mismatches(
        self,
        info: Mapping[str, Any],
        *,
        expected_model_id: str,
        expected_max_total_tokens: int | None,
        expected_max_input_tokens: int | None,
    ) -> list[str]:
        """vLLM has no /info: ``info`` is /v1/models' answer. The served model must name the
        repository as its ``root`` (or ``id``) and report the planned ``max_model_len``
        (vllm/entrypoints/openai/serving_models.py ModelCard). vLLM has no separate input
        limit: ``expected_max_input_tokens`` is not compared."""
        del expected_max_input_tokens
        data = info.get("data") if isinstance(info, Mapping) else None
        if not isinstance(data, list) or not data:
            return ["/v1/models lists no model"]
        cards = [c for c in data if isinstance(c, Mapping)]
        ours = [c for c in cards if expected_model_id in (c.get("root"), c.get("id"))]
        if not ours:
            served = ", ".join(str(c.get("root") or c.get("id")) for c in cards)
            return [f"/v1/models serves {served}, not {expected_model_id}"]
        length = ours[0].get("max_model_len")
        if expected_max_total_tokens is not None and length != expected_max_total_tokens:
            return [f"max_model_len is {length}, the plan says {expected_max_total_tokens}"]
        return []

    def diagnose_journal(self, text: str) -> str | None:
        return diagnose_journal(text)


# --------------------------------------------------------------------------------------------
# Overrides and plan
# --------------------------------------------------------------------------------------------

# The catalog's quantization names (TGI's) as vLLM knows them; vLLM auto-detects pre-quantized
# checkpoints from config.json's quantization_config, so these are never passed for them.
_PREQUANTIZED = frozenset({"awq", "gptq", "compressed-tensors", "fp8", "mxfp4"})
# vLLM's --quantization values tgiops will pass for quantizing at load ("online").
ONLINE_QUANTIZATION = ("fp8", "bitsandbytes")
ACCEPTED_QUANTIZE = ("none", "awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes", "mxfp4")
# vllm/model_executor/layers/quantization/mxfp4.py: Mxfp4Config.get_min_capability() == 80;
# its MoE backend selection runs native kernels (FlashInfer / Triton) from sm90 and Marlin's
# weight-only MXFP4 MoE below, on sm80-89. Linear layers stay unquantized
# (get_quant_method -> UnquantizedLinearMethod): only the experts are MXFP4.
MXFP4_MIN_CC = (8, 0)
MXFP4_NATIVE_CC = (9, 0)
# vLLM's --dtype choices (vllm/config/model.py ModelDType), as tgiops passes them.
ACCEPTED_DTYPES = ("float16", "bfloat16", "half", "float32", "float", "auto")
_DTYPE_ALIASES = {"half": "float16", "float": "float32"}


@dataclass(frozen=True)
class VllmOverrides:
    """What the user forced; None = let the planner decide. ``quantize="none"`` forbids it."""

    num_shard: int | None = None  # --tensor-parallel-size
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    enforce_eager: bool = False
    full_length_requests: int = DEFAULT_FULL_LENGTH_REQUESTS


@dataclass(frozen=True)
class VllmPlan:
    model: ModelSpec
    inventory: GpuInventory
    version: str
    image: str
    fits: bool
    tensor_parallel_size: int
    quantization: str | None  # what the weights are (checkpoint's or online)
    quantization_flag: str | None  # --quantization, only for online quantization
    dtype: str
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enforce_eager: bool
    memory: VllmMemory
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def engine(self) -> VllmEngine:
        """The release and image variant this plan runs (its image names both)."""
        return VllmEngine.release(self.image.rpartition(":")[2])

    @property
    def num_shard(self) -> int:  # the name every engine's plan shares (status, records)
        return self.tensor_parallel_size

    @property
    def max_total_tokens(self) -> int:  # one request's prompt + output: vLLM's max_model_len
        return self.max_model_len

    @property
    def max_input_tokens(self) -> int:  # vLLM has no separate input limit: a prompt may fill it
        return self.max_model_len

    @property
    def quantize(self) -> str | None:
        return self.quantization

    @property
    def env_names(self) -> tuple[str, ...]:
        """Secret env names the unit passes by name (values live in the 0600 env file)."""
        return (TOKEN_ENV, API_KEY_ENV)

    def launch_args(self, *, port: int = CONTAINER_PORT, host: str = "0.0.0.0") -> tuple[str, ...]:
        """`vllm serve` arguments after the image (the entrypoint is `vllm serve`). Empty for a
        plan that does not fit. Secrets never appear here: VLLM_API_KEY and HF_TOKEN are read
        from the environment (vllm/envs.py)."""
        if not self.fits:
            return ()
        args = ["--model", self.model.repo_id]
        if self.model.revision:
            args += ["--revision", self.model.revision]
        args += [
            "--served-model-name",
            self.model.alias,
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
            "--gpu-memory-utilization",
            f"{self.gpu_memory_utilization:g}",
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--max-num-batched-tokens",
            str(self.max_num_batched_tokens),
            "--dtype",
            self.dtype,
        ]
        if self.quantization_flag:
            args += ["--quantization", self.quantization_flag]
        if self.enforce_eager:
            args.append("--enforce-eager")
        args += ["--port", str(port), "--host", host]
        return tuple(args)


def tp_divides(model: ModelSpec, tp: int) -> bool:
    """vLLM's TP rules: tp divides the attention heads (ModelConfig.verify_with_parallel_config:
    "Total number of attention heads (..) must be divisible by tensor parallel size (..)"), and
    the KV heads split evenly or replicate evenly (QKVParallelLinear: kv % tp == 0 when
    kv >= tp, else tp % kv == 0)."""
    heads, kv = model.num_attention_heads, model.num_key_value_heads
    if heads % tp:
        return False
    return kv % tp == 0 if kv >= tp else tp % kv == 0


def _check_values(o: VllmOverrides) -> None:
    def positive(name: str, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or value < 1):
            raise InputError(f"--{name} {value} must be a positive whole number")

    positive("num-shard", o.num_shard)
    positive("max-model-len", o.max_model_len)
    positive("max-num-seqs", o.max_num_seqs)
    positive("max-num-batched-tokens", o.max_num_batched_tokens)
    if o.full_length_requests < 1:
        raise InputError(f"full-length requests {o.full_length_requests} must be at least 1")
    util = o.gpu_memory_utilization
    if util is not None and not (0 < util <= 1):
        # CacheConfig: Field(gt=0, le=1)
        raise InputError(
            f"--gpu-memory-utilization {util:g} must be above 0 and at most 1 (a fraction of "
            f"the GPU's total memory; vLLM's default is {DEFAULT_GPU_MEMORY_UTILIZATION})"
        )
    if o.quantize is not None and o.quantize not in ACCEPTED_QUANTIZE:
        raise InputError(
            f"--quantize {o.quantize!r} is not one tgiops can run on vLLM; use one of "
            + ", ".join(ACCEPTED_QUANTIZE)
        )
    if o.dtype is not None and o.dtype not in ACCEPTED_DTYPES:
        raise InputError(
            f"--dtype {o.dtype!r} is not a vLLM dtype; use one of " + ", ".join(ACCEPTED_DTYPES)
        )
    if (
        o.max_num_seqs is not None
        and o.max_num_batched_tokens is not None
        and o.max_num_batched_tokens < o.max_num_seqs
    ):
        # SchedulerConfig verifies max_num_batched_tokens >= max_num_seqs.
        raise InputError(
            f"--max-num-batched-tokens {o.max_num_batched_tokens} is below --max-num-seqs "
            f"{o.max_num_seqs}; vLLM refuses that: raise it to at least {o.max_num_seqs}"
        )


@dataclass
class _Notes:
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def groups_align(model: ModelSpec, tp: int, quant: str | None) -> bool:
    """AWQ/GPTQ weights split by TP must keep whole 128-column groups: intermediate / tp is a
    multiple of 128 (vLLM: "The input size is not aligned with the quantized weight shape")."""
    inter = model.intermediate_size
    return not (quant in ("awq", "gptq") and inter and tp > 1 and (inter // tp) % 128)


def _choose_tp(
    model: ModelSpec, inventory: GpuInventory, quant: str | None, o: VllmOverrides, n: _Notes
) -> int:
    count = inventory.count
    valid = [t for t in range(1, count + 1) if tp_divides(model, t)]
    aligned = [t for t in valid if groups_align(model, t, quant)]
    if o.num_shard is not None:
        if o.num_shard > count:
            raise InputError(f"--num-shard {o.num_shard}: the host has only {count} GPU(s)")
        if o.num_shard not in valid:
            raise InputError(
                f"--num-shard {o.num_shard} does not split {model.alias}'s "
                f"{model.num_attention_heads} attention heads and {model.num_key_value_heads} "
                f"key-value heads evenly (vLLM: 'must be divisible by tensor parallel size'); "
                f"valid here: {valid}"
            )
        if o.num_shard not in aligned:
            raise InputError(
                f"--num-shard {o.num_shard}: {model.alias}'s MLP ({model.intermediate_size}) "
                f"split {o.num_shard} ways is not a multiple of the 128-column {quant} groups "
                "(vLLM: 'The input size is not aligned with the quantized weight shape'); "
                f"valid here: {aligned}"
            )
        n.reasons.append(f"tensor_parallel_size: {o.num_shard}, as requested")
        return o.num_shard
    tp = max(aligned)
    kv_how = "split" if model.num_key_value_heads >= tp else "replicated"
    n.reasons.append(
        f"tensor_parallel_size: {tp}, the largest count <= {count} GPU(s) that divides "
        f"{model.num_attention_heads} attention heads (key-value heads "
        f"{model.num_key_value_heads}: {kv_how})"
        + ("" if tp == max(valid) else f" and keeps whole 128-column {quant} groups")
    )
    if tp < count:
        n.warnings.append(f"{count - tp} GPU(s) stay idle: {tp} is the largest valid TP size")
    return tp


def _choose_quantization(
    model: ModelSpec, cc: tuple[int, int], o: VllmOverrides, n: _Notes
) -> tuple[str | None, str | None]:
    """(what the weights are, --quantization flag). Kernel rules by compute capability from
    vLLM's docs/features/quantization/supported_hardware.md (memory model "Kernels")."""
    sm = f"sm{cc[0]}{cc[1]}"
    checkpoint = model.quantization
    wanted = o.quantize
    if wanted == "none":
        if checkpoint:
            raise InputError(
                f"--quantize none: {model.alias} is a {checkpoint} checkpoint; pick its 16-bit "
                "sibling instead"
            )
        return None, None
    if wanted is not None and wanted not in ONLINE_QUANTIZATION and wanted != checkpoint:
        raise InputError(
            f"--quantize {wanted}: vLLM only runs {wanted} from a checkpoint quantized that "
            f"way, and {model.alias} is {checkpoint or '16-bit'}; use a {wanted} checkpoint, or "
            f"--quantize {' / '.join(ONLINE_QUANTIZATION)} to quantize at load"
        )
    if checkpoint and wanted not in (None, checkpoint):
        raise InputError(
            f"--quantize {wanted}: {model.alias} is already a {checkpoint} checkpoint; drop "
            "--quantize"
        )
    quant = wanted or checkpoint
    if quant is None:
        return None, None
    if quant not in ACCEPTED_QUANTIZE:
        raise InputError(
            f"{model.alias} is a {quant} checkpoint, which vLLM does not run; pick another"
        )
    if quant == "mxfp4":
        if cc < MXFP4_MIN_CC:
            raise InputError(
                f"{model.alias}'s MXFP4 experts need compute capability 8.0+ in vLLM (Marlin "
                f"MXFP4 on sm80-89, native kernels on sm90+); this GPU is {sm}: use an "
                "A10G, L4, L40S, A100 or H100 instance type"
            )
        n.reasons.append(
            "quantization: mxfp4 checkpoint (experts 4-bit + one 8-bit scale per 32 values, "
            "the rest 16-bit); "
            + (
                "native MXFP4 MoE kernels (sm90+)"
                if cc >= MXFP4_NATIVE_CC
                else f"Marlin weight-only MXFP4 MoE on {sm} (native kernels need sm90+)"
            )
        )
        return quant, None
    if quant in ("fp8", "compressed-tensors"):
        # FP8 W8A8 needs sm89+; sm80-86 run FP8 weight-only through FP8 Marlin; Turing's
        # Marlin is marked unsupported in supported_hardware.md, so refuse there.
        if cc < (8, 0):
            raise InputError(
                f"{quant} (FP8) weights need compute capability 8.0+ in vLLM (FP8 Marlin "
                f"weight-only on sm80-86, W8A8 on sm89+); this GPU is {sm}: use an AWQ/GPTQ "
                "or 16-bit model"
            )
        n.reasons.append(
            f"quantization: {quant}"
            + (
                " (FP8 W8A8 kernels, sm89+)"
                if cc >= (8, 9)
                else " (FP8 Marlin weight-only, sm80-86: FP8 compute needs sm89+)"
            )
        )
    elif quant in ("awq", "gptq"):
        if cc >= (8, 0):
            n.reasons.append(f"quantization: {quant} checkpoint; vLLM picks {quant}_marlin (sm80+)")
        else:
            n.reasons.append(
                f"quantization: {quant} checkpoint on {sm}: Marlin kernels need sm80+, vLLM "
                f"falls back to its plain {quant} kernel (slower)"
            )
            n.warnings.append(f"{sm} has no Marlin kernels: {quant} runs its slower fallback")
    elif quant == "bitsandbytes":
        n.reasons.append("quantization: bitsandbytes at load (Volta and newer)")
    flag = quant if (wanted in ONLINE_QUANTIZATION and not checkpoint) else None
    return quant, flag


def _choose_dtype(
    model: ModelSpec, cc: tuple[int, int], quant: str | None, o: VllmOverrides, n: _Notes
) -> str:
    sm = f"sm{cc[0]}{cc[1]}"
    if o.dtype not in (None, "auto"):
        dtype = _DTYPE_ALIASES.get(o.dtype, o.dtype)
        if dtype == "bfloat16" and cc < (8, 0):
            # gpu_worker._check_if_gpu_supports_dtype
            raise InputError(
                f"--dtype bfloat16: {sm} has no bfloat16 (vLLM: 'Bfloat16 is only supported on "
                "GPUs with compute capability of at least 8.0'); use --dtype float16"
            )
        if quant in ("awq", "gptq") and cc < (8, 0) and dtype != "float16":
            raise InputError(
                f"--dtype {o.dtype}: vLLM's plain {quant} kernel runs float16 only; use "
                "--dtype float16"
            )
        n.reasons.append(f"dtype: {dtype}, as requested")
        return dtype
    if quant in ("awq", "gptq"):
        n.reasons.append(f"dtype: float16, the activation dtype {quant} checkpoints are made for")
        return "float16"
    if cc < (8, 0):
        n.reasons.append(f"dtype: float16, as {sm} has no bfloat16 (vLLM refuses bf16 below sm80)")
        return "float16"
    dtype = model.torch_dtype if model.torch_dtype in ("float16", "bfloat16") else "bfloat16"
    n.reasons.append(f"dtype: {dtype}, the checkpoint's")
    return dtype


def plan_vllm(
    model: ModelSpec,
    inventory: GpuInventory,
    overrides: VllmOverrides | None = None,
    *,
    version: str = DEFAULT_VLLM_VERSION,
    device_total_mib: float | None = None,
) -> VllmPlan:
    """A vLLM plan, or InputError for an override vLLM would refuse. A plan that does not fit
    has ``fits=False`` and ``problem``; ``require_fit`` turns that into DoesNotFitError.

    ``device_total_mib``: the total memory CUDA reports, when known (it is a little below
    nvidia-smi's memory.total; memory model §1)."""
    require_vllm_servable(model)
    o = overrides or VllmOverrides()
    _check_values(o)
    v = parse_version(version)
    n = _Notes()
    if not inventory.homogeneous:
        raise InputError("the GPUs differ; vLLM's tensor parallelism needs identical GPUs")
    cc = inventory.compute_capability
    gpu_name = inventory.gpus[0].name
    if cc < (7, 5):
        # gpu.cuda.inc.md: "compute capability 7.5 or higher"; CUDA 13 cannot build sm70.
        raise InputError(
            f"{gpu_name} is compute capability {cc[0]}.{cc[1]}: vLLM needs 7.5 or higher (T4, "
            "A10G, L4, L40S, A100, H100 ...) in current releases; use TGI "
            "(--engine tgi) on this GPU or a newer instance type"
        )
    image = image_for(version, inventory.driver_version)
    n.reasons.append(f"image: {image.image} ({image.reason})")
    quant, flag = _choose_quantization(model, cc, o, n)
    tp = _choose_tp(model, inventory, quant, o, n)
    dtype = _choose_dtype(model, cc, quant, o, n)
    total = float(device_total_mib or inventory.memory_mib)
    util = o.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    n.reasons.append(
        f"gpu_memory_utilization: {util:g} of the GPU's TOTAL memory "
        + ("(as requested)" if o.gpu_memory_utilization else "(vLLM's default, pinned)")
    )
    dflt_tokens, dflt_seqs = batch_defaults(gpu_name, inventory.memory_mib)
    seqs = o.max_num_seqs or dflt_seqs
    batched = o.max_num_batched_tokens or max(dflt_tokens, seqs)
    n.reasons.append(
        f"max_num_seqs {seqs}, max_num_batched_tokens {batched}: "
        + (
            "as requested"
            if o.max_num_seqs or o.max_num_batched_tokens
            else f"vLLM's OpenAI-server defaults for a {inventory.memory_gib:.0f} GiB {gpu_name} "
            "(EngineArgs.get_batch_defaults), pinned; they size the profile run"
        )
    )
    if batched < seqs:
        raise InputError(
            f"--max-num-batched-tokens {batched} is below --max-num-seqs {seqs}; raise it to "
            f"at least {seqs}"
        )
    mem = memory_estimate(
        model,
        gpu_name=gpu_name,
        total_mib=total,
        tp=tp,
        quantize=quant,
        dtype=dtype,
        utilization=util,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        enforce_eager=o.enforce_eager,
        version=v,
    )
    if v >= CUDAGRAPH_PROFILED_FROM and not o.enforce_eager:
        n.warnings.append(
            "vLLM >= 0.21 also charges its CUDA-graph estimate to the KV budget; tgiops does "
            "not predict it (typically well under 1 GiB): the reported KV size may be smaller"
        )
    mpe = model.max_position_embeddings
    problem = None
    if o.max_model_len is not None and o.max_model_len > mpe:
        raise InputError(
            f"--max-model-len {o.max_model_len} is above {model.alias}'s "
            f"{mpe} positions (vLLM refuses it); use at most {mpe}"
        )
    kv = mem.kv_cache_tokens
    if mem.available_kv_mib <= 0:
        problem = (
            f"no memory left for the KV cache on each {gpu_name}: {util:g} x "
            f"{total / MIB_PER_GIB:.1f} GiB = {mem.requested_mib / MIB_PER_GIB:.1f} GiB is "
            f"taken by "
            f"weights {mem.weights_mib / MIB_PER_GIB:.1f} GiB, profile-run activations "
            f"{mem.activations_mib / MIB_PER_GIB:.1f} GiB and non-torch "
            f"{mem.non_torch_mib / MIB_PER_GIB:.2f} GiB (vLLM: 'No available memory for the "
            "cache blocks'); use more GPUs, a quantized model, or a larger instance type"
        )
        max_len = o.max_model_len or min(mpe, MIN_USEFUL_MODEL_LEN)
    elif o.max_model_len is not None:
        max_len = o.max_model_len
        if max_len > kv:
            fit = kv // BLOCK_SIZE * BLOCK_SIZE
            problem = (
                f"--max-model-len {max_len} is above the ~{kv} tokens of KV cache vLLM will "
                f"find (it refuses to start: 'larger than the maximum number of tokens that can "
                f"be stored in KV cache'); use --max-model-len {fit} or less, more GPUs, or "
                "a quantized model"
            )
        else:
            n.reasons.append(f"max_model_len: {max_len}, as requested")
    else:
        share = kv // o.full_length_requests // BLOCK_SIZE * BLOCK_SIZE
        max_len = min(mpe, share)
        if max_len < min(mpe, MIN_USEFUL_MODEL_LEN):
            problem = (
                f"only ~{kv} tokens of KV cache would remain: {o.full_length_requests} requests "
                f"could not exceed {max_len} tokens each; use more GPUs, a quantized model, a "
                "larger instance type, or fewer full-length requests"
            )
        elif max_len == mpe:
            n.reasons.append(
                f"max_model_len: {mpe}, the model's positions; {kv} KV tokens hold "
                f"{kv / mpe:.1f} requests of full length (>= {o.full_length_requests} wanted)"
            )
        else:
            n.reasons.append(
                f"max_model_len: {max_len}, so {o.full_length_requests} requests of full length "
                f"fit the ~{kv} KV tokens (the model allows {mpe})"
            )
    return VllmPlan(
        model=model,
        inventory=inventory,
        version=f"{v[0]}.{v[1]}.{v[2]}",
        image=image.image,
        fits=problem is None,
        tensor_parallel_size=tp,
        quantization=quant,
        quantization_flag=flag,
        dtype=dtype,
        gpu_memory_utilization=util,
        max_model_len=max_len,
        max_num_seqs=seqs,
        max_num_batched_tokens=batched,
        enforce_eager=o.enforce_eager,
        memory=mem,
        reasons=tuple(n.reasons),
        warnings=tuple(n.warnings),
        problem=problem,
    )


def require_fit(plan: VllmPlan) -> VllmPlan:
    """The plan, or DoesNotFitError (exit 2) with its problem."""
    if not plan.fits:
        raise DoesNotFitError(plan.problem or "the plan does not fit", plan)
    return plan


def free_memory_problem(plan: VllmPlan, inventory: GpuInventory) -> str | None:
    """Why vLLM would refuse to start on the probed GPUs, or None: request_memory() raises when
    a GPU's free memory is below ceil(utilization x total) (vllm/v1/worker/utils.py)."""
    for gpu in inventory.gpus[: plan.tensor_parallel_size]:
        free = gpu.memory_mib - gpu.memory_used_mib
        wanted = math.ceil(gpu.memory_mib * plan.gpu_memory_utilization)
        if free < wanted:
            most = math.floor(free / gpu.memory_mib * 100) / 100
            return (
                f"GPU {gpu.index} ({gpu.name}) has {free} MiB free of {gpu.memory_mib} MiB, but "
                f"vLLM will ask for {plan.gpu_memory_utilization:g} x total = {wanted} MiB and "
                f"refuses to start with less free ('less than desired GPU memory utilization'); "
                f"stop what uses {gpu.memory_used_mib} MiB there (another container?), or "
                f"deploy with --gpu-memory-utilization {most:.2f} or less"
            )
    return None


# --------------------------------------------------------------------------------------------
# The unit
# --------------------------------------------------------------------------------------------


def docker_run_args(plan: VllmPlan, options: UnitOptions) -> list[str]:
    """The unit's `docker run` line. Secret values never: HF_TOKEN / VLLM_API_KEY by name."""
    return docker_run_command(
        options,
        # vLLM's docs (gpu.cuda.inc.md): "either use the ipc=host flag or --shm-size" for the
        # shared memory tensor parallelism uses (its MessageQueue, NCCL's shm transport).
        # Not --ipc=host: that shares the host's IPC namespace with the container. /dev/shm is
        # a tmpfs that takes memory only as it is written, so the size is a cap, not a
        # reservation; Docker's 64 MiB default is too small for TP > 1.
        shm_size=SHM_SIZE,
        container_port=CONTAINER_PORT,
        # The same host cache dir as TGI's (render.cache_dir), at vLLM's HF home: an instance
        # that comes back finds the weights there and boots with HF_HUB_OFFLINE=1.
        volumes=[
            (cache_dir(options.data_dir), CONTAINER_HF_HOME),
            (f"{cache_dir(options.data_dir)}/{VLLM_CACHE_SUBDIR}", CONTAINER_VLLM_CACHE),
        ],
        env=options.extra_env,
        image=image_ref(plan.image, options.image_digest),
        engine_args=plan.launch_args(),
    )


def unit_context(plan: VllmPlan, options: UnitOptions) -> UnitContext:
    """vLLM's part of unit_templates/vllm.service.j2 (the rest: render.render_engine_unit)."""
    return UnitContext(
        plan_summary=(
            f"engine=vllm {plan.version} tp={plan.tensor_parallel_size} "
            f"quantization={plan.quantization or 'none'} dtype={plan.dtype} "
            f"max_model_len={plan.max_model_len} kv_tokens~{plan.memory.kv_cache_tokens}"
        ),
        docker_args=docker_run_args(plan, options),
    )


def render_unit(
    plan: VllmPlan, options: UnitOptions, template_text: str, *, tgiops_version: str
) -> str:
    """unit_templates/vllm.service.j2 rendered (render.render_engine_unit with vLLM's context)."""
    return render_engine_unit(
        plan, options, template_text, unit_context(plan, options), tgiops_version=tgiops_version
    )


def unit_env(offline: bool) -> Mapping[str, str]:
    """Plain env for the unit: HF_HUB_OFFLINE=1 when the instance boots without the Hub."""
    return dict(OFFLINE_ENV) if offline else {}


# --------------------------------------------------------------------------------------------
# The plan, as `tgiops plan --engine vllm` prints it
# --------------------------------------------------------------------------------------------


def plan_as_dict(plan: VllmPlan) -> dict[str, Any]:
    """`tgiops plan --engine vllm --json`: the shape of TGI's plan JSON (tgiops.core.plan
    .plan_as_dict, README "Plan JSON") with vLLM's values in its fields, and vLLM's own knobs
    under "vllm". ``memory.kv_cache_tokens`` is the predicted `GPU KV cache size: N tokens`."""
    mem = plan.memory
    gib = MIB_PER_GIB

    def g(mib: float) -> float:
        return round(mib / gib, 2)

    terms = {
        "weights": mem.weights_mib,
        "profile_activations": mem.activations_mib,
        "non_torch": mem.non_torch_mib,
        "cuda_graphs": mem.cudagraph_mib,
    }
    return {
        "fits": plan.fits,
        "problem": plan.problem,
        "model": model_as_plan_dict(plan.model),
        "hardware": hardware_as_dict(plan.inventory),
        "engine": {"name": "vllm", "version": plan.version},
        "image": plan.image,
        "num_shard": plan.tensor_parallel_size,
        "quantize": plan.quantization,
        "dtype": plan.dtype,
        # vLLM picks its attention backend itself (FlashAttention on sm80+); not a flag.
        "flash_attention": plan.inventory.compute_capability >= (8, 0),
        "max_input_tokens": plan.max_model_len,
        "max_total_tokens": plan.max_model_len,
        "max_batch_prefill_tokens": plan.max_num_batched_tokens,
        "cuda_memory_fraction": plan.gpu_memory_utilization,
        "env": {},
        "launcher_args": list(plan.launch_args()),
        "memory": {
            "gpu_memory_gib": g(mem.total_mib),
            "usable_gib": g(mem.requested_mib),
            "weights_per_gpu_gib": g(mem.weights_mib),
            "overhead_gib": g(mem.non_torch_mib + mem.cudagraph_mib),
            "activations_gib": g(mem.activations_mib),
            "prefill_logits_gib": 0.0,
            "warmup_kv_gib": 0.0,
            "dense_attention_gib": 0.0,
            "lm_head_gib": 0.0,
            "kv_share": 1.0,
            "terms_gib": {k: g(v) for k, v in terms.items()},
            "kv_bytes_per_token_per_gpu": mem.kv_bytes_per_token,
            "kv_cache_tokens": mem.kv_cache_tokens,
        },
        "reasons": list(plan.reasons),
        "warnings": list(plan.warnings),
        "alternatives": [],
        "vllm": {
            "tensor_parallel_size": plan.tensor_parallel_size,
            "gpu_memory_utilization": plan.gpu_memory_utilization,
            "max_model_len": plan.max_model_len,
            "max_num_seqs": plan.max_num_seqs,
            "max_num_batched_tokens": plan.max_num_batched_tokens,
            "enforce_eager": plan.enforce_eager,
            "num_gpu_blocks": mem.num_blocks,
            "block_size": mem.block_size,
        },
    }


def plan_as_text(plan: VllmPlan) -> str:
    """`tgiops plan --engine vllm`: the decision, its reasons and warnings, the launch line."""
    head = f"{plan.model.alias} on {plan.inventory.describe()} with vLLM {plan.version}: " + (
        "fits" if plan.fits else f"does NOT fit: {plan.problem}"
    )
    lines = [head, f"  image: {plan.image}"]
    lines += [f"  - {r}" for r in plan.reasons]
    lines += [f"  warning: {w}" for w in plan.warnings]
    if plan.fits:
        lines.append(
            f"  KV cache: ~{plan.memory.kv_cache_tokens} tokens ({plan.memory.num_blocks} "
            f"blocks of {plan.memory.block_size})"
        )
        lines.append("  vllm serve " + " ".join(plan.launch_args()))
    return "\n".join(lines) + "\n"
