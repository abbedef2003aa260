"""Pure parsers for what deploy and status read from a host (nvidia-smi, systemctl, df).

The SSH edge runs the commands; these functions only read the text that came back and raise
``ProbeError`` (exit 1) naming the line they could not understand.

Formats, as seen in public logs of real hosts (search tool):

* ``nvidia-smi --query-gpu=index,name,memory.total,... --format=csv`` prints a header whose
  names carry units in brackets, and values with units::

      index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%], compute_cap, ...
      0, NVIDIA A10G, 23028 MiB, 0 MiB, 0 %, 8.6, 535.183.01

  ``noheader`` drops the first line, ``nounits`` drops " MiB" / " %". Fields a card cannot
  report read ``[N/A]`` (unified-memory parts, MIG/vGPU states) or ``[Not Supported]``.
  ``compute_cap`` is a valid query field only from driver ~510 on: driver 470 answers
  'Field "compute_cap" is not a valid field to query' (huggingface/candle#733,
  NVIDIA/TensorRT-LLM#735). nvidia-smi may also print ``WARNING: infoROM is corrupted ...``
  lines before the CSV.
* ``systemctl show -p A -p B UNIT...`` prints ``Key=Value`` lines, one block per unit,
  blocks separated by an empty line.
* ``df --output=avail -B1 PATH`` prints a header (``Avail``) and the free bytes.
"""

from __future__ import annotations

import csv
import logging
import re
import shlex
from dataclasses import dataclass

from tgiops.core.errors import ProbeError
from tgiops.core.hardware import Gpu, GpuInventory, lookup_gpu_model
from tgiops.core.layout import MANAGED_MARKER

logger = logging.getLogger(__name__)

NVIDIA_SMI_QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "compute_cap",
    "driver_version",
)

# Header names nvidia-smi may print for a field (it echoes "name" for "gpu_name").
_FIELD_ALIASES = {"gpu_name": "name", "gpu_index": "index"}
_NOT_AVAILABLE = {
    "[n/a]",
    "n/a",
    "[not supported]",
    "[unknown error]",
    "[insufficient permissions]",
}
_NUMBER_WITH_UNIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB|%)?$")
_COMPUTE_CAP = re.compile(r"^(\d+)\.(\d+)$")
_NO_DEVICES = ("no devices were found", "no devices found")
_SMI_FAILED = "nvidia-smi has failed"


def nvidia_smi_query_command() -> list[str]:
    """The argv deploy/status run on the host; ``parse_nvidia_smi_csv`` reads its output."""
    return [
        "nvidia-smi",
        "--query-gpu=" + ",".join(NVIDIA_SMI_QUERY_FIELDS),
        "--format=csv,noheader,nounits",
    ]


def _field_name(header_cell: str) -> str:
    """``memory.total [MiB]`` -> ``memory.total``."""
    name = re.sub(r"\s*\[[^\]]*\]\s*$", "", header_cell.strip()).strip().lower()
    return _FIELD_ALIASES.get(name, name)


def _is_header(cells: list[str]) -> bool:
    names = {_field_name(c) for c in cells}
    return "name" in names or "index" in names


def _cell(row: dict[str, str], field: str) -> str | None:
    """The raw value of ``field``; None when the column is absent or reads [N/A]."""
    value = row.get(field)
    if value is None:
        return None
    value = value.strip()
    if value.lower() in _NOT_AVAILABLE or value == "":
        return None
    return value


def _number(value: str, field: str, line_no: int, line: str) -> int:
    match = _NUMBER_WITH_UNIT.match(value)
    if not match:
        raise ProbeError(
            f"nvidia-smi line {line_no}: {field} is {value!r}, expected a number "
            f"(MiB or %): {line!r}"
        )
    return int(float(match.group(1)))


def parse_nvidia_smi_csv(text: str, *, instance_type: str | None = None) -> GpuInventory:
    """Read ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` output.

    Without a header the columns are taken to be ``NVIDIA_SMI_QUERY_FIELDS`` in order. With a
    header, columns are matched by name, so other field orders and subsets also work. A missing
    or ``[N/A]`` compute_cap / memory.total falls back to the known GPU model's value.
    """
    lines: list[tuple[int, str]] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        low = line.lower()
        if low.startswith(_SMI_FAILED):
            raise ProbeError(
                f"nvidia-smi cannot talk to the driver: {line!r}. Check the NVIDIA driver on the "
                "host (`nvidia-smi` by hand, or reboot after a driver update)."
            )
        if any(low.startswith(marker) for marker in _NO_DEVICES):
            raise ProbeError(f"nvidia-smi found no GPUs on the host: {line!r}.")
        if low.startswith("warning:"):
            logger.warning("nvidia-smi: %s", line)
            continue
        lines.append((line_no, line))
    if not lines:
        raise ProbeError("nvidia-smi printed no GPUs (empty output).")

    fields: list[str] = list(NVIDIA_SMI_QUERY_FIELDS)
    first_cells = next(csv.reader([lines[0][1]], skipinitialspace=True))
    if _is_header(first_cells):
        fields = [_field_name(c) for c in first_cells]
        lines = lines[1:]
        if not lines:
            raise ProbeError("nvidia-smi printed a header but no GPUs.")
    for required in ("index", "name"):
        if required not in fields:
            raise ProbeError(f"nvidia-smi output has no {required!r} column: header {fields!r}.")

    gpus: list[Gpu] = []
    driver_versions: list[str] = []
    for line_no, line in lines:
        cells = next(csv.reader([line], skipinitialspace=True))
        if len(cells) != len(fields):
            raise ProbeError(
                f"nvidia-smi line {line_no} has {len(cells)} fields, expected {len(fields)} "
                f"({', '.join(fields)}): {line!r}"
            )
        row = dict(zip(fields, cells, strict=True))
        gpus.append(_gpu_from_row(row, line_no, line))
        driver = _cell(row, "driver_version")
        if driver:
            driver_versions.append(driver)

    indexes = [g.index for g in gpus]
    if len(set(indexes)) != len(indexes):
        raise ProbeError(f"nvidia-smi listed a GPU index twice: {indexes}.")
    return GpuInventory(
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
        instance_type=instance_type,
        driver_version=driver_versions[0] if driver_versions else None,
    )


def _gpu_from_row(row: dict[str, str], line_no: int, line: str) -> Gpu:
    index_text = _cell(row, "index")
    if index_text is None or not index_text.isdigit():
        raise ProbeError(f"nvidia-smi line {line_no}: index is {row.get('index')!r}: {line!r}")
    name = _cell(row, "name")
    if name is None:
        raise ProbeError(f"nvidia-smi line {line_no}: GPU name missing: {line!r}")
    known = lookup_gpu_model(name)

    total_text = _cell(row, "memory.total")
    if total_text is not None:
        memory_mib = _number(total_text, "memory.total", line_no, line)
    elif known is not None:
        logger.warning(
            "nvidia-smi gave no memory.total for %s; using %d MiB", name, known.memory_mib
        )
        memory_mib = known.memory_mib
    else:
        raise ProbeError(
            f"nvidia-smi line {line_no}: memory.total is unknown for {name!r} and tgiops has no "
            f"table entry for that GPU: {line!r}"
        )

    cc_text = _cell(row, "compute_cap")
    if cc_text is not None:
        match = _COMPUTE_CAP.match(cc_text)
        if not match:
            raise ProbeError(
                f"nvidia-smi line {line_no}: compute_cap is {cc_text!r}, expected like 8.6: "
                f"{line!r}"
            )
        compute_capability = (int(match.group(1)), int(match.group(2)))
    elif known is not None:
        compute_capability = known.compute_capability
    else:
        raise ProbeError(
            f"nvidia-smi line {line_no}: no compute_cap for {name!r} and tgiops has no table "
            f"entry for that GPU (drivers before ~510 cannot report compute_cap): {line!r}"
        )

    used_text = _cell(row, "memory.used")
    util_text = _cell(row, "utilization.gpu")
    return Gpu(
        index=int(index_text),
        name=name,
        memory_mib=memory_mib,
        compute_capability=compute_capability,
        memory_used_mib=_number(used_text, "memory.used", line_no, line) if used_text else 0,
        utilization_pct=_number(util_text, "utilization.gpu", line_no, line) if util_text else 0,
    )


# --------------------------------------------------------------------------------------------
# systemctl show
# --------------------------------------------------------------------------------------------


def parse_systemctl_show_many(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output for several units: one dict per blank-line separated block.

    A key that repeats inside one block (e.g. several ``ExecStart=`` lines) keeps every value,
    joined with newlines.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if current is not None:
                blocks.append(current)
                current = None
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or key != key.strip() or " " in key:
            raise ProbeError(f"systemctl show line {line_no} is not Key=Value: {line!r}")
        if current is None:
            current = {}
        current[key] = f"{current[key]}\n{value}" if key in current else value
    if current is not None:
        blocks.append(current)
    return blocks


def parse_systemctl_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B UNIT`` output for one unit as a dict."""
    blocks = parse_systemctl_show_many(text)
    if not blocks:
        raise ProbeError("systemctl show printed nothing.")
    if len(blocks) > 1:
        raise ProbeError(
            f"systemctl show printed {len(blocks)} units where one was expected "
            "(use parse_systemctl_show_many)."
        )
    return blocks[0]


@dataclass(frozen=True)
class UnitState:
    """The systemd facts status needs about one unit (missing properties are None)."""

    load_state: str | None  # LoadState: loaded / not-found / masked
    active_state: str | None  # ActiveState: active / activating / failed / inactive ...
    sub_state: str | None  # SubState: running / auto-restart / dead ...
    main_pid: int | None  # MainPID (0 = no process)
    exec_main_status: int | None  # ExecMainStatus: exit code of the last main process
    n_restarts: int | None  # NRestarts
    result: str | None  # Result: success / exit-code / signal / timeout ...
    unit_file_state: str | None  # UnitFileState: enabled / disabled ...

    @property
    def exists(self) -> bool:
        return self.load_state not in (None, "not-found")

    @property
    def running(self) -> bool:
        return self.active_state == "active" and self.sub_state == "running"


UNIT_STATE_PROPERTIES: tuple[str, ...] = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "ExecMainStatus",
    "NRestarts",
    "Result",
    "UnitFileState",
)


def _optional_int(props: dict[str, str], key: str) -> int | None:
    value = props.get(key, "").strip()
    if value == "":
        return None
    if not re.fullmatch(r"-?\d+", value):
        raise ProbeError(f"systemctl show: {key}={value!r} is not a number.")
    return int(value)


def unit_state_from_show(props: dict[str, str]) -> UnitState:
    """A ``UnitState`` from ``parse_systemctl_show`` output (``-p`` UNIT_STATE_PROPERTIES)."""

    def text(key: str) -> str | None:
        value = props.get(key)
        return value if value else None

    return UnitState(
        load_state=text("LoadState"),
        active_state=text("ActiveState"),
        sub_state=text("SubState"),
        main_pid=_optional_int(props, "MainPID"),
        exec_main_status=_optional_int(props, "ExecMainStatus"),
        n_restarts=_optional_int(props, "NRestarts"),
        result=text("Result"),
        unit_file_state=text("UnitFileState"),
    )


# --------------------------------------------------------------------------------------------
# df
# --------------------------------------------------------------------------------------------


def parse_df_bytes_available(text: str) -> int:
    """Free bytes from ``df --output=avail -B1 PATH`` (header line ``Avail``, then the number)."""
    values: list[int] = []
    header_seen = False
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.isdigit():
            values.append(int(line))
        elif not header_seen and not values and " " not in line:
            header_seen = True  # "Avail" (localized under another LANG)
        else:
            raise ProbeError(f"df line {line_no} is not a byte count: {line!r}")
    if len(values) != 1:
        raise ProbeError(
            f"df printed {len(values)} byte counts where one was expected: {text.strip()!r}"
        )
    return values[0]


# --- the batched host report (one SSH round trip for every fact deploy and status need) --------

_SECTION = "@@tgiops-section "
_UNIT_MARKER = MANAGED_MARKER
# `--gpus all` / `--gpus "device=0,1"` and `-p ADDR:PORT:80` on a unit's ExecStart= line, as
# render.docker_run_args writes them.
_GPUS_ARG = re.compile(r'(?:^|\s)--gpus[ =][\\"]*(?:device=)?([0-9,]+|all)[\\"]*(?:\s|$)')
_PUBLISH_ARG = re.compile(r'(?:^|\s)-p[ =][\\"]*(?:[0-9.]+:)?(\d+):\d+')


@dataclass(frozen=True)
class UnitReport:
    """What one tgiops unit looks like on the host."""

    name: str
    unit_text: str | None  # None: not installed
    env_sha256: str | None  # of the env file; the file itself is never read back
    has_previous: bool  # a .previous copy exists (rollback target)
    state: UnitState

    @property
    def is_managed(self) -> bool:
        """The installed unit file carries tgiops' marker (or there is none to protect)."""
        return self.unit_text is None or is_managed_unit_text(self.unit_text)


def is_managed_unit_text(text: str) -> bool:
    return any(line.startswith(_UNIT_MARKER) for line in text.splitlines())


@dataclass(frozen=True)
class OtherUnit:
    """Another tgiops unit on the host: the port and GPUs it holds (from its ExecStart=)."""

    name: str
    port: int | None
    gpu_devices: tuple[int, ...] | None  # None: every GPU (`--gpus all`); (): none found

    def uses_gpu(self, index: int) -> bool:
        return self.gpu_devices is None or index in self.gpu_devices


def parse_exec_start(name: str, exec_start: str) -> OtherUnit:
    """Port and GPU devices from a tgiops unit's ``ExecStart=`` line (render.docker_run_args)."""
    gpus = _GPUS_ARG.search(exec_start)
    devices: tuple[int, ...] | None = ()
    if gpus is not None:
        value = gpus.group(1)
        devices = None if value == "all" else tuple(int(d) for d in value.split(",") if d)
    publish = _PUBLISH_ARG.search(exec_start)
    return OtherUnit(name=name, port=int(publish.group(1)) if publish else None,
                     gpu_devices=devices)  # fmt: skip


def parse_listening_ports(text: str) -> frozenset[int]:
    """TCP ports in LISTEN state from ``ss -ltnH`` (columns: State Recv-Q Send-Q Local Peer)."""
    ports = set()
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 4:
            _, _, port = cells[3].rpartition(":")
            if port.isdigit():
                ports.add(int(port))
    return frozenset(ports)


@dataclass(frozen=True)
class HostReport:
    gpus_text: str
    gpus_exit_code: int
    docker_runtimes_text: str
    docker_exit_code: int
    disk_available_bytes: int | None
    managed_units: tuple[str, ...]  # every unit file with tgiops' marker
    unit: UnitReport | None  # the unit this operation is about, when one was named
    other_units: tuple[OtherUnit, ...] = ()  # the other tgiops TGI units (ports, GPUs)
    listening_ports: frozenset[int] | None = None  # None: `ss` could not tell
    record_text: str = ""  # the unit's deployment record (JSON), when asked for and present


def systemctl_show_command(unit_name: str) -> str:
    props = " ".join(f"-p {p}" for p in UNIT_STATE_PROPERTIES)
    return f"systemctl show {props} {shlex.quote(unit_name + '.service')}"


def host_report_script(
    *,
    data_dir: str,
    unit_name: str | None,
    unit_dir: str,
    env_dir: str,
    record_path: str | None = None,
) -> str:
    """A bash script printing every fact in marked sections; it changes nothing on the host
    (a refused deploy must leave no trace: the directories are made by the install).
    Values are quoted."""
    q = shlex.quote
    lines = [
        "set +e",
        "export LC_ALL=C",
        f"s() {{ printf '\\n{_SECTION}%s\\n' \"$1\"; }}",
    ]
    fields = ",".join(NVIDIA_SMI_QUERY_FIELDS)
    lines += [
        "s gpus",
        f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits 2>&1",
        "rc=$?; s gpus-rc; echo $rc",
        "s docker",
        "docker info --format '{{json .Runtimes}}' 2>&1",
        "rc=$?; s docker-rc; echo $rc",
        "s disk",
        # The data directory may not exist yet: measure its nearest existing parent.
        f'd={q(data_dir)}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done',
        'df --output=avail -B1 "$d" 2>/dev/null | tail -n 1',
        "s managed",
        f"grep -l '^{_UNIT_MARKER}' {q(unit_dir)}/*.service 2>/dev/null",
        # Every tgiops unit's ExecStart= (ports and GPUs it holds), one line each.
        "s exec-starts",
        f"for f in $(grep -l '^{_UNIT_MARKER}' {q(unit_dir)}/*.service 2>/dev/null); do "
        'u=${f##*/}; printf \'%s %s\\n\' "${u%.service}" "$(grep -m1 \'^ExecStart=\' "$f")"; done',
        "s listening",
        "ss -ltnH 2>/dev/null || echo '@@no-ss'",
    ]
    if unit_name:
        unit_path = f"{unit_dir}/{unit_name}.service"
        env_path = f"{env_dir}/{unit_name}.env"
        lines += [
            "s unit",
            f"cat {q(unit_path)} 2>/dev/null",
            "s env-sha",
            f"sha256sum {q(env_path)} 2>/dev/null | cut -d' ' -f1",
            "s previous",
            f"test -f {q(unit_path + '.previous')} && echo yes",
            "s state",
            systemctl_show_command(unit_name),
        ]
    if record_path:
        lines += ["s record", f"head -c 65536 {q(record_path)} 2>/dev/null"]
    lines.append("s end")
    return "\n".join(lines) + "\n"


SECTION_MARKER = _SECTION  # shared by every batched host script


def split_sections(text: str) -> dict[str, str]:
    """``@@tgiops-section NAME`` blocks of a batched host script -> {NAME: text}.

    Every batched script (deploy's probe, status, undeploy) ends with an ``end`` section, so a
    report cut short (a dropped connection) is an error, never a silently partial answer.
    """
    sections: dict[str, str] = {}
    current: str | None = None
    buffer: list[str] = []
    for line in text.splitlines():
        if line.startswith(_SECTION):
            if current is not None:
                sections[current] = "\n".join(buffer).strip("\n")
            current, buffer = line[len(_SECTION) :].strip(), []
        elif current is not None:
            buffer.append(line)
    if current is not None:
        sections[current] = "\n".join(buffer).strip("\n")
    if "end" not in sections:
        raise ProbeError("the host's report was cut short (no end marker); try again")
    return sections


def parse_host_report(text: str, *, unit_name: str | None) -> HostReport:
    sections = split_sections(text)

    def code(name: str) -> int:
        value = sections.get(name, "").strip()
        return int(value) if value.lstrip("-").isdigit() else -1

    disk = sections.get("disk", "").strip()
    managed = tuple(
        line.rsplit("/", 1)[-1].removesuffix(".service")
        for line in sections.get("managed", "").splitlines()
        if line.strip()
    )
    others = []
    for line in sections.get("exec-starts", "").splitlines():
        name, _, exec_start = line.strip().partition(" ")
        if name and name != unit_name and exec_start.startswith("ExecStart="):
            others.append(parse_exec_start(name, exec_start))
    listening_text = sections.get("listening", "")
    listening = None if "@@no-ss" in listening_text else parse_listening_ports(listening_text)
    unit = None
    if unit_name:
        unit_text = sections.get("unit", "")
        sha = sections.get("env-sha", "").strip()
        unit = UnitReport(
            name=unit_name,
            unit_text=(unit_text + "\n") if unit_text else None,
            env_sha256=sha or None,
            has_previous=sections.get("previous", "").strip() == "yes",
            state=unit_state_from_show(parse_systemctl_show(sections.get("state", ""))),
        )
    return HostReport(
        gpus_text=sections.get("gpus", ""),
        gpus_exit_code=code("gpus-rc"),
        docker_runtimes_text=sections.get("docker", ""),
        docker_exit_code=code("docker-rc"),
        disk_available_bytes=int(disk) if disk.isdigit() else None,
        managed_units=managed,
        unit=unit,
        other_units=tuple(others),
        listening_ports=listening,
        record_text=sections.get("record", ""),
    )


# --- reading a crash in words ---------------------------------------------------------------
