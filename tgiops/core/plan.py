"""The planner: how TGI must be launched on this hardware, and whether it will fit (pure).

``plan(model, inventory, engine, overrides) -> Plan`` decides shard count, quantization,
dtype, the attention fallback and the token limits, and says why for each decision.

Memory: what TGI's warmup should find per GPU, term by term, is ``tgiops.core.warmup``
(``warmup_memory``; the derivation with links per release is tgiops/docs/tgi-memory-model.md).

Token limits: the plan keeps room for ``full_length_requests`` requests of full length at once
(default 4) and caps ``max_total_tokens`` at the model's ``max_position_embeddings``;
``max_input_tokens = max_total_tokens - 1`` as TGI's own zero-config does (§1b). Without
prefill chunking a prompt is one prefill, so ``max_batch_prefill_tokens`` must cover
``max_input_tokens``; there the input is capped at 8192 tokens unless overridden. TGI chunks
only from v3.0, on its flash model classes, with flashinfer or flashdecoding attention, for
text-only models (``TgiEngine.prefill_chunking``): not on the non-flash path of T4/V100, not with
paged attention. Every plan is checked against TGI's own argument validation
(``TgiEngine.validate_launcher_args``); one TGI would refuse does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tgiops.core.catalog import ModelSpec, require_tgi_servable
from tgiops.core.errors import PlanInputError
from tgiops.core.hardware import GpuInventory, InstanceType, inventory_for_instance_type
from tgiops.core.warmup import (
    GIB,
    MIB,
    MemoryEstimate,
    warmup_memory,
)

if TYPE_CHECKING:  # the engine modules sit above the planner (they call it)
    from tgiops.core.engines.tgi import TgiEngine

DEFAULT_FULL_LENGTH_REQUESTS = 4
DEFAULT_PREFILL_TOKENS = 4096  # TGI v3's own fallback default (§1b)
NON_CHUNKED_INPUT_CAP = 8192
MIN_USEFUL_TOTAL_TOKENS = 1024

QUANT_FLOAT16_ONLY = frozenset({"awq", "gptq", "exl2", "marlin"})  # §1: dtype forced to fp16
PREQUANTIZED_ONLY = frozenset({"awq", "gptq", "exl2", "marlin", "compressed-tensors"})
ON_THE_FLY = ("fp8", "eetq", "bitsandbytes", "bitsandbytes-nf4", "bitsandbytes-fp4")

_QUANT_COST = {
    "fp8": "weights in 8-bit floating point: about half the memory of 16-bit, small quality loss",
    "eetq": "weights in int8 (EETQ): about half the memory of 16-bit, small quality loss",
    "bitsandbytes": "weights in int8 (bitsandbytes): half the memory, slower, no CUDA graphs",
    "bitsandbytes-nf4": "weights in 4-bit NF4 (bitsandbytes): a quarter of the memory, "
    "noticeably slower and lower quality, no CUDA graphs",
    "bitsandbytes-fp4": "weights in 4-bit FP4 (bitsandbytes): a quarter of the memory, "
    "slower and lower quality than nf4",
}


@dataclass(frozen=True)
class Overrides:
    """What the user forced. ``quantize="none"`` forbids quantization; None means 'decide'."""

    num_shard: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    cuda_memory_fraction: float | None = None
    flash_attention: bool | None = None  # None: sm80+ only; True/False force it on or off
    full_length_requests: int = DEFAULT_FULL_LENGTH_REQUESTS


@dataclass(frozen=True)
class Alternative:
    description: str
    instance_type: str | None = None
    usd_per_hour: float | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    model: ModelSpec
    engine: TgiEngine
    inventory: GpuInventory
    fits: bool
    num_shard: int
    quantize: str | None
    dtype: str
    flash_attention: bool
    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    cuda_memory_fraction: float
    env: dict[str, str]
    memory: MemoryEstimate
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    problem: str | None = None  # why it does not fit, when fits is False
    attention: str = "paged"  # the attention backend TGI will run (TgiEngine.attention_backend)
    prefill_chunking: bool = False  # whether TGI splits long prompts (TgiEngine.prefill_chunking)

    @property
    def image(self) -> str:
        return self.engine.image

    @property
    def launcher_args(self) -> tuple[str, ...]:
        """The launcher flags, with the names this TGI release understands.

        Empty for a plan that does not fit: its limits are what was tried, not something to
        launch (TGI would fail with them, or refuse them).
        """
        if not self.fits:
            return ()
        args = ["--model-id", self.model.repo_id]
        if self.model.revision:
            args += ["--revision", self.model.revision]
        args += ["--num-shard", str(self.num_shard)]
        if self.quantize:
            args += ["--quantize", self.quantize]
        else:
            # TGI's server refuses --dtype together with --quantize ("Only 1 can be set
            # between `dtype` and `quantize`", server/text_generation_server/cli.py).
            args += ["--dtype", self.dtype]
        args += [
            self.engine.max_input_flag,
            str(self.max_input_tokens),
            "--max-total-tokens",
            str(self.max_total_tokens),
            "--max-batch-prefill-tokens",
            str(self.max_batch_prefill_tokens),
        ]
        if self.cuda_memory_fraction != 1.0:
            args += ["--cuda-memory-fraction", f"{self.cuda_memory_fraction:g}"]
        return tuple(args)


@dataclass
class _Notes:
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    overrides: Overrides | None = None,
    *,
    instance_types: Iterable[InstanceType] = (),
    quantized_siblings: Iterable[ModelSpec] = (),
) -> Plan:
    """Plan TGI for ``model`` on ``inventory``. Raises PlanInputError for impossible overrides.

    ``instance_types`` (the hardware table) lets a plan that does not fit suggest larger ones;
    ``quantized_siblings`` (``catalog.quantized_siblings``) lets it suggest the catalog's
    pre-quantized checkpoints of the same model.
    """
    overrides = overrides or Overrides()
    require_tgi_servable(model)  # gpt-oss (MXFP4), Mistral Small 3.1: name the engine that can
    result = _plan_once(model, inventory, engine, overrides)
    if result.fits:
        return _with_replicas_hint(result, engine, overrides)
    types = tuple(instance_types)
    found = _sibling_alternatives(inventory, engine, overrides, types, quantized_siblings)
    found += _alternatives(model, inventory, engine, overrides, types)
    if len(found) > 1:  # the catch-all only when nothing else was found
        found = [a for a in found if a.description != _NOTHING_ELSE]
    return replace(result, alternatives=tuple(found))


_NOTHING_ELSE = "a smaller model, or a GPU with more memory"


def _with_replicas_hint(result: Plan, engine: TgiEngine, overrides: Overrides) -> Plan:
    """When the model fits on fewer GPUs than the host has, say how to use the rest: one
    unit per group of GPUs (``deploy --gpu-devices ... --port ...``), each a replica.

    A replica keeps this plan's quantization: left to choose, a smaller group would fit by
    quantizing further (Llama 3.2 90B Vision "fits" one A100 in 4-bit NF4), which serves a
    different model than the one planned here.
    """
    model, inventory = result.model, result.inventory
    if inventory.count < 2:
        return result
    same_quantization = replace(overrides, num_shard=None, quantize=result.quantize or "none")
    per_replica = None
    for n in range(1, inventory.count // 2 + 1):
        if model.num_attention_heads % n or model.num_key_value_heads % n:
            continue
        subset = replace(inventory, gpus=inventory.gpus[:n], instance_type=None)
        try:
            attempt = _plan_once(model, subset, engine, same_quantization)
        except PlanInputError:
            continue
        if attempt.fits:
            per_replica = n
            break
    if per_replica is None:
        return result  # it needs more than half the GPUs: one unit is the only way
    replicas = inventory.count // per_replica
    quantize_flag = f" --quantize {result.quantize}" if result.quantize else ""
    commands = "; ".join(
        f"`tgiops deploy {model.alias}{quantize_flag} --host HOST --gpu-devices "
        f"{','.join(str(g) for g in range(i * per_replica, (i + 1) * per_replica))} "
        f"--unit tgiops-{model.alias}-{i} --port {8080 + i}`"
        for i in range(replicas)
    )
    fits_on = (
        f"{model.alias} fits on {per_replica} GPU(s) "
        f"{f'in {result.quantize} as here' if result.quantize else 'unquantized as here'}"
    )
    if result.num_shard < inventory.count:
        idle = inventory.count - result.num_shard
        return replace(
            result,
            warnings=(
                *result.warnings,
                f"{idle} of {inventory.count} GPUs stay idle with one unit: {fits_on}, so serve "
                f"{replicas} replicas, one unit per {per_replica} GPU(s) on its own port: "
                f"{commands}",
            ),
        )
    return replace(
        result,
        reasons=(
            *result.reasons,
            f"replicas: {fits_on}; instead of one {result.num_shard}-way shard, {replicas} "
            f"replicas (one unit per {per_replica} GPU(s)) may serve more requests at once: "
            f"{commands}",
        ),
    )


def _sibling_alternatives(
    inventory: GpuInventory,
    engine: TgiEngine,
    overrides: Overrides,
    instance_types: tuple[InstanceType, ...],
    siblings: Iterable[ModelSpec],
) -> list[Alternative]:
    """The catalog's pre-quantized checkpoints of this model: here if they fit, else the
    cheapest instance type they fit."""
    found: list[Alternative] = []
    # The checkpoint dictates its quantization and its dtype (float16 for AWQ/GPTQ).
    free = replace(overrides, quantize=None, dtype=None)
    priced = sorted(
        (t for t in instance_types if t.on_demand_usd_per_hour is not None),
        key=lambda t: t.on_demand_usd_per_hour or 0.0,
    )
    for sibling in siblings:
        what = f"{sibling.alias} ({sibling.quantization} checkpoint of the same model)"
        try:
            here = _plan_once(sibling, inventory, engine, free)
        except PlanInputError:
            continue
        if here.fits:
            found.append(
                Alternative(
                    f"the pre-quantized {what}: fits here, {here.max_total_tokens} tokens per "
                    "request",
                    flags=(sibling.alias,),
                )
            )
            continue
        for itype in priced:
            try:
                there = _plan_once(
                    sibling,
                    inventory_for_instance_type(itype.name),
                    engine,
                    replace(free, num_shard=None),
                )
            except PlanInputError:
                continue
            if there.fits:
                found.append(
                    Alternative(
                        f"the pre-quantized {what} on {itype.name} ({itype.gpu_count}x "
                        f"{itype.gpu}, ${itype.on_demand_usd_per_hour:.2f}/h): "
                        f"{there.max_total_tokens} tokens per request",
                        instance_type=itype.name,
                        usd_per_hour=itype.on_demand_usd_per_hour,
                        flags=(sibling.alias, "--instance-type", itype.name),
                    )
                )
                break
    return found


def _plan_once(
    model: ModelSpec, inventory: GpuInventory, engine: TgiEngine, overrides: Overrides
) -> Plan:
    notes = _Notes()
    _check_override_values(overrides)
    _check_overrides_for_model(model, overrides)
    if inventory.count < 1:
        raise PlanInputError("the GPU inventory is empty: tgiops needs at least one NVIDIA GPU")
    major, minor = inventory.compute_capability
    sm = f"sm{major}{minor}"
    flash = (major, minor) >= (8, 0)
    if overrides.flash_attention is not None and overrides.flash_attention != flash:
        flash = overrides.flash_attention
        notes.warnings.append(
            f"--flash-attention {'on' if flash else 'off'} overrides the planner for {sm}"
            + (
                ": TGI's flash path on a pre-Ampere GPU works only where its kernels exist "
                '(flashinfer on sm75 for some models) and otherwise fails with "FlashAttention '
                'only supports Ampere GPUs or newer"'
                if flash
                else ""
            )
        )
    if model.model_type not in engine.model_types:
        notes.warnings.append(
            f"model_type {model.model_type!r} is not one TGI {engine.version_text} has a model "
            "class for (ModelType in its server/text_generation_server/models/__init__.py: "
            f"{', '.join(sorted(engine.model_types - {'RefinedWeb', 'RefinedWebModel'}))}); "
            "TGI may refuse it, or run it through transformers' slower AutoModel fallback, "
            "which cannot shard"
        )
    if (major, minor) >= (10, 0):
        notes.warnings.append(
            f"{sm} is newer than any GPU TGI's image builds kernels for: its custom kernels "
            'target TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0+PTX" (Dockerfile@v3.3.7 l.76) and '
            'flashinfer "7.5;8.0;8.6;8.9;9.0+PTX" (server/Makefile-flashinfer), so they run '
            "only through PTX JIT, if at all: unverified on this GPU (vLLM documents B200 "
            "runs, e.g. its gpt-oss recipe, github.com/vllm-project/recipes)"
        )
    if engine.dense_prefill_attention(model.model_type, "flashinfer") is not None:
        notes.warnings.append(
            f"Gemma 3 on TGI {engine.version_text} builds dense [batch, 1, input, input] "
            "attention masks for its prefills (the warmup's included: its first request carries "
            "an image), so prefill memory grows with the square of the input; the plan counts "
            "them (dense_attention, tgiops/docs/tgi-memory-model.md) as a lower bound. 31000 "
            "prefill tokens failed warmup on 4x A100 80GB (TGI issue #3130)"
        )
    gpu_label = inventory.describe()
    if not inventory.homogeneous:
        notes.warnings.append(
            f"mixed GPUs ({gpu_label}): TGI splits evenly, so the smallest GPU sets the limits"
        )

    env: dict[str, str] = {}
    if not flash:
        env.update(engine.non_flash_env())
        why = (
            "FlashAttention off, as requested"
            if overrides.flash_attention is False
            else f"{sm} has no FlashAttention (needs sm80+)"
        )
        notes.reasons.append(
            f"attention: {why}: "
            + ", ".join(f"{k}={v}" for k, v in env.items())
            + " keeps TGI on its non-flash path (padded batching, no sharding)"
        )

    quantize, hardware_problem = _choose_prequantized(
        model, inventory, engine, overrides, notes, sm
    )
    dtype = _choose_dtype(model, quantize, inventory, overrides, notes, sm)
    fraction = overrides.cuda_memory_fraction or 1.0
    num_shard = _choose_num_shard(model, inventory, overrides, flash, quantize, notes, sm)
    attention = engine.attention_backend(
        flash=flash,
        compute_capability=inventory.compute_capability,
        head_dim=engine.launcher_head_dim(model.model_type, model.head_dim),
        model_type=model.model_type,
    )
    # A model type TGI has no class for runs through its transformers backend, which chunks
    # only when transformers' model class is backend-compatible (models/__init__.py@v3.3.7
    # l.1739-1768): unknown here, so the plan takes the unchunked side, valid either way.
    chunking = (
        engine.prefill_chunking(flash=flash, attention=attention, vision=model.vision)
        and model.model_type in engine.model_types
    )
    notes.reasons.append(_chunking_reason(engine, flash, attention, chunking, model))

    # 16-bit first; quantize on the fly only when 16-bit does not fit and it is allowed.
    candidates: list[str | None] = [quantize]
    if quantize is None and overrides.quantize is None:
        # The non-flash fallback is a plain transformers model, which TGI loads 8-bit with
        # `load_in_8bit=quantize == "bitsandbytes"` (server/models/causal_lm.py); the other
        # methods need the flash model classes.
        methods: tuple[str, ...] = ON_THE_FLY if flash else ("bitsandbytes",)
        if model.model_type not in engine.model_types:
            # No TGI model class: the transformers fallback, which refuses eetq and 4-bit
            # bitsandbytes ("... is not supported for AutoModel", models/__init__.py@v3.3.7
            # l.1725-1736).
            methods = tuple(
                m for m in methods if m not in ("eetq", "bitsandbytes-nf4", "bitsandbytes-fp4")
            )
        candidates += [
            q
            for q in methods
            if q in engine.accepted_quantize
            and _missing_kernels(q, inventory, engine, model, sm) is None
        ]
    first_failure: Plan | None = None
    for candidate in candidates:
        attempt = _size(
            model,
            inventory,
            engine,
            overrides,
            candidate,
            dtype,
            fraction,
            num_shard,
            flash,
            attention,
            chunking,
            env,
            notes,
        )
        if hardware_problem:
            return replace(attempt, fits=False, problem=hardware_problem)
        if attempt.fits:
            if candidate != quantize and first_failure is not None:
                attempt = replace(
                    attempt,
                    reasons=(
                        *attempt.reasons,
                        f"quantize: {candidate} on the fly, because 16-bit does not fit: "
                        f"{first_failure.problem}; cost: {_QUANT_COST[candidate or '']}",
                    ),
                )
            return attempt
        first_failure = first_failure or attempt
    assert first_failure is not None
    return first_failure


def _check_override_values(overrides: Overrides) -> None:
    for name in ("num_shard", "max_input_tokens", "max_total_tokens", "max_batch_prefill_tokens"):
        value = getattr(overrides, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise PlanInputError(f"{flag} {value} must be a positive number")
    if overrides.cuda_memory_fraction is not None and not 0 < overrides.cuda_memory_fraction <= 1:
        raise PlanInputError(
            f"--cuda-memory-fraction {overrides.cuda_memory_fraction} must be in (0, 1], e.g. 0.9"
        )
    if (
        overrides.max_input_tokens is not None
        and overrides.max_total_tokens is not None
        and overrides.max_input_tokens >= overrides.max_total_tokens
    ):
        raise PlanInputError(
            f"--max-input-tokens {overrides.max_input_tokens} must be below --max-total-tokens "
            f"{overrides.max_total_tokens} (TGI: `max_input_tokens` must be < `max_total_tokens`)"
        )
    if overrides.dtype not in (None, "float16", "bfloat16"):
        raise PlanInputError(f"--dtype {overrides.dtype!r}: use float16 or bfloat16")
    if overrides.full_length_requests < 1:
        raise PlanInputError("the number of full-length requests must be at least 1")


def _check_overrides_for_model(model: ModelSpec, overrides: Overrides) -> None:
    """Token limits no hardware can make work: bad input (exit 2), not a plan that misfits."""
    mpe = model.max_position_embeddings
    total, given_input = overrides.max_total_tokens, overrides.max_input_tokens
    if total is not None and total < 2:
        raise PlanInputError(
            f"--max-total-tokens {total}: a request holds at least one input token and one "
            "generated token, and TGI demands max_input_tokens < max_total_tokens, so give at "
            f"least 2 (e.g. {min(mpe, 4096)})"
        )
    if total is not None and total > mpe:
        raise PlanInputError(
            f"--max-total-tokens {total} exceeds {model.alias}'s context "
            f"(max_position_embeddings {mpe}); give at most {mpe}"
        )
    if given_input is not None and given_input >= mpe:
        raise PlanInputError(
            f"--max-input-tokens {given_input} leaves no room to generate within "
            f"{model.alias}'s context of {mpe} tokens; give at most {mpe - 1}"
        )


def _choose_prequantized(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    overrides: Overrides,
    notes: _Notes,
    sm: str,
) -> tuple[str | None, str | None]:
    """The quantization the checkpoint or the user dictates (None: 16-bit for now).

    Returns it with the reason the GPU cannot run it, if any: a checkpoint the hardware
    cannot serve is a plan that does not fit (exit 1, with alternatives); a method the user
    forced that the hardware cannot run is bad input (exit 2).
    """
    requested = overrides.quantize
    checkpoint = model.quantization
    if requested is not None and requested != "none" and requested not in engine.accepted_quantize:
        raise PlanInputError(
            f"--quantize {requested!r} is not accepted by TGI {engine.version_text}; "
            f"it accepts: {', '.join(engine.accepted_quantize)} (or none)"
        )
    if checkpoint:
        if requested == "none":
            raise PlanInputError(
                f"--quantize none: {model.repo_id} is a {checkpoint} checkpoint; it cannot be "
                "served unquantized. Pick the 16-bit model's alias instead."
            )
        if requested not in (None, checkpoint) and not (
            checkpoint in ("awq", "gptq") and requested == "marlin"
        ):
            raise PlanInputError(
                f"--quantize {requested}: {model.repo_id} is already quantized with "
                f"{checkpoint}; TGI reads that from its quantization_config. Drop --quantize."
            )
        method = requested or checkpoint
        problem = _missing_kernels(method, inventory, engine, model, sm)
        if problem:
            return (
                method,
                f"{model.alias} is an {checkpoint.upper()}-quantized checkpoint; {problem}",
            )
        flag = method if method in engine.accepted_quantize else None
        if flag is None:
            raise PlanInputError(
                f"{model.repo_id} is a {checkpoint} checkpoint, which TGI "
                f"{engine.version_text} cannot load (--quantize {checkpoint} arrives later); "
                "pass --tgi-version 3.3.7"
            )
        notes.reasons.append(
            f"quantize: {method}, as the checkpoint is pre-quantized ({sm} has its kernels)"
        )
        return method, None
    if requested in (None, "none"):
        return None, None
    if requested in PREQUANTIZED_ONLY:
        raise PlanInputError(
            f"--quantize {requested} needs a checkpoint quantized with {requested}; "
            f"{model.repo_id} is 16-bit. Use an on-the-fly method ({', '.join(ON_THE_FLY)}) "
            "or a pre-quantized model alias."
        )
    problem = _missing_kernels(requested, inventory, engine, model, sm)
    if problem:
        raise PlanInputError(f"--quantize {requested}: {problem}")
    notes.reasons.append(f"quantize: {requested}, as requested (--quantize {requested})")
    return requested, None


def _missing_kernels(
    method: str, inventory: GpuInventory, engine: TgiEngine, model: ModelSpec, sm: str
) -> str | None:
    """Why the official image has no kernels for ``method`` on this GPU (§2 table), or None."""
    cc = inventory.compute_capability
    gpu = inventory.describe()
    if method in ("awq", "marlin", "exl2", "compressed-tensors") and cc < (8, 0):
        why = {
            "awq": "the official image builds its AWQ kernels for sm80/86/90 only",
            "marlin": "Marlin kernels need compute capability 8.0",
            "exl2": "the image builds exllamav2 for sm80+",
            "compressed-tensors": "its kernels (Marlin / CUTLASS) need sm80+",
        }[method]
        return (
            f"{method} cannot run on {gpu}: {why}. Use a GPU of compute capability "
            "8.0 or newer (A10G, L4, L40S, A100, H100: g5, g6, g6e, p4d, p5)"
            + ("" if model.quantization is None else " or the model's 16-bit alias")
        )
    if method == "fp8":
        if cc >= (8, 9) or (cc >= (8, 0) and engine.fp8_marlin_on_ampere):
            return None
        return (
            f"fp8 cannot run on {gpu} with TGI {engine.version_text}: native FP8 needs "
            "sm89+ (L4, L40S, H100), and the FP8-Marlin path for sm80-88 needs TGI >= 2.2.0"
        )
    if method == "eetq" and cc < (8, 0):
        # TGI has no capability gate and EETQ's minimum is not documented (docs/tgi.md §2);
        # we refuse below sm80 rather than guess.
        return (
            f"eetq on {gpu} is unverified (its minimum compute capability is not "
            "documented); use bitsandbytes or bitsandbytes-nf4 there"
        )
    return None


def _choose_dtype(
    model: ModelSpec,
    quantize: str | None,
    inventory: GpuInventory,
    overrides: Overrides,
    notes: _Notes,
    sm: str,
) -> str:
    bf16 = inventory.compute_capability >= (8, 0)
    if overrides.dtype == "bfloat16" and not bf16:
        raise PlanInputError(
            f"--dtype bfloat16: {inventory.describe()} ({sm}) has no bfloat16 support "
            "(needs sm80+); use --dtype float16"
        )
    if quantize in QUANT_FLOAT16_ONLY:
        if overrides.dtype == "bfloat16":
            raise PlanInputError(f"--dtype bfloat16: TGI runs {quantize} models in float16 only")
        notes.reasons.append(f"dtype: float16, as TGI forces it for {quantize}")
        return "float16"
    if overrides.dtype:
        notes.reasons.append(f"dtype: {overrides.dtype}, as requested")
        return overrides.dtype
    chosen = "bfloat16" if bf16 else "float16"
    no_bf16 = f"{sm} has no bfloat16 (needs sm80+)"
    if model.torch_dtype == "float32":
        # TGI serves 16-bit only: --dtype takes float16 or bfloat16, else the model class's
        # default, never float32 (server/text_generation_server/models/__init__.py@v3.3.7
        # l.464-482, flash_causal_lm.py l.1206-1227). The weights are cast when loaded.
        notes.reasons.append(
            f"dtype: {chosen}: the checkpoint is float32, which TGI does not serve; it casts "
            f"the weights to {chosen} when loading, half their file size"
            + ("" if bf16 else f" ({no_bf16})")
        )
    elif not bf16:
        notes.reasons.append(f"dtype: float16, as {no_bf16}")
    elif model.torch_dtype == "float16":
        notes.reasons.append(f"dtype: bfloat16 ({sm} supports it; the checkpoint is float16)")
    else:
        notes.reasons.append(f"dtype: bfloat16 ({sm} supports it; the checkpoint's own type)")
    return chosen


def _choose_num_shard(
    model: ModelSpec,
    inventory: GpuInventory,
    overrides: Overrides,
    flash: bool,
    quantize: str | None,
    notes: _Notes,
    sm: str,
) -> int:
    """The largest shard count that divides heads and key-value heads (§3): it leaves the
    most memory per GPU for the KV cache, so no smaller count can fit where it does not."""
    heads, kv_heads = model.num_attention_heads, model.num_key_value_heads

    def divides(n: int) -> bool:
        return heads % n == 0 and kv_heads % n == 0

    requested = overrides.num_shard
    if requested is not None:
        if requested > inventory.count:
            raise PlanInputError(
                f"--num-shard {requested}: the host has only {inventory.count} GPU(s)"
            )
        if not divides(requested):
            valid = [n for n in range(1, inventory.count + 1) if divides(n)]
            raise PlanInputError(
                f"--num-shard {requested} does not divide {model.alias}'s {heads} attention "
                f"heads and {kv_heads} key-value heads; valid here: {valid}"
            )
        if requested > 1 and not flash:
            raise PlanInputError(
                f"--num-shard {requested}: {sm} runs TGI's non-flash path, which cannot shard "
                '("sharded is not supported for AutoModel"); use --num-shard 1'
            )
        if requested > 1 and quantize == "exl2":
            raise PlanInputError("--num-shard: TGI cannot shard exl2 models; use --num-shard 1")
        notes.reasons.append(f"num_shard: {requested}, as requested")
        return requested
    if not flash:
        notes.reasons.append(
            f"num_shard: 1, as the non-flash path on {sm} cannot shard "
            f"({inventory.count} GPU(s) present)"
        )
        return 1
    if quantize == "exl2":
        notes.reasons.append("num_shard: 1, as TGI cannot shard exl2")
        return 1
    num_shard = next(n for n in range(inventory.count, 0, -1) if divides(n))
    notes.reasons.append(
        f"num_shard: {num_shard}, the largest count <= {inventory.count} GPU(s) that divides "
        f"{heads} heads and {kv_heads} key-value heads; passed explicitly because "
        "TGI <= 3.3.6 computes 1 from NVIDIA_VISIBLE_DEVICES=all"
    )
    if num_shard < inventory.count:
        notes.warnings.append(
            f"{inventory.count - num_shard} GPU(s) stay idle: {num_shard} is "
            "the largest shard count that divides the heads"
        )
    return num_shard


def _size(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    overrides: Overrides,
    quantize: str | None,
    dtype: str,
    fraction: float,
    num_shard: int,
    flash: bool,
    attention: str,
    chunking: bool,
    env: dict[str, str],
    notes: _Notes,
) -> Plan:
    """Size memory and token limits for one quantization choice."""
    reasons = list(notes.reasons)
    warnings = list(notes.warnings)

    mpe = model.max_position_embeddings

    def warmup(
        prefill: int, max_input: int | None = None, max_total: int | None = None
    ) -> MemoryEstimate:
        return warmup_memory(
            model,
            inventory,
            engine,
            num_shard=num_shard,
            quantize=quantize,
            prefill_tokens=prefill,
            fraction=fraction,
            flash=flash,
            attention=attention,
            max_input_tokens=max_input,
            max_total_tokens=max_total,
        )

    def kv_tokens_for(
        prefill: int, max_input: int | None = None, max_total: int | None = None
    ) -> tuple[int, float, float]:
        found = warmup(prefill, max_input, max_total)
        return found.kv_cache_tokens, found.activations_mib, found.prefill_logits_mib

    # Token limits: a fixed point, since the prefill size costs activations that shrink the
    # KV cache, and (without chunking) the prefill size follows the input length.
    prefill = overrides.max_batch_prefill_tokens or min(DEFAULT_PREFILL_TOKENS, mpe)
    kv_tokens, act_mib, logits_mib = kv_tokens_for(prefill)
    max_total = max_input = 0
    for _ in range(4):
        max_total = overrides.max_total_tokens or _default_total(
            kv_tokens, mpe, overrides, chunking
        )
        if overrides.max_input_tokens and not overrides.max_total_tokens:
            max_total = max(max_total, overrides.max_input_tokens + 1)
        max_input = overrides.max_input_tokens or max_total - 1
        new_prefill = overrides.max_batch_prefill_tokens or (
            min(DEFAULT_PREFILL_TOKENS, max_input) if chunking else max_input
        )
        if new_prefill == prefill:
            break
        prefill = new_prefill
        kv_tokens, act_mib, logits_mib = kv_tokens_for(prefill)
    limits_free = not (
        overrides.max_total_tokens
        or overrides.max_input_tokens
        or overrides.max_batch_prefill_tokens
    )
    if not chunking and limits_free:
        # Without chunking every prompt is one prefill, and a longer prefill costs memory (its
        # activations, and before TGI 3.0 its logits) that the KV cache loses: the iteration
        # above may oscillate. Take the longest request that still leaves room for
        # full_length_requests of them; the KV cache shrinks as the request grows.
        def enough(total: int) -> bool:
            found = kv_tokens_for(total - 1, total - 1, total)[0]
            return found // overrides.full_length_requests >= total

        low, high = 1, min(mpe, NON_CHUNKED_INPUT_CAP + 1)
        while low < high:
            middle = (low + high + 1) // 2
            if enough(middle):
                low = middle
            else:
                high = middle - 1
        if low >= 2:
            max_total, max_input = low, low - 1
            prefill = max_input

    # The router warms up with the limits chosen: its batch reserves KV for them.
    memory = warmup(prefill, max_input, max_total)
    kv_tokens, act_mib, logits_mib = (
        memory.kv_cache_tokens,
        memory.activations_mib,
        memory.prefill_logits_mib,
    )
    weights_mib, overhead_mib = memory.weights_per_gpu_mib, memory.overhead_mib
    usable_mib, share = memory.usable_mib, memory.kv_share
    kv_per_token = memory.kv_bytes_per_token_per_gpu
    problem = _misfit(
        model,
        inventory,
        engine,
        memory,
        max_total,
        max_input,
        prefill,
        overrides,
        quantize,
        num_shard,
        flash,
        chunking,
    )
    if problem is None:
        logits_text = (
            f" + {logits_mib / 1024:.2f} GiB prefill logits (TGI {engine.version_text}'s "
            "warmup computes them for every prefill token)"
            if logits_mib
            else ""
        )
        share_text = (
            f", of which TGI {engine.version_text} makes {share:.0%} KV cache" if share < 1 else ""
        )
        reasons.append(
            f"memory: {weights_mib / 1024:.1f} GiB weights + {overhead_mib / 1024:.2f} GiB "
            f"context + {act_mib / 1024:.2f} GiB prefill activations{logits_text}"
            + (
                f" + {memory.dense_attention_mib / 1024:.2f} GiB dense attention masks "
                f"({model.model_type} on TGI {engine.version_text} builds them for every prefill "
                "with an image, as warmup's is)"
                if memory.dense_attention_mib
                else ""
            )
            + " per GPU "
            f"leave {(usable_mib - memory.used_mib) / 1024:.1f} GiB of "
            f"{usable_mib / 1024:.1f} usable GiB{share_text}: {kv_tokens} KV-cache tokens at "
            f"{kv_per_token // 1024} KiB/token/GPU"
        )
        reasons.append(
            _limits_reason(model, engine, overrides, max_total, prefill, kv_tokens, chunking)
        )
    if not flash:
        warnings.append(
            "non-flash path: TGI uses padded batching and a growing Hugging Face KV cache; "
            "throughput is far below an sm80+ GPU and the KV figure is only a ceiling"
        )
    return Plan(
        model=model,
        engine=engine,
        inventory=inventory,
        fits=problem is None,
        num_shard=num_shard,
        quantize=quantize,
        dtype=dtype,
        flash_attention=flash,
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=prefill,
        cuda_memory_fraction=fraction,
        env=dict(env),
        memory=memory,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        problem=problem,
        attention=attention,
        prefill_chunking=chunking,
    )


def _chunking_reason(
    engine: TgiEngine, flash: bool, attention: str, chunking: bool, model: ModelSpec
) -> str:
    if chunking:
        return (
            f"prefill: chunked ({attention} attention, TGI {engine.version_text}), so "
            "max_batch_prefill_tokens may be below max_input_tokens"
        )
    if engine.version < (3, 0, 0):
        why = f"TGI {engine.version_text} does not chunk prefill by default (from 3.0)"
    elif not flash:
        why = "TGI's non-flash model classes cannot chunk prefill"
    elif model.vision:
        why = "TGI's multimodal model classes do not chunk prefill"
    elif model.model_type not in engine.model_types:
        why = (
            f"TGI has no model class for {model.model_type!r}; its transformers backend may "
            "not chunk"
        )
    else:
        why = f"TGI chunks prefill only with flashinfer or flashdecoding, not {attention}"
    return (
        f"prefill: not chunked ({why}), so max_batch_prefill_tokens must cover "
        "max_input_tokens (TGI refuses it otherwise)"
    )


def _default_total(kv_tokens: int, mpe: int, overrides: Overrides, chunking: bool) -> int:
    per_request = kv_tokens // overrides.full_length_requests
    total = min(mpe, per_request)
    if not chunking:
        total = min(total, NON_CHUNKED_INPUT_CAP + 1)
    return max(total, 2)


def _limits_reason(
    model: ModelSpec,
    engine: TgiEngine,
    overrides: Overrides,
    max_total: int,
    prefill: int,
    kv_tokens: int,
    chunking: bool,
) -> str:
    if overrides.max_total_tokens:
        head = f"max_total_tokens: {max_total}, as requested"
    elif max_total == model.max_position_embeddings:
        head = f"max_total_tokens: {max_total}, the model's max_position_embeddings"
    elif not chunking and max_total == NON_CHUNKED_INPUT_CAP + 1:
        head = (
            f"max_total_tokens: {max_total}: TGI {engine.version_text} cannot chunk prefill here, "
            f"so input is capped at {NON_CHUNKED_INPUT_CAP} tokens (raise with --max-input-tokens)"
        )
    else:
        head = (
            f"max_total_tokens: {max_total}, so {overrides.full_length_requests} full-length "
            f"requests fit the {kv_tokens}-token KV cache at once"
        )
    full = kv_tokens // max_total if max_total else 0
    tail = "" if "full-length" in head else f"; {full} full-length request(s) fit at once"
    return (
        f"{head}; max_input_tokens = max_total_tokens - 1 (TGI's own default); "
        f"max_batch_prefill_tokens: {prefill}{tail}"
    )


def _misfit(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    memory: MemoryEstimate,
    max_total: int,
    max_input: int,
    prefill: int,
    overrides: Overrides,
    quantize: str | None,
    num_shard: int,
    flash: bool,
    chunking: bool,
) -> str | None:
    """Why TGI would fail to start with these numbers, in TGI's terms; None when it fits."""
    gpu = inventory.describe()
    fmt = quantize or "16-bit"
    weights_total_gib = memory.weights_per_gpu_mib * num_shard / 1024
    if not memory.weights_fit:
        return (
            f"{model.alias} ({fmt}) needs ~{weights_total_gib:.1f} GiB of weights, "
            f"{memory.weights_per_gpu_mib / 1024:.1f} GiB per GPU over {num_shard} shard(s); "
            f"{gpu} leaves {memory.usable_mib / 1024:.1f} GiB usable per GPU "
            "(TGI would fail with CUDA out of memory while loading)"
        )
    if not memory.prefill_fits or memory.kv_cache_tokens < prefill:
        extra = [
            f"{mib / 1024:.2f} GiB of {what}"
            for what, mib in (
                ("activations", memory.activations_mib),
                ("prefill logits", memory.prefill_logits_mib),
                ("dense attention masks", memory.dense_attention_mib),
                ("KV blocks the warmup batch reserves", memory.warmup_kv_mib),
            )
            if mib
        ]
        return (
            f"warmup would fail: not enough memory to handle {prefill} prefill tokens "
            f"({', '.join(extra)} per GPU on top of the weights); lower "
            "--max-batch-prefill-tokens"
            + (" or --max-total-tokens" if memory.warmup_kv_mib else "")
        )
    if max_total > memory.kv_cache_tokens:
        return (
            f"not enough memory to handle max_total_tokens={max_total}: the KV cache holds "
            f"~{memory.kv_cache_tokens} tokens on {gpu}; lower --max-total-tokens"
        )
    if max_total > model.max_position_embeddings:
        return (
            f"max_total_tokens={max_total} exceeds {model.alias}'s max_position_embeddings "
            f"({model.max_position_embeddings})"
        )
    refused = engine.validate_launcher_args(
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=prefill,
        prefill_chunking=chunking,
        # Warmup's figure on the flash path; the non-flash router takes
        # max(16000, max_total, prefill) instead (backends/v3/src/lib.rs@v3.3.7).
        max_batch_total_tokens=memory.kv_cache_tokens if flash else None,
        num_shard=num_shard,
        quantize=quantize,
    )
    if refused:
        fix = (
            f"; TGI cannot chunk prefill here, so lower --max-input-tokens to {prefill} or "
            f"raise --max-batch-prefill-tokens to {max_input}"
            if not chunking and prefill < max_input
            else ""
        )
        return f"TGI's argument validation would refuse this: {'; '.join(refused)}{fix}"
    smallest = min(MIN_USEFUL_TOTAL_TOKENS, model.max_position_embeddings)
    if max_total < smallest and not overrides.max_total_tokens:  # a small limit asked for is fine
        return (
            f"only ~{memory.kv_cache_tokens} tokens of KV cache would remain on {gpu}: "
            f"requests could not exceed {max_total} tokens"
        )
    return None


def _alternatives(
    model: ModelSpec,
    inventory: GpuInventory,
    engine: TgiEngine,
    overrides: Overrides,
    instance_types: Iterable[InstanceType],
) -> list[Alternative]:
    found: list[Alternative] = []
    base = _plan_once(model, inventory, engine, overrides)
    # A shorter context, when the weights fit but the asked-for limits do not. When the
    # warmup batch's reservation for the asked-for max_total_tokens is what fails, the KV
    # cache is the one the same plan finds without that limit.
    tokens = base.memory.kv_cache_tokens
    if overrides.max_total_tokens and not base.memory.prefill_fits and base.memory.weights_fit:
        tokens = warmup_memory(
            model,
            inventory,
            engine,
            num_shard=base.num_shard,
            quantize=base.quantize,
            prefill_tokens=base.max_batch_prefill_tokens,
            fraction=base.cuda_memory_fraction,
            flash=base.flash_attention,
            attention=base.attention,
        ).kv_cache_tokens
    if overrides.max_total_tokens and tokens >= MIN_USEFUL_TOTAL_TOKENS:
        total = min(tokens, model.max_position_embeddings)
        found.append(
            Alternative(
                f"a shorter context: --max-total-tokens {total}",
                flags=("--max-total-tokens", str(total)),
            )
        )
    if overrides.max_batch_prefill_tokens and base.memory.weights_fit:
        found.append(
            Alternative(
                "a smaller prefill: drop --max-batch-prefill-tokens or lower it",
                flags=("--max-batch-prefill-tokens", str(DEFAULT_PREFILL_TOKENS)),
            )
        )
    # Another quantization on the same hardware, when the user ruled them out or forced one.
    if model.quantization is None and overrides.quantize is not None:
        for method in ON_THE_FLY:
            if method == overrides.quantize or method not in engine.accepted_quantize:
                continue
            try:
                attempt = _plan_once(model, inventory, engine, replace(overrides, quantize=method))
            except PlanInputError:
                continue
            if attempt.fits:
                found.append(
                    Alternative(
                        f"quantize on the fly: --quantize {method} ({_QUANT_COST[method]})",
                        flags=("--quantize", method),
                    )
                )
                break
    # Larger instance types: the cheapest few that fit, one per GPU model.
    hardware_free = replace(overrides, num_shard=None)
    seen_gpus: set[str] = set()
    priced = sorted(
        (t for t in instance_types if t.on_demand_usd_per_hour is not None),
        key=lambda t: t.on_demand_usd_per_hour or 0.0,
    )
    for itype in priced:
        if itype.gpu in seen_gpus or itype.name == inventory.instance_type:
            continue
        try:
            attempt = _plan_once(
                model, inventory_for_instance_type(itype.name), engine, hardware_free
            )
        except PlanInputError:
            continue
        if attempt.fits:
            seen_gpus.add(itype.gpu)
            found.append(
                Alternative(
                    f"{itype.name} ({itype.gpu_count}x {itype.gpu}, "
                    f"${itype.on_demand_usd_per_hour:.2f}/h): {attempt.max_total_tokens} "
                    f"tokens per request, {attempt.quantize or attempt.dtype}",
                    instance_type=itype.name,
                    usd_per_hour=itype.on_demand_usd_per_hour,
                    flags=("--instance-type", itype.name),
                )
            )
        if len(seen_gpus) >= 3:
            break
    if not found:
        found.append(Alternative(_NOTHING_ELSE))
    return found


def model_as_plan_dict(model: ModelSpec) -> dict[str, Any]:
    """The plan JSON's ``model`` object (every engine's plan: README "Plan JSON")."""
    return {"alias": model.alias, "repo_id": model.repo_id, "revision": model.revision}


def hardware_as_dict(inventory: GpuInventory) -> dict[str, Any]:
    """The plan JSON's ``hardware`` object (every engine's plan)."""
    return {
        "gpus": inventory.count,
        "gpu": inventory.gpus[0].name,
        "compute_capability": "{}.{}".format(*inventory.compute_capability),
        "instance_type": inventory.instance_type,
    }


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    """The documented `tgiops plan --json` object (README: "Plan JSON")."""
    mem = plan.memory
    return {
        "fits": plan.fits,
        "problem": plan.problem,
        "model": model_as_plan_dict(plan.model),
        "hardware": hardware_as_dict(plan.inventory),
        "engine": {"name": plan.engine.name, "version": plan.engine.version_text},
        "image": plan.image,
        "num_shard": plan.num_shard,
        "quantize": plan.quantize,
        "dtype": plan.dtype,
        "flash_attention": plan.flash_attention,
        "max_input_tokens": plan.max_input_tokens,
        "max_total_tokens": plan.max_total_tokens,
        "max_batch_prefill_tokens": plan.max_batch_prefill_tokens,
        "cuda_memory_fraction": plan.cuda_memory_fraction,
        "env": dict(plan.env),
        "launcher_args": list(plan.launcher_args),
        "memory": {
            "gpu_memory_gib": round(mem.gpu_memory_mib / (GIB // MIB), 2),
            "usable_gib": round(mem.usable_mib / (GIB // MIB), 2),
            "weights_per_gpu_gib": round(mem.weights_per_gpu_mib / (GIB // MIB), 2),
            "overhead_gib": round(mem.overhead_mib / (GIB // MIB), 2),
            "activations_gib": round(mem.activations_mib / (GIB // MIB), 2),
            "prefill_logits_gib": round(mem.prefill_logits_mib / (GIB // MIB), 2),
            "warmup_kv_gib": round(mem.warmup_kv_mib / (GIB // MIB), 2),
            "dense_attention_gib": round(mem.dense_attention_mib / (GIB // MIB), 2),
            "lm_head_gib": round(mem.lm_head_mib / (GIB // MIB), 2),
            "kv_share": mem.kv_share,
            # Every term by name, as warmup.MemoryEstimate.terms() lists them (tgiops/docs/
            # tgi-memory-model.md).
            "terms_gib": {k: round(v / (GIB // MIB), 2) for k, v in mem.terms().items()},
            "kv_bytes_per_token_per_gpu": mem.kv_bytes_per_token_per_gpu,
            "kv_cache_tokens": mem.kv_cache_tokens,
        },
        "reasons": list(plan.reasons),
        "warnings": list(plan.warnings),
        "alternatives": [
            {
                "description": a.description,
                "instance_type": a.instance_type,
                "usd_per_hour": a.usd_per_hour,
                "flags": list(a.flags),
            }
            for a in plan.alternatives
        ],
    }
