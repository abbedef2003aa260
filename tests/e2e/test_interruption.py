"""`tgiops watch-interruption` against the IMDSv2 stand-in (instance_support.ImdsStandIn).

The first tests need only loopback: the metadata client and the watcher's decisions (this
machine behind LocalHost; nothing is stopped there). The last one runs the watcher on a
testbed host that serves a deployed model: a scheduled spot interruption stops the unit
gracefully, keeps systemd from restarting it, and records why on the data volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from instance_support import ImdsStandIn, ReverseTunnels, install_tgiops, wait_until

from tgiops.commands.interruption import WatchOptions, grace_seconds, watch_interruption
from tgiops.core.errors import AWSError
from tgiops.edges.imds import Imds
from tgiops.edges.localhost import LocalHost

ROOT = Path(__file__).resolve().parents[2]
UNIT = "tgiops-phi-3-mini"
ACTION = "/latest/meta-data/spot/instance-action"
IMDS_ON_HOST = 17002


def in_two_minutes() -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the stand-in and the client, on loopback ---------------------------------------------


def test_the_stand_in_answers_like_imdsv2():
    import urllib.error
    import urllib.request

    with ImdsStandIn("i-0123456789abcdef0") as imds:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        no_ttl = urllib.request.Request(f"{imds.endpoint}/latest/api/token", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(no_ttl, timeout=5)
        assert refused.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as unauthorized:
            opener.open(f"{imds.endpoint}/latest/meta-data/instance-id", timeout=5)
        assert unauthorized.value.code == 401


def test_client_uses_tokens_and_reads_404_as_nothing_scheduled():
    with ImdsStandIn("i-0123456789abcdef0", "eu-west-1") as standin:
        imds = Imds(standin.endpoint)
        assert imds.instance_id() == "i-0123456789abcdef0"
        assert imds.region() == "eu-west-1"
        assert imds.instance_action() is None
        assert imds.rebalance_recommendation() is None
        assert imds.tags() == {}  # tags in metadata not enabled: 404
        standin.instance_action = {"action": "stop", "time": "2025-01-01T00:02:00Z"}
        assert imds.instance_action() == {"action": "stop", "time": "2025-01-01T00:02:00Z"}
        assert standin.count("PUT", "/latest/api/token") == 1  # one token, reused
        standin.revoke_tokens()  # expired: 401, then one retry with a fresh token
        assert imds.instance_action() == {"action": "stop", "time": "2025-01-01T00:02:00Z"}
        assert standin.count("PUT", "/latest/api/token") == 2
        standin.tags = {"tgiops:unit": "tgiops-x", "Name": "llm"}
        assert imds.tags() == {"tgiops:unit": "tgiops-x", "Name": "llm"}


def test_client_says_where_it_looked_when_nothing_answers():
    with ImdsStandIn("i-1") as standin:
        endpoint = standin.endpoint
    with pytest.raises(AWSError, match=r"127\.0\.0\.1.*does not answer.*HttpEndpoint"):
        Imds(endpoint, timeout_s=1).instance_id()


def test_grace_is_tgi_s_own_unless_ec2_acts_sooner():
    now = datetime(2025, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
    assert grace_seconds("2025-01-01T00:02:00Z", now) == 90
    assert grace_seconds("2025-01-01T00:01:00Z", now) == 45
    assert grace_seconds("2025-01-01T00:00:10Z", now) == 5
    assert grace_seconds(None, now) == 90
    assert grace_seconds("not a time", now) == 90


def test_rebalance_is_logged_and_serving_goes_on(tmp_path):
    with ImdsStandIn("i-1") as standin:
        standin.rebalance = {"noticeTime": "2025-01-01T00:00:00Z"}
        options = WatchOptions(data_dir=str(tmp_path), interval_s=0.01, max_polls=3)
        result = watch_interruption(LocalHost(), Imds(standin.endpoint), options)
    assert result.notice == "rebalance" and result.stopped == ()
    assert result.polls == 3
    # Polling went on for the interruption notice itself after the recommendation.
    assert standin.count("GET", ACTION, 404) == 3


def test_a_metadata_outage_does_not_end_the_watch(tmp_path):
    with ImdsStandIn("i-1") as standin:
        endpoint = standin.endpoint
    options = WatchOptions(data_dir=str(tmp_path), interval_s=0.01, max_polls=3)
    result = watch_interruption(LocalHost(), Imds(endpoint, timeout_s=0.5), options)
    assert result.notice is None and result.polls == 3
    assert len(result.errors) == 3 and "does not answer" in result.errors[0]


def test_bad_watch_options_are_input_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "tgiops.cli", "watch-interruption", "--interval", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9"),
    )
    assert proc.returncode == 2 and "--interval 0" in proc.stderr


# -- on a testbed host ------------------------------------------------------------------------


@pytest.mark.e2e
def test_instance_action_stops_the_unit_gracefully_and_records_why(gpu_host, tmp_path):
    host = gpu_host("1xA10G", fresh=True)
    env = dict(os.environ, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    deployed = subprocess.run(
        [sys.executable, "-m", "tgiops.cli", "deploy", "phi-3-mini", "--no-token",
         "--host", host.name, "--ssh-config", host.ssh_config, "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    restarts = show(host)["NRestarts"]
    install_tgiops(host)
    with (
        ImdsStandIn("i-0a1b2c3d4e5f60718") as standin,
        ReverseTunnels(host, {IMDS_ON_HOST: standin.port}),
    ):
        watcher = subprocess.Popen(
            host.ssh_argv(
                "/opt/tgiops/bin/tgiops watch-interruption --interval 0.5 --json "
                f"--imds-endpoint http://127.0.0.1:{IMDS_ON_HOST}"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Polling: 404 = nothing scheduled; the unit keeps serving.
            wait_until(lambda: standin.count("GET", ACTION, 404) >= 2, 60, "the watcher to poll")
            assert show(host)["ActiveState"] == "active"
            when = in_two_minutes()
            standin.instance_action = {"action": "terminate", "time": when}
            out, err = watcher.communicate(timeout=240)
        finally:
            if watcher.poll() is None:
                watcher.kill()
    assert watcher.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["notice"] == "instance-action" and result["action"] == "terminate"
    [stopped] = result["stopped"]
    assert stopped["unit"] == UNIT and stopped["state_after"] == "inactive"
    assert 5 <= stopped["grace_s"] <= 90 and stopped["recorded"] is True
    state = show(host)
    # Stopped by a stop job: "dead", not "auto-restart" (Restart=always does not bring it back).
    assert (state["ActiveState"], state["SubState"]) == ("inactive", "dead")
    assert state["NRestarts"] == restarts
    assert host.run(f"docker ps -q --filter name={UNIT}").stdout.strip() == ""
    journal = host.run(f"journalctl -u {UNIT} --no-pager -o cat").stdout
    assert "Shutting down shards" in journal  # TGI drained on SIGTERM, it was not killed
    record = json.loads(host.run(f"cat /var/lib/tgiops/data/tgiops/deployments/{UNIT}.json").stdout)
    assert record["last_stop"]["action"] == "terminate"
    assert record["last_stop"]["action_time"] == when
    assert record["last_stop"]["instance_id"] == "i-0a1b2c3d4e5f60718"
    assert "spot interruption notice" in record["last_stop"]["reason"]


def show(host) -> dict[str, str]:
    out = host.run(f"systemctl show -p ActiveState -p SubState -p NRestarts {UNIT}.service").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
