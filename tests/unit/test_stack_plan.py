"""The pure planning of a `tgiops up` stack (tgiops.core.stack)."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tgiops.core import stack as st
from tgiops.core.errors import InputError


def types() -> tuple[st.TypeChoice, ...]:
    return (
        st.TypeChoice("g5.xlarge", 4, 1.006, 0.4),
        st.TypeChoice("g6e.2xlarge", 8, 2.24, 0.9),
    )


def desired(**changes) -> st.Desired:
    base = st.Desired(
        stack="demo",
        model="llama-2-7b",
        region="us-east-1",
        vpc_id="vpc-1",
        subnets=("subnet-b", "subnet-a"),
        zones=("us-east-1a", "us-east-1b"),
        types=types(),
        spot=True,
        on_demand_base=0,
        ssh_cidrs=(),
        engine_port=8080,
        ami="ami-1",
        root_device="/dev/sda1",
        volume_gib=100,
        volume_throughput=250,
        key_name="tgiops-demo",
        create_key=True,
        eip=True,
        user_data="#!/bin/bash\necho hi\n",
        policy={"Version": "2012-10-17", "Statement": [{"Sid": "A"}]},
    )
    return replace(base, **changes)


def present(d: st.Desired, instances: tuple[str, ...] = ("i-1",)) -> st.Observed:
    """What AWS would report after `up` built ``d``."""
    return st.Observed(
        security_group_id="sg-1",
        ssh_cidrs=d.ssh_cidrs,
        eip_allocation="eipalloc-1",
        role=True,
        role_policy=d.policy,
        instance_profile=True,
        profile_has_role=True,
        key_pair=True,
        launch_template_id="lt-1",
        launch_template_digest=d.launch_template_digest(),
        launch_template_version=1,
        group=d.group_settings(),
        group_instances=instances,
    )


def by_kind(changes: list[st.Change]) -> dict[str, str]:
    return {c.kind: c.action for c in changes}


def test_an_empty_account_gets_every_resource_created_in_dependency_order():
    changes = st.plan_changes(desired(), st.Observed())
    assert [c.kind for c in changes] == [
        "key-pair",
        "security-group",
        "elastic-ip",
        "iam-role",
        "instance-profile",
        "launch-template",
        "autoscaling-group",
    ]
    assert {c.action for c in changes} == {"create"}
    group = changes[-1].detail
    assert "g5.xlarge ($0.400/h)" in group and "price-capacity-optimized" in group


def test_a_built_stack_is_all_keep_and_nothing_is_pending():
    d = desired()
    changes = st.plan_changes(d, present(d))
    assert set(by_kind(changes).values()) == {"keep"}
    assert st.pending(changes) == []


def test_another_model_is_a_new_launch_template_version_and_a_refresh_said_before():
    d = desired()
    changed = desired(model="gemma-2-9b", user_data="#!/bin/bash\necho other\n")
    changes = st.plan_changes(changed, present(d))
    assert by_kind(changes)["launch-template"] == "update"
    refresh = next(c for c in changes if c.kind == "instance-refresh")
    assert "version 2" in refresh.detail and "endpoint is down" in refresh.detail
    two = st.plan_changes(changed, present(d, ("i-1", "i-2")))
    assert "stays in service" in next(c for c in two if c.kind == "instance-refresh").detail


def test_the_digest_ignores_resource_ids_but_not_what_the_instance_runs():
    d = desired()
    assert d.launch_template_digest() == desired().launch_template_digest()
    assert d.launch_template_digest() != desired(ami="ami-2").launch_template_digest()
    assert d.launch_template_digest() != desired(volume_gib=101).launch_template_digest()


def test_the_launch_template_requires_imdsv2_and_encrypts_and_carries_the_user_data():
    data = desired().launch_template_data("sg-9", None)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["Encrypted"] is True and ebs["Throughput"] == 250 and ebs["VolumeSize"] == 100
    assert base64.b64decode(data["UserData"]).decode() == desired().user_data
    assert data["SecurityGroupIds"] == ["sg-9"]


def test_group_settings_follow_the_market():
    assert desired().group_settings()["on_demand_percent"] == 0
    od = desired(spot=False).group_settings()
    assert od["on_demand_percent"] == 100 and od["capacity_rebalance"] is False
    assert desired().group_settings()["subnets"] == ["subnet-a", "subnet-b"]


def test_ssh_is_closed_by_default_and_the_world_needs_public_ssh():
    assert st.check_ssh_cidr(None, False) == []
    assert st.check_ssh_cidr("203.0.113.7", False) == ["203.0.113.7/32"]
    with pytest.raises(InputError, match="--public-ssh"):
        st.check_ssh_cidr("0.0.0.0/0", False)
    assert st.check_ssh_cidr("0.0.0.0/0", True) == ["0.0.0.0/0"]
    with pytest.raises(InputError):
        st.check_ssh_cidr("not-a-cidr", False)


@pytest.mark.parametrize("name", ["", "Demo", "1demo", "demo_x", "x" * 26])
def test_bad_stack_names_are_refused(name):
    with pytest.raises(InputError):
        st.check_stack_name(name)


def test_quota_needs_pick_spot_or_on_demand_per_family_and_the_largest_type():
    mixed = (*types(), st.TypeChoice("p4d.24xlarge", 96, 32.77, None))
    spot = {n.code: n.vcpus for n in st.quota_needs(mixed, spot=True, on_demand_base=0)}
    assert spot == {"L-3819A6DF": 8, "L-7212CCBC": 96}
    od = {n.code: n.vcpus for n in st.quota_needs(mixed, spot=False, on_demand_base=0)}
    assert od == {"L-DB2E81BA": 8, "L-417A185B": 96}


def test_a_small_quota_is_refused_naming_it_and_how_to_raise_it():
    need = st.QuotaNeed("L-3819A6DF", "All G and VT Spot Instance Requests", 8)
    assert st.quota_refusal(need, 8, "us-east-1") is None
    text = st.quota_refusal(need, 4, "us-east-1")
    assert text and "All G and VT Spot Instance Requests" in text and "--desired-value 8" in text


def test_scaling_activity_failures_in_words():
    words = st.activity_in_words(
        "Failed", "Could not launch Spot Instances. InsufficientInstanceCapacity - no capacity"
    )
    assert words and "no spare capacity" in words
    assert "quota" in (st.activity_in_words("Failed", "VcpuLimitExceeded: ...") or "")
    assert st.activity_in_words("Successful", "Launching a new EC2 instance: i-1") is None
    assert "boom" in (st.activity_in_words("Failed", "boom") or "")


def test_the_host_key_statement_is_limited_to_the_group_and_the_one_tag():
    policy = st.with_host_key_statement({"Statement": [{"Sid": "A"}]}, "tgiops-demo", "r", "1")
    added = policy["Statement"][-1]
    assert added["Action"] == "ec2:CreateTags"
    assert added["Condition"]["StringEquals"] == {
        "aws:ResourceTag/aws:autoscaling:groupName": "tgiops-demo"
    }
    assert added["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == [st.HOST_KEY_TAG]
    assert st.HOST_KEY_TAG in st.with_host_key_publishing("#!/bin/bash\n")


def test_the_data_volume_holds_the_os_and_the_checkpoint_with_room():
    assert st.data_volume_gib(0) == st.ROOT_VOLUME_OS_GIB
    assert st.data_volume_gib(13.5e9) == st.ROOT_VOLUME_OS_GIB + 19  # 13.5 GB * 1.5 in GiB


@pytest.fixture(scope="module")
def host_key(tmp_path_factory) -> str:
    path = Path(tmp_path_factory.mktemp("k")) / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def test_a_published_host_key_is_parsed_and_a_forged_one_refused(host_key):
    assert st.parse_host_key(host_key + " root@ip-10-0-0-1") == host_key
    _kind, blob = host_key.split()
    with pytest.raises(InputError):
        st.parse_host_key(f"ssh-rsa {blob}")  # the blob says ed25519
    with pytest.raises(InputError):
        st.parse_host_key("ssh-ed25519 !!notbase64")
    with pytest.raises(InputError):
        st.parse_host_key("")


def test_pinning_replaces_the_lines_of_those_names_and_keeps_the_others(host_key):
    old = "203.0.113.9 ssh-ed25519 AAAAold\nother.example ssh-ed25519 AAAAother\n# note\n"
    text = st.pin_host_key(old, ["i-0abc", "203.0.113.9", ""], host_key)
    lines = text.splitlines()
    assert "other.example ssh-ed25519 AAAAother" in lines and "# note" in lines
    assert not any("AAAAold" in line for line in lines)
    assert lines[-1] == f"i-0abc,203.0.113.9 {host_key}"
    assert st.pin_host_key(text, ["i-0abc", "203.0.113.9"], host_key) == text  # idempotent


def test_pinning_writes_a_private_file(tmp_path, host_key):
    from tgiops.edges import known_hosts

    path = tmp_path / "state" / "known_hosts"
    known_hosts.pin(path, ["i-1", "198.51.100.4"], host_key)
    assert path.read_text() == f"i-1,198.51.100.4 {host_key}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    # ssh itself accepts the pinned line for the address.
    found = subprocess.run(
        ["ssh-keygen", "-F", "198.51.100.4", "-f", str(path)], capture_output=True, text=True
    )
    assert found.returncode == 0 and host_key.split()[1] in found.stdout
