"""The monitor loop's decisions, pure (tgiops.core.monitor): the host read turned into
per-unit readings, the outage bookkeeping (buffer, drop oldest, said once, recovery), the unit
it installs, the policy statement, and `show`'s latest-value reading."""

from __future__ import annotations

import json

import pytest

from tgiops.core.errors import InputError
from tgiops.core.monitor import (
    Buffer,
    Outbox,
    Readings,
    dimensions,
    engine_figures,
    latest_queries,
    latest_values,
    metric_data,
    render_unit,
    unit_readings,
)
from tgiops.core.probe import SECTION_MARKER
from tgiops.edges.resources import shipped_path

TEMPLATE = (shipped_path("unit_templates") / "tgiops-monitor.service.j2").read_text()


def section(name: str, body: str) -> str:
    return f"\n{SECTION_MARKER}{name}\n{body}\n"


TGI_METRICS = """# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 2
# TYPE tgi_queue_size gauge
tgi_queue_size 7
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 1024
# TYPE tgi_batch_max_total_tokens gauge
tgi_batch_max_total_tokens 4096
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_sum 300
tgi_request_generated_tokens_count 3
"""

VLLM_METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 4
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} 1
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m",engine="0"} 0.25
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{model_name="m",engine="0"} 900
"""

SMI = (
    "0, NVIDIA A10G, 23028, 20000, 87, 8.6, 550.54.15\n"
    "1, NVIDIA A10G, 23028, 1000, 3, 8.6, 550.54.15\n"
)


def report(units: dict[str, tuple[str, str, str]], smi: str = SMI) -> str:
    """A status_script answer: units = name -> (unit text, health section, metrics text)."""
    out = section("now", "1700000000") + section("gpus", smi) + section("gpus-rc", "0")
    out += section("managed", "\n".join(units))
    for name, (unit, health, metrics) in units.items():
        out += section(f"unit {name}", unit)
        out += section(f"endpoint {name}", "http://127.0.0.1:8080")
        out += section(f"health {name}", health)
        if metrics:
            out += section(f"metrics {name}", metrics)
    return out + section("end", "")


def unit_text(gpus: str = "all") -> str:
    return (
        "# Managed by tgiops 0.1: phi (microsoft/phi) on x\n[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name u --gpus {gpus} -p 127.0.0.1:8080:80 "
        "ghcr.io/huggingface/text-generation-inference:3.3.6 --model-id m\n"
    )


def test_smi_fields_match_what_the_parser_reads():
    from tgiops.core.probe import NVIDIA_SMI_QUERY_FIELDS, parse_nvidia_smi_csv

    assert len(SMI.splitlines()[0].split(",")) == len(NVIDIA_SMI_QUERY_FIELDS)
    assert [g.utilization_pct for g in parse_nvidia_smi_csv(SMI).gpus] == [87, 3]


def test_a_host_read_becomes_one_reading_per_engine_unit():
    text = report(
        {
            "tgiops-phi": (unit_text(), "200 0", TGI_METRICS),
            "tgiops-small": (unit_text("'\"device=1\"'"), "000 7", ""),
            "tgiops-monitor": ("# Managed by tgiops 0.1\n", "", ""),  # its own: not an engine
        }
    )
    readings = dict(unit_readings(text, 42.0))
    assert set(readings) == {"tgiops-phi", "tgiops-small"}
    phi, small = readings["tgiops-phi"], readings["tgiops-small"]
    assert phi.healthy and phi.timestamp == 42.0
    assert [g.index for g in phi.gpus] == [0, 1]
    assert phi.engine is not None and phi.engine["tgi_queue_size"] == 7
    assert not small.healthy and small.engine is None
    assert [g.index for g in small.gpus] == [1]  # --gpus device=1: only its GPU


def test_garbage_metrics_still_report_health_and_gpus():
    text = report({"tgiops-phi": (unit_text(), "200 0", "this is { not prometheus")})
    [(_, reading)] = unit_readings(text, 1.0)
    assert reading.healthy and reading.engine is None and len(reading.gpus) == 2


def test_vllm_and_tgi_figures_become_the_same_metrics():
    assert engine_figures({"tgi_batch_current_size": 2, "tgi_queue_size": 7}) == {
        "running": 2,
        "waiting": 7,
    }
    from tgiops.core.metrics import parse_metrics

    figures = engine_figures(parse_metrics(VLLM_METRICS))
    assert figures == {
        "running": 4,
        "waiting": 1,
        "kv_cache_pct": 25.0,
        "generated_tokens": 900,
    }
    dims = dimensions(group=None, unit="tgiops-v", instance_id="i-1")
    parsed = parse_metrics(VLLM_METRICS)
    before = Readings(0.0, (), {**parsed, "vllm:generation_tokens_total": 300}, True)
    now = Readings(60.0, (), parse_metrics(VLLM_METRICS), True)
    names = {d["MetricName"]: d["Value"] for d in metric_data(now, dims, previous=before)}
    assert names["GeneratedTokensPerSecond"] == pytest.approx(10.0)
    assert names["KVCacheUsage"] == pytest.approx(25.0)
    assert names["RequestsRunning"] == 4 and names["Healthy"] == 1.0


def points(n: int, start: int = 0) -> list[dict]:
    return [{"n": i} for i in range(start, start + n)]


def test_an_outage_is_said_once_points_drop_oldest_and_recovery_sends_the_rest():
    box = Outbox(Buffer(limit=5))
    assert box.queue(points(3)) == []
    assert len(box.failed("cannot reach the AWS endpoint", now=100.0)) == 1
    said = []
    for tick in range(1, 4):  # three more ticks while CloudWatch is away
        said += box.queue(points(3, start=3 * tick))
        said += box.failed("cannot reach the AWS endpoint", now=100.0 + 60 * tick)
    assert len(said) == 1 and "dropping the oldest" in said[0]  # the drop, once; no repeats
    assert [p["n"] for p in box.buffer.points] == [7, 8, 9, 10, 11]  # the newest 5 kept
    [batch] = box.batches()
    recovered = box.delivered(len(batch), now=400.0)
    assert len(recovered) == 1 and "after 300 s" in recovered[0]
    assert "7 oldest points were dropped" in recovered[0]
    assert list(box.buffer.points) == []
    # Back to normal: nothing more is said; a second outage is said again, once.
    assert box.queue(points(1)) == [] and box.delivered(1, now=460.0) == []
    assert len(box.failed("again", now=520.0)) == 1
    assert box.failed("again", now=580.0) == []


def test_a_new_cause_within_an_outage_is_said_once_whatever_its_numbers():
    """The network comes back but CloudWatch refuses the buffered batch (a 500): that is said,
    once, instead of hiding behind the first "cannot reach"."""
    box = Outbox(Buffer(limit=1000))
    box.queue(points(3))
    assert len(box.failed("sending 7 metric points failed: cannot reach", now=1.0)) == 1
    assert box.failed("sending 14 metric points failed: cannot reach", now=2.0) == []
    [new_cause] = box.failed("sending 21 metric points failed: 500", now=3.0)
    assert new_cause.endswith("now: sending 21 metric points failed: 500")
    assert box.failed("sending 28 metric points failed: 500", now=4.0) == []


def test_a_send_that_works_says_nothing():
    box = Outbox(Buffer(limit=100))
    for _ in range(5):
        assert box.queue(points(10)) == []
        for batch in box.batches():
            assert box.delivered(len(batch), now=1.0) == []
    assert box.buffer.dropped == 0 and not box.buffer.points


def test_the_unit_holds_no_secret_runs_low_and_is_marked():
    text = render_unit(
        TEMPLATE,
        tgiops_version="9.9",
        interval_s=30,
        group="tgiops-llm",
        region="eu-west-1",
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000/%x"},
    )
    assert text.startswith("# Managed by tgiops 9.9")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_line == (
        "ExecStart=/opt/tgiops/bin/tgiops monitor run --interval 30 --group tgiops-llm "
        "--region eu-west-1"
    )
    assert 'Environment="AWS_ENDPOINT_URL=http://127.0.0.1:5000/%%x"' in text
    for setting in ("Nice=19", "CPUQuota=", "IOSchedulingClass=idle", "MemoryMax="):
        assert setting in text
    assert "token" not in text.lower().replace("no token", "")


def test_bad_interval_and_group_are_refused():
    with pytest.raises(InputError, match="--interval 0"):
        render_unit(TEMPLATE, tgiops_version="1", interval_s=0)
    with pytest.raises(InputError, match="--group"):
        render_unit(TEMPLATE, tgiops_version="1", group="bad\nname")


def test_the_monitor_env_refuses_secrets():
    from tgiops.commands.monitor import check_env

    with pytest.raises(InputError, match="no secret"):
        check_env({"AWS_SECRET_ACCESS_KEY": "x"})
    with pytest.raises(InputError, match="one line"):
        check_env({"HTTPS_PROXY": 'a"b'})
    assert check_env({"HTTPS_PROXY": "http://proxy:3128"}) == {"HTTPS_PROXY": "http://proxy:3128"}


def test_latest_values_take_each_metrics_newest_point_per_host_and_unit():
    dims = dimensions(group="g", unit="tgiops-phi", instance_id="i-1")
    metrics = [
        {"MetricName": "Healthy", "Dimensions": dims},
        {"MetricName": "GPUUtilization", "Dimensions": [*dims, {"Name": "GPU", "Value": "0"}]},
        {"MetricName": "RequestsWaiting", "Dimensions": dims},
    ]
    queries = latest_queries(metrics)
    assert [q["Id"] for q in queries] == ["m0", "m1", "m2"]
    assert queries[1]["MetricStat"]["Metric"]["Dimensions"][-1] == {"Name": "GPU", "Value": "0"}
    [host] = latest_values(metrics, {"m0": ([10.0, 70.0], [0.0, 1.0]), "m1": ([70.0], [87.0])})
    assert (host.instance_id, host.unit, host.group) == ("i-1", "tgiops-phi", "g")
    assert host.values == {"Healthy": (1.0, 70.0)}  # no points: RequestsWaiting left out
    assert host.gpus == {"0": {"GPUUtilization": (87.0, 70.0)}}
    assert host.latest == 70.0


def test_the_policy_scopes_put_metric_data_to_the_namespace():
    from tgiops.commands.bootstrap import iam_policy

    without = iam_policy([], None)
    assert "cloudwatch" not in json.dumps(without)
    [statement] = [s for s in iam_policy([], None, monitor=True)["Statement"]]
    assert statement["Action"] == "cloudwatch:PutMetricData"
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "tgiops"}}


def test_userdata_with_monitor_installs_the_unit_and_its_permission():
    from test_bad_input_properties import run

    args = ["userdata", "phi-3-mini", "--no-token", "--preinstalled", "--asg", "llm-group"]
    code, out, err = run([*args, "--monitor", "--region", "eu-west-1", "--json"])
    assert code == 0, err
    printed = json.loads(out)
    text = printed["user_data"]
    assert "cat > /etc/systemd/system/tgiops-monitor.service <<'TGIOPS_UNIT'" in text
    assert "tgiops monitor run --interval 60 --group llm-group --region eu-west-1" in text
    assert "systemctl enable tgiops-bootstrap.service tgiops-watch-interruption.service " \
        "tgiops-monitor.service" in text  # fmt: skip
    sids = [s["Sid"] for s in printed["iam_policy"]["Statement"]]
    assert "SendTgiopsMetrics" in sids
    code, out, _ = run([*args, "--json"])
    assert code == 0 and "tgiops-monitor" not in out and "cloudwatch" not in out
    code, out, _ = run([*args, "--monitor", "--iam-policy"])
    assert code == 0 and '"cloudwatch:namespace": "tgiops"' in out


def test_up_with_monitor_puts_the_unit_in_the_user_data_and_the_policy():
    from tgiops.commands import up
    from tgiops.core.engines.tgi import DEFAULT_TGI_VERSION, TgiEngine
    from tgiops.core.request import DeployRequest
    from tgiops.edges import resources

    request = DeployRequest(
        model=resources.load_catalog(environ={})["phi-3-mini"],
        engine=TgiEngine.release(DEFAULT_TGI_VERSION),
        token_secret=None,
    )
    for monitor in (False, True):
        options = up.UpOptions(
            stack="llm", request=request, install={"preinstalled": True, "monitor": monitor}
        )
        text = up.render_user_data(options, "tgiops-llm", "us-east-1", None)
        policy = json.dumps(up.instance_policy(options, "tgiops-llm", "us-east-1", "1", None))
        assert ("monitor run --interval 60 --group tgiops-llm" in text) is monitor
        assert ('"cloudwatch:namespace": "tgiops"' in policy) is monitor
