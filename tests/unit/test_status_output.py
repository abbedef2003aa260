"""`tgiops status` renderers: the JSON object against its schema, the tables' key columns."""

from __future__ import annotations

import json

import jsonschema
import pytest
from test_status_parsers import INFO, METRICS, healthy_unit, report_text

from tgiops import output, status
from tgiops.aws import Ec2Instance

NOW = 1715076300


def host_from(text: str, target: str, **kw) -> status.HostStatus:
    facts = status.parse_status_report(text)
    return status.HostStatus(
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


def fleet() -> status.StatusReport:
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
    unreachable = status.HostStatus(
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
    return status.StatusReport(
        hosts=(healthy, loading, odd, empty, unreachable),
        elapsed_s=3.1,
        generated_at="2024-05-07T10:05:00+00:00",
    )


def test_status_json_matches_the_documented_schema():
    data = output.status_as_dict(fleet())
    jsonschema.validate(data, status.JSON_SCHEMA)
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
        jsonschema.validate(data, status.JSON_SCHEMA)


def test_plain_table_has_the_key_columns_and_rows():
    text = output.status_as_text(fleet())
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
    console.print(output.status_as_rich(fleet()))
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
    # Guard: the fixture keeps TGI's metric names (tgi-facts.md §5).
    for name in ("tgi_request_count", "tgi_queue_size", "tgi_batch_current_size"):
        assert name in METRICS
