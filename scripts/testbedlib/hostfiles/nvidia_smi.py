#!/usr/bin/python3
"""Fake ``nvidia-smi`` of the tgiops testbed (one of its three test doubles).

Installed in each testbed host as /usr/bin/nvidia-smi. It reports the inventory in
/etc/testbed/gpus.json (written by ``scripts/testbed up --gpus SPEC``) in the formats the
real tool prints. Supported:

- ``nvidia-smi`` (no arguments): the summary table, in the driver-535 layout
  (NVIDIA/DCGM issue #232 shows it for an A10G on driver 535.247.01) or the driver-550
  layout with the wider Bus-Id / Memory-Usage columns (public H200 transcripts on
  550.127.08), picked by the driver major version.
- ``--query-gpu=FIELDS --format=csv[,noheader][,nounits]``, any order of index, name
  (gpu_name), memory.total, memory.used, memory.free, utilization.gpu, compute_cap,
  driver_version, uuid (gpu_uuid), pci.bus_id (gpu_bus_id), count. Fields are joined with
  ", ", never quoted; the header keeps the "[MiB]"/"[%]" units even with nounits
  (Quake4/MindMiner issue #627 shows ``--format=csv,nounits`` output; a ``compute_cap``
  csv with header "name, memory.total [MiB], memory.used [MiB], driver_version,
  compute_cap" and row "..., 6141 MiB, 0 MiB, 592.82, 8.9" is quoted in public notes).
  An unknown field prints ``Field "X" is not a valid field to query.`` and a blank line on
  stdout and exits 2, as the real tool does (CoHDI/composable-resource-operator #37).
- ``-L`` / ``--list-gpus``: ``GPU 0: NAME (UUID: GPU-...)``; ``-i/--id`` selects GPUs.

Standard library only: it runs on the host's /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import sys
import time

INVENTORY = os.environ.get("TESTBED_GPUS_JSON", "/etc/testbed/gpus.json")

# field -> (header, unit or None). Aliases map to the header the real tool prints.
FIELDS = {
    "index": ("index", None),
    "name": ("name", None),
    "gpu_name": ("name", None),
    "memory.total": ("memory.total", "MiB"),
    "memory.used": ("memory.used", "MiB"),
    "memory.free": ("memory.free", "MiB"),
    "utilization.gpu": ("utilization.gpu", "%"),
    "compute_cap": ("compute_cap", None),
    "driver_version": ("driver_version", None),
    "uuid": ("uuid", None),
    "gpu_uuid": ("uuid", None),
    "pci.bus_id": ("pci.bus_id", None),
    "gpu_bus_id": ("pci.bus_id", None),
    "count": ("count", None),
}

USAGE_ERROR = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"


def load_inventory() -> dict:
    with open(INVENTORY, encoding="utf-8") as handle:
        return json.load(handle)


def field_value(field: str, gpu: dict, inventory: dict) -> str:
    """The value of one field, without unit."""
    header = FIELDS[field][0]
    used = int(gpu.get("memory_used_mib", 0))
    values = {
        "index": str(gpu["index"]),
        "name": gpu["name"],
        "memory.total": str(gpu["memory_mib"]),
        "memory.used": str(used),
        "memory.free": str(int(gpu["memory_mib"]) - used),
        "utilization.gpu": str(gpu.get("utilization_pct", 0)),
        "compute_cap": gpu["compute_capability"],
        "driver_version": inventory["driver_version"],
        "uuid": gpu["uuid"],
        "pci.bus_id": gpu["bus_id"],
        "count": str(len(inventory["gpus"])),
    }
    return values[header]


def render_csv(fields: list[str], gpus: list[dict], inventory: dict, options: set[str]) -> str:
    lines = []
    if "noheader" not in options:
        headers = []
        for field in fields:
            header, unit = FIELDS[field]
            headers.append(f"{header} [{unit}]" if unit else header)
        lines.append(", ".join(headers))
    for gpu in gpus:
        cells = []
        for field in fields:
            value = field_value(field, gpu, inventory)
            unit = FIELDS[field][1]
            cells.append(f"{value} {unit}" if unit and "nounits" not in options else value)
        lines.append(", ".join(cells))
    return "".join(line + "\n" for line in lines)


def render_table(gpus: list[dict], inventory: dict) -> str:
    """The summary table. Column widths differ between the 535 and 550 driver layouts."""
    driver = inventory["driver_version"]
    cuda = inventory.get("cuda_version", "12.2")
    wide = int(driver.split(".")[0]) >= 550
    mid = 24 if wide else 22  # the Bus-Id / Memory-Usage column
    inner = 41 + 1 + mid + 1 + 22
    rule = "+" + "-" * 41 + "+" + "-" * mid + "+" + "-" * 22 + "+"

    def row(a: str, b: str, c: str) -> str:
        return f"|{a}|{b}|{c}|"

    lines = [time.asctime() + ("" if wide else "       ")]
    lines.append("+" + "-" * inner + "+")
    drv_width = 15 if wide else 13
    lines.append(
        f"| NVIDIA-SMI {driver:<23}Driver Version: {driver:<{drv_width}}CUDA Version: {cuda:<9}|"
    )
    lines.append("|" + "-" * 41 + "+" + "-" * mid + "+" + "-" * 22 + "+")
    bus_head = "Bus-Id          Disp.A" if wide else "Bus-Id        Disp.A"
    mem_head = "Memory-Usage"
    lines.append(
        row(
            " GPU  Name                 Persistence-M ",
            f" {bus_head} ".ljust(mid),
            " Volatile Uncorr. ECC ",
        )
    )
    lines.append(
        row(
            " Fan  Temp   Perf          Pwr:Usage/Cap ",
            f"{mem_head} ".rjust(mid),
            " GPU-Util  Compute M. ",
        )
    )
    lines.append(row(" " * 41, " " * mid, "MIG M. ".rjust(22)))
    lines.append("|" + "=" * 41 + "+" + "=" * mid + "+" + "=" * 22 + "|")
    for gpu in gpus:
        name = gpu["name"] if len(gpu["name"]) <= 31 else gpu["name"][:28] + "..."
        persistence = gpu.get("persistence", "On")
        bus = f"{'   ' if wide else ' '}{gpu['bus_id']} Off ".ljust(mid)
        lines.append(row(f"{gpu['index']:>4}  {name:<31}{persistence:<3} ", bus, f"{'0':>21} "))
        cap = int(gpu.get("power_cap_w", 300))
        draw = max(cap // 6, 10)  # idle-ish draw, as on an idle card
        power = f"{draw}W / {cap:>4}W" if wide else f"{draw}W / {cap}W"
        used = f"{gpu.get('memory_used_mib', 0)}MiB"
        total = f"{gpu['memory_mib']}MiB"
        memory = (
            (used.rjust(11) + " / " + total.rjust(9))
            if wide
            else (used.rjust(10) + " / " + total.rjust(8))
        )
        util = f"{gpu.get('utilization_pct', 0)}%"
        lines.append(
            row(
                f"{'N/A':>4}{'30C':>6}{'P0':>6}{power:>24} ",
                f"{memory} ",
                f"{util:>8}{'Default':>13} ",
            )
        )
        mig = "Disabled" if gpu.get("mig_capable") else "N/A"
        lines.append(row(" " * 41, " " * mid, f"{mig:>21} "))
        lines.append(rule)
    lines.append("" if wide else " " * (inner + 2))
    lines.append("+" + "-" * inner + "+")
    lines.append("| " + "Processes:".ljust(inner - 1) + "|")
    head = "  GPU   GI   CI        PID   Type   Process name"
    lines.append("|" + head.ljust(inner - 11) + "GPU Memory |")
    lines.append("|" + "        ID   ID".ljust(inner - 11) + "Usage      |")
    lines.append("|" + "=" * inner + "|")
    lines.append("|" + "  No running processes found".ljust(inner) + "|")
    lines.append("+" + "-" * inner + "+")
    return "".join(line + "\n" for line in lines)


def select_gpus(gpus: list[dict], ids: str | None) -> list[dict] | None:
    if ids is None:
        return gpus
    wanted = []
    for token in ids.split(","):
        token = token.strip()
        match = [g for g in gpus if str(g["index"]) == token or g["uuid"] == token]
        if not match:
            return None
        wanted.extend(match)
    return wanted


def main(argv: list[str]) -> int:
    query: str | None = None
    fmt: str | None = None
    ids: str | None = None
    list_gpus = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if name in ("--query-gpu", "--format", "-i", "--id") and not has_value:
            if not args:
                sys.stdout.write(USAGE_ERROR)
                return 2
            value = args.pop(0)
        if name == "--query-gpu":
            query = value
        elif name == "--format":
            fmt = value
        elif name in ("-i", "--id"):
            ids = value
        elif arg in ("-L", "--list-gpus"):
            list_gpus = True
        else:
            sys.stdout.write(USAGE_ERROR)
            sys.stderr.write(
                "(testbed nvidia-smi double: supports no arguments, --query-gpu=... "
                "--format=csv[,noheader][,nounits], -L, -i)\n"
            )
            return 2

    inventory = load_inventory()
    gpus = select_gpus(inventory["gpus"], ids)
    if gpus is None:
        sys.stdout.write(f"No devices were found: no GPU matches id {ids!r}\n")
        return 6
    if not inventory["gpus"]:
        sys.stdout.write("No devices were found\n")
        return 6
    if list_gpus:
        for gpu in gpus:
            sys.stdout.write(f"GPU {gpu['index']}: {gpu['name']} (UUID: {gpu['uuid']})\n")
        return 0
    if query is None:
        if fmt is not None:
            sys.stdout.write(USAGE_ERROR)
            return 2
        sys.stdout.write(render_table(gpus, inventory))
        return 0
    fields = [field.strip() for field in query.split(",") if field.strip()]
    for field in fields:
        if field not in FIELDS:
            sys.stdout.write(f'Field "{field}" is not a valid field to query.\n\n')
            return 2
    options = {option.strip() for option in (fmt or "").split(",")}
    if "csv" not in options:
        sys.stdout.write(USAGE_ERROR)
        return 2
    sys.stdout.write(render_csv(fields, gpus, inventory, options))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
