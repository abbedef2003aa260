"""How long a replacement instance needs to read the model's weights (pure).

After a spot reclaim, a new instance reads the checkpoint from its data volume before TGI can
load it (reconcile, README "Spot recovery"). The read alone takes ``bytes / throughput``:

- gp3's baseline is 125 MiB/s, whatever the volume size; up to 1,000 MiB/s (older API
  references) or 2,000 MiB/s (newer: "Valid Range: 125 - 2000 MiB/s") can be provisioned
  (tgiops/docs/aws.md §6, AWS CreateVolume Throughput docs).
- Local NVMe instance store (free, wiped on stop, terminate and spot reclaim) on the instance
  types that have it (``hardware.InstanceType.local_nvme_gb``, moto's instance-type data in
  docs/ec2.md). AWS publishes no sequential-read figure per type; ~4 GB/s is
  Anyscale's measurement of local NVMe (docs/aws.md §6,
  github.com/anyscale/ai-infra-cookbook/pull/57), used here as an order of magnitude.

These are pure read times of an initialized volume: a volume restored from a snapshot reads
lazily from S3 first (§6 "Snapshot lazy loading"), and TGI's own load and warmup come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tgiops.core.catalog import ModelSpec
from tgiops.core.errors import PlanInputError
from tgiops.core.hardware import InstanceType
from tgiops.core.warmup import weight_bytes

MIB = 1024 * 1024
GP3_BASELINE_MIB_S = 125
GP3_MAX_MIB_S = 2000
GP3_MAX_MIB_S_OLDER_API = 1000
LOCAL_NVME_BYTES_S = 4e9  # measured order of magnitude, not an AWS figure (see above)
DOCS = "docs/aws.md §6"


@dataclass(frozen=True)
class RecoveryEstimate:
    weight_bytes: float  # what the data volume holds for this model (the checkpoint's files)
    gp3_baseline_s: float
    provisioned_mib_s: int | None
    provisioned_s: float | None
    local_nvme_gb: int | None  # None: no instance store (or no instance type known)
    local_nvme_s: float | None
    target_s: float | None
    recommended_mib_s: int | None  # gp3 throughput that meets target_s; None: none does
    advice: str


def checkpoint_bytes(model: ModelSpec) -> float:
    """The bytes a data volume holds for ``model``: its safetensors, as downloaded.

    On-the-fly quantization (fp8, eetq, bitsandbytes) still reads the 16-bit files, so this is
    the checkpoint's size, not the size on the GPU.
    """
    if model.weight_bytes:
        return float(model.weight_bytes)
    estimate = weight_bytes(model, model.quantization)
    return estimate * (2.0 if model.torch_dtype == "float32" else 1.0)


def check_inputs(throughput_mib_s: int | None, target_s: float | None) -> None:
    if throughput_mib_s is not None and not (
        GP3_BASELINE_MIB_S <= throughput_mib_s <= GP3_MAX_MIB_S
    ):
        raise PlanInputError(
            f"--data-volume-throughput {throughput_mib_s}: gp3 takes {GP3_BASELINE_MIB_S} to "
            f"{GP3_MAX_MIB_S} MiB/s ({GP3_BASELINE_MIB_S} is its baseline; {DOCS})"
        )
    if target_s is not None and (math.isnan(target_s) or not 0 < target_s <= 86400):
        raise PlanInputError(
            f"--recovery-target-s {target_s}: give the seconds a replacement may spend reading "
            "the weights, above 0 and at most 86400 (a day), e.g. 120"
        )


def estimate(
    model: ModelSpec,
    instance_type: InstanceType | None,
    *,
    throughput_mib_s: int | None = None,
    target_s: float | None = None,
) -> RecoveryEstimate:
    check_inputs(throughput_mib_s, target_s)
    size = checkpoint_bytes(model)

    def at(mib_s: float) -> float:
        return round(size / (mib_s * MIB), 1)

    nvme_gb = instance_type.local_nvme_gb if instance_type is not None else None
    nvme_s = round(size / LOCAL_NVME_BYTES_S, 1) if nvme_gb else None
    recommended: int | None = None
    advice = ""
    if target_s is not None:
        needed = size / MIB / target_s
        if needed <= GP3_BASELINE_MIB_S:
            recommended = GP3_BASELINE_MIB_S
            advice = f"gp3's baseline {GP3_BASELINE_MIB_S} MiB/s meets {target_s:g} s"
        elif needed <= GP3_MAX_MIB_S:
            recommended = int(math.ceil(needed / 25) * 25)  # round up to a tidy figure
            advice = (
                f"provision the data volume at {recommended} MiB/s "
                f"(--throughput {recommended} on a gp3 volume) to read "
                f"{size / 1e9:.1f} GB in {target_s:g} s"
                + (
                    f"; above {GP3_MAX_MIB_S_OLDER_API} MiB/s needs the newer gp3 limit"
                    if recommended > GP3_MAX_MIB_S_OLDER_API
                    else ""
                )
            )
        else:
            advice = (
                f"no gp3 volume reads {size / 1e9:.1f} GB in {target_s:g} s (it would need "
                f"{needed:.0f} MiB/s, gp3 tops out at {GP3_MAX_MIB_S})"
                + (
                    f"; the local NVMe instance store ({nvme_gb} GB) reads them in ~{nvme_s:g} s "
                    "but starts empty after a reclaim (fill it from S3 on boot, not from the "
                    "gp3 volume); or serve a smaller or quantized checkpoint"
                    if nvme_gb and nvme_gb * 1e9 >= size
                    else "; serve a smaller or quantized checkpoint"
                )
            )
    return RecoveryEstimate(
        weight_bytes=size,
        gp3_baseline_s=at(GP3_BASELINE_MIB_S),
        provisioned_mib_s=throughput_mib_s,
        provisioned_s=at(throughput_mib_s) if throughput_mib_s is not None else None,
        local_nvme_gb=nvme_gb,
        local_nvme_s=nvme_s,
        target_s=target_s,
        recommended_mib_s=recommended,
        advice=advice,
    )
