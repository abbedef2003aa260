"""`tgiops monitor` end to end on one testbed host (shared by the cases of this module).

The host serves phi-3-mini (the TGI emulator) and has tgiops under /opt/tgiops, as `tgiops
userdata` installs it. It reaches the IMDSv2 stand-in (instance id and region, and the role
credentials boto3 takes from it) and moto through `ssh -R` tunnels at fixed ports of its own
loopback; the moto tunnel is the link that gets cut. The cases, in order:

1. `enable` installs tgiops-monitor; the metrics appear in moto's CloudWatch with tgiops'
   names and dimensions, and values equal to what the fake nvidia-smi and the emulator's
   /metrics say; `show` reads them back; a second `enable` changes nothing.
2. With the link to CloudWatch cut the engine keeps serving (healthy, not restarted), the
   outage is logged once, and after the link is back the buffered points and new ones arrive.
3. `disable` leaves nothing behind; a tgiops-monitor unit tgiops did not write is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from instance_support import ImdsStandIn, ReverseTunnels, install_tgiops, wait_until

from tgiops.core.metrics import parse_metrics
from tgiops.core.monitor import engine_figures

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT = "tgiops-phi-3-mini"
MONITOR = "tgiops-monitor"
INSTANCE_ID = "i-0feedfacecafe0017"
MOTO_ON_HOST = 17001
IMDS_ON_HOST = 17002
INTERVAL_S = 2
# Set in the fake nvidia-smi's inventory (after the deploy): values nothing else produces.
UTILIZATION = 37
MEMORY_USED_MIB = 12345


@dataclass
class Monitored:
    host: object
    moto_port: int
    imds: ImdsStandIn
    home: Path
    moto_link: ReverseTunnels | None = None

    def connect(self) -> None:
        self.moto_link = ReverseTunnels(self.host, {MOTO_ON_HOST: self.moto_port}).__enter__()

    def cut(self) -> None:
        assert self.moto_link is not None
        self.moto_link.__exit__(None, None, None)
        self.moto_link = None


def tgiops(env: dict[str, str], *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout_s,
    )  # fmt: skip


@pytest.fixture(scope="module")
def monitored(testbed, tmp_path_factory) -> Iterator[Monitored]:
    home = tmp_path_factory.mktemp("monitor")
    host = testbed.up("1xA10G", name=f"e2e-mon-{os.getpid() % 10000}")
    try:
        env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
        deployed = tgiops(env, "deploy", "phi-3-mini", "--no-token", "--host", host.name,
                          "--ssh-config", host.ssh_config, "--json")  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        install_tgiops(host)
        host.run(  # the fake nvidia-smi reads its inventory at every call
            "python3 - <<'EOF'\n"
            "import json\n"
            "p = '/etc/testbed/gpus.json'\n"
            "d = json.load(open(p))\n"
            f"for g in d['gpus']: g.update(utilization_pct={UTILIZATION}, "
            f"memory_used_mib={MEMORY_USED_MIB})\n"
            "json.dump(d, open(p, 'w'))\n"
            "EOF"
        )
        moto_port = int(testbed.aws_endpoint_url().rsplit(":", 1)[1])
        with (
            ImdsStandIn(INSTANCE_ID) as imds,
            ReverseTunnels(host, {IMDS_ON_HOST: imds.port}),
        ):
            state = Monitored(host, moto_port, imds, home)
            state.connect()
            try:
                yield state
            finally:
                if state.moto_link is not None:
                    state.cut()
    finally:
        testbed.down(host.name)


def cli_env(monitored: Monitored) -> dict[str, str]:
    # The aws fixture has pointed this process' environment at moto (for `show`).
    home = monitored.home
    return {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}


def enable(monitored: Monitored) -> subprocess.CompletedProcess:
    host = monitored.host
    return tgiops(
        cli_env(monitored), "monitor", "enable", "--host", host.name,
        "--ssh-config", host.ssh_config, "--interval", str(INTERVAL_S),
        "--env", f"AWS_ENDPOINT_URL=http://127.0.0.1:{MOTO_ON_HOST}",
        "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{IMDS_ON_HOST}",
        "--json",
    )  # fmt: skip


def metrics_in(aws) -> dict[tuple[str, tuple], dict]:
    listed = aws.client("cloudwatch").list_metrics(Namespace="tgiops")["Metrics"]
    return {
        (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))): m
        for m in listed
    }


def points(aws, name: str, dims: dict[str, str], since: float) -> list[tuple[float, float]]:
    """(epoch, value) of every point of one metric since ``since``, oldest first."""
    from datetime import datetime, timezone

    answer = aws.client("cloudwatch").get_metric_data(
        MetricDataQueries=[{
            "Id": "q",
            "MetricStat": {
                "Metric": {"Namespace": "tgiops", "MetricName": name,
                           "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]},
                "Period": 1, "Stat": "Average",
            },
        }],
        StartTime=datetime.fromtimestamp(since - 1, timezone.utc),
        EndTime=datetime.fromtimestamp(time.time() + 60, timezone.utc),
    )["MetricDataResults"][0]  # fmt: skip
    return sorted(zip((t.timestamp() for t in answer["Timestamps"]), answer["Values"], strict=True))


def journal(host, unit: str = MONITOR) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -o cat", check=False).stdout


def unit_show(host, unit: str = UNIT) -> dict[str, str]:
    out = host.run(f"systemctl show -p ActiveState -p NRestarts -p LoadState {unit}.service").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


UNIT_DIMS = {"Unit": UNIT, "InstanceId": INSTANCE_ID}


def test_enable_sends_what_the_gpus_and_the_engine_say(monitored, aws):
    host = monitored.host
    started = time.time()
    first = enable(monitored)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    assert result["action"] in ("enabled", "unchanged") and result["unit"] == MONITOR
    unit_file = host.run(f"cat /etc/systemd/system/{MONITOR}.service").stdout
    assert unit_file.startswith("# Managed by tgiops")
    for setting in ("Nice=19", "CPUQuota=10%", "IOSchedulingClass=idle"):
        assert setting in unit_file

    gpu_dims = (("GPU", "0"), ("InstanceId", INSTANCE_ID), ("Unit", UNIT))
    unit_dims = (("InstanceId", INSTANCE_ID), ("Unit", UNIT))
    wanted = {
        ("GPUUtilization", gpu_dims),
        ("GPUMemoryUsed", gpu_dims),
        ("Healthy", unit_dims),
        ("RequestsRunning", unit_dims),
        ("RequestsWaiting", unit_dims),
        ("KVCacheUsage", unit_dims),
    }
    try:
        found = wait_until(
            lambda: wanted <= set(metrics_in(aws)) and metrics_in(aws), 120, "the metrics in moto"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; in moto: {sorted(metrics_in(aws))}; the monitor's "
                             f"journal:\n{journal(host)[-4000:]}") from None  # fmt: skip
    # Only tgiops' low-cardinality dimensions; no metric of the monitor unit itself.
    assert all(dict(dims).get("Unit") == UNIT for _, dims in found), sorted(found)

    # The values are the fake nvidia-smi's and the emulator's.
    smi = host.run(
        "nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits"
    ).stdout
    memory_used, utilization = (float(x) for x in smi.strip().split(","))
    engine = engine_figures(parse_metrics(host.run("curl -s http://127.0.0.1:8080/metrics").stdout))
    gpu0 = {**UNIT_DIMS, "GPU": "0"}
    latest = {
        name: points(aws, name, dims, started)[-1][1]
        for name, dims in (
            ("GPUUtilization", gpu0),
            ("GPUMemoryUsed", gpu0),
            ("Healthy", UNIT_DIMS),
            ("RequestsRunning", UNIT_DIMS),
            ("RequestsWaiting", UNIT_DIMS),
            ("KVCacheUsage", UNIT_DIMS),
        )
    }
    assert latest["GPUUtilization"] == utilization == UTILIZATION
    assert latest["GPUMemoryUsed"] == memory_used == MEMORY_USED_MIB
    assert latest["Healthy"] == 1.0
    assert latest["RequestsRunning"] == engine["running"]
    assert latest["RequestsWaiting"] == engine["waiting"]
    assert latest["KVCacheUsage"] == pytest.approx(engine["kv_cache_pct"])

    # Tokens generated between two samples become a rate.
    generated = host.run(
        "curl -s -X POST http://127.0.0.1:8080/generate -H 'Content-Type: application/json' "
        '-d \'{"inputs": "hello", "parameters": {"max_new_tokens": 20}}\''
    )
    assert generated.returncode == 0
    rates = wait_until(
        lambda: [v for _, v in points(aws, "GeneratedTokensPerSecond", UNIT_DIMS, started) if v],
        60,
        "a generated-tokens rate",
    )
    assert all(v > 0 for v in rates)

    # `show` reads them back; a second `enable` changes nothing.
    shown = tgiops(cli_env(monitored), "monitor", "show", "--instance", INSTANCE_ID, "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)["hosts"]
    assert row["instance_id"] == INSTANCE_ID and row["unit"] == UNIT
    assert row["metrics"]["Healthy"]["value"] == 1.0
    assert row["gpus"]["0"]["GPUUtilization"]["value"] == UTILIZATION
    text = tgiops(cli_env(monitored), "monitor", "show", "--instance", INSTANCE_ID)
    assert text.returncode == 0 and f"GPU 0: GPUMemoryUsed {memory_used:g} MiB" in text.stdout
    absent = tgiops(cli_env(monitored), "monitor", "show", "--instance", "i-0000000000000000f")
    assert absent.returncode == 1 and "no tgiops metrics" in absent.stderr
    pid = host.run(f"systemctl show -p MainPID --value {MONITOR}").stdout.strip()
    again = enable(monitored)
    assert again.returncode == 0 and json.loads(again.stdout)["action"] == "unchanged"
    assert host.run(f"systemctl show -p MainPID --value {MONITOR}").stdout.strip() == pid
    # Credentials came from the role (IMDSv2), never from the unit.
    assert (
        monitored.imds.count(
            "GET", f"/latest/meta-data/iam/security-credentials/{monitored.imds.role}", 200
        )
        >= 1
    )
    assert "testing-instance-role-secret" not in unit_file + journal(host)


def test_cloudwatch_unreachable_leaves_the_engine_alone_and_recovers(monitored, aws):
    host = monitored.host
    assert enable(monitored).returncode == 0
    wait_until(lambda: points(aws, "Healthy", UNIT_DIMS, time.time() - 30), 60, "points")
    restarts = unit_show(host)["NRestarts"]
    cut_at = time.time()
    monitored.cut()
    try:
        # Ten intervals without CloudWatch: the engine serves on, the outage is said once.
        wait_until(lambda: "PutMetricData failed" in journal(host), 60, "the outage logged")
        time.sleep(10 * INTERVAL_S)
        health = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health")
        assert health.stdout == "200"
        state = unit_show(host)
        assert state["ActiveState"] == "active" and state["NRestarts"] == restarts
        assert host.run(f"systemctl is-active {MONITOR}").stdout.strip() == "active"
        assert journal(host).count("PutMetricData failed") == 1, journal(host)[-3000:]
    finally:
        monitored.connect()
    back_at = time.time()
    try:
        wait_until(lambda: "CloudWatch answers again" in journal(host), 90, "the recovery logged")
    except AssertionError as exc:  # say why: the monitor logs each cause of the outage once
        raise AssertionError(f"{exc}; the monitor's journal:\n{journal(host)[-4000:]}") from None
    sent = wait_until(
        lambda: [t for t, _ in points(aws, "Healthy", UNIT_DIMS, cut_at) if t > back_at],
        60,
        "points after the link came back",
    )
    assert sent
    # What was read while CloudWatch was away arrived too (buffered), not only new points.
    during = [t for t, _ in points(aws, "Healthy", UNIT_DIMS, cut_at) if cut_at + 1 < t < back_at]
    assert len(during) >= 5, during


def test_disable_leaves_nothing_and_foreign_units_are_refused(monitored, aws):
    host = monitored.host
    assert enable(monitored).returncode == 0
    env = cli_env(monitored)
    target = ("--host", host.name, "--ssh-config", host.ssh_config)
    off = tgiops(env, "monitor", "disable", *target, "--json")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["action"] == "disabled"
    assert host.run(f"ls /etc/systemd/system/{MONITOR}.service", check=False).returncode != 0
    assert unit_show(host, MONITOR)["LoadState"] == "not-found"
    assert host.run(f"ls /etc/systemd/system/*.wants/{MONITOR}.service", check=False).returncode
    assert "monitor run" not in host.run("ps -eo args").stdout
    assert unit_show(host)["ActiveState"] == "active"  # the engine is not touched
    again = tgiops(env, "monitor", "disable", *target, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["action"] == "absent"

    foreign = "[Service]\nExecStart=/bin/true\n"
    host.run(f"printf '%s' '{foreign}' > /etc/systemd/system/{MONITOR}.service")
    try:
        for verb in ("enable", "disable"):
            refused = enable(monitored) if verb == "enable" else tgiops(
                env, "monitor", "disable", *target, "--json"
            )  # fmt: skip
            assert refused.returncode == 2, (verb, refused.stderr)
            assert "not written by tgiops" in json.loads(refused.stdout)["error"]["message"]
            assert host.run(f"cat /etc/systemd/system/{MONITOR}.service").stdout == foreign
    finally:
        host.run(f"rm -f /etc/systemd/system/{MONITOR}.service")
