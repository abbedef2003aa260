"""vLLM's startup checks, as pure functions of the model, the GPUs and the flags.

Each check raises `StartupError(process, exception)` with vLLM's exception text; `process`
says where vLLM raises it: "api" (config building in the API server process, before the
engine core starts) or "engine" (the engine core / worker). Sources per check below; texts are
vLLM's unless marked "emulator".
"""

from __future__ import annotations

from dataclasses import dataclass

from tgi_emulator.engine import ModelArch
from tgi_emulator.gpus import EmulatedGpu

from .memory import ModelShape


class StartupError(Exception):
    def __init__(self, process: str, exception: str, where: str = "") -> None:
        super().__init__(exception)
        self.process = process
        self.exception = exception
        self.where = where


# quantization method -> minimum compute capability (x10), from each QuantizationConfig's
# get_min_capability() (vllm/model_executor/layers/quantization/*.py) and facts §1.5:
# AWQ Turing+, GPTQ 6.0+, Marlin (AWQ/GPTQ/FP8 weight-only) Ampere+, bitsandbytes/GGUF Volta+.
# FP8 is taken as Ampere+ (weight-only via Marlin below Ada), the conservative reading of the
# docs' conflict (facts §1.5).
MIN_CAPABILITY = {
    "awq": 75,
    "awq_marlin": 80,
    "gptq": 60,
    "gptq_marlin": 80,
    "marlin": 80,
    "fp8": 80,
    "fbgemm_fp8": 80,
    "compressed-tensors": 75,
    "bitsandbytes": 70,
    "gguf": 60,
    "experts_int8": 80,
}
# Checkpoints whose method vLLM upgrades to a Marlin kernel on sm80+ (is_*_marlin_compatible)
MARLIN_UPGRADE = {"awq": "awq_marlin", "gptq": "gptq_marlin"}
FP16_ONLY = {"awq", "gptq"}  # the non-Marlin kernels' get_supported_act_dtypes()


def shape_of(arch: ModelArch) -> ModelShape:
    return ModelShape(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_heads=arch.num_heads,
        num_kv_heads=arch.num_kv_heads,
        head_dim=arch.head_dim,
        vocab_size=arch.vocab_size,
        experts_per_token=arch.experts_per_token,
    )


def capability_int(gpu: EmulatedGpu) -> int:
    major, minor = gpu.compute_capability
    return major * 10 + minor


# Architectures the V1-only releases (all emulated ones) no longer register: every
# encoder-decoder model but Whisper left with the V0 engine (vllm-project/vllm PR #24907,
# before v0.11.0; facts §1.6).
REMOVED_ARCHITECTURES = frozenset({"MllamaForConditionalGeneration"})


def check_architecture(architecture: str) -> None:
    """ModelConfig validation: ModelRegistry's "not supported for now" (facts §1.6)."""
    if architecture in REMOVED_ARCHITECTURES:
        raise StartupError(
            "api",
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
            f"  Value error, Model architectures ['{architecture}'] are not supported for now. "
            "Supported architectures: dict_keys(['LlamaForCausalLM', 'MistralForCausalLM', "
            "'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'Gemma3ForConditionalGeneration', "
            "'WhisperForConditionalGeneration', ...])",
            "vllm/config/model.py",
        )


def check_attention_heads(arch: ModelArch, tp: int) -> None:
    """ModelConfig.verify_with_parallel_config (vllm/config/model.py; facts §1.2)."""
    if arch.num_heads % tp != 0:
        raise StartupError(
            "api",
            f"ValueError: Total number of attention heads ({arch.num_heads}) must be divisible "
            f"by tensor parallel size ({tp}).",
            "vllm/config/model.py",
        )


def check_world_size(tp: int, visible: int) -> None:
    """More ranks than visible GPUs: the multiprocessing executor's assertion."""
    if tp > visible:
        # MultiprocExecutor._init_executor's assertion (vllm/v1/executor/multiproc_executor.py).
        raise StartupError(
            "engine",
            f"AssertionError: please set tensor_parallel_size ({tp}) to less than max local "
            f"gpu count ({visible})",
            "vllm/v1/executor/multiproc_executor.py",
        )


def derive_max_model_len(arch: ModelArch, requested: int | None, allow_long: bool) -> int:
    """ModelConfig._get_and_verify_max_len: the config's max_position_embeddings caps it."""
    derived = arch.max_position_embeddings or 2048
    if requested is None:
        return derived
    if requested > derived and not allow_long:
        raise StartupError(
            "api",
            f"ValueError: User-specified max_model_len ({requested}) is greater than the derived "
            f"max_model_len (max_position_embeddings={derived} or model_max_length=None in "
            "model's config.json). To allow overriding this maximum, set the env var "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
            "extreme caution. If the model uses relative position encoding (RoPE), positions "
            "exceeding derived_max_model_len lead to nan. If the model uses absolute position "
            "encoding, positions exceeding derived_max_model_len will cause a CUDA array "
            "out-of-bounds error.",
            "vllm/config/model.py",
        )
    return requested


@dataclass(frozen=True)
class Kernel:
    quantization: str | None  # the method vLLM runs, e.g. awq_marlin
    logs: tuple[tuple[str, str], ...]  # (level, message) from the engine core


def resolve_quantization(
    arch: ModelArch, requested: str | None, cc: int, quant_format: str | None = None
) -> Kernel:
    """ModelConfig._verify_quantization (vllm/config/model.py) for one GPU capability.

    A compressed-tensors checkpoint in "float-quantized" format holds FP8 weights: its scheme
    (CompressedTensorsW8A8Fp8) runs natively on sm89+ and weight-only through Marlin on sm80+.
    """
    checkpoint_method = arch.quant_method
    logs: list[tuple[str, str]] = []
    if requested is None:
        method = checkpoint_method
        if method in MARLIN_UPGRADE and cc >= 80:
            upgraded = MARLIN_UPGRADE[method]
            logs.append(
                (
                    "INFO",
                    f"The model is convertible to {upgraded} during runtime. Using {upgraded} "
                    "kernel.",
                )
            )
            method = upgraded
    else:
        method = requested
        if checkpoint_method is None and requested in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
            # get_quant_config(): no quantize_config.json / quantization_config for it.
            raise StartupError(
                "engine",
                f"ValueError: Cannot find the config file for {requested}",
                "vllm/model_executor/model_loader/weight_utils.py",
            )
        compatible = {checkpoint_method, MARLIN_UPGRADE.get(checkpoint_method or "")}
        if checkpoint_method is not None and requested not in compatible:
            raise StartupError(
                "api",
                "ValueError: Quantization method specified in the model config "
                f"({checkpoint_method}) does not match the quantization method specified in "
                f"the `quantization` argument ({requested}).",
                "vllm/config/model.py",
            )
        if requested in MARLIN_UPGRADE and cc >= 80:
            logs.append(
                (
                    "WARNING",
                    f"Detected that the model can run with {MARLIN_UPGRADE[requested]}, however "
                    f"you specified quantization={requested} explicitly, so forcing {requested}. "
                    f"Use quantization={MARLIN_UPGRADE[requested]} for faster inference",
                )
            )
    if method is None:
        return Kernel(None, tuple(logs))
    fp8 = method in ("fp8", "fbgemm_fp8") or (
        method == "compressed-tensors" and quant_format == "float-quantized"
    )
    minimum = MIN_CAPABILITY["fp8"] if fp8 else MIN_CAPABILITY.get(method, 0)
    if cc < minimum:
        raise StartupError(
            "api",
            f"ValueError: The quantization method {method} is not supported for the current "
            f"GPU. Minimum capability: {minimum}. Current capability: {cc}.",
            "vllm/config/model.py",
        )
    if fp8 and cc < 89:
        logs.append(
            (
                "WARNING",
                "Your GPU does not have native support for FP8 computation but FP8 quantization "
                "is being used. Weight-only FP8 compression will be used leveraging the Marlin "
                "kernel. This may degrade performance for compute-heavy workloads.",
            )
        )
    return Kernel(method, tuple(logs))


@dataclass(frozen=True)
class DType:
    name: str  # float16 | bfloat16 | float32
    logs: tuple[tuple[str, str], ...]


_DTYPE_ALIASES = {"half": "float16", "float": "float32"}


def resolve_dtype(
    arch_dtype: str | None, requested: str, quantization: str | None, gpu: EmulatedGpu
) -> DType:
    """ModelConfig dtype resolution, then the worker's bf16 capability check.

    - auto: the checkpoint's torch_dtype; float32 checkpoints are served in bfloat16 (float16
      below sm80); bfloat16 on a GPU without bf16 falls back to float16 with vLLM's warning
      (vllm/config/model.py `_resolve_auto_dtype`).
    - explicit bfloat16 below sm80: `Bfloat16 is only supported on GPUs with compute
      capability of at least 8.0...` (Worker.init_device -> check_if_supports_dtype).
    - AWQ/GPTQ non-Marlin kernels run float16 only.
    """
    cc = capability_int(gpu)
    logs: list[tuple[str, str]] = []
    if requested == "auto":
        name = arch_dtype if arch_dtype in ("float16", "bfloat16", "float32") else "bfloat16"
        if name == "float32":
            name = "bfloat16" if cc >= 80 else "float16"
        if quantization in FP16_ONLY:
            name = "float16"
        if name == "bfloat16" and cc < 80:
            logs.append(
                (
                    "WARNING",
                    f"Your device '{gpu.name}' (with compute capability "
                    f"{gpu.capability_text}) doesn't support torch.bfloat16. Falling back to "
                    "torch.float16 for compatibility.",
                )
            )
            name = "float16"
        return DType(name, tuple(logs))
    name = _DTYPE_ALIASES.get(requested, requested)
    if quantization in FP16_ONLY and name != "float16":
        raise StartupError(
            "api",
            f"ValueError: torch.{name} is not supported for quantization method "
            f"{quantization}. Supported dtypes: [torch.float16]",
            "vllm/config/model.py",
        )
    if name == "bfloat16" and cc < 80:
        raise StartupError(
            "engine",
            "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least "
            f"8.0. Your {gpu.name} GPU has compute capability {gpu.capability_text}. You can use "
            "float16 instead by explicitly setting the `dtype` flag in CLI, for example: "
            "--dtype=half.",
            "vllm/platforms/cuda.py",
        )
    return DType(name, tuple(logs))


def weight_bytes_per_rank(arch: ModelArch, quantization: str | None, tp: int, dtype: str) -> int:
    """The checkpoint's bytes split over the ranks; online fp8 halves 16-bit weights."""
    total = arch.weight_bytes
    if quantization == "fp8" and arch.quant_method is None:
        total //= 2
    elif dtype == "float32" and arch.quant_method is None:
        total *= 2  # 16-bit checkpoints upcast (emulator's reading)
    return total // tp


def check_driver(cuda: str, driver_version: str | None, environ: dict[str, str]) -> None:
    """A CUDA 13 build on a driver older than R580 (facts §1.1).

    Real images carry NVIDIA_REQUIRE_CUDA, so the NVIDIA runtime may refuse the container
    first; the testbed's dockerd has no NVIDIA runtime, so the emulator fails the way torch
    inside vLLM does when the driver is too old (torch/cuda/__init__.py `_lazy_init`).
    VLLM_ENABLE_CUDA_COMPATIBILITY=1 makes the image's forward-compat libraries serve R535/R570
    drivers on datacenter GPUs (facts §1.1): accepted from R535.
    """
    if driver_version is None or not cuda.startswith("13"):
        return
    try:
        major = int(driver_version.split(".")[0])
    except ValueError:
        return
    if major >= 580:
        return
    if environ.get("VLLM_ENABLE_CUDA_COMPATIBILITY") == "1" and major >= 535:
        return
    found = {535: 12020, 550: 12040, 560: 12060, 565: 12070, 570: 12080, 575: 12090}
    cuda_api = found.get(major, 12000)
    raise StartupError(
        "api",
        f"RuntimeError: The NVIDIA driver on your system is too old (found version {cuda_api}). "
        "Please update your GPU driver by downloading and installing a new version from the "
        "URL: http://www.nvidia.com/Download/index.aspx Alternatively, go to: "
        "https://pytorch.org to install a PyTorch version that has been compiled with your "
        "version of the CUDA driver.",
        "torch/cuda/__init__.py",
    )
