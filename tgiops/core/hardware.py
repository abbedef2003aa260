"""GPU facts and the EC2 GPU instance table (pure: no I/O, no clock, no environment).

Two tables live here:

* ``GPU_MODELS``: what each NVIDIA card is (architecture, compute capability) and what
  ``nvidia-smi --query-gpu=memory.total`` reports for it. The planner sizes memory from the
  nvidia-smi number because that is what TGI sees, not EC2's ``MemoryInfo`` figure.
* ``INSTANCE_TYPES``: the NVIDIA x86 families from tgiops/docs/ec2.md
  (hardware from moto 5.2.5 ``instance_types.json.gz`` [M]; p3 from the archived EC2 User Guide and
  AWS's P3 launch post [UG+P3B]; on-demand us-east-1 prices from Karpenter's generated pricing
  file at commit 6fc13b523, generated 2026-07-20 [K26]).

Facts and their sources, in prose: tgiops/docs/gpus-and-instances.md.

A ``GpuInventory`` is what a host has (probed with nvidia-smi, see ``probe.py``) or what an
instance type / ``--gpu`` spec implies.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import re
from dataclasses import dataclass, replace

from tgiops.core.errors import PlanInputError, UnknownHardwareError

logger = logging.getLogger(__name__)

MIB_PER_GIB = 1024

PRICE_REGION = "us-east-1"
PRICE_DATE = "2026-07-20"
PRICE_SOURCE = (
    "on-demand Linux prices, us-east-1, from Karpenter's generated pricing file "
    "(aws/karpenter-provider-aws pkg/providers/pricing/zz_generated.pricing_aws.go @6fc13b523, "
    "generated 2026-07-20; docs/ec2.md K26)"
)


# --------------------------------------------------------------------------------------------
# GPU models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuModel:
    """One NVIDIA GPU model as tgiops knows it."""

    name: str  # short name used in the instance table and on the command line: "A10G"
    smi_names: tuple[str, ...]  # the names nvidia-smi prints ("NVIDIA A10G"); first = canonical
    architecture: str  # "Turing", "Ampere", "Ada Lovelace", "Hopper", "Volta"
    compute_capability: tuple[int, int]
    memory_mib: int  # nvidia-smi memory.total, what TGI sees

    # Capability thresholds from docs/tgi.md §2: flash-attn v2, bf16 and the Marlin kernels
    # (AWQ/GPTQ/FP8-W8A16) need sm80+; native FP8 (W8A8) needs sm89 (Ada) or sm90 (Hopper).
    @property
    def has_flash_attention(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def has_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def has_fp8_native(self) -> bool:
        return self.compute_capability >= (8, 9)

    @property
    def has_marlin(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / MIB_PER_GIB

    @property
    def sm(self) -> str:
        """``sm86`` style tag."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


# memory_mib is nvidia-smi's memory.total as printed on real hosts (public logs found with
# the search tool): "Tesla T4, 15360 MiB"; "NVIDIA A10G, 23028 MiB" (g5, several EC2 logs);
# "NVIDIA L4, 23034 MiB"; "NVIDIA L40S, 46068 MiB"; "Tesla V100-SXM2-16GB, 16384 MiB"
# (driver 580); "Tesla V100-SXM2-32GB, 32768 MiB" (older drivers printed 32510);
# "NVIDIA A100-SXM4-40GB, 40960 MiB"; "NVIDIA A100-SXM4-80GB, 81920 MiB";
# "NVIDIA H100 80GB HBM3, 81559 MiB" and "NVIDIA H100 PCIe, 81559 MiB"; "NVIDIA H200, 143771 MiB".
# Compute capabilities: docs/ec2.md "Compute capability" (NVIDIA's CUDA GPU lists;
# A10G = A10's 8.6, inferred there).
#
# Cards not on EC2 (issue 14: plan any card). Compute capability from NVIDIA's CUDA GPUs page
# (developer.nvidia.com/cuda-gpus, as listed in full at
# michaelbommarito.com/wiki/programming/tools/gpu-compute-capability: A30 8.0; A10, A40, RTX
# A6000, RTX 3090 8.6; L40, RTX 4090 8.9; H20, GH200 9.0; B200 10.0, also docs/ec2.md) and
# NVIDIA's TensorRT-RTX 1.4 support matrix (docs.nvidia.com/deeplearning/tensorrt-rtx: RTX 3090
# 8.6, RTX 4090 8.9). memory.total as nvidia-smi prints it in public logs (find_string over stored
# repositories): "NVIDIA A10, 23028 MiB" (Lambda, vast.ai and OCI hosts; "compute capability 8.6"
# in the same vast.ai record); "NVIDIA A30, 24576"; "NVIDIA A40, 46068 MiB"; "NVIDIA RTX A6000,
# 49140 MiB"; "NVIDIA L40, 46068 MiB"; "NVIDIA GeForce RTX 4090, 24564 MiB"; "NVIDIA GeForce RTX
# 3090, 24576 MiB"; "NVIDIA H20, 97871" (MiB); "NVIDIA GH200 480GB, 97871 MiB" (the 96 GB HBM3
# variant; a 144 GB HBM3e one exists: plan it with --gpu-memory-gib); "NVIDIA B200, 183359 MiB" (=
# p6-b200's figure in docs/ec2.md).
GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("T4", ("Tesla T4",), "Turing", (7, 5), 15360),
    GpuModel("A10G", ("NVIDIA A10G",), "Ampere", (8, 6), 23028),
    GpuModel("L4", ("NVIDIA L4",), "Ada Lovelace", (8, 9), 23034),
    GpuModel("L40S", ("NVIDIA L40S",), "Ada Lovelace", (8, 9), 46068),
    GpuModel("V100", ("Tesla V100-SXM2-16GB",), "Volta", (7, 0), 16384),
    GpuModel("V100-32GB", ("Tesla V100-SXM2-32GB",), "Volta", (7, 0), 32768),
    GpuModel(
        "A100-40GB", ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"), "Ampere", (8, 0), 40960
    ),
    GpuModel(
        "A100-80GB", ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), "Ampere", (8, 0), 81920
    ),
    GpuModel("H100", ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"), "Hopper", (9, 0), 81559),
    GpuModel("H200", ("NVIDIA H200",), "Hopper", (9, 0), 143771),
    GpuModel("A10", ("NVIDIA A10",), "Ampere", (8, 6), 23028),
    GpuModel("A30", ("NVIDIA A30",), "Ampere", (8, 0), 24576),
    GpuModel("A40", ("NVIDIA A40",), "Ampere", (8, 6), 46068),
    GpuModel("RTX A6000", ("NVIDIA RTX A6000",), "Ampere", (8, 6), 49140),
    GpuModel("RTX 3090", ("NVIDIA GeForce RTX 3090",), "Ampere", (8, 6), 24576),
    GpuModel("L40", ("NVIDIA L40",), "Ada Lovelace", (8, 9), 46068),
    GpuModel("RTX 4090", ("NVIDIA GeForce RTX 4090",), "Ada Lovelace", (8, 9), 24564),
    GpuModel("H20", ("NVIDIA H20",), "Hopper", (9, 0), 97871),
    GpuModel("GH200", ("NVIDIA GH200 480GB",), "Hopper", (9, 0), 97871),
    GpuModel("B200", ("NVIDIA B200",), "Blackwell", (10, 0), 183359),
)

_VENDOR_PREFIXES = ("nvidia ", "tesla ")


def _normalize(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).casefold()


def _gpu_name_index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in GPU_MODELS:
        keys = {model.name}
        for smi in model.smi_names:
            keys.add(smi)
            low = _normalize(smi)
            for prefix in _VENDOR_PREFIXES:
                if low.startswith(prefix):
                    keys.add(low[len(prefix) :])  # "a10g", "h100 80gb hbm3", "t4"
        for key in keys:
            index[_normalize(key)] = model
    return index


_GPU_BY_NAME = _gpu_name_index()


def find_gpu_model(name: str, memory_gib: float | None = None) -> GpuModel:
    """A GPU model by short name or nvidia-smi name, case-insensitive ("a10g", "Tesla T4").

    A family name with several memory variants ("A100") resolves by ``memory_gib`` (80 ->
    A100-80GB); without it, or with a memory no variant has, it is refused naming the variants.
    """
    model = lookup_gpu_model(name)
    if model is not None:
        return model
    variants = gpu_variants(name)
    if variants:
        if memory_gib is not None:
            best = min(variants, key=lambda m: abs(m.memory_gib - memory_gib))
            if abs(best.memory_gib - memory_gib) <= 0.1 * best.memory_gib:
                return best
        sizes = ", ".join(f"{m.name} ({m.memory_gib:.0f} GiB)" for m in variants)
        given = "" if memory_gib is None else f" none has {memory_gib:g} GiB;"
        raise UnknownHardwareError(
            f"--gpu {name!r} comes in several variants: {sizes};{given} name one "
            f"(--gpu {variants[-1].name}) or give its memory (--gpu {name} --gpu-memory-gib "
            f"{variants[-1].memory_gib:.0f})"
        )
    spelled = _closest(
        name, [m.name for m in GPU_MODELS] + [s for m in GPU_MODELS for s in m.smi_names], n=12
    )
    # one suggestion per card, by its short name (nvidia-smi's names match too)
    closest = list(dict.fromkeys(_GPU_BY_NAME[_normalize(s)].name for s in spelled))[:3]
    hint = f" Did you mean: {', '.join(closest)}?" if closest else ""
    known = ", ".join(m.name for m in GPU_MODELS)
    raise UnknownHardwareError(
        f"unknown GPU {name!r}.{hint} Known GPUs: {known}. For another card, give its compute "
        "capability and memory (--compute-capability 8.6 --gpu-memory-gib 24), or probe the "
        "host (deploy reads nvidia-smi)."
    )


def gpu_variants(name: str) -> list[GpuModel]:
    """The memory variants of a family name: "A100" -> A100-40GB, A100-80GB."""
    key = _bare(name)
    return [m for m in GPU_MODELS if _normalize(m.name).startswith(key + "-")]


def lookup_gpu_model(name: str) -> GpuModel | None:
    """Like ``find_gpu_model`` but returns None for an unknown name (used for probed GPUs)."""
    return _GPU_BY_NAME.get(_normalize(name))


def _closest(value: str, candidates: list[str], n: int = 3) -> list[str]:
    """Names like ``value``, in three tiers, each by spelling (difflib's ratio) within:

    1. prefix: one name starts with the other once case, spaces, dashes and the vendor words are
       dropped ("A1000" -> A100-40GB/A100-80GB, "RTX 409" -> RTX 4090, "H10" -> H100), the
       longest shared start first ("a100x": the A100s before the A10);
    2. family: the given name is a word of the candidate or shares its first word of 3+
       characters ("4090" -> RTX 4090, "A6000" -> RTX A6000, "A100 SXM" -> A100-*);
    3. spelling alone (difflib.get_close_matches), so "A100" never suggests V100 before A100.
    """
    by_key: dict[str, str] = {}
    for cand in candidates:
        by_key.setdefault(_bare(cand), cand)
    key = _bare(value)
    if not key:
        return []
    compact = _compact(key)
    stem = key.split(" ")[0]

    def ratio(k: str) -> float:
        return difflib.SequenceMatcher(None, compact, _compact(k)).ratio()

    def tier(k: str) -> int:
        ck = _compact(k)
        head = _compact(re.split(r"[\s-]", k)[0])  # the model number: "a100" of "a100-80gb"
        if ck.startswith(compact) or (len(ck) >= 3 and compact.startswith(ck)):
            return 0
        if len(head) >= 3 and any(c.isdigit() for c in head) and compact.startswith(head):
            return 0
        if (len(key) >= 3 and key in k.split(" ")) or (
            len(stem) >= 3 and k.split(" ")[0].startswith(stem)
        ):
            return 1
        return 2

    def shared(k: str) -> int:
        """Characters the two names share from the start ("a100x": a100-* 4, a10 3)."""
        pairs = zip(compact, _compact(k), strict=False)
        return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], pairs))

    spelled = set(difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.5))
    ranked = sorted(
        (k for k in by_key if tier(k) < 2 or k in spelled),
        key=lambda k: (tier(k), -shared(k) if tier(k) == 0 else 0, -ratio(k), len(k), k),
    )
    return [by_key[k] for k in ranked[:n]]


def _bare(name: str) -> str:
    """Lower case, one space, without the vendor words nvidia-smi prints ("NVIDIA GeForce")."""
    key = _normalize(name)
    for prefix in (*_VENDOR_PREFIXES, "geforce "):
        key = key.removeprefix(prefix)
    return key


def _compact(key: str) -> str:
    return re.sub(r"[\s_-]+", "", key)


# --------------------------------------------------------------------------------------------
# EC2 instance types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceType:
    """One EC2 GPU instance type (numbers as docs/ec2.md gives them)."""

    name: str
    family: str
    gpu: str  # GpuModel.name
    gpu_count: int
    gpu_memory_mib: int  # per GPU, as EC2 DescribeInstanceTypes reports (not nvidia-smi's)
    interconnect: str  # "none" (1 GPU), "PCIe", "NVLink", "NVSwitch", "unverified"
    vcpus: int
    memory_gib: float
    on_demand_usd_per_hour: float | None  # PRICE_REGION on PRICE_DATE; None = not found

    @property
    def gpu_model(self) -> GpuModel:
        return find_gpu_model(self.gpu)

    @property
    def local_nvme_gb(self) -> int | None:
        """Local NVMe instance store in GB (all disks together); None: EBS only."""
        return _LOCAL_NVME_GB.get(self.name)

    @property
    def total_gpu_memory_mib(self) -> int:
        """Total nvidia-smi memory over all GPUs (what TGI can use), not EC2's number."""
        return self.gpu_model.memory_mib * self.gpu_count

    def describe(self) -> str:
        """``g5.12xlarge (4x A10G, $5.67/h)``."""
        price = (
            f"${self.on_demand_usd_per_hour:.2f}/h"
            if self.on_demand_usd_per_hour is not None
            else "price unknown"
        )
        return f"{self.name} ({self.gpu_count}x {self.gpu}, {price})"


# Interconnect, only where docs/ec2.md "NVLink / NVSwitch" cites a source:
# p3.8x/16x and p3dn NVLink (UG, P3B); p4d NVSwitch (UG); p5.48xlarge NVLink (HF summary);
# g5 4/8-GPU sizes PCIe (GIST). Everything else with >1 GPU is "unverified" (assume PCIe).
_NONE = "none"
_UNV = "unverified"

# Columns: name, family, gpu, gpu_count, gpu_memory_mib (EC2), interconnect, vcpus,
# memory_gib, on-demand USD/h (K26). Copied from tgiops/docs/ec2.md;
# left out: AMD (g4ad), Graviton (g5g, the TGI image is x86-only), fractional GPUs (g6f, gr6f:
# no tensor parallelism, nvidia-smi memory differs from a full L4), and g7/g7e/p6 (Blackwell:
# no verified nvidia-smi names or TGI support in our references).
_INSTANCE_ROWS: tuple[tuple[str, str, str, int, int, str, int, float, float | None], ...] = (
    ("g4dn.xlarge", "g4dn", "T4", 1, 16384, _NONE, 4, 16, 0.526),
    ("g4dn.2xlarge", "g4dn", "T4", 1, 16384, _NONE, 8, 32, 0.752),
    ("g4dn.4xlarge", "g4dn", "T4", 1, 16384, _NONE, 16, 64, 1.204),
    ("g4dn.8xlarge", "g4dn", "T4", 1, 16384, _NONE, 32, 128, 2.176),
    ("g4dn.12xlarge", "g4dn", "T4", 4, 16384, _UNV, 48, 192, 3.912),
    ("g4dn.16xlarge", "g4dn", "T4", 1, 16384, _NONE, 64, 256, 4.352),
    ("g4dn.metal", "g4dn", "T4", 8, 16384, _UNV, 96, 384, 7.824),
    ("g5.xlarge", "g5", "A10G", 1, 22888, _NONE, 4, 16, 1.006),
    ("g5.2xlarge", "g5", "A10G", 1, 22888, _NONE, 8, 32, 1.212),
    ("g5.4xlarge", "g5", "A10G", 1, 22888, _NONE, 16, 64, 1.624),
    ("g5.8xlarge", "g5", "A10G", 1, 22888, _NONE, 32, 128, 2.448),
    ("g5.12xlarge", "g5", "A10G", 4, 22888, "PCIe", 48, 192, 5.672),
    ("g5.16xlarge", "g5", "A10G", 1, 22888, _NONE, 64, 256, 4.096),
    ("g5.24xlarge", "g5", "A10G", 4, 22888, "PCIe", 96, 384, 8.144),
    ("g5.48xlarge", "g5", "A10G", 8, 22888, "PCIe", 192, 768, 16.288),
    ("g6.xlarge", "g6", "L4", 1, 22888, _NONE, 4, 16, 0.8048),
    ("g6.2xlarge", "g6", "L4", 1, 22888, _NONE, 8, 32, 0.9776),
    ("g6.4xlarge", "g6", "L4", 1, 22888, _NONE, 16, 64, 1.3232),
    ("g6.8xlarge", "g6", "L4", 1, 22888, _NONE, 32, 128, 2.0144),
    ("g6.12xlarge", "g6", "L4", 4, 22888, _UNV, 48, 192, 4.6016),
    ("g6.16xlarge", "g6", "L4", 1, 22888, _NONE, 64, 256, 3.3968),
    ("g6.24xlarge", "g6", "L4", 4, 22888, _UNV, 96, 384, 6.6752),
    ("g6.48xlarge", "g6", "L4", 8, 22888, _UNV, 192, 768, 13.3504),
    ("gr6.4xlarge", "gr6", "L4", 1, 22888, _NONE, 16, 128, 1.5392),
    ("gr6.8xlarge", "gr6", "L4", 1, 22888, _NONE, 32, 256, 2.4464),
    ("g6e.xlarge", "g6e", "L40S", 1, 45776, _NONE, 4, 32, 1.861),
    ("g6e.2xlarge", "g6e", "L40S", 1, 45776, _NONE, 8, 64, 2.24208),
    ("g6e.4xlarge", "g6e", "L40S", 1, 45776, _NONE, 16, 128, 3.00424),
    ("g6e.8xlarge", "g6e", "L40S", 1, 45776, _NONE, 32, 256, 4.52856),
    ("g6e.12xlarge", "g6e", "L40S", 4, 45776, _UNV, 48, 384, 10.49264),
    ("g6e.16xlarge", "g6e", "L40S", 1, 45776, _NONE, 64, 512, 7.57719),
    ("g6e.24xlarge", "g6e", "L40S", 4, 45776, _UNV, 96, 768, 15.06559),
    ("g6e.48xlarge", "g6e", "L40S", 8, 45776, _UNV, 192, 1536, 30.13118),
    ("p3.2xlarge", "p3", "V100", 1, 16384, _NONE, 8, 61, 3.06),
    ("p3.8xlarge", "p3", "V100", 4, 16384, "NVLink", 32, 244, 12.24),
    ("p3.16xlarge", "p3", "V100", 8, 16384, "NVLink", 64, 488, 24.48),
    ("p3dn.24xlarge", "p3dn", "V100-32GB", 8, 32768, "NVLink", 96, 768, 31.212),
    ("p4d.24xlarge", "p4d", "A100-40GB", 8, 40960, "NVSwitch", 96, 1152, 21.957642),
    ("p4de.24xlarge", "p4de", "A100-80GB", 8, 81920, _UNV, 96, 1152, 27.44705),
    ("p5.4xlarge", "p5", "H100", 1, 81920, _NONE, 16, 256, 6.88),
    ("p5.48xlarge", "p5", "H100", 8, 81920, "NVLink", 192, 2048, 55.04),
    ("p5e.48xlarge", "p5e", "H200", 8, 144384, _UNV, 192, 2048, None),  # K26: no us-east-1 price
    ("p5en.48xlarge", "p5en", "H200", 8, 144384, _UNV, 192, 2048, 63.296),
)

# Local NVMe instance store, GB in total: docs/ec2.md "Local NVMe GB" column, from moto
# 5.2.5's DescribeInstanceTypes data [M] (InstanceStorageInfo). p3 (EBS only) is absent.
_LOCAL_NVME_GB: dict[str, int] = {
    "g4dn.xlarge": 125,
    "g4dn.2xlarge": 225,
    "g4dn.4xlarge": 225,
    "g4dn.8xlarge": 900,
    "g4dn.12xlarge": 900,
    "g4dn.16xlarge": 900,
    "g4dn.metal": 1800,
    "g5.xlarge": 250,
    "g5.2xlarge": 450,
    "g5.4xlarge": 600,
    "g5.8xlarge": 900,
    "g5.12xlarge": 3800,
    "g5.16xlarge": 1900,
    "g5.24xlarge": 3800,
    "g5.48xlarge": 7600,
    "g6.xlarge": 250,
    "g6.2xlarge": 450,
    "g6.4xlarge": 600,
    "g6.8xlarge": 900,
    "g6.12xlarge": 3760,
    "g6.16xlarge": 1880,
    "g6.24xlarge": 3760,
    "g6.48xlarge": 7520,
    "gr6.4xlarge": 600,
    "gr6.8xlarge": 900,
    "g6e.xlarge": 250,
    "g6e.2xlarge": 450,
    "g6e.4xlarge": 600,
    "g6e.8xlarge": 900,
    "g6e.12xlarge": 3800,
    "g6e.16xlarge": 1900,
    "g6e.24xlarge": 3800,
    "g6e.48xlarge": 7600,
    "p3dn.24xlarge": 1800,
    "p4d.24xlarge": 8000,
    "p4de.24xlarge": 8000,
    "p5.4xlarge": 3800,
    "p5.48xlarge": 30400,
    "p5e.48xlarge": 30400,
    "p5en.48xlarge": 30400,
}

INSTANCE_TYPES: tuple[InstanceType, ...] = tuple(InstanceType(*row) for row in _INSTANCE_ROWS)
# The most GPUs one host of the table has (8: p4d, p5, g5.48xlarge, ...). TGI shards over the
# GPUs of one host only, so a larger `--gpus` describes no machine tgiops can deploy to.
MAX_GPUS_PER_HOST = max(it.gpu_count for it in INSTANCE_TYPES)
# `--gpu-memory-gib` bound: the largest GPU of the table (H200) has ~140 GiB; 1 TiB leaves room
# for newer cards while refusing what no GPU has (1e308 would make every model "fit").
MAX_GPU_MEMORY_GIB = 1024
# CUDA compute capabilities that exist: 3.0 (Kepler) to 12.x (Blackwell workstation, g7/g7e
# in docs/ec2.md). TGI's kernels need far more (docs/tgi.md §2); the planner says so.
MIN_COMPUTE_CAPABILITY = (3, 0)
MAX_COMPUTE_CAPABILITY = (12, 9)
_INSTANCE_BY_NAME = {it.name.casefold(): it for it in INSTANCE_TYPES}
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(it.family for it in INSTANCE_TYPES))


def _by_price(it: InstanceType) -> tuple[bool, float, str]:
    price = it.on_demand_usd_per_hour
    return (price is None, price if price is not None else 0.0, it.name)


def all_instance_types() -> tuple[InstanceType, ...]:
    """Every known instance type, cheapest first (unknown prices last)."""
    return tuple(sorted(INSTANCE_TYPES, key=_by_price))


def instance_types_with_gpu(
    gpu: str | None = None, *, min_gpus: int = 1
) -> tuple[InstanceType, ...]:
    """Instance types with GPU model ``gpu`` (any GPU when None) and >= min_gpus GPUs, by price."""
    wanted = find_gpu_model(gpu).name if gpu is not None else None
    return tuple(
        it
        for it in all_instance_types()
        if (wanted is None or it.gpu == wanted) and it.gpu_count >= min_gpus
    )


def find_instance_type(name: str) -> InstanceType:
    """An instance type by name, case-insensitive; UnknownHardwareError with closest names."""
    found = _INSTANCE_BY_NAME.get(name.strip().casefold())
    if found is not None:
        return found
    closest = _closest(name.strip(), [it.name for it in INSTANCE_TYPES])
    hint = f" Did you mean: {', '.join(closest)}?" if closest else ""
    raise UnknownHardwareError(
        f"unknown instance type {name!r}.{hint} tgiops knows the NVIDIA x86 GPU families "
        f"{', '.join(FAMILIES)}; for other hardware pass --gpu NAME --gpus N (or let deploy "
        "probe the host with nvidia-smi)."
    )


# --------------------------------------------------------------------------------------------
# Inventories
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str  # nvidia-smi name, e.g. "NVIDIA A10G"
    memory_mib: int  # memory.total
    compute_capability: tuple[int, int]
    memory_used_mib: int = 0
    utilization_pct: int = 0


@dataclass(frozen=True)
class GpuInventory:
    """The GPUs of one host (probed) or of an instance type / --gpu spec (predicted)."""

    gpus: tuple[Gpu, ...]
    instance_type: str | None = None
    driver_version: str | None = None

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def memory_mib(self) -> int:
        """Smallest memory.total over the GPUs (shards are equal, so the smallest decides)."""
        return min((g.memory_mib for g in self.gpus), default=0)

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / MIB_PER_GIB

    @property
    def total_memory_mib(self) -> int:
        return sum(g.memory_mib for g in self.gpus)

    @property
    def compute_capability(self) -> tuple[int, int]:
        """Lowest compute capability over the GPUs (the weakest card decides the kernels)."""
        return min((g.compute_capability for g in self.gpus), default=(0, 0))

    @property
    def model(self) -> GpuModel | None:
        """The known GpuModel of the first GPU, or None (unknown card or no GPUs)."""
        return lookup_gpu_model(self.gpus[0].name) if self.gpus else None

    @property
    def homogeneous(self) -> bool:
        return len({(g.name, g.memory_mib, g.compute_capability) for g in self.gpus}) <= 1

    def select(self, indices: tuple[int, ...]) -> GpuInventory:
        """Only the GPUs with these nvidia-smi indices (``deploy --gpu-devices``); all for ()."""
        if not indices:
            return self
        present = {g.index for g in self.gpus}
        missing = [i for i in indices if i not in present]
        if missing:
            raise PlanInputError(
                f"--gpu-devices {','.join(map(str, indices))}: no GPU with index "
                f"{','.join(map(str, missing))}; this host has {sorted(present)}"
            )
        return replace(self, gpus=tuple(g for g in self.gpus if g.index in indices))

    def describe(self) -> str:
        """``4x NVIDIA A10G (22.5 GiB each, sm86)``."""
        if not self.gpus:
            return "no GPUs"
        groups: dict[tuple[str, int, tuple[int, int]], int] = {}
        for g in self.gpus:
            key = (g.name, g.memory_mib, g.compute_capability)
            groups[key] = groups.get(key, 0) + 1
        parts = [
            f"{n}x {name} ({mem / MIB_PER_GIB:.1f} GiB each, sm{cc[0]}{cc[1]})"
            for (name, mem, cc), n in groups.items()
        ]
        return " + ".join(parts)


def _inventory_of(
    model: GpuModel, count: int, memory_mib: int, instance_type: str | None
) -> GpuInventory:
    gpus = tuple(
        Gpu(
            index=i,
            name=model.smi_names[0],
            memory_mib=memory_mib,
            compute_capability=model.compute_capability,
        )
        for i in range(count)
    )
    return GpuInventory(gpus=gpus, instance_type=instance_type)


def inventory_for_instance_type(name: str) -> GpuInventory:
    """The GPUs an instance type has, with nvidia-smi's memory (what TGI will see)."""
    it = find_instance_type(name)
    model = find_gpu_model(it.gpu)
    return _inventory_of(model, it.gpu_count, model.memory_mib, it.name)


def parse_compute_capability(text: str) -> tuple[int, int]:
    """``--compute-capability 8.6`` -> (8, 6); bad input names the value and the range."""
    match = re.fullmatch(r"\s*(\d+)\.(\d)\s*", str(text))
    cc = (int(match.group(1)), int(match.group(2))) if match else None
    if cc is None or not MIN_COMPUTE_CAPABILITY <= cc <= MAX_COMPUTE_CAPABILITY:
        low, high = MIN_COMPUTE_CAPABILITY, MAX_COMPUTE_CAPABILITY
        raise PlanInputError(
            f"--compute-capability {text!r}: give the card's CUDA compute capability as "
            f"MAJOR.MINOR between {low[0]}.{low[1]} and {high[0]}.{high[1]}, e.g. 8.6 (nvidia-smi "
            "--query-gpu=compute_cap --format=csv prints it; developer.nvidia.com/cuda-gpus "
            "lists it)"
        )
    return cc


def inventory_from_spec(
    gpu: str,
    count: int,
    memory_gib: float | None = None,
    compute_capability: tuple[int, int] | None = None,
) -> GpuInventory:
    """The inventory of ``--gpu NAME --gpus N [--gpu-memory-gib X] [--compute-capability X.Y]``.

    A card the table does not know plans from its compute capability and memory, which must
    then both be given; for a known card a compute capability that differs is refused.
    """
    _check_memory_gib(memory_gib, gpu)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PlanInputError(f"--gpus must be a whole number of at least 1, got {count!r}.")
    if count > MAX_GPUS_PER_HOST:
        raise PlanInputError(
            f"--gpus {count}: TGI shards a model over the GPUs of one host, and the largest "
            f"GPU hosts tgiops knows have {MAX_GPUS_PER_HOST} (p4d, p5, g5.48xlarge); give "
            f"1 to {MAX_GPUS_PER_HOST}."
        )
    known = lookup_gpu_model(gpu)
    if known is None and compute_capability is not None and not gpu_variants(gpu):
        if memory_gib is None:
            raise PlanInputError(
                f"--gpu {gpu!r} is not a card tgiops knows: with --compute-capability, also "
                "give its memory per GPU (--gpu-memory-gib, e.g. 24)"
            )
        gpus = tuple(
            Gpu(
                index=i,
                name=gpu.strip(),
                memory_mib=round(memory_gib * MIB_PER_GIB),
                compute_capability=compute_capability,
            )
            for i in range(count)
        )
        return GpuInventory(gpus=gpus)
    model = find_gpu_model(gpu, memory_gib)
    if compute_capability is not None and compute_capability != model.compute_capability:
        have = model.compute_capability
        raise PlanInputError(
            f"--compute-capability {compute_capability[0]}.{compute_capability[1]}: a "
            f"{model.name} has {have[0]}.{have[1]}; drop the flag, or name another card"
        )
    memory_mib = model.memory_mib if memory_gib is None else round(memory_gib * MIB_PER_GIB)
    return _inventory_of(model, count, memory_mib, None)


def _check_memory_gib(memory_gib: float | None, gpu: str) -> None:
    if memory_gib is None:
        return
    known = lookup_gpu_model(gpu)
    example = f" (a {known.name} reports {known.memory_gib:.1f} GiB)" if known else ""
    if (
        isinstance(memory_gib, bool)
        or not isinstance(memory_gib, (int, float))
        or math.isnan(memory_gib)  # argparse's float() takes "nan"
        or memory_gib <= 0
    ):
        raise PlanInputError(
            f"--gpu-memory-gib must be a number of GiB per GPU above 0 and at most "
            f"{MAX_GPU_MEMORY_GIB}, got {memory_gib!r}{example}."
        )
    if memory_gib > MAX_GPU_MEMORY_GIB:  # "inf" and 1e308 too
        raise PlanInputError(
            f"--gpu-memory-gib {memory_gib:g} is more than any GPU has: give the memory of "
            f"one GPU in GiB, above 0 and at most {MAX_GPU_MEMORY_GIB}{example}; the largest "
            f"GPU tgiops knows, {max(GPU_MODELS, key=lambda m: m.memory_mib).name}, has "
            f"{max(m.memory_gib for m in GPU_MODELS):.1f} GiB."
        )
