"""`tgiops status` renderers: the JSON object against its schema, the tables' key columns."""

from __future__ import annotations

import json

import jsonschema
import pytest
from test_status_parsers import INFO, METRICS, healthy_unit, report_text

from tgiops.cli import output
from tgiops.core import status
from tgiops.core.status_schema import JSON_SCHEMA, HostStatus, StatusReport
from tgiops.edges.aws.instances import Ec2Instance

NOW = 1715076300


def host_from(text: str, target: str, **kw) -> HostStatus:
    facts = status.parse_status_report(text)
    return HostStatus(
        target=target,
        destination=target,
        reachable=True,
        error=None,
        round_trips=1,
        elapsed_s=0.2,
        ec2=kw.get("ec2"),
        gpus=facts.gpus,
        gpus_error=facts.gpus_error,
        units=status.judge_host(facts, wanted_units=kw.get("wanted", ())),
        now_epoch_s=facts.now_epoch_s,
    )


def fleet() -> StatusReport:
    ec2 = status.ec2_facts(
        Ec2Instance(
            instance_id="i-0abc",
            instance_type="g5.xlarge",
            lifecycle="spot",
            state="running",
            availability_zone="us-east-1a",
            public_ip="3.1.2.3",
            private_ip=None,
            tags={"Name": "llm"},
        ),
        elastic_ips={"i-0abc": "3.1.2.3"},
        spot_usd_per_hour=0.41,
    )
    healthy = host_from(report_text(units={"tgiops-tiny": healthy_unit()}), "i-0abc", ec2=ec2)
    loading = host_from(
        report_text(
            units={"tgiops-tiny": healthy_unit(health="000 7", info=None, metrics=None, journal="")}
        ),
        "gpu-loading",
    )
    weird_info = json.dumps({**INFO, "max_total_tokens": "many", "version": 3})
    odd = host_from(report_text(units={"tgiops-tiny": healthy_unit(info=weird_info)}), "gpu-odd")
    empty = host_from(report_text(), "gpu-empty", wanted=("tgiops-gone",))
    unreachable = HostStatus(
        target="10.0.0.99",
        destination="10.0.0.99",
        reachable=False,
        error="timed out",
        round_trips=0,
        elapsed_s=3.0,
        ec2=None,
        gpus=(),
        gpus_error=None,
        units=status.unreachable_units("cannot get the host's status over SSH: timed out", ()),
    )
    return StatusReport(
        hosts=(healthy, loading, odd, empty, unreachable),
        elapsed_s=3.1,
        generated_at="2024-05-07T10:05:00+00:00",
    )


def test_status_json_matches_the_documented_schema():
    data = output.status_as_dict(fleet())
    jsonschema.validate(data, JSON_SCHEMA)
    # And it survives a round trip through JSON text unchanged.
    assert json.loads(json.dumps(data)) == data


def test_status_json_content():
    data = output.status_as_dict(fleet())
    assert data["healthy"] is False
    assert data["counts"] == {
        "healthy": 1,
        "loading": 1,
        "degraded": 1,
        "failed": 0,
        "not-deployed": 1,
        "unreachable": 1,
    }
    first = data["hosts"][0]
    assert first["ec2"]["elastic_ip"] is True
    assert first["ec2"]["spot_usd_per_hour"] == 0.41
    assert first["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA A10G",
            "utilization_pct": 37,
            "memory_used_mib": 1024,
            "memory_total_mib": 23028,
        }
    ]
    unit = first["units"][0]
    assert unit["verdict"] == "healthy"
    assert unit["systemd"]["since"] == "2024-05-07T10:00:00Z"
    assert unit["systemd"]["active_for_s"] == 300
    assert unit["tgi"]["metrics"]["mean_time_per_token_ms"] == pytest.approx(20.0)
    assert unit["tgi"]["info"]["max_total_tokens"] == 2048
    odd = data["hosts"][2]["units"][0]["tgi"]["info"]
    assert (odd["max_total_tokens"], odd["version"]) == (None, None)
    gone = data["hosts"][3]["units"][0]
    assert (gone["unit"], gone["verdict"]) == ("tgiops-gone", "not-deployed")
    assert all(v is None for k, v in gone.items() if k not in ("unit", "verdict", "reason"))


def test_schema_rejects_an_unknown_verdict():
    data = output.status_as_dict(fleet())
    data["hosts"][0]["units"][0]["verdict"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, JSON_SCHEMA)


def test_plain_table_has_the_key_columns_and_rows():
    text = output.status_as_text(fleet(), wide=True)
    header = text.splitlines()[0].split()
    assert header == [c for c in output.STATUS_COLUMNS]
    rows = {line.split()[0]: line for line in text.splitlines()[1:6]}
    assert set(rows) == {"i-0abc", "gpu-loading", "gpu-odd", "gpu-empty", "10.0.0.99"}
    assert " healthy " in rows["i-0abc"] and "active/running" in rows["i-0abc"]
    assert "5m0s" in rows["i-0abc"] and "20.0" in rows["i-0abc"]
    assert " loading " in rows["gpu-loading"]
    assert " unreachable " in rows["10.0.0.99"]
    assert "i-0abc (llm) g5.xlarge spot running us-east-1a 3.1.2.3 (Elastic IP)" in text
    assert "$0.41/h spot" in text
    assert "GPUs (1x NVIDIA A10G): 0:37% 1.0/22.5GiB" in text
    assert "1 healthy, 1 loading, 1 degraded, 1 not-deployed, 1 unreachable" in text
    assert "on-demand prices as of" in text


def test_rich_table_renders_the_same_rows():
    from rich.console import Console

    console = Console(width=250, record=True, color_system=None)
    console.print(output.status_as_rich(fleet(), 250, wide=True), soft_wrap=True)
    text = console.export_text()
    for word in ("VERDICT", "REASON", "healthy", "loading", "unreachable", "i-0abc", "Elastic IP"):
        assert word in text


def test_metrics_absent_show_as_dashes():
    rows = output.status_rows(fleet())
    loading = next(r for r in rows if r["host"] == "gpu-loading")
    assert (loading["reqs"], loading["queue"], loading["ms/tok"]) == (None, None, None)
    healthy = next(r for r in rows if r["host"] == "i-0abc")
    assert (healthy["reqs"], healthy["queue"], healthy["batch"]) == ("12", "3", "2")


def test_metrics_fixture_is_tgi_text():
    # Guard: the fixture keeps TGI's metric names (docs/tgi.md §5).
    for name in ("tgi_request_count", "tgi_queue_size", "tgi_batch_current_size"):
        assert name in METRICS


# --- layouts that fit the terminal (issue 11, item 6) -------------------------------------------


def long_fleet() -> StatusReport:
    """The fleet plus a host whose name alone takes most of 80 columns."""
    base = fleet()
    far = host_from(
        report_text(units={"tgiops-llama-3.1-70b-awq": healthy_unit()}),
        "ec2-203-0-113-25.compute-1.amazonaws.example.com",
    )
    return StatusReport(
        hosts=(*base.hosts, far), elapsed_s=base.elapsed_s, generated_at=base.generated_at
    )


def words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("width", [80, 120, 200])
@pytest.mark.parametrize("report", [fleet, long_fleet])
def test_status_text_fits_the_width_and_cuts_no_value(width, report):
    rep = report()
    text = output.status_as_text(rep, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, width
    table = lines[0].split()[:3] == ["host", "unit", "verdict"]
    # The key columns side by side when they fit; a 49-character host name in 80 columns
    # makes each unit a block (host and unit, then the verdict) instead of cutting them.
    assert table == (report is fleet or width > 80)
    for row in output.status_rows(rep):
        key = [row["host"], row["unit"] or "-", row["verdict"]]
        if table:
            assert any(set(key) <= set(line.split()) for line in lines), row
        else:
            at = lines.index(f"{key[0]} {key[1]}")
            assert lines[at + 1] == f"  {key[2]}"
        # the reason whole (wrapped lines joined), never dropped
        assert " ".join(words(row["reason"])) in " ".join(words(text)), row["reason"]
    if width == 80 and table:
        assert "reason" not in lines[0]  # on its own line below each row instead


def test_status_text_becomes_blocks_when_key_columns_do_not_fit():
    rep = long_fleet()
    text = output.status_as_text(rep, 50)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 50
    host = "ec2-203-0-113-25.compute-1.amazonaws.example.com"
    assert f"{host}" in lines and "  healthy" in lines  # host line, then the verdict line


def test_wide_is_one_line_per_unit_with_every_column():
    rep = fleet()
    lines = output.status_as_text(rep, 80, wide=True).splitlines()
    assert lines[0].split() == output.STATUS_COLUMNS
    assert len(lines[1].split()) > 12 and "serving" in lines[1]


@pytest.mark.parametrize("width", [80, 120, 200])
def test_rich_status_fits_the_terminal(width):
    from rich.console import Console

    console = Console(width=width, record=True, color_system="truecolor")
    console.print(output.status_as_rich(long_fleet(), width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    for verdict in ("healthy", "loading", "degraded", "not-deployed", "unreachable"):
        assert verdict in text
    # the HOST column shows the host, not a sliver of it (it showed "u" below ~200 columns)
    assert "gpu-loading" in text and "10.0.0.99" in text
