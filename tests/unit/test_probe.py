"""Parsers of nvidia-smi, systemctl show and df output, on real-format samples."""

from __future__ import annotations

import pytest

from tgiops.core.engines.tgi import diagnose_journal
from tgiops.core.errors import ProbeError
from tgiops.core.probe import (
    NVIDIA_SMI_QUERY_FIELDS,
    UNIT_STATE_PROPERTIES,
    nvidia_smi_query_command,
    parse_df_bytes_available,
    parse_nvidia_smi_csv,
    parse_systemctl_show,
    parse_systemctl_show_many,
    unit_state_from_show,
)


def test_query_command_asks_for_the_fields_the_parser_expects() -> None:
    assert nvidia_smi_query_command() == [
        "nvidia-smi",
        "--query-gpu=index,name,memory.total,memory.used,utilization.gpu,compute_cap,driver_version",
        "--format=csv,noheader,nounits",
    ]
    assert NVIDIA_SMI_QUERY_FIELDS[0:2] == ("index", "name")


# The testbed's fake nvidia-smi prints this (header and units); real g5 hosts print the same
# names and numbers ("NVIDIA A10G, 23028 MiB").
A10G_X4_WITH_HEADER_AND_UNITS = """\
index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%], compute_cap, driver_version
0, NVIDIA A10G, 23028 MiB, 0 MiB, 0 %, 8.6, 535.183.01
1, NVIDIA A10G, 23028 MiB, 0 MiB, 0 %, 8.6, 535.183.01
2, NVIDIA A10G, 23028 MiB, 512 MiB, 7 %, 8.6, 535.183.01
3, NVIDIA A10G, 23028 MiB, 0 MiB, 0 %, 8.6, 535.183.01
"""


@pytest.mark.parametrize(
    ("text", "count", "name", "memory_mib", "cc", "driver"),
    [
        pytest.param(
            A10G_X4_WITH_HEADER_AND_UNITS,
            4,
            "NVIDIA A10G",
            23028,
            (8, 6),
            "535.183.01",
            id="header-and-units",
        ),
        pytest.param(
            "0, NVIDIA A10G, 23028, 0, 0, 8.6, 535.183.01\n",
            1,
            "NVIDIA A10G",
            23028,
            (8, 6),
            "535.183.01",
            id="noheader-nounits",
        ),
        pytest.param(
            "0, Tesla T4, 15360 MiB, 0 MiB, 0 %, 7.5, 550.54.15\n",
            1,
            "Tesla T4",
            15360,
            (7, 5),
            "550.54.15",
            id="noheader-with-units",
        ),
        pytest.param(
            "index, name, memory.total, memory.used, utilization.gpu, compute_cap, driver_version\n"
            "0, NVIDIA L4, 23034, 0, 0, 8.9, 580.82.07\n",
            1,
            "NVIDIA L4",
            23034,
            (8, 9),
            "580.82.07",
            id="header-nounits",
        ),
        pytest.param(
            # another field order and subset, as printed on a 4x A100 host (public log)
            "index, name, memory.total [MiB], compute_cap, driver_version\n"
            "0, NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0, 580.105.08\n"
            "1, NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0, 580.105.08\n",
            2,
            "NVIDIA A100-SXM4-80GB",
            81920,
            (8, 0),
            "580.105.08",
            id="other-field-order",
        ),
        pytest.param(
            "0, NVIDIA H100 80GB HBM3, 81559 MiB, [N/A], [N/A], 9.0, 550.54.15\n",
            1,
            "NVIDIA H100 80GB HBM3",
            81559,
            (9, 0),
            "550.54.15",
            id="na-usage",
        ),
        pytest.param(
            "0, Tesla T4, 15360, 0, 0, [N/A], [N/A]\n",
            1,
            "Tesla T4",
            15360,
            (7, 5),
            None,
            id="na-compute-cap-from-table",
        ),
        pytest.param(
            "0, NVIDIA L40S, [N/A], 0, 0, 8.9, 560.35.03\n",
            1,
            "NVIDIA L40S",
            46068,
            (8, 9),
            "560.35.03",
            id="na-memory-from-table",
        ),
        pytest.param(
            "WARNING: infoROM is corrupted at gpu 0000:00:04.0\n"
            "0, Tesla V100-SXM2-16GB, 16384, 0, 0, 7.0, 580.178.04\n",
            1,
            "Tesla V100-SXM2-16GB",
            16384,
            (7, 0),
            "580.178.04",
            id="warning-line-first",
        ),
        pytest.param(
            "0, NVIDIA RTX A6000, 49140, 299, 0, 8.6, 550.90.07\r\n\r\n",
            1,
            "NVIDIA RTX A6000",
            49140,
            (8, 6),
            "550.90.07",
            id="unknown-card-crlf",
        ),
    ],
)
def test_parse_nvidia_smi(
    text: str, count: int, name: str, memory_mib: int, cc: tuple[int, int], driver: str | None
) -> None:
    inv = parse_nvidia_smi_csv(text, instance_type="g5.12xlarge")
    assert inv.count == count
    assert {g.name for g in inv.gpus} == {name}
    assert (inv.memory_mib, inv.compute_capability, inv.driver_version) == (memory_mib, cc, driver)
    assert inv.instance_type == "g5.12xlarge"


def test_parse_nvidia_smi_keeps_usage_and_sorts_by_index() -> None:
    text = (
        "1, NVIDIA A10G, 23028 MiB, 512 MiB, 7 %, 8.6, 535.183.01\n"
        "0, NVIDIA A10G, 23028 MiB, 20000 MiB, 95 %, 8.6, 535.183.01\n"
    )
    inv = parse_nvidia_smi_csv(text)
    assert [(g.index, g.memory_used_mib, g.utilization_pct) for g in inv.gpus] == [
        (0, 20000, 95),
        (1, 512, 7),
    ]
    assert inv.describe() == "2x NVIDIA A10G (22.5 GiB each, sm86)"
    assert inv.instance_type is None


def test_parse_nvidia_smi_of_a_mixed_host() -> None:
    inv = parse_nvidia_smi_csv(
        "0, NVIDIA A10G, 23028, 0, 0, 8.6, 535.183.01\n1, Tesla T4, 15360, 0, 0, 7.5, 535.183.01\n"
    )
    assert not inv.homogeneous
    assert (inv.memory_mib, inv.compute_capability) == (15360, (7, 5))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "empty output", id="empty"),
        pytest.param("\n  \n", "empty output", id="blank"),
        pytest.param(
            A10G_X4_WITH_HEADER_AND_UNITS.splitlines()[0],
            "header but no GPUs",
            id="header-only",
        ),
        pytest.param("No devices were found\n", "found no GPUs", id="no-devices"),
        pytest.param(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n",
            "cannot talk to the driver",
            id="driver-down",
        ),
        pytest.param(
            "0, NVIDIA A10G, 23028 MiB\n", "line 1 has 3 fields, expected 7", id="too-few-fields"
        ),
        pytest.param(
            "0, NVIDIA A10G, 23028, 0, 0, 8.6, 535.183.01\n"
            "1, NVIDIA A10G, 24 GB, 0, 0, 8.6, 535.183.01\n",
            "line 2: memory.total is '24 GB'",
            id="memory-in-gb",
        ),
        pytest.param(
            "0, NVIDIA A10G, 23028, 0, 0, sm86, 535.183.01\n", "compute_cap is 'sm86'", id="bad-cc"
        ),
        pytest.param(
            "x, NVIDIA A10G, 23028, 0, 0, 8.6, 535.183.01\n", "index is 'x'", id="bad-index"
        ),
        pytest.param(
            "0, NVIDIA A10G, 23028, 0, 0, 8.6, 535\n0, NVIDIA A10G, 23028, 0, 0, 8.6, 535\n",
            "index twice",
            id="duplicate-index",
        ),
        pytest.param(
            "0, NVIDIA RTX 6000 Ada Generation, 49140, 0, 0, [N/A], 470.182.03\n",
            "no compute_cap for 'NVIDIA RTX 6000 Ada Generation'",
            id="unknown-card-without-cc",
        ),
        pytest.param(
            "name, memory.total [MiB]\nNVIDIA A10G, 23028 MiB\n",
            "no 'index' column",
            id="header-without-index",
        ),
    ],
)
def test_malformed_nvidia_smi_raises_probe_error(text: str, fragment: str) -> None:
    with pytest.raises(ProbeError) as caught:
        parse_nvidia_smi_csv(text)
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 1


def test_probe_error_names_the_bad_line() -> None:
    line = "0, NVIDIA A10G, lots, 0, 0, 8.6, 535.183.01"
    with pytest.raises(ProbeError, match=r"memory\.total") as caught:
        parse_nvidia_smi_csv(line)
    assert repr(line) in str(caught.value)


# --------------------------------------------------------------------------------------------
# systemctl show
# --------------------------------------------------------------------------------------------

RUNNING_UNIT = """\
LoadState=loaded
ActiveState=active
SubState=running
MainPID=4242
ExecMainStatus=0
NRestarts=2
Result=success
UnitFileState=enabled
Environment=HF_HUB_OFFLINE=1 PORT=80
"""

MISSING_UNIT = """\
LoadState=not-found
ActiveState=inactive
SubState=dead
MainPID=0
ExecMainStatus=0
NRestarts=0
Result=success
UnitFileState=
"""


def test_systemctl_show_one_unit() -> None:
    props = parse_systemctl_show(RUNNING_UNIT)
    assert props["ActiveState"] == "active"
    assert props["Environment"] == "HF_HUB_OFFLINE=1 PORT=80"  # split at the first '=' only
    state = unit_state_from_show(props)
    assert (state.main_pid, state.n_restarts, state.exec_main_status) == (4242, 2, 0)
    assert state.running and state.exists
    assert "MainPID" in UNIT_STATE_PROPERTIES


def test_systemctl_show_missing_unit() -> None:
    state = unit_state_from_show(parse_systemctl_show(MISSING_UNIT))
    assert not state.exists and not state.running
    assert state.unit_file_state is None  # empty value


def test_systemctl_show_many_units_and_repeated_keys() -> None:
    text = RUNNING_UNIT + "\n" + MISSING_UNIT + "\nExecStart={ path=/a }\nExecStart={ path=/b }\n"
    blocks = parse_systemctl_show_many(text)
    assert [b.get("LoadState") for b in blocks] == ["loaded", "not-found", None]
    assert blocks[2]["ExecStart"] == "{ path=/a }\n{ path=/b }"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "printed nothing", id="empty"),
        pytest.param("ActiveState active\n", "line 1 is not Key=Value", id="no-equals"),
        pytest.param("=value\n", "line 1 is not Key=Value", id="empty-key"),
        pytest.param(
            RUNNING_UNIT + "\n" + MISSING_UNIT, "2 units where one was expected", id="two-blocks"
        ),
    ],
)
def test_bad_systemctl_show(text: str, fragment: str) -> None:
    with pytest.raises(ProbeError, match=fragment):
        parse_systemctl_show(text)


def test_unit_state_rejects_non_numeric_pid() -> None:
    with pytest.raises(ProbeError, match="MainPID='abc'"):
        unit_state_from_show({"MainPID": "abc"})


# --------------------------------------------------------------------------------------------
# df
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "available"),
    [
        pytest.param("       Avail\n52034416640\n", 52034416640, id="with-header"),
        pytest.param("52034416640\n", 52034416640, id="no-header"),
        pytest.param("Verfügbar\n0\n", 0, id="localized-header-full-disk"),
    ],
)
def test_df_bytes_available(text: str, available: int) -> None:
    assert parse_df_bytes_available(text) == available


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "0 byte counts", id="empty"),
        pytest.param("Avail\n", "0 byte counts", id="header-only"),
        pytest.param("Avail\n12G\n", "line 2 is not a byte count", id="human-units"),
        pytest.param("Avail\n1\n2\n", "2 byte counts", id="two-paths"),
        pytest.param(
            "df: /data: No such file or directory\n", "not a byte count", id="df-error-text"
        ),
    ],
)
def test_bad_df_output(text: str, fragment: str) -> None:
    with pytest.raises(ProbeError, match=fragment):
        parse_df_bytes_available(text)


# Lines as TGI (and the emulator, which copies them) writes them to the journal.
JOURNAL_DIAGNOSES = [
    pytest.param(
        "ImportError: FlashAttention only supports Ampere GPUs or newer. rank=0",
        "older than Ampere",
        id="flash-attention-on-turing",
    ),
    pytest.param(
        "ImportError: GPU with CUDA capability 7 0 is not supported",
        "compute capability",
        id="volta-unsupported",
    ),
    pytest.param("Error: Backend(NotEnoughMemory(30589))", "max_total_tokens", id="kv-too-small"),
    pytest.param(
        "Not enough memory to handle 60000 prefill tokens. You need to decrease "
        "`--max-batch-prefill-tokens`",
        "prefill",
        id="prefill-oom",
    ),
    pytest.param(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "weights do not fit",
        id="weights-oom",
    ),
    pytest.param(
        "NotImplementedError: Sharded Llama requires Flash Attention enabled models.",
        "cannot shard",
        id="non-flash-sharding",
    ),
    pytest.param(
        "NotImplementedError: sharded is not supported for AutoModel",
        "cannot shard",
        id="automodel-sharding",
    ),
    pytest.param(
        "401 Client Error: Unauthorized for url: https://huggingface.co/api/models/x",
        "token",
        id="unauthorized",
    ),
    pytest.param(
        'docker: Error response from daemon: could not select device driver "" with '
        "capabilities: [[gpu]].",
        "NVIDIA runtime",
        id="no-nvidia-runtime",
    ),
]


@pytest.mark.parametrize("line,needle", JOURNAL_DIAGNOSES)
def test_diagnose_journal_names_the_cause(line, needle):
    journal = f"2026-11-25T16:30:38Z INFO text_generation_launcher: Args {{ ... }}\n{line}\n"
    assert needle in (diagnose_journal(journal) or "")


def test_diagnose_journal_prefers_the_newest_line_and_knows_when_it_does_not_know():
    assert diagnose_journal("all is well\nnothing to see") is None
    both = "CUDA out of memory\nError: Backend(NotEnoughMemory(10))"
    assert "max_total_tokens" in diagnose_journal(both)
