"""`tgiops status` end to end: a fleet of testbed hosts in every state, EC2 facts from moto.

Real parts: systemd as PID 1 under systemd-nspawn, sshd with strict host-key checking, dockerd,
moto over HTTP. The only doubles are the testbed's (fake nvidia-smi, the --gpus shim, the TGI
emulator). Units are installed by `tgiops deploy` itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from instance_support import wait_until

from tgiops.core import hardware
from tgiops.core.status_schema import JSON_SCHEMA

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "scripts" / "tgi_emulator" / "hub" / "tgiops-test--tiny-llama" / "config.json"
TINY = "tgiops-test/tiny-llama"
UNIT = "tgiops-tiny"
AMI = "ami-12345678"
ZONE = "us-east-1b"


def tgiops(
    *args: str, env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=REPO,
        check=False,
    )


def deploy_args(target: list[str], ssh_config: str, *extra: str, model_id: str = TINY) -> list[str]:
    return [
        "deploy",
        "--model-config",
        str(TINY_CONFIG),
        "--model-id",
        model_id,
        *target,
        "--ssh-config",
        ssh_config,
        "--no-token",
        "--unit",
        UNIT,
        *extra,
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ssh_config_with_unreachable(testbed_config: str, tmp_path: Path) -> tuple[str, str]:
    """A copy of the testbed's ssh_config plus `Host gone` -> a closed loopback port."""
    config = tmp_path / "ssh_config"
    text = Path(testbed_config).read_text()
    config.write_text(
        text + f"\nHost gone\n    HostName 127.0.0.1\n    Port {closed_port()}\n"
        "    User root\n    StrictHostKeyChecking yes\n"
    )
    return str(config), "gone"


def run_instance(ec2, name: str, *, spot: bool = False, managed: bool = False) -> str:
    tags = [{"Key": "Name", "Value": name}]
    if managed:
        tags.append({"Key": "tgiops:managed", "Value": "true"})
    params: dict = {
        "ImageId": AMI,
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": "g5.xlarge",
        "Placement": {"AvailabilityZone": ZONE},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
    }
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot"}
    return ec2.run_instances(**params)["Instances"][0]["InstanceId"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path / "home")  # no ~/.ssh/config of the machine leaks in
    env["PYTHONPATH"] = str(REPO)
    return env


def restarts(host, unit: str = UNIT) -> int:
    shown = host.run(f"systemctl show {unit}.service -p NRestarts --value").stdout.strip()
    return int(shown or 0)


def test_fleet_status_gives_each_host_its_verdict(gpu_host, aws, cli_env, tmp_path):
    ec2 = aws.client("ec2")
    ok_host = gpu_host("1xA10G", fresh=True)
    loading_host = gpu_host("1xA10G", fresh=True, tgi_load_seconds=3600)
    crash_host = gpu_host("1xA10G", fresh=True)
    empty_host = gpu_host("1xA10G", fresh=True)
    ids = {
        "ok": run_instance(ec2, "ok", spot=True),
        "loading": run_instance(ec2, "loading"),
        "crash": run_instance(ec2, "crash"),
        "empty": run_instance(ec2, "empty"),
    }
    hosts = {"ok": ok_host, "loading": loading_host, "crash": crash_host, "empty": empty_host}
    for role, host in hosts.items():
        host.alias(ids[role])
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=ids["ok"])
    ssh_config, gone = ssh_config_with_unreachable(ok_host.ssh_config, tmp_path)

    deployed = tgiops(*deploy_args(["--instance", ids["ok"]], ssh_config), env=cli_env)
    assert deployed.returncode == 0, deployed.stderr
    # Still loading when deploy stops waiting: --keep-failed leaves the unit running.
    slow = tgiops(
        *deploy_args(["--instance", ids["loading"]], ssh_config, "--keep-failed", "--timeout", "5"),
        env=cli_env,
    )
    assert slow.returncode == 1, slow.stderr
    # A model the (emulated) Hub does not have: TGI exits, systemd restarts it, again and again.
    crash = tgiops(
        *deploy_args(
            ["--instance", ids["crash"]],
            ssh_config,
            "--keep-failed",
            "--timeout",
            "60",
            model_id="tgiops-test/no-such-model",
        ),
        env=cli_env,
    )
    assert crash.returncode == 1, crash.stderr
    wait_until(lambda: restarts(crash_host) >= 2, 120, "the crashing unit restarting twice")

    targets = [
        arg for role in ("ok", "loading", "crash", "empty") for arg in ("--instance", ids[role])
    ]
    result = tgiops(
        "status", *targets, "--host", gone, "--ssh-config", ssh_config, "--json", env=cli_env
    )
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, JSON_SCHEMA)
    by_target = {h["target"]: h for h in data["hosts"]}
    assert set(by_target) == {*ids.values(), gone}

    def only_unit(target: str) -> dict:
        (unit,) = by_target[target]["units"]
        return unit

    ok = only_unit(ids["ok"])
    assert (ok["unit"], ok["verdict"]) == (UNIT, "healthy"), ok["reason"]
    assert ok["tgi"]["health_status"] == 200
    assert ok["tgi"]["info"]["model_id"] == TINY
    assert ok["tgi"]["metrics"]["request_count"] >= 1  # deploy's one-token generation
    assert ok["systemd"]["n_restarts"] == 0 and ok["container"]["running"] is True
    assert ok["plan"]["model_id"] == TINY

    loading = only_unit(ids["loading"])
    assert loading["verdict"] == "loading", loading["reason"]
    assert "port 8080 closed while the unit and its container run" in loading["reason"]
    assert loading["tgi"]["health_status"] is None

    crashed = only_unit(ids["crash"])
    assert crashed["verdict"] == "failed", crashed["reason"]
    assert "crash-looping" in crashed["reason"]
    assert "repository does not exist" in crashed["reason"]  # from the journal, in words

    empty = only_unit(ids["empty"])
    assert (empty["unit"], empty["verdict"]) == (None, "not-deployed")
    assert "no tgiops unit on the host" in empty["reason"]

    unreachable = by_target[gone]
    assert unreachable["reachable"] is False
    assert only_unit(gone)["verdict"] == "unreachable"
    assert "connection refused" in only_unit(gone)["reason"].lower()

    # One batched round trip per reachable host; none for the unreachable one.
    assert {by_target[i]["round_trips"] for i in ids.values()} == {1}
    assert unreachable["round_trips"] == 0
    assert data["counts"] == {
        "healthy": 1,
        "loading": 1,
        "degraded": 0,
        "failed": 1,
        "not-deployed": 1,
        "unreachable": 1,
    }

    # EC2 facts come from moto and the built-in price table.
    spot = by_target[ids["ok"]]["ec2"]
    assert spot["lifecycle"] == "spot" and spot["state"] == "running"
    assert spot["availability_zone"] == ZONE and spot["instance_type"] == "g5.xlarge"
    assert spot["elastic_ip"] is True and spot["public_ip"] == eip["PublicIp"]
    assert spot["spot_usd_per_hour"] is not None
    table_price = hardware.find_instance_type("g5.xlarge").on_demand_usd_per_hour
    assert spot["on_demand_usd_per_hour"] == table_price
    assert spot["price_date"] == hardware.PRICE_DATE
    on_demand = by_target[ids["loading"]]["ec2"]
    assert on_demand["lifecycle"] == "on-demand" and on_demand["spot_usd_per_hour"] is None
    assert on_demand["elastic_ip"] is False
    gpus = by_target[ids["ok"]]["gpus"]
    assert [(g["name"], g["memory_total_mib"]) for g in gpus] == [("NVIDIA A10G", 23028)]

    # The table for people: key columns, one row per unit, the verdicts.
    table = tgiops(
        "status", *targets, "--host", gone, "--ssh-config", ssh_config, "-o", "wide", env=cli_env
    )
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["host", "unit", "verdict", "model"]
    assert "reason" in lines[0]
    rows = {line.split()[0]: line.split()[2] for line in lines[1:6]}
    assert rows == {
        ids["ok"]: "healthy",
        ids["loading"]: "loading",
        ids["crash"]: "failed",
        ids["empty"]: "not-deployed",
        gone: "unreachable",
    }
    assert f"{ids['ok']} (ok) g5.xlarge spot running {ZONE} {eip['PublicIp']} (Elastic IP)" in (
        table.stdout
    )


def test_status_with_no_target_reads_the_deploy_record(gpu_host, aws, cli_env):
    host = gpu_host("1xA10G", fresh=True)
    instance = run_instance(aws.client("ec2"), "recorded")
    host.alias(instance)

    deployed = tgiops(*deploy_args(["--instance", instance], host.ssh_config), env=cli_env)
    assert deployed.returncode == 0, deployed.stderr
    record = Path(cli_env["XDG_STATE_HOME"]) / "tgiops" / "deployments.json"
    assert json.loads(record.read_text())["deployments"][0]["instance_id"] == instance

    result = tgiops("status", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(h["target"], h["units"][0]["verdict"]) for h in data["hosts"]] == [
        (instance, "healthy")
    ]
    assert (data["hosts"][0]["ec2"] or {}).get("instance_id") == instance, result.stderr


def test_status_all_finds_the_instances_deploy_tagged(gpu_host, aws, cli_env):
    host = gpu_host("1xA10G", fresh=True)
    ec2 = aws.client("ec2")
    instance = run_instance(ec2, "deployed")
    untagged = run_instance(ec2, "not-managed")
    host.alias(instance)
    deployed = tgiops(*deploy_args(["--instance", instance], host.ssh_config), env=cli_env)
    assert deployed.returncode == 0, deployed.stderr

    # --all: every instance tagged tgiops:managed=true; deploy tags its EC2 targets.
    everything = tgiops("status", "--all", "--ssh-config", host.ssh_config, "--json", env=cli_env)
    assert everything.returncode == 0, everything.stderr
    targets = [h["target"] for h in json.loads(everything.stdout)["hosts"]]
    assert targets == [instance]
    assert untagged not in targets

    # undeploy forgets the deployment: the record on the data volume and the instance's tags
    # (reconcile and bootstrap would otherwise bring the unit back), tgiops:managed included.
    record_file = f"/var/lib/tgiops/data/tgiops/deployments/{UNIT}.json"
    assert host.run(f"test -f {record_file}", check=False).returncode == 0
    gone = tgiops("undeploy", "--instance", instance, "--ssh-config", host.ssh_config, "--yes",
                  env=cli_env)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    keys = {tag["Key"] for tag in described.get("Tags", [])}
    assert keys == {"Name"}, keys
    assert host.run(f"test -f {record_file}", check=False).returncode == 1


def test_watch_refreshes_until_interrupted(gpu_host, cli_env):
    host = gpu_host("1xA10G", fresh=True)
    deployed = tgiops(*deploy_args(["--host", host.name], host.ssh_config), env=cli_env)
    assert deployed.returncode == 0, deployed.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tgiops.cli",
            "status",
            "--host",
            host.name,
            "--ssh-config",
            host.ssh_config,
            "--json",
            "--watch",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
        cwd=REPO,
    )
    try:
        documents = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read()
    assert all(d["healthy"] for d in documents)
    for document in documents:
        jsonschema.validate(document, JSON_SCHEMA)


def test_restarts_after_a_crash_make_a_serving_unit_degraded(gpu_host, cli_env):
    host = gpu_host("1xA10G", fresh=True)
    deployed = tgiops(*deploy_args(["--host", host.name], host.ssh_config), env=cli_env)
    assert deployed.returncode == 0, deployed.stderr
    host.run(f"docker kill {UNIT}")
    wait_until(lambda: restarts(host) >= 1, 120, "systemd restarting the unit")

    def verdict() -> dict:
        out = tgiops(
            "status", "--host", host.name, "--ssh-config", host.ssh_config, "--json", env=cli_env
        )
        return json.loads(out.stdout)["hosts"][0]["units"][0]

    wait_until(lambda: verdict()["tgi"]["health_status"] == 200, 180, "the unit serving again")
    unit = verdict()
    assert unit["verdict"] == "degraded"
    assert "restarted 1 time(s) since it was started" in unit["reason"]
