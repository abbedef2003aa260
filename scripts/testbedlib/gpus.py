"""GPU models the fake ``nvidia-smi`` can report, and ``--gpus SPEC`` parsing ("4xA10G").

Names and ``memory.total`` are what ``nvidia-smi`` prints on the real cards, not the
marketing sizes nor what EC2's DescribeInstanceTypes says (A10G: 22888 MiB there,
23028 MiB in nvidia-smi). Sources, as found with the project's search tool:

- A10G 23028 MiB, "NVIDIA A10G", 300 W cap, driver 535.247.01 table: NVIDIA/DCGM issue #232.
- H100 81559, A100 80GB 81920, A100 40GB 40960, A10 23028, L40S 46068, L4 23034,
  T4 15360 MiB: modal-labs/modal-client PR #2797 ("reported totals from nvidia-smi").
- "Tesla T4": NVIDIA/nvidia-docker issue #1628 (``nvidia-smi -q`` Product Name).
- "Tesla V100-SXM2..." with 16160 MiB (not 16384): 4paradigm/k8s-vgpu-scheduler issue #7.
- "NVIDIA H200" 143771 MiB, 700 W, driver 550.127.08 / CUDA 12.4 tables: several public
  cluster guides (e.g. an srun ``nvidia-smi`` transcript with "NVIDIA H200 ... 143771MiB").
- "NVIDIA H100 80GB HBM3, 81559" and "NVIDIA L40S, 46068, 8.9": csv rows quoted in
  public test suites and benchmark reports.
- "NVIDIA A100-SXM4-80GB, 81920": public GPU gate tests quoting nvidia-smi.
- Compute capabilities: NVIDIA's CUDA GPU list (T4 7.5, A10 8.6, L4/L40S 8.9, V100 7.0,
  A100 8.0, H100/H200 9.0); A10G is the AWS variant of A10 (see docs/ec2.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from testbedlib.errors import TestbedInputError


@dataclass(frozen=True)
class GpuModel:
    """One GPU model as nvidia-smi reports it."""

    short_name: str
    smi_name: str
    memory_mib: int
    compute_capability: str
    power_cap_w: int
    mig_capable: bool


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("T4", "Tesla T4", 15360, "7.5", 70, False),
    GpuModel("A10G", "NVIDIA A10G", 23028, "8.6", 300, False),
    GpuModel("L4", "NVIDIA L4", 23034, "8.9", 72, False),
    GpuModel("L40S", "NVIDIA L40S", 46068, "8.9", 350, False),
    GpuModel("V100", "Tesla V100-SXM2-16GB", 16160, "7.0", 300, False),
    GpuModel("A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, "8.0", 400, True),
    GpuModel("A100-80GB", "NVIDIA A100-SXM4-80GB", 81920, "8.0", 400, True),
    GpuModel("H100", "NVIDIA H100 80GB HBM3", 81559, "9.0", 700, True),
    GpuModel("H200", "NVIDIA H200", 143771, "9.0", 700, True),
)

# Short names people type; keys are upper-case.
_ALIASES = {"A100": "A100-40GB"}

# Drivers as seen on AWS GPU AMIs: 535 for most cards; the H200 needs a newer branch
# (the public H200 tables show 550.127.08 with CUDA 12.4).
DEFAULT_DRIVER = ("535.183.01", "12.2")
H200_DRIVER = ("550.127.08", "12.4")

_SPEC_RE = re.compile(r"^\s*(?:(\d+)\s*[xX]\s*)?([A-Za-z0-9-]+)\s*$")
MAX_GPUS = 16


def find_gpu_model(short_name: str) -> GpuModel:
    """Return the model for a short name such as "A10G" or "a100" (case-insensitive)."""
    key = short_name.strip().upper()
    key = _ALIASES.get(key, key)
    for model in GPU_MODELS:
        if model.short_name.upper() == key:
            return model
    known = ", ".join(m.short_name for m in GPU_MODELS)
    raise TestbedInputError(f"unknown GPU {short_name!r}; known: {known} (A100 = A100-40GB)")


def parse_gpu_spec(spec: str) -> tuple[GpuModel, ...]:
    """Parse "4xA10G" (or "A10G" for one) into one GpuModel per GPU."""
    match = _SPEC_RE.match(spec)
    if not match:
        raise TestbedInputError(f"bad --gpus {spec!r}: expected COUNTxMODEL, e.g. 4xA10G")
    count = int(match.group(1) or "1")
    if not 1 <= count <= MAX_GPUS:
        raise TestbedInputError(f"bad --gpus {spec!r}: count must be 1..{MAX_GPUS}")
    return (find_gpu_model(match.group(2)),) * count


def normalize_gpu_spec(spec: str) -> str:
    """Canonical form of a spec, e.g. "4 x a10g" -> "4xA10G"."""
    models = parse_gpu_spec(spec)
    return f"{len(models)}x{models[0].short_name}"


def build_inventory(spec: str, host_name: str) -> dict:
    """The host's /etc/testbed/gpus.json: what the fake nvidia-smi and the shim read."""
    models = parse_gpu_spec(spec)
    driver, cuda = H200_DRIVER if models[0].short_name == "H200" else DEFAULT_DRIVER
    first_device = max(0x1E - len(models) + 1, 0x10)
    gpus = []
    for index, model in enumerate(models):
        # Stable per host and index, shaped like real GPU UUIDs (GPU-8-4-4-4-12 hex).
        digest = _hex_digest(f"{host_name}/{index}")
        uuid = f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        gpus.append(
            {
                "index": index,
                "name": model.smi_name,
                "memory_mib": model.memory_mib,
                "memory_used_mib": 0,
                "compute_capability": model.compute_capability,
                "uuid": uuid,
                # AWS puts GPUs on bus 0 at consecutive devices, ending at 1E (DCGM #232).
                "bus_id": f"00000000:00:{first_device + index:02X}.0",
                "power_cap_w": model.power_cap_w,
                "mig_capable": model.mig_capable,
            }
        )
    return {
        "spec": normalize_gpu_spec(spec),
        "driver_version": driver,
        "cuda_version": cuda,
        "gpus": gpus,
    }


def _hex_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
