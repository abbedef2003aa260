"""`tgiops up` end to end: the instance the stack's group launched runs the launch template's
user data on a testbed host, serves the model, takes the Elastic IP and publishes its SSH host
key; a second `up` pins that key. Then a reclaim: the group's replacement, a second testbed host
on the same data directory (the persistent cache, as with --efs), runs the same user data and
serves from the cache without a download; `up` pins its new key for the Elastic IP's address.
`down` leaves nothing tagged.

The model cache volume: the testbed has no block devices, so the stack runs with
--no-cache-volume and the shared data directory stands in for the reattached volume. The
volume-selection step still runs for real on each host, as the instance runs it at boot
(`tgiops attach-cache-volume` with the instance's environment, through the metadata stand-in
and moto): host B's instance creates and attaches the stack's cache volume, the replacement on
host C attaches that same volume; only the wait for its NVMe device fails there, as it must on
a host without it.

Moto starts the group's instance but runs no user data: testbed host B stands for it (its
instance id is what the metadata stand-in reports), as in test_spot_relaunch.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from instance_support import (
    TGIOPS_HOME,
    ImdsStandIn,
    ReverseTunnels,
    install_tgiops,
    ssh_input,
    wait_until,
)
from test_spot_relaunch import (
    IMDS_ON_HOST,
    MODEL,
    MOTO_ON_HOST,
    assert_served_from_cache,
    bootstrap_done,
    eip_holder,
    journal,
    last_json,
    reclaim,
    store_token,
    tgiops,
)
from test_spot_relaunch import (
    cli_env as cli_env,  # the fixture, used by name
)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class PrivateMoto:
    endpoint_url: str
    region: str = "us-east-1"

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateMoto]:
    """A moto server of this test's own, in the environment as the ``aws`` fixture puts it:
    the testbed's shared one is reset by other sessions' tests while this one runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 30, "moto_server")
        double = PrivateMoto(f"http://127.0.0.1:{port}")
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", double.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", double.region)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
        yield double
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_then_the_launched_instance_serves_and_its_host_key_is_pinned(
    gpu_host,
    aws,
    cli_env,
    tmp_path: Path,
):
    stack = f"e2e-up-{os.getpid() % 10000}"
    name = f"tgiops-{stack}"
    secret, token = store_token(cli_env)
    ami = aws.client("ec2").register_image(Name=f"{stack}-dlami", RootDeviceName="/dev/sda1")[
        "ImageId"
    ]
    common = ["up", MODEL, "--name", stack, "--secret-name", secret, "--preinstalled",
              "--ami", ami, "--instance-types", "g5.xlarge", "--yes", "--json",
              "--env", f"AWS_ENDPOINT_URL=http://127.0.0.1:{MOTO_ON_HOST}",
              "--env", f"AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{IMDS_ON_HOST}",
              "--no-cache-volume",  # no block devices on testbed hosts: see the docstring
              ]  # fmt: skip
    try:
        made = tgiops(cli_env, *common, "--no-wait")
        assert made.returncode == 0, made.stderr[-3000:]
        ec2 = aws.client("ec2")
        [instance] = [
            i["InstanceId"]
            for i in aws.client("autoscaling").describe_auto_scaling_groups(
                AutoScalingGroupNames=[name]
            )["AutoScalingGroups"][0]["Instances"]
        ]
        [address] = ec2.describe_addresses(
            Filters=[{"Name": "tag:tgiops:stack", "Values": [stack]}]
        )["Addresses"]
        data = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])[
            "LaunchTemplateVersions"
        ][0]["LaunchTemplateData"]
        user_data = base64.b64decode(data["UserData"]).decode()

        host = gpu_host("1xA10G", name=f"{stack}-b", data_dir=tmp_path / "data")
        install_tgiops(host)  # as if baked into the AMI; a venv there has bin/python too
        ssh_input(
            host,
            f"cat > {TGIOPS_HOME}/bin/python && chmod 755 {TGIOPS_HOME}/bin/python",
            f'#!/bin/sh\nPYTHONPATH={TGIOPS_HOME}/lib exec /usr/bin/python3 "$@"\n'.encode(),
        )
        moto_port = int(aws.endpoint_url.rsplit(":", 1)[1])
        with (
            ImdsStandIn(instance, aws.region) as imds,
            ReverseTunnels(host, {MOTO_ON_HOST: moto_port, IMDS_ON_HOST: imds.port}),
        ):
            imds.user_data = user_data
            imds.availability_zone = zone_of(aws, instance)
            ssh_input(host, "cat > /root/user-data && bash /root/user-data", user_data.encode())
            cache = attach_cache_volume_on(host, stack)
            assert cache["action"] == "create", cache
            state = wait_until(lambda: bootstrap_done(host), 300, "tgiops-bootstrap.service")
            assert state == ("active", "success"), (state, journal(host, "tgiops-bootstrap"))
            result = last_json(journal(host, "tgiops-bootstrap"))
            assert result["instance_id"] == instance and result["healthy"] is True
            assert eip_holder(aws, address["AllocationId"])[0] == instance
            assert token not in journal(host, "tgiops-bootstrap")
        # The user data published the host's own key as the instance's tag.
        host_key = " ".join(host.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance]}])["Tags"]
        assert {t["Key"]: t["Value"] for t in tags}["tgiops:ssh-host-key"] == host_key

        # `up` again: nothing to change; it waits, finds the endpoint and pins the key.
        again = tgiops(cli_env, *common, "--wait-timeout", "60")
        assert again.returncode == 0, again.stderr[-3000:]
        second = json.loads(again.stdout)
        assert {c["action"] for c in second["changes"]} == {"keep"}
        assert second["healthy"] is True
        assert second["endpoint"] == f"{address['PublicIp']}:8080"
        known = (Path(cli_env["XDG_STATE_HOME"]) / "tgiops" / "known_hosts").read_text()
        [line] = known.splitlines()
        assert line.split(" ", 1)[1] == host_key
        assert instance in line.split()[0].split(",")

        # A reclaim: the group replaces the instance; the replacement (a second testbed host on
        # the same data directory) runs the same user data and serves from the cache.
        replacement = reclaim(aws, host, name, instance)
        host_2 = gpu_host("1xA10G", name=f"{stack}-c", data_dir=tmp_path / "data")
        install_tgiops(host_2)
        ssh_input(
            host_2,
            f"cat > {TGIOPS_HOME}/bin/python && chmod 755 {TGIOPS_HOME}/bin/python",
            f'#!/bin/sh\nPYTHONPATH={TGIOPS_HOME}/lib exec /usr/bin/python3 "$@"\n'.encode(),
        )
        with (
            ImdsStandIn(replacement, aws.region) as imds,
            ReverseTunnels(host_2, {MOTO_ON_HOST: moto_port, IMDS_ON_HOST: imds.port}),
        ):
            imds.user_data = user_data
            imds.availability_zone = zone_of(aws, replacement)
            ssh_input(host_2, "cat > /root/user-data && bash /root/user-data", user_data.encode())
            again = attach_cache_volume_on(host_2, stack)
            first_cache = ec2.describe_volumes(VolumeIds=[cache["volume_id"]])["Volumes"][0]
            if imds.availability_zone == cache["zone"]:  # the cache, reattached in its zone
                assert (again["action"], again["volume_id"]) == ("attach", cache["volume_id"])
                [attachment] = first_cache["Attachments"]
                assert attachment["InstanceId"] == replacement
            else:  # EBS attaches within a zone only: a cache of its own, the first one kept
                assert again["action"] == "create" and again["zone"] == imds.availability_zone
                assert first_cache["State"] == "available"
            state = wait_until(lambda: bootstrap_done(host_2), 300, "tgiops-bootstrap.service")
            assert state == ("active", "success"), (state, journal(host_2, "tgiops-bootstrap"))
            assert eip_holder(aws, address["AllocationId"])[0] == replacement
            assert_served_from_cache(host_2)
        key_2 = " ".join(host_2.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
        third = tgiops(cli_env, *common, "--wait-timeout", "60")
        assert third.returncode == 0, third.stderr[-3000:]
        [line] = (
            (Path(cli_env["XDG_STATE_HOME"]) / "tgiops" / "known_hosts").read_text().splitlines()
        )
        # The Elastic IP's address now names the replacement's key, verified through AWS.
        assert line.split(" ", 1)[1] == key_2 and address["PublicIp"] in line.split()[0]
    finally:
        gone = tgiops(cli_env, "down", stack, "--yes", "--json")
        assert gone.returncode == 0, gone.stderr[-3000:]
    left = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "tag:tgiops:stack", "Values": [stack]}]
    )["SecurityGroups"]
    assert left == []
    volumes = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "tag:tgiops:stack", "Values": [stack]}]
    )["Volumes"]
    assert [v["VolumeId"] for v in volumes if v["State"] != "deleted"] == []


def zone_of(aws: PrivateMoto, instance: str) -> str:
    [reservation] = aws.client("ec2").describe_instances(InstanceIds=[instance])["Reservations"]
    return reservation["Instances"][0]["Placement"]["AvailabilityZone"]


def attach_cache_volume_on(host: Any, stack: str) -> dict[str, Any]:
    """The boot-time volume selection, run on the host with the instance's environment (the
    user data's bootstrap.env: moto and the metadata stand-in through the tunnels). It picks,
    creates or attaches for real; the device never appears (no block devices here): exit 1
    naming the NVMe path of the volume it attached."""
    from tgiops.core.layout import TGIOPS_BIN

    proc = host.run(
        f"set -a; . /etc/tgiops/bootstrap.env; set +a; {TGIOPS_BIN} attach-cache-volume "
        f"--stack {stack} --gib 8 --throughput 125 --wait-timeout 5 --json",
        check=False,
        timeout_s=120,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    message = json.loads(proc.stdout)["error"]["message"]
    found = re.search(r"volume (vol-[0-9a-f]+) \((create|attach|attached)\)", message)
    assert found, message
    volume_id, action = found.groups()
    assert f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}" in message
    ec2 = PrivateMoto(os.environ["AWS_ENDPOINT_URL"]).client("ec2")
    [raw] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    assert tags["tgiops:stack"] == stack and tags["tgiops:role"] == "model-cache"
    return {"volume_id": volume_id, "zone": raw["AvailabilityZone"], "action": action}
