"""What a deploy may do on its host, decided from the probe report before anything changes.

``tgiops deploy`` (tgiops.commands.deploy) probes its host in one round trip, then these checks
refuse what it must not touch and choose what it may take: the GPUs and docker it needs
(DeployError), a unit file tgiops did not write (InputError, exit 2: tgiops owns only what it
marked), the port and GPUs other tgiops units hold (without --port/--gpu-devices the free ones
are picked), the GPU memory the unit being replaced holds (``own_gpu_use``: vLLM's free-memory
check counts it as the deploy's own), and the recorded deploy a new one replaces (for its
warning). They are pure decisions on a ``probe.HostReport``, kept apart from the deploy's I/O so
each is tested on a report alone (tests/unit/test_deploy_host.py).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import replace
from datetime import datetime

from tgiops.core import hardware, probe, record
from tgiops.core.errors import DeployError, InputError, ProbeError
from tgiops.core.layout import MANAGED_MARKER
from tgiops.core.render import UnitOptions
from tgiops.core.request import DEFAULT_PORT, Replaced

_MIN_DISK_BYTES = 1 << 30
_PORT_SEARCH = 200  # how far above DEFAULT_PORT a free port is looked for


def inventory_from(report: probe.HostReport, host_name: str) -> hardware.GpuInventory:
    if report.gpus_exit_code == 127:
        raise DeployError(
            f"{host_name} has no nvidia-smi: install the NVIDIA driver (or use a Deep Learning "
            "AMI) before deploying"
        )
    if report.gpus_exit_code != 0:
        raise DeployError(
            f"nvidia-smi failed on {host_name} (exit {report.gpus_exit_code}): "
            f"{report.gpus_text.strip()[:300]}. Check the NVIDIA driver (`nvidia-smi`)."
        )
    try:
        return probe.parse_nvidia_smi_csv(report.gpus_text)
    except ProbeError as exc:
        raise DeployError(f"{host_name}: {exc}") from exc


def check_host(report: probe.HostReport, host_name: str) -> None:
    if report.docker_exit_code == 127:
        raise DeployError(
            f"{host_name} has no docker: install docker and the NVIDIA Container Toolkit first"
        )
    if report.docker_exit_code != 0:
        raise DeployError(
            f"docker is not running on {host_name}: {report.docker_runtimes_text.strip()[:200]}. "
            "Start it with `systemctl start docker`."
        )
    if '"nvidia"' not in report.docker_runtimes_text:
        raise DeployError(
            f"docker on {host_name} has no NVIDIA runtime (runtimes: "
            f"{report.docker_runtimes_text.strip()[:200]}); install the NVIDIA Container Toolkit "
            "and run `nvidia-ctk runtime configure --runtime=docker`"
        )
    if report.disk_available_bytes is not None and report.disk_available_bytes < _MIN_DISK_BYTES:
        raise DeployError(
            f"only {report.disk_available_bytes >> 20} MiB free for the model cache on {host_name}"
        )


def check_owned(report: probe.HostReport, options: UnitOptions, host_name: str) -> None:
    """Refuse (exit 2) to replace a unit that tgiops did not write: a unit file without the
    managed marker, or a unit of that name that systemd loads from elsewhere (/lib, /run)."""
    unit = report.unit
    if unit is None:
        return
    if unit.unit_text is not None and not unit.is_managed:
        raise InputError(
            f"{host_name}: {options.unit_path} exists and was not written by tgiops (no "
            f"{MANAGED_MARKER!r} line); tgiops never replaces a unit it does not own. Pick "
            "another --unit"
        )
    if unit.unit_text is None and unit.state.exists:
        raise InputError(
            f"{host_name}: systemd already has a unit {options.unit_name}.service that is not "
            f"tgiops' (LoadState={unit.state.load_state}); pick another --unit"
        )


def own_port(report: probe.HostReport) -> int | None:
    """The host port of the installed unit of this deploy, if any."""
    unit = report.unit
    if unit is None or unit.unit_text is None:
        return None
    for line in unit.unit_text.splitlines():
        if line.startswith("ExecStart="):
            return probe.parse_exec_start(unit.name, line).port
    return None


def choose_port(requested: int | None, report: probe.HostReport, host_name: str) -> int:
    """The host port: ``--port`` when it is free, else the unit's own, else the first free one
    from 8080. Free: no other tgiops unit publishes it and nothing listens on it (``ss``)."""
    mine = own_port(report)
    taken = {u.port: u.name for u in report.other_units if u.port is not None}
    listening = set(report.listening_ports or ()) - ({mine} if mine else set())
    if requested is not None:
        if requested in taken:
            raise InputError(
                f"--port {requested}: tgiops unit {taken[requested]} on {host_name} uses it. "
                "Give another --port, or leave it out and tgiops picks a free one"
            )
        if requested in listening:
            raise InputError(
                f"--port {requested}: something on {host_name} already listens on it (`ss "
                "-ltn`). Give another --port, or leave it out and tgiops picks a free one"
            )
        return requested
    if mine is not None and mine not in taken:
        return mine
    for port in range(DEFAULT_PORT, DEFAULT_PORT + _PORT_SEARCH):
        if port not in taken and port not in listening:
            return port
    raise InputError(
        f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + _PORT_SEARCH - 1} on {host_name}; "
        "give one with --port"
    )


def choose_gpus(
    requested: tuple[int, ...],
    inventory: hardware.GpuInventory,
    report: probe.HostReport,
    host_name: str,
) -> tuple[tuple[int, ...], hardware.GpuInventory]:
    """(the GPU devices of the unit, () for all; the inventory to plan on).

    A TGI instance takes a GPU's free memory for its KV cache at warmup (docs/tgi.md §4:
    ``free = cuda_free - (1 - CUDA_MEMORY_FRACTION * wiggle) * total``, fraction 1.0 by
    default), so two units never share a GPU: devices other tgiops units use are left out.
    """
    indexes = [g.index for g in inventory.gpus]
    users = {i: [u.name for u in report.other_units if u.uses_gpu(i)] for i in indexes}
    busy = {i: names for i, names in users.items() if names}
    if requested:
        missing = [d for d in requested if d not in indexes]
        if missing:
            raise InputError(
                f"--gpu-devices {','.join(map(str, requested))}: {host_name} has no GPU "
                f"{','.join(map(str, missing))} (its GPUs: {','.join(map(str, indexes))}, "
                f"{inventory.describe()}); pick from those"
            )
        clash = [d for d in requested if d in busy]
        if clash:
            raise InputError(
                f"--gpu-devices {','.join(map(str, requested))}: GPU {clash[0]} on {host_name} "
                f"is used by tgiops unit {', '.join(busy[clash[0]])}, and TGI takes a whole "
                f"GPU's memory. {_free_gpus_hint(indexes, busy)}"
            )
        devices = tuple(requested)
    elif busy:
        free = tuple(i for i in indexes if i not in busy)
        if not free:
            names = sorted({n for ns in busy.values() for n in ns})
            raise InputError(
                f"every GPU of {host_name} is used by other tgiops units ({', '.join(names)}), "
                "and TGI takes a whole GPU's memory. Undeploy one (`tgiops undeploy --unit "
                f"{names[0]}`) or use another host"
            )
        devices = free
    else:
        return (), inventory
    return devices, inventory.select(devices)


def _free_gpus_hint(indexes: list[int], busy: dict[int, list[str]]) -> str:
    free = [i for i in indexes if i not in busy]
    if not free:
        return "No GPU is free there: undeploy a unit first, or use another host"
    return f"Free GPUs: {','.join(map(str, free))} (or leave --gpu-devices out)"


def own_gpu_use(
    report: probe.HostReport, inventory: hardware.GpuInventory
) -> hardware.GpuInventory:
    """The inventory as vLLM will find it when this deploy starts: the unit being replaced
    is stopped first, so the memory its container holds is free again. A vLLM unit holds at
    most what it asked for, utilization x total (vLLM's request_memory; the rest of the
    probed use belongs to someone else and stays counted); a TGI unit takes the free memory
    for its KV cache (tgi-facts.md §4), so all of the use is taken to be its own."""
    unit = report.unit
    if unit is None or unit.unit_text is None or unit.state.active_state != "active":
        return inventory
    util = re.search(r"--gpu-memory-utilization[= ]([0-9.]+)", unit.unit_text)
    gpus = []
    for gpu in inventory.gpus:
        own = math.ceil(gpu.memory_mib * float(util[1])) if util else gpu.memory_used_mib
        gpus.append(replace(gpu, memory_used_mib=max(0, gpu.memory_used_mib - own)))
    return replace(inventory, gpus=tuple(gpus))


def replaced_deploy(report: probe.HostReport, now: float) -> Replaced | None:
    """The recorded earlier deploy of this unit (the probe reads its record), if any."""
    if report.unit is None or report.unit.unit_text is None or not report.record_text:
        return None
    try:
        earlier = record.DeploymentRecord.from_json(report.record_text, origin="record")
    except InputError:
        return None
    at = earlier.deployed.at if earlier.deployed else ""
    age = None
    with contextlib.suppress(ValueError):
        age = max(0.0, round(now - datetime.fromisoformat(at).timestamp(), 1))
    return Replaced(model=earlier.spec.model, at=at, age_s=age)


def replaced_warning(unit: str, replaced: Replaced) -> str:
    ago = f"{replaced.age_s:.0f} s ago" if replaced.age_s is not None else "earlier"
    return (
        f"this replaced the deploy of {replaced.model} as {unit} made {ago} ({replaced.at}); "
        "if someone else deployed it, they are now served this one"
    )
