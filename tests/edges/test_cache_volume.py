"""The stack's model cache volume on moto's server over HTTP: what an instance's boot-time
`attach-cache-volume` finds, creates, tags and attaches (tgiops.commands.cache_volume, through
the IMDSv2 stand-in of tests/e2e/instance_support.py for its instance id and zone), and what
`down` deletes (tagged cache volumes only; never an untagged one or one in use elsewhere)."""

from __future__ import annotations

import json
from typing import Any

from e2e.instance_support import ImdsStandIn
from test_stack_up_down import (
    STACK,
    TAG,
    PrivateMoto,
    moto_ami,
    put_secret,
    run,
    up_args,
)
from test_stack_up_down import aws as aws  # the fixture, used by name
from test_stack_up_down import state as state  # the fixture, used by name

from tgiops.commands.cache_volume import attach_cache_volume
from tgiops.core import stack as st
from tgiops.edges.aws.base import AwsSettings
from tgiops.edges.aws.client import Aws
from tgiops.edges.imds import Imds

ZONE = "us-east-1a"  # the stand-in's placement/availability-zone (region + "a")


def launch(aws: PrivateMoto, zone: str = ZONE) -> str:
    ec2 = aws.client("ec2")
    return ec2.run_instances(
        ImageId=moto_ami(aws), MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        Placement={"AvailabilityZone": zone},
    )["Instances"][0]["InstanceId"]  # fmt: skip


def attach_on(aws: PrivateMoto, instance: str, stack: str = STACK) -> Any:
    """What the user data runs on ``instance`` at boot (the device wait is host I/O: off)."""
    [reservation] = aws.client("ec2").describe_instances(InstanceIds=[instance])["Reservations"]
    with ImdsStandIn(instance, aws.region) as imds:
        imds.availability_zone = reservation["Instances"][0]["Placement"]["AvailabilityZone"]
        return attach_cache_volume(
            Aws(AwsSettings(region=aws.region)),
            Imds(imds.endpoint),
            stack=stack,
            gib=40,
            throughput=250,
            model="llama-2-7b",
            wait_for_device=False,
        )


def volume(aws: PrivateMoto, volume_id: str) -> dict[str, Any]:
    return aws.client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def test_the_first_instance_creates_the_cache_and_its_replacement_in_the_zone_attaches_it(aws):
    first = launch(aws)
    made = attach_on(aws, first)
    assert made.action == "create" and made.zone == ZONE and made.instance_id == first
    raw = volume(aws, made.volume_id)
    assert (raw["VolumeType"], raw["Size"], raw["Encrypted"]) == ("gp3", 40, True)
    assert raw["Throughput"] == 250 and raw["AvailabilityZone"] == ZONE
    assert tags_of(raw) == {
        TAG: STACK, "Name": f"tgiops-{STACK}", "tgiops:model": "llama-2-7b",
        "tgiops:role": "model-cache",
    }  # fmt: skip
    [attachment] = raw["Attachments"]
    assert attachment["InstanceId"] == first and attachment["Device"] == "/dev/sdf"

    # A rerun on the same instance (a reboot) changes nothing.
    again = attach_on(aws, first)
    assert (again.action, again.volume_id) == ("attached", made.volume_id)

    # Spot reclaim: the instance goes, the group's replacement in the zone reuses the cache.
    # Attached after launch, it outlives the instance (DeleteOnTermination false).
    aws.client("ec2").terminate_instances(InstanceIds=[first])
    assert volume(aws, made.volume_id)["State"] == "available"
    second = launch(aws)
    reused = attach_on(aws, second)
    assert (reused.action, reused.volume_id) == ("attach", made.volume_id)
    assert volume(aws, made.volume_id)["Attachments"][0]["InstanceId"] == second
    ours = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "tag:tgiops:role", "Values": ["model-cache"]}]
    )["Volumes"]
    assert [v["VolumeId"] for v in ours] == [made.volume_id]  # no second download volume


def test_another_zone_an_untagged_volume_or_one_in_use_elsewhere_is_never_taken(aws):
    ec2 = aws.client("ec2")
    cache_tags = [{"ResourceType": "volume", "Tags": [
        {"Key": TAG, "Value": STACK}, {"Key": "tgiops:role", "Value": "model-cache"}]}]  # fmt: skip
    untagged = ec2.create_volume(AvailabilityZone=ZONE, Size=40, VolumeType="gp3")["VolumeId"]
    other_zone = ec2.create_volume(
        AvailabilityZone="us-east-1b", Size=40, VolumeType="gp3", TagSpecifications=cache_tags
    )["VolumeId"]
    other_stack = ec2.create_volume(
        AvailabilityZone=ZONE, Size=40, VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": TAG, "Value": "another"}, {"Key": "tgiops:role", "Value": "model-cache"}]}],
    )["VolumeId"]  # fmt: skip
    busy = ec2.create_volume(
        AvailabilityZone=ZONE, Size=40, VolumeType="gp3", TagSpecifications=cache_tags
    )["VolumeId"]
    elsewhere = launch(aws)
    ec2.attach_volume(VolumeId=busy, InstanceId=elsewhere, Device="/dev/sdg")

    mine = launch(aws)
    made = attach_on(aws, mine)
    assert made.action == "create"
    assert made.volume_id not in {untagged, other_zone, other_stack, busy}
    for vid in (untagged, other_zone, other_stack):
        assert volume(aws, vid)["State"] == "available" and not volume(aws, vid)["Attachments"]
    assert volume(aws, busy)["Attachments"][0]["InstanceId"] == elsewhere


def test_down_deletes_the_tagged_cache_and_leaves_untagged_and_in_use_volumes(aws, capsys, state):
    put_secret(aws)
    code, _made, err = run(capsys, up_args(aws))
    assert code == 0, err
    ec2 = aws.client("ec2")
    [instance] = [
        i["InstanceId"]
        for i in aws.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[f"tgiops-{STACK}"]
        )["AutoScalingGroups"][0]["Instances"]
    ]
    cache = attach_on(aws, instance)  # the group's instance booted and made its cache
    zone = cache.zone
    untagged = ec2.create_volume(AvailabilityZone=zone, Size=8, VolumeType="gp3")["VolumeId"]
    outsider = launch(aws, zone)
    in_use = ec2.create_volume(
        AvailabilityZone=zone, Size=8, VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": TAG, "Value": STACK}, {"Key": "tgiops:role", "Value": "model-cache"}]}],
    )["VolumeId"]  # fmt: skip
    ec2.attach_volume(VolumeId=in_use, InstanceId=outsider, Device="/dev/sdg")

    # `stacks` and a dry run list the cache volume.
    code, listed, err = run(capsys, ["stacks", "--json"])
    assert code == 0, err
    [row] = listed["stacks"]
    assert {v["volume_id"] for v in row["cache_volumes"]} == {cache.volume_id, in_use}
    code, plan, err = run(capsys, up_args(aws, "--dry-run"))
    assert code == 0, err
    assert {c["name"] for c in plan["changes"] if c["kind"] == "cache-volume"} == {
        cache.volume_id, in_use
    }  # fmt: skip

    code, gone, err = run(capsys, ["down", STACK, "--yes", "--json"])
    assert code == 0, err
    assert {"kind": "cache-volume", "id": cache.volume_id} in gone["deleted"]
    assert {"kind": "cache-volume", "id": in_use} in gone["kept"]
    left = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert cache.volume_id not in left
    assert untagged in left and in_use in left
    assert volume(aws, in_use)["Attachments"][0]["InstanceId"] == outsider


def test_down_keep_cache_keeps_it_and_a_new_up_of_the_name_reuses_it(aws, capsys, state):
    put_secret(aws)
    assert run(capsys, up_args(aws))[0] == 0
    [instance] = [
        i["InstanceId"]
        for i in aws.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[f"tgiops-{STACK}"]
        )["AutoScalingGroups"][0]["Instances"]
    ]
    cache = attach_on(aws, instance)
    code, gone, err = run(capsys, ["down", STACK, "--yes", "--json", "--keep-cache"])
    assert code == 0, err
    assert {"kind": "cache-volume", "id": cache.volume_id} in gone["kept"]
    assert volume(aws, cache.volume_id)["State"] == "available"
    code, listed, _ = run(capsys, ["stacks", "--json"])
    assert [(s["stack"], s["state"]) for s in listed["stacks"]] == [(STACK, "cache only")]
    later = attach_on(aws, launch(aws, cache.zone))
    assert (later.action, later.volume_id) == ("attach", cache.volume_id)


def test_the_launch_template_is_root_only_and_the_role_may_touch_only_the_stacks_cache(
    aws, capsys, state
):
    import base64

    put_secret(aws)
    assert run(capsys, up_args(aws, "--data-volume-gib", "30"))[0] == 0
    name = f"tgiops-{STACK}"
    data = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=name, Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    [root] = data["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/sda1" and root["Ebs"]["VolumeSize"] == st.CACHE_ROOT_GIB
    user_data = base64.b64decode(data["UserData"]).decode()
    assert f"attach-cache-volume --stack {STACK} --gib 30 --throughput " in user_data
    policy = aws.client("iam").get_role_policy(RoleName=name, PolicyName="tgiops-instance")
    by_sid = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    create = by_sid["CreateTheModelCacheVolume"]
    assert create["Condition"]["StringEquals"] == {
        "aws:RequestTag/tgiops:stack": STACK, "aws:RequestTag/tgiops:role": "model-cache"
    }  # fmt: skip
    assert (
        by_sid["TagTheModelCacheVolumeAtCreation"]["Condition"]["StringEquals"]["ec2:CreateAction"]
        == "CreateVolume"
    )
    assert by_sid["AttachTheModelCacheVolume"]["Condition"]["StringEquals"] == {
        "aws:ResourceTag/tgiops:stack": STACK, "aws:ResourceTag/tgiops:role": "model-cache"
    }  # fmt: skip
    assert by_sid["AttachToAnInstanceOfTheGroup"]["Condition"]["StringEquals"] == {
        "aws:ResourceTag/aws:autoscaling:groupName": name
    }
    assert json.dumps(policy["PolicyDocument"]).count("ec2:DeleteVolume") == 0

    # --no-cache-volume: the cache on the root volume again, nothing in the role about volumes.
    args = up_args(aws, "--no-cache-volume", "--data-volume-gib", "90")
    args[args.index(STACK)] = "plain"
    code, _made, err = run(capsys, args)
    assert code == 0, err
    data = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName="tgiops-plain", Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 90
    assert "attach-cache-volume" not in base64.b64decode(data["UserData"]).decode()
    plain = aws.client("iam").get_role_policy(RoleName="tgiops-plain", PolicyName="tgiops-instance")
    assert "ec2:CreateVolume" not in json.dumps(plain["PolicyDocument"])


def test_an_instance_that_loses_the_race_for_a_volume_looks_again_and_makes_its_own(
    aws, monkeypatch
):
    from aws_answers import AnsweringRelay, query_error

    ec2 = aws.client("ec2")
    free = ec2.create_volume(
        AvailabilityZone=ZONE, Size=40, VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": TAG, "Value": STACK}, {"Key": "tgiops:role", "Value": "model-cache"}]}],
    )["VolumeId"]  # fmt: skip
    rival, mine = launch(aws), launch(aws)
    raced: list[str] = []

    def answer(operation: str, body: bytes):
        if operation == "AttachVolume" and not raced:
            # The rival instance of the zone attaches the volume between our look and attach.
            ec2.attach_volume(VolumeId=free, InstanceId=rival, Device="/dev/sdf")
            raced.append(free)
            return query_error("VolumeInUse", f"{free} is already attached to an instance")
        return None

    with AnsweringRelay(aws.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        made = attach_on(aws, mine)
    assert raced == [free]
    assert relay.operations().count("AttachVolume") == 2
    assert made.action == "create" and made.volume_id != free
    assert volume(aws, free)["Attachments"][0]["InstanceId"] == rival  # the rival's, untouched
    assert volume(aws, made.volume_id)["Attachments"][0]["InstanceId"] == mine
