"""`tgiops attach-cache-volume`: at boot, put the stack's model cache volume on this instance.

Run by the user data of a `tgiops up` stack (unit_templates/userdata.sh.j2) before it mounts the
data directory, on the instance, with the instance role (IMDSv2 for the instance id and zone).
The choice is pure (tgiops.core.stack.choose_cache_volume): the volume already attached here (a
reboot, a rerun), else the stack's oldest ``available`` cache volume in this zone, else a new
one (encrypted gp3, the stack's tags, created in this zone). A volume attached to another
instance is never touched. Volumes attached after launch keep DeleteOnTermination=false, so the
next instance of the group in this zone attaches the same cache (tgiops/docs/aws.md §3.5).

It prints where the volume appears on this host (the NVMe by-id link on Nitro, /dev/xvdf on
Xen): the user data formats it only when it holds no file system and mounts it at the data
directory (that shell part is unchanged from `userdata --data-device`). Every AWS call is
in tgiops.edges.aws.cache_volumes (through StackEdge); waiting for the device is the only host
I/O here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tgiops.core import stack as st
from tgiops.core.errors import AWSError, InputError

ATTACH_WAIT_S = 300.0
POLL_S = 2.0
ATTEMPTS = 3  # another instance may take the chosen volume between the look and the attach


@dataclass(frozen=True)
class CacheAttachResult:
    stack: str
    instance_id: str
    zone: str
    volume_id: str
    action: str  # "attached" (already here) | "attach" (an existing cache) | "create"
    device: str | None  # where it appeared on this host; None with wait_for_device=False

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "instance_id": self.instance_id,
            "zone": self.zone,
            "volume_id": self.volume_id,
            "action": self.action,
            "device": self.device,
        }


def attach_cache_volume(
    aws: Any,
    imds: Any,
    *,
    stack: str,
    gib: int,
    throughput: int,
    model: str | None = None,
    wait_for_device: bool = True,
    wait_s: float = ATTACH_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    exists: Callable[[str], bool] = os.path.exists,
) -> CacheAttachResult:
    from tgiops.edges.aws.base import client_error_code
    from tgiops.edges.aws.stack import StackEdge

    stack = st.check_stack_name(stack)
    check_size(gib, throughput)
    edge = StackEdge(aws, st.STACK_TAG)
    instance_id = imds.instance_id()
    zone = imds.availability_zone()
    deadline = clock() + wait_s
    for _attempt in range(ATTEMPTS):
        volumes = edge.find_cache_volumes(stack, st.ROLE_TAG, st.CACHE_ROLE)
        choice = st.choose_cache_volume(volumes, stack=stack, zone=zone, instance_id=instance_id)
        if choice.action == "attached" and choice.volume is not None:
            volume_id = choice.volume.volume_id
            break
        if choice.volume is None:
            volume_id = edge.create_cache_volume(
                zone, gib, throughput, st.cache_volume_tags(stack, model)
            )
            _wait_volume(edge, volume_id, lambda v: v.state == "available", deadline, sleep,
                         clock, "available")  # fmt: skip
        else:
            volume_id = choice.volume.volume_id
        try:
            edge.attach_volume(volume_id, instance_id, st.CACHE_ATTACH_DEVICE)
        except AWSError as exc:
            code = client_error_code(exc)
            if choice.action == "attach" and code in ("VolumeInUse", "IncorrectState"):
                continue  # another instance of the zone took it first: look again
            raise
        _wait_volume(
            edge,
            volume_id,
            lambda v: instance_id in v.attached_to and v.state == "in-use",
            deadline,
            sleep,
            clock,
            f"attached to {instance_id}",
        )
        break
    else:
        raise AWSError(
            f"could not attach a model cache volume of {stack} in {zone} after {ATTEMPTS} "
            "tries: other instances took each one first"
        )
    device = None
    if wait_for_device:
        try:
            device = _wait_device(st.cache_device_paths(volume_id), deadline, sleep, clock, exists)
        except AWSError as exc:
            raise AWSError(
                f"volume {volume_id} ({choice.action}) is attached to {instance_id}, but {exc}"
            ) from exc
    return CacheAttachResult(stack, instance_id, zone, volume_id, choice.action, device)


def check_size(gib: int, throughput: int) -> None:
    """The throughput range tgiops.core.recovery knows for gp3 (docs/aws.md §6)."""
    from tgiops.core.recovery import GP3_BASELINE_MIB_S, GP3_MAX_MIB_S

    if gib < 1:
        raise InputError(f"--data-volume-gib {gib}: give the cache volume's size, 1 or more")
    if not GP3_BASELINE_MIB_S <= throughput <= GP3_MAX_MIB_S:
        raise InputError(
            f"--data-volume-throughput {throughput}: give {GP3_BASELINE_MIB_S} to "
            f"{GP3_MAX_MIB_S} MiB/s (gp3)"
        )


def _wait_volume(
    edge: Any,
    volume_id: str,
    ready: Callable[[st.CacheVolume], bool],
    deadline: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    what: str,
) -> None:
    while True:
        volume = edge.cache_volume(volume_id)
        if volume is not None and ready(volume):
            return
        if volume is not None and volume.state == "error":
            raise AWSError(f"volume {volume_id} is in the error state")
        if clock() >= deadline:
            state = volume.state if volume else "gone"
            raise AWSError(f"volume {volume_id} is not {what} in time (it is {state})")
        sleep(POLL_S)


def _wait_device(
    paths: list[str],
    deadline: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    exists: Callable[[str], bool],
) -> str:
    """The first of ``paths`` that exists on this host, once the kernel and udev made it."""
    while True:
        for path in paths:
            if exists(path):
                return path
        if clock() >= deadline:
            raise AWSError(
                f"the attached volume did not appear on this host as {' or '.join(paths)}"
            )
        sleep(POLL_S)
