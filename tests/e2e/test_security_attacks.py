"""Issue 12 end to end: the attacks the issue reproduced, on testbed hosts.

- A record rewritten on the data volume (or from inside the engine's container) must not
  choose the secret, the data dir or ``public``; the container does not see the records at
  all; a record with a badly typed field fails its own instance only, and the Elastic IP still
  moves to the healthy one (12.1, 12.3).
- A moved image tag is refused on restore (12.8, the testbed's images have no registry digest).
- Any local user must not be able to take the host lock (12.6).
- The testbed itself: a container's bind mounts stay inside the emulated host, symlinks and
  ``/`` included ("the testbed must not be a way out").

Each test fails on the code before the fix (the reconcile pass crashed with a traceback, the
env file got the other secret, the lock was taken, the container read the machine's file).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from instance_support import ssh_input
from private_moto import point_boto3_at, private_moto
from test_spot_relaunch import (
    AMI,
    allocate_eip,
    eip_holder,
    started_at,
    store_token,
    tgiops,
)

from tgiops.commands import deploy

pytestmark = pytest.mark.e2e

MODEL = "phi-3-mini"
UNIT = "tgiops-phi-3-mini"
RECORD = f"/var/lib/tgiops/data/tgiops/deployments/{UNIT}.json"
IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
OTHER_IMAGE = "ghcr.io/huggingface/text-generation-inference:2.4.1"


@dataclass(frozen=True)
class OwnAws:
    """A moto server of this test's own: the shared one is reset by other tests (and by other
    sessions on this machine) while this one boots two hosts."""

    endpoint_url: str
    region: str = "us-east-1"

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region)


@pytest.fixture
def own_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnAws]:
    with private_moto(tmp_path) as url:
        point_boto3_at(url, tmp_path, monkeypatch)
        yield OwnAws(url)


@pytest.fixture
def cli_env(own_aws: OwnAws, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)  # point_boto3_at put AWS_ENDPOINT_URL and dummy keys here
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path / "home")
    return env


def group_of_two(aws, name: str, eip: str) -> tuple[str, str]:
    ec2, asg = aws.client("ec2"), aws.client("autoscaling")
    ec2.create_launch_template(
        LaunchTemplateName=f"{name}-lt",
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "g5.xlarge"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{name}-lt", "Version": "$Latest"},
        MinSize=2,
        MaxSize=2,
        DesiredCapacity=2,
        AvailabilityZones=["us-east-1a"],
    )
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    a, b = sorted(i["InstanceId"] for i in group[0]["Instances"])
    ec2.associate_address(AllocationId=eip, InstanceId=a)
    return a, b


def write(host, path: str, data: dict) -> None:
    ssh_input(host, f"cat > {shlex.quote(path)}", json.dumps(data).encode())


def test_records_and_the_container_cannot_choose_secrets_paths_or_exposure(
    gpu_host, own_aws, cli_env
):
    aws = own_aws
    name = f"sec-{os.getpid() % 10000}"
    eip = allocate_eip(aws)
    a, b = group_of_two(aws, name, eip)
    operator_secret, token = store_token(cli_env)
    other_secret, other_token = store_token(cli_env)  # what an attacker wants on the host
    hosts = {}
    for iid, suffix in ((a, "a"), (b, "b")):
        host = gpu_host("1xA10G", name=f"{name}-{suffix}")
        host.alias(iid)
        hosts[iid] = host
        proc = tgiops(cli_env, "deploy", MODEL, "--secret-name", operator_secret,
                      "--instance", iid, "--ssh-config", host.ssh_config, "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    host_a, host_b = hosts[a], hosts[b]

    # 12.1: the engine's container sees the model cache only, not the records.
    listing = host_b.run(f"docker exec {UNIT} sh -c 'ls -a /data; test ! -e /data/tgiops'")
    assert "hub" in listing.stdout
    before = host_b.run(f"sha256sum {RECORD}").stdout
    record = json.loads(host_b.run(f"cat {RECORD}").stdout)
    hostile = {**record, "spec": {**record["spec"], "token_secret": other_secret}}
    plant = shlex.quote(
        "mkdir -p /data/tgiops/deployments && cat > /data/tgiops/deployments/x.json"
    )
    ssh_input(host_b, f"docker exec -i {UNIT} sh -c {plant}", json.dumps(hostile).encode())
    assert host_b.run(f"sha256sum {RECORD}").stdout == before
    # 12.8: the deploy recorded what ran; the testbed's images were `docker load`ed, so there is
    # an image ID and no registry digest.
    assert record["deployed"]["image_id"].startswith("sha256:")
    assert record["deployed"]["image_digest"] is None

    # Someone who can write B's data volume asks for another secret, all addresses and
    # another data dir; A's volume gets a badly typed override and a record for "/".
    spec = record["spec"]
    asks = {"token_secret": other_secret, "public": True, "data_dir": "/mnt/elsewhere"}
    write(host_b, RECORD, {**record, "spec": {**spec, **asks}})
    write(host_a, RECORD, {**record, "spec": {**spec, "overrides": {"max_total_tokens": "x"}}})
    evil = {**record, "spec": {**spec, "unit": "tgiops-evil", "data_dir": "/", "public": True}}
    write(host_a, "/var/lib/tgiops/data/tgiops/deployments/tgiops-evil.json", evil)
    # A valid record naming a unit tgiops did not write (the host's sshd).
    write(host_a, "/var/lib/tgiops/data/tgiops/deployments/ssh.json",
          {**record, "spec": {**spec, "unit": "ssh"}})  # fmt: skip
    container_b = started_at(host_b)

    proc = tgiops(cli_env, "reconcile", "--asg", name, "--eip", eip, "--secret-name",
                  operator_secret, "--ssh-config", host_b.ssh_config, "--json")  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stderr[-3000:]  # A failed: not all healthy
    result = json.loads(proc.stdout)
    outcomes = {o["instance_id"]: o for o in result["instances"]}

    # 12.3: A's bad records fail A alone, with the reasons; nothing of them was installed.
    failed = {u["unit"]: u for u in outcomes[a]["units"]}
    assert not outcomes[a]["healthy"]
    assert "max_total_tokens" in failed[UNIT]["failure"]
    assert "not a place for a model cache" in failed["tgiops-evil"]["failure"]
    assert host_a.run("test -e /etc/systemd/system/tgiops-evil.service", check=False).returncode
    assert "is not tgiops'" in failed["ssh"]["failure"]
    assert host_a.run("test -e /etc/systemd/system/ssh.service", check=False).returncode
    assert host_a.run("systemctl is-active ssh").stdout.strip() == "active"
    # B: restored under the operator's settings, which are what is installed: unchanged.
    [unit_b] = outcomes[b]["units"]
    assert outcomes[b]["healthy"] and unit_b["action"] == "unchanged", outcomes[b]
    assert started_at(host_b) == container_b
    env_file = host_b.run(f"cat /etc/tgiops/{UNIT}.env").stdout
    assert token in env_file and other_token not in env_file
    unit_text = host_b.run(f"cat /etc/systemd/system/{UNIT}.service").stdout
    assert "-p 127.0.0.1:8080:80" in unit_text and "0.0.0.0" not in unit_text
    assert "-v /var/lib/tgiops/data/cache:/data" in unit_text
    # The Elastic IP moved to the healthy instance (it used to stay: the pass crashed).
    assert eip_holder(aws, eip)[0] == b
    # The tags reconcile wrote carry no secret name, data dir or public.
    tags = aws.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [b]}])
    text = json.dumps(tags["Tags"])
    assert other_secret not in text and operator_secret not in text and "data_dir" not in text
    assert token not in proc.stdout + proc.stderr

    # 12.8: a tag that now names another image is refused on restore.
    host_b.run(f"docker tag {OTHER_IMAGE} {IMAGE}")
    again = tgiops(cli_env, "reconcile", "--asg", name, "--secret-name", operator_secret,
                   "--ssh-config", host_b.ssh_config, "--json")  # fmt: skip
    assert "Traceback" not in again.stderr, again.stderr[-3000:]
    moved = {o["instance_id"]: o for o in json.loads(again.stdout)["instances"]}[b]
    assert "the tag now names another image" in moved["units"][0]["failure"]
    assert started_at(host_b) == container_b  # nothing was restarted


def test_no_other_user_can_take_the_host_lock(gpu_host):
    """/run/lock is world-writable and flock(1) locks through a read-only descriptor: a local
    user holding /run/lock/tgiops.lock blocked every deploy. The lock is root's now."""
    from tgiops.edges.ssh import RemoteHost, SSHTarget

    host = gpu_host("1xT4")
    lock = shlex.quote(deploy.LOCK_PATH)
    holder = (
        "setsid -f sh -c 'echo $$ > /run/tgiops-test-holder.pid; exec runuser -u nobody -- "
        f"flock -n {lock} sleep 60' </dev/null >/dev/null 2>&1; sleep 1; true"
    )
    try:
        with RemoteHost(SSHTarget(host.name, ssh_config_path=host.ssh_config)) as remote:
            with remote.hold_lock(deploy.LOCK_PATH, timeout_s=5):
                host.run(holder)  # as nobody: must not get the lock, even once it is free
            host.run(holder)
            with remote.hold_lock(deploy.LOCK_PATH, timeout_s=5):  # not blocked by nobody
                directory = os.path.dirname(deploy.LOCK_PATH)
                assert host.run(f"stat -c %a:%U {directory}").stdout.strip() == "700:root"
        tried = host.run(f"runuser -u nobody -- flock -n {lock} true", check=False)
        assert tried.returncode != 0
    finally:
        host.run(
            "[ -f /run/tgiops-test-holder.pid ] && kill $(cat /run/tgiops-test-holder.pid); "
            "rm -f /run/tgiops-test-holder.pid; true",
            check=False,
        )


def test_the_testbed_keeps_bind_mounts_inside_the_emulated_host(gpu_host, tmp_path):
    """dockerd runs on this machine: an unconfined `-v /:/x` was this machine's root. A host of
    this test's own: its dockerd then shares this process's view of the machine (/tmp too)."""
    host = gpu_host("1xT4", fresh=True)
    marker = tmp_path / "outside-marker"
    content = "machine-" + secrets.token_hex(8)
    marker.write_text(content)

    def container(mount: str, script: str):
        return host.run(
            f"docker run --rm -v {mount} --entrypoint /bin/sh {IMAGE} -c {shlex.quote(script)}",
            check=False,
        )

    read = container("/:/x", f"cat /x{marker} 2>/dev/null; echo done")
    assert read.returncode == 0 and "done" in read.stdout and content not in read.stdout
    container("/:/x", f"echo written > /x{tmp_path}/written 2>/dev/null; true")
    assert not (tmp_path / "written").exists()
    # A symlink in the host that points at / is the host's root, not this machine's.
    host.run("mkdir -p /var/lib/tgiops/data/cache && ln -sfn / /var/lib/tgiops/data/cache/up")
    try:
        via_link = container("/var/lib/tgiops/data/cache/up:/x", f"cat /x{marker}; echo done")
        assert "done" in via_link.stdout and content not in via_link.stdout
    finally:
        host.run("rm -f /var/lib/tgiops/data/cache/up", check=False)
    refused = container("/tmp:/x", "true")
    assert refused.returncode == 125 and "refused" in refused.stderr
    assert container("/var/run/docker.sock:/s", "true").returncode == 125
