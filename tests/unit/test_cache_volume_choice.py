"""The model cache volume's pure rules (tgiops.core.stack): which volume a booting instance
takes, where the attached volume appears, what the instance role may do; and the boot-time
wait for the device on a real file system."""

from __future__ import annotations

import os

import pytest

from tgiops.commands.cache_volume import _wait_device
from tgiops.core import stack as st
from tgiops.core.errors import AWSError

STACK = "llama"
CACHE = {st.STACK_TAG: STACK, st.ROLE_TAG: st.CACHE_ROLE}


def vol(vid: str, zone: str = "us-east-1a", state: str = "available", tags=None, attached=(),
        created: str = "2026-01-01T00:00:00") -> st.CacheVolume:  # fmt: skip
    return st.CacheVolume(vid, zone, state, CACHE if tags is None else tags, tuple(attached),
                          40, created)  # fmt: skip


def choose(*volumes: st.CacheVolume, zone: str = "us-east-1a", me: str = "i-me"):
    return st.choose_cache_volume(volumes, stack=STACK, zone=zone, instance_id=me)


def test_an_available_tagged_volume_in_the_zone_is_attached_the_oldest_first():
    newer = vol("vol-b", created="2026-02-01T00:00:00")
    older = vol("vol-c", created="2026-01-01T00:00:00")
    choice = choose(newer, older)
    assert (choice.action, choice.volume) == ("attach", older)


def test_none_left_means_create():
    assert choose() == st.CacheChoice("create")
    others = (
        vol("vol-zone", zone="us-east-1b"),  # EBS attaches only within its zone
        vol("vol-busy", state="in-use", attached=["i-other"]),  # another instance's cache
        vol("vol-untagged", tags={}),
        vol("vol-stack-only", tags={st.STACK_TAG: STACK}),  # e.g. a root volume of the stack
        vol("vol-other-stack", tags={st.STACK_TAG: "other", st.ROLE_TAG: st.CACHE_ROLE}),
        vol("vol-creating", state="creating"),
    )
    assert choose(*others) == st.CacheChoice("create")


def test_the_volume_already_attached_here_is_kept_on_a_reboot():
    mine = vol("vol-mine", state="in-use", attached=["i-me"])
    free = vol("vol-free")
    assert choose(free, mine) == st.CacheChoice("attached", mine)


def test_the_device_is_the_nvme_by_id_link_of_the_volume_id_then_xen_names():
    assert st.cache_device_paths("vol-0123456789abcdef0") == [
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0",
        "/dev/xvdf",
        "/dev/sdf",
    ]


def test_the_boot_waits_for_the_device_and_says_which_paths_it_waited_for(tmp_path):
    late = tmp_path / "nvme-link"
    ticks = iter(range(100))

    def sleep(_s: float) -> None:
        if next(ticks) == 2:
            late.write_text("")  # udev made the link after a few polls

    got = _wait_device([str(late), str(tmp_path / "xvdf")], 50.0, sleep, lambda: 0.0,
                       os.path.exists)  # fmt: skip
    assert got == str(late)
    clock = iter([0.0, 10.0, 20.0])
    with pytest.raises(AWSError, match="did not appear on this host as"):
        _wait_device([str(tmp_path / "never")], 15.0, lambda _s: None, lambda: next(clock),
                     os.path.exists)  # fmt: skip


def test_the_role_creates_and_attaches_only_volumes_tagged_for_the_stack():
    statements = {s["Sid"]: s for s in st.cache_volume_statements(STACK, "tgiops-llama",
                                                                  "us-east-1", "123")}  # fmt: skip
    create = statements["CreateTheModelCacheVolume"]
    assert create["Action"] == "ec2:CreateVolume"
    assert create["Resource"] == "arn:aws:ec2:us-east-1:123:volume/*"
    assert create["Condition"]["StringEquals"] == {
        "aws:RequestTag/tgiops:stack": STACK, "aws:RequestTag/tgiops:role": "model-cache"
    }  # fmt: skip
    tag = statements["TagTheModelCacheVolumeAtCreation"]["Condition"]["StringEquals"]
    assert tag["ec2:CreateAction"] == "CreateVolume"
    assert statements["AttachToAnInstanceOfTheGroup"]["Condition"]["StringEquals"] == {
        "aws:ResourceTag/aws:autoscaling:groupName": "tgiops-llama"
    }
    assert statements["FindTheModelCacheVolume"]["Resource"] == "*"
    actions = {s["Action"] for s in statements.values()}
    assert "ec2:DeleteVolume" not in actions and "ec2:DetachVolume" not in actions


def test_with_a_cache_volume_the_launch_template_maps_the_root_volume_only():
    base = dict(
        stack=STACK, model="llama-2-7b", region="us-east-1", vpc_id="vpc-1", subnets=("s",),
        zones=("us-east-1a",), types=(), spot=True, on_demand_base=0, ssh_cidrs=(),
        engine_port=8080, ami="ami-1", root_device="/dev/sda1", volume_gib=40,
        volume_throughput=500, key_name=None, create_key=False, eip=False, user_data="#!",
        policy={},
    )  # fmt: skip
    cached = st.Desired(**base, cache_volume=True).launch_template_data("sg-1", None)
    [root] = cached["BlockDeviceMappings"]
    assert root["Ebs"]["VolumeSize"] == st.CACHE_ROOT_GIB and root["Ebs"]["Throughput"] == 125
    assert root["Ebs"]["DeleteOnTermination"] is True and root["Ebs"]["Encrypted"] is True
    plain = st.Desired(**base).launch_template_data("sg-1", None)
    assert plain["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 40


def test_userdata_cache_volume_attaches_at_boot_and_its_policy_is_scoped(capsys):
    import json

    from tgiops.cli.main import main

    common = [
        "userdata", "llama-2-7b", "--preinstalled", "--secret-name", "hf",
        "--cache-volume", "demo", "--asg", "tgiops-demo", "--region", "us-east-1",
    ]  # fmt: skip
    assert main([*common, "--data-volume-gib", "30", "--data-volume-throughput", "250"]) == 0
    text = capsys.readouterr().out
    assert (
        '"$TGIOPS" attach-cache-volume --stack demo --gib 30 --throughput 250 --model '
        "llama-2-7b --region us-east-1)" in text
    )
    assert "RequiresMountsFor=/var/lib/tgiops/data" in text  # bootstrap waits for the mount
    assert main([*common, "--iam-policy"]) == 0
    policy = json.loads(capsys.readouterr().out)
    sids = [s["Sid"] for s in policy["Statement"]]
    assert sids[-5:] == [
        "CreateTheModelCacheVolume", "TagTheModelCacheVolumeAtCreation",
        "AttachTheModelCacheVolume", "AttachToAnInstanceOfTheGroup", "FindTheModelCacheVolume",
    ]  # fmt: skip
    assert main([*common, "--efs", "fs-0abc1234"]) == 2
    assert "drop --efs" in capsys.readouterr().err
