"""`tgiops up` / `down` / `stacks` against moto's server over HTTP (the ``aws`` fixture), with
the answers moto cannot give injected by a relay in front of it (tests/edges/aws_answers.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_answers import AnsweringRelay, json_answer, query_answer, query_error

from tgiops.cli.main import main

STACK = "llama"
TAG = "tgiops:stack"
MODEL = "llama-2-7b"
SECRET = "tgiops/hf-token"


def moto_ami(aws: Any) -> str:
    """A registered image standing for the Deep Learning Base GPU AMI (moto boots nothing)."""
    ec2 = aws.client("ec2")
    mine = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["dlami"]}])
    if mine["Images"]:
        return mine["Images"][0]["ImageId"]
    return ec2.register_image(Name="dlami", RootDeviceName="/dev/sda1")["ImageId"]


def put_secret(aws: Any) -> None:
    aws.client("secretsmanager").create_secret(
        Name=SECRET,
        SecretString="hf_notarealtoken",
        Tags=[{"Key": "tgiops:managed", "Value": "true"}],
    )


def up_args(aws: Any, *extra: str, model: str = MODEL) -> list[str]:
    return [
        "up", model, "--name", STACK, "--secret-name", SECRET, "--preinstalled",
        "--ami", moto_ami(aws), "--yes", "--no-wait", "--json", *extra,
    ]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict, str]:
    code = main(argv)
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip()]
    return code, json.loads("\n".join(lines)) if lines else {}, out.err


def actions(result: dict) -> dict[str, str]:
    return {c["kind"]: c["action"] for c in result["changes"]}


def tagged_everywhere(aws: Any, stack: str = STACK) -> dict[str, list[str]]:
    """Every resource type the stack uses, listed by its tag (IAM: by name, then its tag)."""
    ec2, asg, iam = aws.client("ec2"), aws.client("autoscaling"), aws.client("iam")
    f = [{"Name": f"tag:{TAG}", "Values": [stack]}]
    mine = {"Key": TAG, "Value": stack}
    sgs = ec2.describe_security_groups(Filters=f)["SecurityGroups"]
    lts = ec2.describe_launch_templates(Filters=f)["LaunchTemplates"]
    volumes = ec2.describe_volumes(Filters=f)["Volumes"]
    groups = asg.describe_auto_scaling_groups(Filters=f)["AutoScalingGroups"]
    roles = [
        r["RoleName"]
        for r in iam.list_roles()["Roles"]
        if mine in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]
    ]
    profiles = [
        p["InstanceProfileName"]
        for p in iam.list_instance_profiles()["InstanceProfiles"]
        if mine in (p.get("Tags") or [])
    ]
    elb = aws.client("elbv2")
    elb_arns = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    elb_arns += [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]]
    elb_tagged = [
        d["ResourceArn"]
        for d in (elb.describe_tags(ResourceArns=elb_arns)["TagDescriptions"] if elb_arns else [])
        if mine in d.get("Tags", [])
    ]
    found = {
        "load-balancers-and-target-groups": elb_tagged,
        "security-groups": [g["GroupId"] for g in sgs],
        "addresses": [a["AllocationId"] for a in ec2.describe_addresses(Filters=f)["Addresses"]],
        "launch-templates": [t["LaunchTemplateId"] for t in lts],
        "key-pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=f)["KeyPairs"]],
        "volumes": [v["VolumeId"] for v in volumes if v["State"] != "deleted"],
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=f)["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ],
        "groups": [g["AutoScalingGroupName"] for g in groups],
        "roles": roles,
        "instance-profiles": profiles,
    }
    return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class PrivateMoto:
    endpoint_url: str
    region: str = "us-east-1"

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture
def aws(moto: Any) -> PrivateMoto:
    """This module's own moto server (tests/edges/conftest.py ``moto``: reset per test, reached
    through AWS_ENDPOINT_URL), not the testbed's shared one: other sessions reset that one."""
    return PrivateMoto(moto.endpoint_url, moto.region)


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "tgiops"


def test_up_refuses_without_the_token_secret_and_creates_nothing(aws, capsys, state):
    code, result, err = run(capsys, up_args(aws))
    assert code == 2, err
    assert "tgiops secret set" in result["error"]["message"]
    assert tagged_everywhere(aws) == {}


def test_dry_run_lists_every_resource_with_types_and_prices_and_creates_nothing(aws, capsys, state):
    put_secret(aws)
    code, result, err = run(capsys, up_args(aws, "--dry-run"))
    assert code == 0, err
    assert actions(result) == {
        "key-pair": "create",
        "security-group": "create",
        "elastic-ip": "create",
        "iam-role": "create",
        "instance-profile": "create",
        "launch-template": "create",
        "autoscaling-group": "create",
    }
    types = [t["instance_type"] for t in result["instance_types"]]
    assert "g5.xlarge" in types and "g4dn.xlarge" in types
    group = next(c for c in result["changes"] if c["kind"] == "autoscaling-group")
    assert "price-capacity-optimized" in group["detail"] and "g5.xlarge ($" in group["detail"]
    assert result["applied"] is False
    assert tagged_everywhere(aws) == {}


def test_up_creates_the_stack_twice_changes_nothing_and_down_removes_it_all(aws, capsys, state):
    put_secret(aws)
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    untagged = ec2.create_security_group(GroupName="not-ours", Description="x", VpcId=vpc)[
        "GroupId"
    ]

    code, first, err = run(capsys, up_args(aws, "--ssh-cidr", "203.0.113.7/32"))
    assert code == 0, err
    assert first["applied"] is True
    name = f"tgiops-{STACK}"
    # The launch template: IMDSv2 required, encrypted gp3, the user data publishing the host key.
    lt = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])
    data = lt["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])
    import base64

    user_data = base64.b64decode(data["UserData"]).decode()
    assert "tgiops-bootstrap.service" in user_data and "tgiops:ssh-host-key" in user_data
    # The group: spot, price-capacity-optimized, capacity rebalance, every default subnet.
    group = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]
    dist = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert dist["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert dist["OnDemandPercentageAboveBaseCapacity"] == 0
    assert group["CapacityRebalance"] is True
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    assert set(group["VPCZoneIdentifier"].split(",")) == {s["SubnetId"] for s in subnets["Subnets"]}
    # SSH only from the given CIDR; the role's policy is userdata --iam-policy's plus the host key.
    sg = ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG}", "Values": [STACK]}])
    ranges = [r["CidrIp"] for p in sg["SecurityGroups"][0]["IpPermissions"] for r in p["IpRanges"]]
    assert ranges == ["203.0.113.7/32"]
    policy = aws.client("iam").get_role_policy(RoleName=name, PolicyName="tgiops-instance")
    sids = [s["Sid"] for s in policy["PolicyDocument"]["Statement"]]
    assert sids == [
        "ReadTheTokenSecret",
        "PointTheElasticIp",
        "AtAnInstanceOfTheGroup",
        "OptionalSeeWhereTheElasticIpPoints",
        "CreateTheModelCacheVolume",
        "TagTheModelCacheVolumeAtCreation",
        "AttachTheModelCacheVolume",
        "AttachToAnInstanceOfTheGroup",
        "FindTheModelCacheVolume",
        "PublishTheSshHostKey",
    ]
    assert (state / "keys" / f"{name}.pem").stat().st_mode & 0o777 == 0o600

    code, second, err = run(capsys, up_args(aws, "--ssh-cidr", "203.0.113.7/32"))
    assert code == 0, err
    assert set(actions(second).values()) == {"keep"}, second["changes"]
    assert second["applied"] is False

    code, listed, err = run(capsys, ["stacks", "--json"])
    assert code == 0, err
    assert [s["stack"] for s in listed["stacks"]] == [STACK]

    assert tagged_everywhere(aws) != {}
    code, gone, err = run(capsys, ["down", STACK, "--yes", "--json"])
    assert code == 0, err
    assert {d["kind"] for d in gone["deleted"]} >= {
        "autoscaling-group", "elastic-ip", "launch-template", "instance-profile", "iam-role",
        "security-group", "key-pair",
    }  # fmt: skip
    assert tagged_everywhere(aws) == {}
    # Untagged things stay; the token secret stays.
    assert ec2.describe_security_groups(GroupIds=[untagged])["SecurityGroups"]
    assert aws.client("secretsmanager").describe_secret(SecretId=SECRET)["Name"] == SECRET
    assert not (state / "keys" / f"{name}.pem").exists()

    code, again, err = run(capsys, ["down", STACK, "--yes", "--json"])
    assert code == 0, err
    assert again["deleted"] == [] and again["changed"] is False


def test_another_model_makes_a_new_launch_template_version_and_an_instance_refresh(
    aws, capsys, state, monkeypatch
):
    put_secret(aws)
    assert run(capsys, up_args(aws))[0] == 0

    code, plan, err = run(capsys, up_args(aws, "--dry-run", model="gemma-2-9b"))
    assert code == 0, err
    assert actions(plan)["launch-template"] == "update"
    assert actions(plan)["instance-refresh"] == "create"

    # moto does not implement StartInstanceRefresh: the relay answers it, moto does the rest.
    def answer(operation: str, body: bytes):
        if operation == "StartInstanceRefresh":
            return query_answer(
                "StartInstanceRefresh", "<InstanceRefreshId>ir-1</InstanceRefreshId>"
            )
        return None

    with AnsweringRelay(aws.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        code, _, err = run(capsys, up_args(aws, model="gemma-2-9b"))
    assert code == 0, err
    assert "StartInstanceRefresh" in relay.operations()
    versions = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=f"tgiops-{STACK}"
    )
    assert sorted(v["VersionNumber"] for v in versions["LaunchTemplateVersions"]) == [1, 2]
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    code, third, err = run(capsys, up_args(aws, model="gemma-2-9b"))
    assert set(actions(third).values()) == {"keep"}
    assert run(capsys, ["down", STACK, "--yes", "--json"])[0] == 0
    assert tagged_everywhere(aws) == {}


def test_a_failure_halfway_leaves_a_stack_a_second_up_completes_and_down_removes(
    aws, capsys, state, monkeypatch
):
    put_secret(aws)

    def answer(operation: str, body: bytes):
        if operation == "CreateAutoScalingGroup":
            return query_error("ValidationError", "injected by the test relay")
        return None

    with AnsweringRelay(aws.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        code, result, err = run(capsys, up_args(aws))
    assert code == 1, err
    assert f"tgiops down {STACK}" in result["error"]["message"]
    assert "CreateAutoScalingGroup" in relay.operations()
    built = tagged_everywhere(aws)
    assert "launch-templates" in built and "groups" not in built

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    code, second, err = run(capsys, up_args(aws))
    assert code == 0, err
    assert actions(second)["autoscaling-group"] == "create"
    assert actions(second)["launch-template"] == "keep"
    assert "groups" in tagged_everywhere(aws)
    assert run(capsys, ["down", STACK, "--yes", "--json"])[0] == 0
    assert tagged_everywhere(aws) == {}


def test_a_quota_too_small_is_refused_naming_it_and_how_to_raise_it(
    aws, capsys, state, monkeypatch
):
    put_secret(aws)

    def answer(operation: str, body: bytes):
        if operation == "ServiceQuotasV20190624.GetServiceQuota":
            code = json.loads(body)["QuotaCode"]
            return json_answer(
                200, {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": 0.0}}
            )
        return None

    with AnsweringRelay(aws.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        code, result, err = run(capsys, up_args(aws, "--instance-types", "g5.xlarge"))
    assert code == 2, err
    message = result["error"]["message"]
    assert "All G and VT Spot Instance Requests" in message and "L-3819A6DF" in message
    assert "request-service-quota-increase" in message
    assert tagged_everywhere(aws) == {}


def test_an_unreadable_quota_is_said_and_up_goes_on(aws, capsys, state):
    # moto serves Service Quotas only for "vpc": the EC2 quota read fails, as it may in AWS.
    put_secret(aws)
    code, result, err = run(
        capsys,
        up_args(aws, "--dry-run", "--on-demand", "--instance-types", "p4d.24xlarge,g5.xlarge"),
    )
    assert code == 0, err
    assert {q["code"] for q in result["quotas"]} == {"L-DB2E81BA", "L-417A185B"}
    assert all(q["value"] is None for q in result["quotas"])
    assert any("could not read the quota" in w for w in result["warnings"])


def failed_activity(group: str) -> str:
    return (
        "<Activities><member><ActivityId>a-1</ActivityId>"
        f"<AutoScalingGroupName>{group}</AutoScalingGroupName>"
        "<Cause>launching</Cause><StartTime>2026-12-04T12:00:00Z</StartTime>"
        "<StatusCode>Failed</StatusCode><Progress>100</Progress>"
        "<StatusMessage>Could not launch Spot Instances. InsufficientInstanceCapacity - There is "
        "no Spot capacity available that matches your request. Launching EC2 instance failed."
        "</StatusMessage></member></Activities>"
    )


def test_a_failed_scaling_activity_is_reported_in_words_while_waiting(
    aws, capsys, state, monkeypatch
):
    put_secret(aws)
    assert run(capsys, up_args(aws))[0] == 0

    def answer(operation: str, body: bytes):
        if operation == "DescribeScalingActivities":
            return query_answer("DescribeScalingActivities", failed_activity(f"tgiops-{STACK}"))
        return None

    waiting = [a for a in up_args(aws) if a != "--no-wait"] + ["--wait-timeout", "0.01"]
    with AnsweringRelay(aws.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        code, result, err = run(capsys, waiting)
    # The Elastic IP never moved (no instance got healthy): exit 1, the cause in words.
    assert code == 1, err
    message = result["error"]["message"]
    assert "no spare capacity" in message and "(InsufficientInstanceCapacity)" in message
    assert "DescribeScalingActivities" in relay.operations()


def test_up_waits_for_the_elastic_ip_on_a_healthy_instance_and_pins_its_host_key(
    aws, capsys, state, tmp_path
):
    import subprocess

    from tgiops.commands import up as up_cmd
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws

    put_secret(aws)
    assert run(capsys, up_args(aws))[0] == 0
    ec2 = aws.client("ec2")
    instance = aws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"tgiops-{STACK}"]
    )["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True
    )
    host_key = " ".join((tmp_path / "hostkey.pub").read_text().split()[:2])
    address = ec2.describe_addresses(Filters=[{"Name": f"tag:{TAG}", "Values": [STACK]}])[
        "Addresses"
    ][0]
    polls: list[float] = []

    def instance_boots(seconds: float) -> None:
        # What the instance does once its endpoint is healthy (user data + bootstrap): publish
        # its host key, then point the Elastic IP at itself. Until then, `up` keeps waiting.
        polls.append(seconds)
        ec2.create_tags(
            Resources=[instance], Tags=[{"Key": "tgiops:ssh-host-key", "Value": host_key}]
        )
        ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance)

    from tgiops.cli.args import deploy_request_from
    from tgiops.cli.main import build_parser

    args = build_parser().parse_args(up_args(aws))
    options = up_cmd.UpOptions(
        stack=STACK, request=deploy_request_from(args), install={"preinstalled": True},
        ami=args.ami, wait=True, wait_s=60,
    )  # fmt: skip
    known_hosts = tmp_path / "kh" / "known_hosts"
    result = up_cmd.up(
        Aws(AwsSettings()), options, confirm=lambda r: True, sleep=instance_boots,
        known_hosts=known_hosts,
    )  # fmt: skip
    assert len(polls) == 1  # one wait: not ready before the address moved
    assert result.healthy is True
    assert result.endpoint == f"{address['PublicIp']}:8080"
    assert result.instances[0]["host_key_pinned"] is True
    pinned = known_hosts.read_text().splitlines()
    assert len(pinned) == 1 and pinned[0].endswith(host_key)
    assert instance in pinned[0].split()[0].split(",")
    assert address["PublicIp"] in pinned[0].split()[0].split(",")
    assert known_hosts.stat().st_mode & 0o777 == 0o600


def test_without_yes_and_without_a_terminal_up_and_down_refuse_and_change_nothing(
    aws, capsys, state
):
    put_secret(aws)
    asking = [a for a in up_args(aws) if a != "--yes"]
    code, result, err = run(capsys, asking)
    assert code == 2, err
    assert "--yes" in result["error"]["message"]
    assert tagged_everywhere(aws) == {}
    assert run(capsys, up_args(aws))[0] == 0
    code, result, err = run(capsys, ["down", STACK, "--json"])
    assert code == 2 and "--yes" in result["error"]["message"]
    assert "groups" in tagged_everywhere(aws)
    assert run(capsys, ["down", STACK, "--yes", "--json"])[0] == 0


def test_the_plan_in_text_names_resources_types_and_prices(aws, capsys, state):
    put_secret(aws)
    code = main([a for a in up_args(aws, "--dry-run") if a != "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert "create  launch-template" in out and "create  autoscaling-group" in out
    assert "g5.xlarge ($" in out and "/h for one instance" in out


def test_alb_stack_admits_the_engine_port_from_the_alb_only_and_down_removes_it(aws, capsys, state):
    put_secret(aws)
    code, plan, err = run(capsys, up_args(aws, "--alb", "--no-eip", "--dry-run"))
    assert code == 0, err
    assert {"alb-security-group", "target-group", "load-balancer", "listener"} <= set(actions(plan))
    code, _, err = run(capsys, up_args(aws, "--alb", "--no-eip"))
    assert code == 0, err
    ec2, elb = aws.client("ec2"), aws.client("elbv2")
    name = f"tgiops-{STACK}"
    groups = {
        g["GroupName"]: g
        for g in ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG}", "Values": [STACK]}])[
            "SecurityGroups"
        ]
    }
    alb_sg = groups[f"{name}-alb"]["GroupId"]
    engine = [p for p in groups[name]["IpPermissions"] if p.get("FromPort") == 8080]
    assert engine and engine[0]["IpRanges"] == []
    assert [u["GroupId"] for u in engine[0]["UserIdGroupPairs"]] == [alb_sg]
    tg = elb.describe_target_groups(Names=[name])["TargetGroups"][0]
    assert tg["HealthCheckPath"] == "/health" and tg["Port"] == 8080
    lb = elb.describe_load_balancers(Names=[name])["LoadBalancers"][0]
    assert lb["SecurityGroups"] == [alb_sg]
    listener = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"][0]
    assert listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    group = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]
    assert group["TargetGroupARNs"] == [tg["TargetGroupArn"]]
    # The unit binds where the ALB reaches it (user data: --public in the record).
    import base64

    data = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    assert '"public": true' in base64.b64decode(data["UserData"]).decode()

    code, second, err = run(capsys, up_args(aws, "--alb", "--no-eip"))
    assert code == 0 and set(actions(second).values()) == {"keep"}, second["changes"]

    code, gone, err = run(capsys, ["down", STACK, "--yes", "--json"])
    assert code == 0, err
    assert {"load-balancer", "target-group"} <= {d["kind"] for d in gone["deleted"]}
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert tagged_everywhere(aws) == {}


def test_efs_puts_the_model_cache_on_the_file_system_in_the_user_data(aws, capsys, state):
    import base64

    put_secret(aws)
    assert run(capsys, up_args(aws, "--efs", "fs-0abc1234"))[0] == 0
    data = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=f"tgiops-{STACK}", Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "fs-0abc1234.efs." in base64.b64decode(data["UserData"]).decode()
    code, result, _ = run(capsys, up_args(aws, "--efs", "not-an-fs"))
    assert code == 2 and "--efs" in result["error"]["message"]


def test_up_with_vllm_ranks_with_vllms_planner_and_its_user_data_deploys_vllm(aws, capsys, state):
    import base64

    from tgiops.commands.bootstrap import config_from_userdata
    from tgiops.core.engines import engine_for
    from tgiops.core.engines.vllm import DEFAULT_VLLM_VERSION

    put_secret(aws)
    code, plan, err = run(capsys, up_args(aws, "--engine", "vllm", "--dry-run"))
    assert code == 0, err
    types = [t["instance_type"] for t in plan["instance_types"]]
    assert "g5.xlarge" in types and "g4dn.12xlarge" in types  # T4: compute capability 7.5
    assert "g4dn.xlarge" not in types  # one T4 leaves vLLM ~1.7k KV tokens (TGI's plan fits)
    assert not [t for t in types if t.startswith("p3.")]  # V100: vLLM needs 7.5
    assert tagged_everywhere(aws) == {}

    code, _made, err = run(capsys, up_args(aws, "--engine", "vllm"))
    assert code == 0, err
    data = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateName=f"tgiops-{STACK}", Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    config = config_from_userdata(base64.b64decode(data["UserData"]).decode(), origin="test")
    assert config is not None
    [record] = config.records
    assert (record.spec.engine, record.spec.engine_version) == ("vllm", DEFAULT_VLLM_VERSION)
    # The image: vLLM's, its CUDA variant picked at boot from the instance's driver.
    engine = engine_for(record.spec.engine, record.spec.engine_version)
    assert engine.image == f"vllm/vllm-openai:v{DEFAULT_VLLM_VERSION}"
