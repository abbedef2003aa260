"""End-to-end checks of the testbed itself: scripts/testbed and the fixtures of tests/conftest.py.

Each test talks to real parts: systemd as PID 1 under systemd-nspawn, sshd with strict host-key
checking, a real dockerd, moto over HTTP. The doubles under test are the fake nvidia-smi, the
docker --gpus shim and the TGI emulator image.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from instance_support import wait_until
from testbedlib import kernel
from testbedlib.processes import find_marked_pids, pid_alive

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed"
IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
TINY_MODEL = "tgiops-test/tiny-llama"  # the emulator's own small test model
A10G = {"name": "NVIDIA A10G", "memory_mib": 23028, "compute_capability": "8.6"}
UP_KEYS = {"name", "address", "user", "ssh_config", "known_hosts", "identity", "aws_endpoint_url"}

UNIT = f"""\
[Unit]
Description=TGI emulator (testbed e2e)
Requires=docker.service
After=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f tgi-e2e
ExecStart=/usr/bin/docker run --rm --name tgi-e2e --gpus all --shm-size 1g \\
  -p 127.0.0.1:8080:80 -v /var/lib/tgiops/data:/data {IMAGE} \\
  --model-id {TINY_MODEL} --num-shard 1
ExecStop=/usr/bin/docker stop tgi-e2e
Restart=always
RestartSec=1
SuccessExitStatus=137 143

[Install]
WantedBy=multi-user.target
"""


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(TESTBED), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"testbed {' '.join(args)} exited {result.returncode}: {result.stderr[-3000:]}"
        )
    return result


def host_status(name: str) -> dict:
    data = json.loads(run_cli("status", "--json").stdout)
    return next(h for h in data["hosts"] if h["name"] == name)


def test_host_boots_systemd_and_takes_strict_ssh(gpu_host, tmp_path: Path) -> None:
    host = gpu_host("4xA10G")

    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert state == "running", f"systemd is {state}; failed units: {failed}"
    assert host.run("hostname").stdout.strip() == host.name

    # Strict checking is real: without the host's key in known_hosts, ssh refuses.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = subprocess.run(
        [
            "ssh",
            "-F",
            host.ssh_config,
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={empty}",
            host.name,
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


def test_nvidia_smi_reports_the_inventory(gpu_host) -> None:
    host = gpu_host("4xA10G")
    fields = "index,name,memory.total,memory.used,utilization.gpu,compute_cap,driver_version"
    out = host.run(f"nvidia-smi --query-gpu={fields} --format=csv").stdout

    rows = list(csv.reader(io.StringIO(out), skipinitialspace=True))
    assert rows[0] == [
        "index",
        "name",
        "memory.total [MiB]",
        "memory.used [MiB]",
        "utilization.gpu [%]",
        "compute_cap",
        "driver_version",
    ]
    gpus = rows[1:]
    assert [row[0] for row in gpus] == ["0", "1", "2", "3"]
    assert {row[1] for row in gpus} == {"NVIDIA A10G"}
    assert {row[2] for row in gpus} == {"23028 MiB"}
    assert {row[5] for row in gpus} == {"8.6"}

    bare = host.run("nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader,nounits")
    assert bare.stdout.splitlines() == ["NVIDIA A10G, 8.6"] * 4
    table = host.run("nvidia-smi").stdout
    assert table.count("NVIDIA A10G") == 4
    assert "0MiB / 23028MiB" in table


def test_shim_drops_gpus_and_passes_the_inventory(gpu_host) -> None:
    host = gpu_host("4xA10G")

    def visible_gpus(gpu_flag: str) -> list[dict]:
        show = shlex.quote('printf %s "$TGI_EMULATOR_GPUS"')
        command = f"docker run --rm {gpu_flag} --entrypoint /bin/sh {IMAGE} -c {show}"
        return json.loads(host.run(command).stdout)

    assert visible_gpus("--gpus all") == [A10G] * 4
    assert visible_gpus("--gpus=2") == [A10G] * 2
    assert visible_gpus(shlex.quote('--gpus="device=1,3"')) == [A10G] * 2
    assert visible_gpus("") == []

    # The real client, without the shim, hits the GPU-less dockerd's refusal.
    real = host.run(f"/usr/libexec/testbed/docker run --rm --gpus all {IMAGE}", check=False)
    assert real.returncode != 0
    assert "could not select device driver" in real.stderr
    runtimes = host.run("docker info --format '{{json .Runtimes}}'").stdout
    assert "nvidia" in json.loads(runtimes)


def test_emulator_unit_serves_health_and_restarts_after_docker_kill(gpu_host) -> None:
    host = gpu_host("4xA10G")
    host.run(
        f"cat > /etc/systemd/system/tgi-e2e.service <<'EOF'\n{UNIT}EOF\n"
        "systemctl daemon-reload && systemctl enable --now tgi-e2e.service"
    )
    try:

        def healthy() -> bool:
            probe = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health"
            return host.run(probe, check=False).stdout.strip() == "200"

        def restarts() -> int:
            shown = host.run("systemctl show tgi-e2e.service -p NRestarts --value").stdout
            return int(shown.strip())

        wait_until(healthy, 180, "/health answering 200 inside the host")
        assert host.run("systemctl is-active tgi-e2e.service").stdout.strip() == "active"
        info = json.loads(host.run("curl -sf http://127.0.0.1:8080/info").stdout)
        assert info["model_id"] == TINY_MODEL
        # The emulator saw the 4 GPUs through the shim.
        env = host.run("docker exec tgi-e2e sh -c 'printf %s \"$TGI_EMULATOR_GPUS\"'").stdout
        assert json.loads(env) == [A10G] * 4

        before = restarts()
        host.run("docker kill tgi-e2e")
        wait_until(lambda: restarts() > before, 120, "systemd restarting the unit")
        wait_until(healthy, 180, "/health answering 200 again after the restart")
    finally:
        host.run(
            "systemctl disable --now tgi-e2e.service; rm -f /etc/systemd/system/"
            "tgi-e2e.service; systemctl daemon-reload",
            check=False,
        )


def test_alias_reaches_the_host(gpu_host) -> None:
    host = gpu_host("4xA10G")
    host.alias("i-0abc123def4567890")
    reached = host.run("hostname", target="i-0abc123def4567890").stdout.strip()
    assert reached == host.name


def test_up_twice_prints_the_same_object(testbed) -> None:
    name = "e2e-twice"
    try:
        first = run_cli("up", "--name", name, "--gpus", "1xT4")
        pids = host_status(name)
        second = run_cli("up", "--name", name, "--gpus", "1xT4")

        assert json.loads(first.stdout) == json.loads(second.stdout)
        assert set(json.loads(first.stdout)) == UP_KEYS
        assert len(first.stdout.strip().splitlines()) == 1
        after = host_status(name)
        assert (after["nspawn_pid"], after["dockerd_pid"]) == (
            pids["nspawn_pid"],
            pids["dockerd_pid"],
        )

        conflicting = run_cli("up", "--name", name, "--gpus", "2xT4", check=False)
        assert conflicting.returncode == 2
        assert "already running" in conflicting.stderr
    finally:
        testbed.down(name)


def test_down_removes_every_trace(testbed) -> None:
    name = "e2e-down"
    host = testbed.up("1xL4", name=name)
    paths = testbed.paths
    status = host_status(name)
    pids = [
        status["nspawn_pid"],
        status["dockerd_pid"],
        *kernel.netns_pids(kernel.netns_name(name)),
    ]
    host_dir = paths.host_dir(name)
    # Sanity: the things that must go are there now.
    assert all(pid_alive(pid) for pid in pids)
    assert kernel.mounts_under(host_dir)
    assert kernel.netns_name(name) in kernel.list_netns()
    assert name in paths.ssh_config.read_text()

    run_cli("down", "--name", name)
    testbed.started.discard(name)

    assert not any(pid_alive(pid) for pid in pids)
    assert find_marked_pids(paths.state_dir, name) == []
    assert kernel.netns_name(name) not in kernel.list_netns()
    assert kernel.mounts_under(host_dir) == []
    assert not host_dir.exists()
    assert (
        kernel.find_cgroups({kernel.nspawn_cgroup_name(name), kernel.docker_cgroup_name(name)})
        == []
    )
    assert f"Host {name}" not in paths.ssh_config.read_text()
    assert host.address not in paths.known_hosts.read_text()


def test_down_all_ends_everything_of_its_testbed(testbed, gpu_host) -> None:
    # A testbed of its own (another state directory), so the session's hosts stay up and
    # can show that `down --all` touches nothing but its own.
    state = Path(tempfile.mkdtemp(prefix="tgtb-", dir="/tmp")) / "state"
    env = dict(os.environ, TGIOPS_TESTBED_STATE=str(state))
    name = "e2e-all"
    bystander = gpu_host("4xA10G")  # a host of the session's own testbed
    try:
        up = json.loads(run_cli("up", "--name", name, "--gpus", "1xT4", env=env).stdout)
        status = json.loads(run_cli("status", "--json", env=env).stdout)["hosts"][0]
        moto_pid = json.loads((state / "moto.json").read_text())["pid"]
        pids = [status["nspawn_pid"], status["dockerd_pid"], moto_pid]
        pids += kernel.netns_pids(kernel.netns_name(name))
        assert all(pid_alive(pid) for pid in pids)
        assert up["aws_endpoint_url"] != testbed.testbed.aws_endpoint_url()

        run_cli("down", "--all", env=env)

        assert not state.exists()
        assert not any(pid_alive(pid) for pid in pids)
        assert find_marked_pids(state) == []
        assert kernel.netns_name(name) not in kernel.list_netns()
        assert kernel.mounts_under(state.parent) == []
        assert (
            kernel.find_cgroups({kernel.nspawn_cgroup_name(name), kernel.docker_cgroup_name(name)})
            == []
        )
        assert bystander.run("systemctl is-system-running").stdout.strip() == "running"
    finally:
        run_cli("down", "--all", env=env, check=False)
        shutil.rmtree(state.parent, ignore_errors=True)


def test_up_clears_the_state_of_a_crashed_run(testbed) -> None:
    name = "e2e-crash"
    try:
        testbed.up("1xT4", name=name)
        crashed = host_status(name)
        for pid in (crashed["nspawn_pid"], crashed["dockerd_pid"]):
            os.kill(pid, 9)  # as if the machine's testbed run died mid-way
        # SIGKILL is asynchronous: a crash is over before anyone reruns `up`, so wait for it
        # (CI once saw `up` find the dying nspawn still in /proc and keep it).
        for pid in (crashed["nspawn_pid"], crashed["dockerd_pid"]):
            wait_until(lambda pid=pid: not pid_alive(pid), 10, f"pid {pid} to end")
        host = testbed.up("1xT4", name=name)

        assert host.run("systemctl is-system-running").stdout.strip() == "running"
        assert host_status(name)["nspawn_pid"] != crashed["nspawn_pid"]
        assert IMAGE.split(":")[0] in host.run("docker images").stdout
    finally:
        testbed.down(name)


def test_data_dir_survives_relaunch_on_another_host(gpu_host, testbed, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = gpu_host("1xA10G", name="e2e-spot-a", data_dir=data)
    write = shlex.quote("echo cached > /data/marker")
    first.run(
        f"docker run --rm -v /var/lib/tgiops/data:/data --entrypoint /bin/sh {IMAGE} -c {write}"
    )
    assert (data / "marker").read_text() == "cached\n"
    testbed.down(first.name)

    second = gpu_host("1xA10G", name="e2e-spot-b", data_dir=data)
    assert second.run("cat /var/lib/tgiops/data/marker").stdout == "cached\n"
    assert data.is_dir()  # a given --data-dir outlives its hosts


def test_aws_fixture_points_boto3_at_moto(aws) -> None:
    import boto3

    secrets = boto3.client("secretsmanager")  # endpoint, keys and region from the environment
    secrets.create_secret(Name="tgiops/e2e", SecretString="not-a-token")
    assert secrets.get_secret_value(SecretId="tgiops/e2e")["SecretString"] == "not-a-token"
    assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url

    aws.reset()
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId="tgiops/e2e")
