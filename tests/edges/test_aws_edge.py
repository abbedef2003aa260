"""The AWS edge against moto's server over HTTP (AWS_ENDPOINT_URL), never real AWS."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

import boto3
import pytest

from tgiops.core.errors import AWSError, SecretError, TargetNotFoundError
from tgiops.edges.aws.base import AwsSettings
from tgiops.edges.aws.client import Aws

if TYPE_CHECKING:  # fixtures come from tests/edges/conftest.py
    from collections.abc import Callable

    from conftest import Moto

AMI = "ami-12345678"
PLANTED = "hf_PLANTEDtokenDoNotLeak0123456789abcdef"


def make_aws() -> Aws:
    return Aws(AwsSettings())


def run_instance(
    instance_type: str = "g5.12xlarge",
    *,
    name: str | None = None,
    spot: bool = False,
    tags: dict[str, str] | None = None,
) -> str:
    all_tags = dict(tags or {})
    if name is not None:
        all_tags["Name"] = name
    params: dict = {
        "ImageId": AMI,
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": instance_type,
        "Placement": {"AvailabilityZone": "us-east-1b"},
    }
    if all_tags:
        params["TagSpecifications"] = [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
            }
        ]
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot"}
    return boto3.client("ec2").run_instances(**params)["Instances"][0]["InstanceId"]


def full_text(exc: BaseException) -> str:
    """The exception as a traceback would print it, chained causes included."""
    return "".join(traceback.format_exception(exc))


# -- Secrets Manager --------------------------------------------------------------------------


def test_put_get_exists_secret(moto: Moto) -> None:
    edge = make_aws()
    assert edge.secret_exists("tgiops/hf-token") is False
    assert edge.put_secret("tgiops/hf-token", "hf_first") == "created"
    assert edge.secret_exists("tgiops/hf-token") is True
    assert edge.get_secret("tgiops/hf-token") == "hf_first"
    assert edge.put_secret("tgiops/hf-token", "hf_second") == "updated"
    assert edge.get_secret("tgiops/hf-token") == "hf_second"


def test_missing_secret_says_how_to_create_it(moto: Moto) -> None:
    with pytest.raises(SecretError) as info:
        make_aws().get_secret("tgiops/absent")
    assert str(info.value) == (
        "secret tgiops/absent not found in us-east-1; create it with "
        "`tgiops secret set --secret-name tgiops/absent`."
    )


def test_secret_scheduled_for_deletion(moto: Moto) -> None:
    edge = make_aws()
    edge.put_secret("tgiops/old", "hf_old")
    boto3.client("secretsmanager").delete_secret(SecretId="tgiops/old")
    assert edge.secret_exists("tgiops/old") is False
    with pytest.raises(SecretError, match="restore-secret --secret-id tgiops/old"):
        edge.get_secret("tgiops/old")


def test_binary_secret_is_decoded(moto: Moto) -> None:
    boto3.client("secretsmanager").create_secret(Name="bin", SecretBinary=b"hf_binary")
    assert make_aws().get_secret("bin") == "hf_binary"


def test_planted_token_never_reaches_messages_or_logs(
    moto: Moto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    free_port: Callable[[], int],
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs request and response bodies at DEBUG
    # The CLI quiets botocore's loggers when a test ran it in-process: open them up again.
    for name in ("botocore", "botocore.parsers", "botocore.endpoint"):
        caplog.set_level(logging.DEBUG, logger=name)
    edge = make_aws()
    assert edge.put_secret("tgiops/planted", PLANTED) == "created"
    assert edge.put_secret("tgiops/planted", PLANTED) == "updated"
    assert edge.get_secret("tgiops/planted") == PLANTED
    failures: list[BaseException] = []

    # Failing paths: unreachable endpoint (botocore logs the request before sending it) ...
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # refused stays refused: skip the backoff
    for call in (lambda e: e.put_secret("tgiops/planted", PLANTED), lambda e: e.get_secret("x")):
        with pytest.raises(SecretError, match="cannot reach the AWS endpoint") as info:
            call(make_aws())
        failures.append(info.value)
    # ... and no credentials at all.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no IMDS probe off loopback
    with pytest.raises(SecretError, match="credentials") as info:
        make_aws().put_secret("tgiops/planted", PLANTED)
    failures.append(info.value)

    for failure in failures:
        assert PLANTED not in full_text(failure)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert PLANTED not in logged and PLANTED not in caplog.text
    # The redaction really happened: botocore did try to log a body carrying the value.
    assert "redacted: it carried a Secrets Manager value" in logged


# -- EC2 targets ------------------------------------------------------------------------------


def test_find_by_instance_id(moto: Moto) -> None:
    wanted = run_instance("g5.12xlarge", name="llm", tags={"team": "ml"})
    run_instance("g4dn.xlarge", name="other")
    [found] = make_aws().find_instances(instance_ids=[wanted])
    assert found.instance_id == wanted
    assert found.instance_type == "g5.12xlarge"
    assert found.lifecycle == "on-demand" and not found.is_spot
    assert found.state == "running"
    assert found.availability_zone == "us-east-1b"
    assert found.tags == {"Name": "llm", "team": "ml"} and found.name == "llm"
    assert found.private_ip and found.launch_time


def test_find_by_name_tag_and_tag_filters(moto: Moto) -> None:
    first = run_instance(name="llm", tags={"env": "prod"})
    second = run_instance(name="llm", tags={"env": "dev"})
    run_instance(name="not-llm", tags={"env": "prod"})
    edge = make_aws()
    assert {i.instance_id for i in edge.find_instances(name_tag="llm")} == {first, second}
    found = edge.find_instances(name_tag="llm", tag_filters={"env": "prod"})
    assert [i.instance_id for i in found] == [first]


def test_spot_lifecycle_is_detected(moto: Moto) -> None:
    spot = run_instance(name="spotty", spot=True)
    [found] = make_aws().find_instances(name_tag="spotty")
    assert found.instance_id == spot
    assert found.lifecycle == "spot" and found.is_spot


def test_no_match_names_the_query_and_the_fix(moto: Moto) -> None:
    run_instance(name="llm")
    with pytest.raises(TargetNotFoundError) as info:
        make_aws().find_instances(name_tag="missing")
    text = str(info.value)
    assert "Name tag 'missing'" in text and "us-east-1" in text and "--region" in text


def test_stopped_instances_are_not_targets_by_default(moto: Moto) -> None:
    instance = run_instance(name="sleepy")
    boto3.client("ec2").stop_instances(InstanceIds=[instance])
    with pytest.raises(TargetNotFoundError, match="no running instance"):
        make_aws().find_instances(name_tag="sleepy")
    [found] = make_aws().find_instances(name_tag="sleepy", states=("stopped", "stopping"))
    assert found.instance_id == instance


def test_unknown_instance_id(moto: Moto) -> None:
    with pytest.raises(TargetNotFoundError, match="i-0123456789abcdef0 does not exist"):
        make_aws().find_instances(instance_ids=["i-0123456789abcdef0"])


def make_asg(name: str, desired: int) -> None:
    boto3.client("ec2").create_launch_template(
        LaunchTemplateName=f"{name}-lt",
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "g5.12xlarge"},
    )
    boto3.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{name}-lt", "Version": "$Latest"},
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=desired,
        AvailabilityZones=["us-east-1a"],
    )


def test_find_by_auto_scaling_group(moto: Moto) -> None:
    make_asg("llm-asg", desired=2)
    run_instance(name="outside-the-group")
    group = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["llm-asg"]
    )["AutoScalingGroups"][0]
    members = {i["InstanceId"] for i in group["Instances"]}
    assert len(members) == 2
    found = make_aws().find_instances(asg_name="llm-asg")
    assert {i.instance_id for i in found} == members
    assert all(i.instance_type == "g5.12xlarge" for i in found)


def test_empty_and_unknown_auto_scaling_groups(moto: Moto) -> None:
    make_asg("empty-asg", desired=0)
    with pytest.raises(TargetNotFoundError, match="no InService instance"):
        make_aws().find_instances(asg_name="empty-asg")
    with pytest.raises(TargetNotFoundError, match="'nope' not found in us-east-1"):
        make_aws().find_instances(asg_name="nope")


def test_tag_instance(moto: Moto) -> None:
    instance = run_instance(name="llm")
    edge = make_aws()
    edge.tag_instance(instance, {"tgiops:model": "llama-3.1-8b", "tgiops:engine": "tgi-3.3.7"})
    [found] = edge.find_instances(tag_filters={"tgiops:model": "llama-3.1-8b"})
    assert found.instance_id == instance
    assert found.tags["tgiops:engine"] == "tgi-3.3.7"


def test_elastic_ip_associate_and_describe(moto: Moto) -> None:
    instance = run_instance(name="llm")
    allocation = boto3.client("ec2").allocate_address(Domain="vpc")
    edge = make_aws()
    before = edge.describe_elastic_ip(allocation["AllocationId"])
    assert before["instance_id"] is None
    assert before["public_ip"] == allocation["PublicIp"]
    association = edge.associate_elastic_ip(allocation["AllocationId"], instance)
    after = edge.describe_elastic_ip(allocation["AllocationId"])
    assert after == {
        "allocation_id": allocation["AllocationId"],
        "public_ip": allocation["PublicIp"],
        "instance_id": instance,
        "association_id": association,
    }
    # A relaunched spot instance takes the address over (re-association allowed).
    replacement = run_instance(name="llm")
    edge.associate_elastic_ip(allocation["AllocationId"], replacement)
    assert edge.describe_elastic_ip(allocation["AllocationId"])["instance_id"] == replacement


def test_unknown_elastic_ip(moto: Moto) -> None:
    with pytest.raises(TargetNotFoundError, match="eipalloc-00000000 not found"):
        make_aws().describe_elastic_ip("eipalloc-00000000")


def test_spot_price(moto: Moto) -> None:
    price = make_aws().spot_price("g5.12xlarge", "us-east-1a")
    # moto answers a constant tiny price (docs/testbed.md): check the parsing, not the number.
    history = boto3.client("ec2").describe_spot_price_history(
        InstanceTypes=["g5.12xlarge"], AvailabilityZone="us-east-1a"
    )["SpotPriceHistory"]
    assert isinstance(price, float)
    assert price == float(history[0]["SpotPrice"])


# -- configuration failures -------------------------------------------------------------------


def test_no_region_is_an_actionable_error(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(AWSError, match="no AWS region configured: pass --region"):
        make_aws().find_instances(name_tag="x")
    assert Aws(AwsSettings(region="eu-west-1")).region == "eu-west-1"


def test_unknown_profile(moto: Moto) -> None:
    with pytest.raises(AWSError, match="profile 'ghost' not found"):
        Aws(AwsSettings(profile="ghost")).find_instances(name_tag="x")


def test_unreachable_endpoint(
    moto: Moto, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int]
) -> None:
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(AWSError, match="cannot reach the AWS endpoint") as info:
        make_aws().find_instances(name_tag="x")
    assert f"127.0.0.1:{port}" in str(info.value)


def test_world_open_ingress_finds_rules_open_to_everyone(moto: Moto) -> None:
    ec2 = boto3.client("ec2")
    open_group = ec2.create_security_group(GroupName="wide-open", Description="t")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=open_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
            },
        ],
    )
    instance = boto3.client("ec2").run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        SecurityGroupIds=[open_group],
    )["Instances"][0]["InstanceId"]
    rules = make_aws().world_open_ingress([instance])
    assert rules[instance] == [(open_group, 22, 22)]  # the 10.0.0.0/8 rule is not world-open
