"""Pure parsers of `tgiops status`: the batched report, the unit's plan, docker, curl, metrics."""

from __future__ import annotations

import json
import subprocess

import pytest

from tgiops.commands.logs import LogRedactor
from tgiops.core import status
from tgiops.core.errors import ProbeError
from tgiops.core.status_schema import ContainerFacts, TgiMetrics, UnitPlan

UNIT_TEXT = """\
# Managed by tgiops 0.1.0: tiny (tgiops-test/tiny-llama) on 1x NVIDIA A10G (22.5 GiB each, sm86).
# Do not edit by hand: run `tgiops deploy` again (it keeps the previous unit as .previous).
[Unit]
Description=TGI serving tiny (tgiops)

[Service]
EnvironmentFile=/etc/tgiops/tgiops-tiny.env
ExecStartPre=-/usr/bin/docker rm -f tgiops-tiny
ExecStart=/usr/bin/docker run --rm --name tgiops-tiny --gpus all --shm-size 1g \
-p 127.0.0.1:8080:80 -v /var/lib/tgiops/data:/data -e HF_TOKEN -e "PREFIX=100%%" \
ghcr.io/huggingface/text-generation-inference:3.3.5 --model-id tgiops-test/tiny-llama \
--num-shard 1 --dtype bfloat16 --max-input-tokens 1024 --max-total-tokens 2048 \
--max-batch-prefill-tokens 1024
Restart=always
"""
# The renderer writes ExecStart on one line; the fixture joins the continuation lines.
UNIT_TEXT = UNIT_TEXT.replace(" \\\n", " ")

SHOW_RUNNING = """\
LoadState=loaded
ActiveState=active
SubState=running
MainPID=4242
ExecMainStatus=0
NRestarts=0
Result=success
UnitFileState=enabled
ActiveEnterTimestamp=@1715076000
StateChangeTimestamp=@1715076000
"""

INFO = {
    "model_id": "tgiops-test/tiny-llama",
    "model_sha": "36750b0b63b311781c7e06e2420f2da7065b495e",
    "max_input_tokens": 1024,
    "max_total_tokens": 2048,
    "max_concurrent_requests": 128,
    "version": "3.3.5",
}

METRICS = """\
# TYPE tgi_request_count counter
tgi_request_count 12
# TYPE tgi_request_success counter
tgi_request_success 11
# TYPE tgi_request_failure counter
tgi_request_failure{err="validation"} 1
# TYPE tgi_queue_size gauge
tgi_queue_size 3
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 2
# TYPE tgi_request_mean_time_per_token_duration histogram
tgi_request_mean_time_per_token_duration_bucket{le="0.01"} 0
tgi_request_mean_time_per_token_duration_bucket{le="0.05"} 11
tgi_request_mean_time_per_token_duration_bucket{le="+Inf"} 11
tgi_request_mean_time_per_token_duration_sum 0.22
tgi_request_mean_time_per_token_duration_count 11
"""

CONTAINER = json.dumps(
    {
        "id": "3f2a9c0d1e2b4c5d6e7f",
        "image": "ghcr.io/huggingface/text-generation-inference:3.3.5",
        "status": "running",
        "running": True,
        "started_at": "2024-05-07T10:00:02.123456789Z",
        "exit_code": 0,
        "restart_count": 0,
    }
)
SMI = "0, NVIDIA A10G, 23028, 1024, 37, 8.6, 535.183.01"


def section(name: str, body: str) -> str:
    return f"\n{status.SECTION_MARKER}{name}\n{body}"


def report_text(
    *,
    units: dict[str, dict[str, str | None]] | None = None,
    now: str = "1715076300",
    gpus: str = SMI,
    gpus_rc: str = "0",
) -> str:
    units = {} if units is None else units
    parts = [
        section("now", now),
        section("gpus", gpus),
        section("gpus-rc", gpus_rc),
        section("managed", "\n".join(units)),
    ]
    for name, unit in units.items():
        for key in ("unit", "show", "container", "container-rc", "endpoint", "health", "info"):
            if unit.get(key) is not None:
                parts.append(section(f"{key} {name}", unit[key]))
        for key in ("metrics", "journal"):
            if unit.get(key) is not None:
                parts.append(section(f"{key} {name}", unit[key]))
    parts.append(section("end", ""))
    return "".join(parts)


def healthy_unit(**overrides: str | None) -> dict[str, str | None]:
    unit: dict[str, str | None] = {
        "unit": UNIT_TEXT,
        "show": SHOW_RUNNING,
        "container": CONTAINER,
        "container-rc": "0",
        "endpoint": "http://127.0.0.1:8080",
        "health": "200 0",
        "info": json.dumps(INFO),
        "metrics": METRICS,
        "journal": None,
    }
    unit.update(overrides)
    return unit


# --- the script ------------------------------------------------------------------------------


@pytest.mark.parametrize("units", [(), ("tgiops-a",), ("tgiops-a", "tgiops-b.2")])
def test_status_script_is_valid_bash(units):
    script = status.status_script(units=units)
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert script.rstrip().endswith("s end\n} </dev/null")


def test_status_script_names_only_the_requested_units():
    script = status.status_script(units=("tgiops-a", "tgiops-b"))
    assert "only='tgiops-a tgiops-b'" in script
    # Never reads an env file: the token stays on the host.
    assert "/etc/tgiops" not in script


@pytest.mark.parametrize("bad", ["../etc/passwd", "a b", "x;rm -rf /", ""])
def test_status_script_refuses_odd_unit_names(bad):
    with pytest.raises(ProbeError):
        status.status_script(units=(bad,))


def test_a_report_cut_short_is_an_error():
    with pytest.raises(ProbeError, match="cut short"):
        status.parse_status_report(report_text().replace("@@tgiops-section end", ""))


# --- the unit's plan -------------------------------------------------------------------------


def test_parse_unit_plan_reads_exec_start():
    plan = status.parse_unit_plan(UNIT_TEXT)
    assert plan == UnitPlan(
        alias="tiny",
        model_id="tgiops-test/tiny-llama",
        image="ghcr.io/huggingface/text-generation-inference:3.3.5",
        container="tgiops-tiny",
        bind_address="127.0.0.1",
        port=8080,
        data_dir="/var/lib/tgiops/data",
        num_shard=1,
        quantize=None,
        max_input_tokens=1024,
        max_total_tokens=2048,
    )


@pytest.mark.parametrize(
    ("exec_start", "field", "expected"),
    [
        pytest.param(
            "-p 0.0.0.0:9000:80 img --model-id a/b", "bind_address", "0.0.0.0", id="public"
        ),
        pytest.param("-p 9000:80 img --model-id a/b", "port", 9000, id="no-bind-address"),
        pytest.param("-p 127.0.0.1:81:80 img --model-id=a/b", "model_id", "a/b", id="equals-form"),
        pytest.param(
            "img --model-id a/b --max-input-length 77", "max_input_tokens", 77, id="tgi-2.0-name"
        ),
        pytest.param("img --model-id a/b --quantize awq", "quantize", "awq", id="quantize"),
        pytest.param("--name tgi%%x img --model-id a/b", "container", "tgi%x", id="systemd-%%"),
        pytest.param('--name "a b" img --model-id a/b', "container", "a b", id="systemd-quoted"),
        pytest.param("--name=x img --model-id a/b", "image", "img", id="name-equals-form"),
    ],
)
def test_parse_unit_plan_variants(exec_start, field, expected):
    text = f"[Service]\nExecStart=/usr/bin/docker run --rm {exec_start}\n"
    assert getattr(status.parse_unit_plan(text), field) == expected


def test_parse_unit_plan_without_exec_start_keeps_the_header_model():
    header = UNIT_TEXT.splitlines()[0]
    plan = status.parse_unit_plan(header + "\n[Service]\n")
    assert (plan.alias, plan.model_id, plan.port) == ("tiny", "tgiops-test/tiny-llama", None)


# --- small parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@1715076000", 1715076000),
        ("Tue 2024-05-07 10:00:00 UTC", None),
        ("", None),
        (None, None),
    ],
    ids=["unix", "old-systemd", "never", "absent"],
)
def test_parse_timestamp(text, expected):
    assert status.parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200 0", (200, 0)),
        ("503 0", (503, 0)),
        ("000 7", (None, 7)),
        ("000 52", (None, 52)),
        ("000 28", (None, 28)),
        (" 127", (None, 127)),
        ("", (None, None)),
    ],
    ids=["ok", "unhealthy", "refused", "empty-reply", "timeout", "no-curl", "nothing"],
)
def test_parse_health(text, expected):
    code, rc, detail = status.parse_health(text)
    assert (code, rc) == expected
    assert detail


def test_parse_health_words_for_refused():
    assert "refused" in status.parse_health("000 7")[2]


@pytest.mark.parametrize(
    ("text", "rc", "expected_error"),
    [
        (CONTAINER, 0, None),
        ("Error: No such container: tgiops-tiny", 1, "no container"),
        ("bash: docker: command not found", 127, "docker is not installed on the host"),
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.",
            1,
            "docker inspect failed",
        ),
        ("not json", 0, "unreadable"),
    ],
    ids=["running", "missing", "no-docker", "daemon-down", "garbage"],
)
def test_parse_container(text, rc, expected_error):
    facts, error = status.parse_container(text, rc)
    if expected_error is None:
        assert error is None
        assert facts == ContainerFacts(
            id="3f2a9c0d1e2b",
            image="ghcr.io/huggingface/text-generation-inference:3.3.5",
            status="running",
            running=True,
            started_at="2024-05-07T10:00:02.123456789Z",
            exit_code=0,
            restart_count=0,
        )
    else:
        assert facts is None
        assert expected_error in error


def test_parse_metrics_text_uses_tgi_names():
    metrics, error = status.parse_metrics_text(METRICS)
    assert error is None
    assert metrics == TgiMetrics(
        request_count=12,
        request_success=11,
        request_failure=1,
        queue_size=3,
        batch_size=2,
        mean_time_per_token_s=pytest.approx(0.02),
    )


@pytest.mark.parametrize(
    ("text", "expected"), [("", "answered nothing"), ("tgi_queue_size{ 3\n", "cannot parse")]
)
def test_parse_metrics_text_errors(text, expected):
    metrics, error = status.parse_metrics_text(text)
    assert metrics is None
    assert expected in error


@pytest.mark.parametrize(
    ("text", "info", "error"),
    [
        (json.dumps(INFO), INFO, None),
        ("<html>", None, "not JSON"),
        ("[1]", None, "list"),
        (None, None, None),
    ],
    ids=["object", "html", "array", "absent"],
)
def test_parse_info(text, info, error):
    got, got_error = status.parse_info(text)
    assert got == info
    assert (got_error is None) == (error is None)
    if error:
        assert error in got_error


# --- the whole report ------------------------------------------------------------------------


def test_parse_status_report_healthy_host():
    facts = status.parse_status_report(report_text(units={"tgiops-tiny": healthy_unit()}))
    assert facts.now_epoch_s == 1715076300
    assert facts.managed_units == ("tgiops-tiny",)
    assert [g.name for g in facts.gpus] == ["NVIDIA A10G"]
    assert (facts.gpus[0].utilization_pct, facts.gpus[0].memory_used_mib) == (37, 1024)
    unit = facts.units[0]
    assert unit.systemd.since_epoch_s == 1715076000
    assert unit.systemd.since_iso == "2024-05-07T10:00:00Z"
    assert unit.http.health_code == 200
    assert unit.http.info["version"] == "3.3.5"
    assert unit.http.metrics.queue_size == 3
    assert unit.container.running
    assert unit.diagnosis is None


@pytest.mark.parametrize(
    ("gpus", "rc", "expected"),
    [
        ("bash: nvidia-smi: command not found", "127", "not installed"),
        ("NVIDIA-SMI has failed because it couldn't communicate", "9", "exit 9"),
        ("garbage, line", "0", "nvidia-smi"),
    ],
    ids=["missing", "failed", "unreadable"],
)
def test_parse_status_report_gpu_problems_do_not_hide_units(gpus, rc, expected):
    text = report_text(units={"tgiops-tiny": healthy_unit()}, gpus=gpus, gpus_rc=rc)
    facts = status.parse_status_report(text)
    assert facts.gpus == ()
    assert expected in facts.gpus_error
    assert facts.units[0].http.health_code == 200


def test_parse_status_report_skips_units_filtered_on_the_host():
    text = report_text(units={"tgiops-tiny": healthy_unit()}).replace(
        "@@tgiops-section unit tgiops-tiny", "@@tgiops-section other"
    )
    facts = status.parse_status_report(text)
    assert facts.managed_units == ("tgiops-tiny",)
    assert facts.units == ()


def test_journal_is_redacted_before_diagnosis():
    journal = (
        'Args { model_id: "x", api_key: Some("sekret-value-123") }\n'
        "HF_TOKEN=hf_abcdefghijklmnopqrstuvwx\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    seen: list[str] = []

    def redact(text: str) -> str:
        out = LogRedactor()(text)
        seen.append(out)
        return out

    unit = healthy_unit(health="000 7", info=None, metrics=None, journal=journal)
    facts = status.parse_status_report(report_text(units={"u": unit}), redact=redact)
    assert "CUDA out of memory" in "".join(seen)
    assert "sekret-value-123" not in "".join(seen)
    assert "hf_abcdefghijklmnopqrstuvwx" not in "".join(seen)
    assert "weights do not fit" in facts.units[0].diagnosis


def test_no_port_published_is_said_in_words():
    unit = healthy_unit(endpoint=None, health=None, info=None, metrics=None)
    facts = status.parse_status_report(report_text(units={"u": unit}))
    assert facts.units[0].http.endpoint is None
    assert "publishes no port" in facts.units[0].http.detail
