"""The GPUs the emulated container "sees", read from the TGI_EMULATOR_GPUS test-double input."""

from __future__ import annotations

import json
from dataclasses import dataclass

MIB = 1024 * 1024


class GpuSpecError(ValueError):
    """TGI_EMULATOR_GPUS is malformed (a testbed bug, not a TGI behaviour)."""


@dataclass(frozen=True)
class EmulatedGpu:
    name: str
    memory_mib: int
    compute_capability: tuple[int, int]

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def capability_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def parse_gpus(text: str | None) -> list[EmulatedGpu]:
    """Parse `[{"name": ..., "memory_mib": ..., "compute_capability": "8.6"}, ...]`.

    Absent or empty means no GPU is visible (the launcher then fails like TGI without a driver).
    """
    if text is None or not text.strip():
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GpuSpecError(f"TGI_EMULATOR_GPUS is not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise GpuSpecError("TGI_EMULATOR_GPUS must be a JSON list of GPU objects")
    gpus = []
    for index, item in enumerate(raw):
        try:
            major, minor = str(item["compute_capability"]).split(".")
            gpus.append(
                EmulatedGpu(
                    name=str(item["name"]),
                    memory_mib=int(item["memory_mib"]),
                    compute_capability=(int(major), int(minor)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GpuSpecError(
                f"TGI_EMULATOR_GPUS[{index}] needs name, memory_mib and compute_capability "
                f'like "8.6": {item!r}'
            ) from exc
    return gpus


def select_visible(gpus: list[EmulatedGpu], cuda_visible_devices: str | None) -> list[EmulatedGpu]:
    """Apply CUDA_VISIBLE_DEVICES the way the CUDA runtime does for integer lists.

    Non-integer values (UUIDs) are not modelled: all GPUs stay visible.
    """
    if cuda_visible_devices is None:
        return list(gpus)
    entries = [e.strip() for e in cuda_visible_devices.split(",") if e.strip()]
    if not all(e.isdigit() for e in entries):
        return list(gpus)
    selected = []
    for entry in entries:
        index = int(entry)
        # The CUDA runtime stops at the first invalid ordinal.
        if index >= len(gpus):
            break
        selected.append(gpus[index])
    return selected
