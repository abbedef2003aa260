"""A `tgiops up` stack, planned (pure: no I/O, no clock, no environment).

A stack is every AWS resource `tgiops up MODEL --name NAME` creates, each tagged
``tgiops:stack=NAME`` (the ownership rule: `down` deletes only what carries the tag):

    security group -> Elastic IP -> IAM role + instance profile -> launch template -> ASG

This module says what the stack should be (``Desired``), compares it with what the AWS edge
found (``Observed``) and lists the changes (``plan_changes``) that `up` shows before acting
(``--dry-run`` and the prompt) and then applies. It also holds the pure rules around it: the
Service Quotas a group needs (codes: tgiops/docs/aws.md §3.2),
scaling-activity failures in words, the instance role's extra statement for publishing the SSH
host key, and pinning that key in a known_hosts file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tgiops.core.errors import InputError
from tgiops.core.layout import TGIOPS_BIN, UNIT_PREFIX

STACK_TAG = "tgiops:stack"
HOST_KEY_TAG = "tgiops:ssh-host-key"  # the instance publishes its ed25519 host key here
DIGEST_PREFIX = "tgiops sha256:"  # a launch template version's description: what it holds
# ELBv2 names (load balancer, target group) take 32 characters: "tgiops-" + 25.
STACK_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,24}")
# The AWS Deep Learning Base GPU AMI (Ubuntu 22.04, NVIDIA driver, docker, NVIDIA Container
# Toolkit): its public SSM parameter as AWS's DLAMI release notes name it
# (docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-x86-base-gpu-ami-ubuntu-22-04.html,
# "Query AMI-ID with SSM parameter").
DEFAULT_AMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
SSH_PORT = 22
ALB_PORT = 80  # the load balancer's listener (HTTP)
WORLD = "0.0.0.0/0"
ROOT_VOLUME_OS_GIB = 60  # the DLAMI's own root volume (OS, CUDA, docker images) before models
VOLUME_HEADROOM = 1.5  # room for a second revision during a model/version switch

# Service Quotas codes (vCPUs per region; spot separate from on-demand): docs/aws.md
# §3.2 (dstack's source and user notes). family letter -> (spot, on-demand).
QUOTAS: Mapping[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "G": (
        ("L-3819A6DF", "All G and VT Spot Instance Requests"),
        ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ),
    "P": (
        ("L-7212CCBC", "All P Spot Instance Requests"),
        ("L-417A185B", "Running On-Demand P instances"),
    ),
}

# Scaling-activity failures, in words (error codes: docs/aws.md §3.2).
_ACTIVITY_WORDS: tuple[tuple[str, str], ...] = (
    (
        "InsufficientInstanceCapacity",
        "AWS has no spare capacity for these instance types in these zones right now; the group "
        "keeps retrying. Add instance types (--instance-types), subnets in more zones, or try "
        "another region",
    ),
    (
        "MaxSpotInstanceCountExceeded",
        "the region's spot vCPU quota is used up; raise 'All G and VT Spot Instance Requests' "
        "(or the P one) in Service Quotas, or use --on-demand",
    ),
    (
        "VcpuLimitExceeded",
        "the region's on-demand vCPU quota is used up; raise 'Running On-Demand G and VT "
        "instances' (or the P one) in Service Quotas, or use --spot",
    ),
    ("InstanceLimitExceeded", "the account's instance limit is reached; raise it or free one"),
    ("InvalidAMIID", "the AMI does not exist in this region or is not shared with the account"),
    ("capacity-oversubscribed", "spot capacity is oversubscribed; the group keeps retrying"),
    ("price-too-low", "the spot price is above the maximum price; the group keeps retrying"),
)


def check_stack_name(name: str) -> str:
    if not STACK_NAME_RE.fullmatch(name or ""):
        raise InputError(
            f"--name {name!r}: give a stack name of lowercase letters, digits and '-', starting "
            "with a letter, at most 25 characters (e.g. --name llama8b)"
        )
    return name


def resource_name(stack: str) -> str:
    """One name for the stack's security group, role, profile, launch template and group."""
    return f"{UNIT_PREFIX}{stack}"


def stack_tags(stack: str, model: str | None = None) -> dict[str, str]:
    tags = {STACK_TAG: stack, "Name": resource_name(stack)}
    if model:
        tags["tgiops:model"] = model
    return tags


def quota_family(instance_type: str) -> str | None:
    """ "G" for the G and VT families, "P" for P; None for a family without a GPU quota here."""
    family = instance_type.split(".", 1)[0]
    if family.startswith(("g", "vt")):
        return "G"
    if family.startswith("p"):
        return "P"
    return None


@dataclass(frozen=True)
class TypeChoice:
    """One instance type of the group, with what it costs (never guessed: None = unknown)."""

    name: str
    vcpus: int
    on_demand_usd_per_hour: float | None
    spot_usd_per_hour: float | None


@dataclass(frozen=True)
class QuotaNeed:
    code: str
    name: str
    vcpus: int  # what the group needs at most: its largest type, times the group size


def quota_needs(types: Sequence[TypeChoice], *, spot: bool, on_demand_base: int) -> list[QuotaNeed]:
    """The quotas one instance of the group draws from: spot for the spot part, on-demand for
    ``--on-demand`` or the on-demand base. The group may launch any of its types, so the need
    is the largest type's vCPUs per family."""
    needs: dict[str, QuotaNeed] = {}
    for t in types:
        family = quota_family(t.name)
        if family is None:
            continue
        spot_quota, od_quota = QUOTAS[family]
        wanted = [spot_quota] if spot and on_demand_base == 0 else [od_quota]
        for code, name in wanted:
            seen = needs.get(code)
            if seen is None or t.vcpus > seen.vcpus:
                needs[code] = QuotaNeed(code, name, t.vcpus)
    return sorted(needs.values(), key=lambda n: n.code)


def quota_refusal(need: QuotaNeed, value: float, region: str) -> str | None:
    """A refusal naming the quota and how to raise it, or None when it suffices."""
    if value >= need.vcpus:
        return None
    return (
        f"the quota '{need.name}' ({need.code}) in {region} is {value:g} vCPUs; the group needs "
        f"{need.vcpus}. Raise it: `aws service-quotas request-service-quota-increase "
        f"--service-code ec2 --quota-code {need.code} --desired-value {need.vcpus} --region "
        f"{region}` (or the Service Quotas console), then run `tgiops up` again"
    )


def activity_in_words(status_code: str, message: str) -> str | None:
    """A failed scaling activity's cause in words, or None when it did not fail."""
    if status_code not in ("Failed", "Cancelled") and not any(
        code in message for code, _ in _ACTIVITY_WORDS
    ):
        return None
    for code, words in _ACTIVITY_WORDS:
        if code in message:
            return f"{words} ({code})"
    return f"the group could not launch an instance: {message or status_code}"


def data_volume_gib(checkpoint_bytes: float) -> int:
    """The root volume (the model cache lives there): the AMI's own share plus the checkpoint
    with room for a second revision (a model switch downloads before the old one goes)."""
    return int(ROOT_VOLUME_OS_GIB + cache_volume_gib(checkpoint_bytes))


def cache_volume_gib(checkpoint_bytes: float) -> int:
    """The model cache volume: the checkpoint with room for a second revision."""
    return math.ceil(checkpoint_bytes * VOLUME_HEADROOM / 2**30)


# -- the model cache volume ----------------------------------------------------------------
# The model cache lives on an EBS volume of its own, outside the launch template: at boot the
# instance attaches the stack's available cache volume in its zone, or creates one, and it is
# never deleted on termination (a volume attached after launch keeps DeleteOnTermination=false:
# tgiops/docs/aws.md §3.5), so the group's replacement in that zone starts from the cache.

ROLE_TAG = "tgiops:role"
CACHE_ROLE = "model-cache"
# The name AttachVolume gives it; Nitro instances expose it as an NVMe device whose serial is
# the volume id (docs/aws.md §3.5), Xen ones (p3) as /dev/xvdf.
CACHE_ATTACH_DEVICE = "/dev/sdf"
CACHE_ROOT_GIB = ROOT_VOLUME_OS_GIB  # the root volume then holds the OS and images only


@dataclass(frozen=True)
class CacheVolume:
    """One EBS volume as DescribeVolumes gives it (the fields the choice needs)."""

    volume_id: str
    zone: str
    state: str  # creating | available | in-use | deleting | deleted | error
    tags: Mapping[str, str]
    attached_to: tuple[str, ...] = ()  # instance ids of its attachments
    size_gib: int = 0
    created: str = ""  # CreateTime, ISO: the oldest cache of a zone is chosen first

    def is_cache_of(self, stack: str) -> bool:
        return self.tags.get(STACK_TAG) == stack and self.tags.get(ROLE_TAG) == CACHE_ROLE

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "zone": self.zone,
            "state": self.state,
            "size_gib": self.size_gib,
            "attached_to": list(self.attached_to),
        }


@dataclass(frozen=True)
class CacheChoice:
    """What the booting instance does: use the volume already attached to it (a reboot or a
    rerun), attach an available one, or create one (``volume`` None)."""

    action: str  # "attached" | "attach" | "create"
    volume: CacheVolume | None = None


def cache_volume_tags(stack: str, model: str | None = None) -> dict[str, str]:
    return {**stack_tags(stack, model), ROLE_TAG: CACHE_ROLE}


def choose_cache_volume(
    volumes: Iterable[CacheVolume], *, stack: str, zone: str, instance_id: str
) -> CacheChoice:
    """The stack's cache volume for an instance in ``zone``: one attached to this instance
    already; else the oldest ``available`` one of the stack in that zone; else create one.
    A volume without both tags, in another zone, or attached to another instance is never
    chosen (EBS attaches only within a zone; another instance's cache is that instance's)."""
    ours = [v for v in volumes if v.is_cache_of(stack)]
    for v in ours:
        if instance_id in v.attached_to and v.state == "in-use":
            return CacheChoice("attached", v)
    free = sorted(
        (v for v in ours if v.zone == zone and v.state == "available" and not v.attached_to),
        key=lambda v: (v.created, v.volume_id),
    )
    return CacheChoice("attach", free[0]) if free else CacheChoice("create")


def cache_device_paths(volume_id: str, attach_device: str = CACHE_ATTACH_DEVICE) -> list[str]:
    """Where the attached volume appears, most specific first: on Nitro the NVMe device whose
    serial is the volume id without its hyphen (udev's by-id link: model_serial, spaces as
    '_'), on Xen the xvd name of the attachment's device (docs/aws.md §3.5)."""
    letter = attach_device.rsplit("/", 1)[-1].removeprefix("sd").removeprefix("xvd")
    return [
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", ""),
        f"/dev/xvd{letter}",
        attach_device,
    ]


def cache_volume_statements(
    stack: str, asg_name: str | None, region: str | None, account: str | None
) -> list[dict[str, Any]]:
    """The instance role's statements for the cache volume (docs/aws.md §3.5): create a volume
    only with the stack's cache tags in the request; tag only during that CreateVolume; attach
    only the stack's cache volumes, only to the group's instances; describe (no resource-level
    permission exists for Describe actions)."""
    r, a = region or "REGION", account or "ACCOUNT_ID"
    volumes = f"arn:aws:ec2:{r}:{a}:volume/*"
    cache_tags = {f"aws:RequestTag/{STACK_TAG}": stack, f"aws:RequestTag/{ROLE_TAG}": CACHE_ROLE}
    return [
        {
            "Sid": "CreateTheModelCacheVolume",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": volumes,
            "Condition": {"StringEquals": cache_tags},
        },
        {
            "Sid": "TagTheModelCacheVolumeAtCreation",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": volumes,
            "Condition": {"StringEquals": {"ec2:CreateAction": "CreateVolume", **cache_tags}},
        },
        {
            "Sid": "AttachTheModelCacheVolume",
            "Effect": "Allow",
            "Action": "ec2:AttachVolume",
            "Resource": volumes,
            "Condition": {
                "StringEquals": {
                    f"aws:ResourceTag/{STACK_TAG}": stack,
                    f"aws:ResourceTag/{ROLE_TAG}": CACHE_ROLE,
                }
            },
        },
        {
            "Sid": "AttachToAnInstanceOfTheGroup",
            "Effect": "Allow",
            "Action": "ec2:AttachVolume",
            "Resource": f"arn:aws:ec2:{r}:{a}:instance/*",
            "Condition": {
                "StringEquals": {
                    "aws:ResourceTag/aws:autoscaling:groupName": asg_name or "ASG_NAME"
                }
            },
        },
        {
            "Sid": "FindTheModelCacheVolume",
            "Effect": "Allow",
            "Action": "ec2:DescribeVolumes",
            "Resource": "*",
        },
    ]


def host_key_statement(asg_name: str, region: str | None, account: str | None) -> dict[str, Any]:
    """What `up` adds to `userdata --iam-policy`'s policy: an instance of the group may set
    its own host-key tag, and no other tag (aws:TagKeys), on instances of the group only."""
    r, a = region or "REGION", account or "ACCOUNT_ID"
    return {
        "Sid": "PublishTheSshHostKey",
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": f"arn:aws:ec2:{r}:{a}:instance/*",
        "Condition": {
            "StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": asg_name},
            "ForAllValues:StringEquals": {"aws:TagKeys": [HOST_KEY_TAG]},
        },
    }


def with_host_key_statement(
    policy: Mapping[str, Any], asg_name: str, region: str | None, account: str | None
) -> dict[str, Any]:
    statements = list(policy.get("Statement", []))
    statements.append(host_key_statement(asg_name, region, account))
    return {"Version": policy.get("Version", "2012-10-17"), "Statement": statements}


ASSUME_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def check_ssh_cidr(cidr: str | None, public_ssh: bool) -> list[str]:
    """The SSH ingress CIDRs (none unless asked); a world-open one only with --public-ssh."""
    if cidr is None:
        if public_ssh:
            raise InputError("--public-ssh goes with --ssh-cidr 0.0.0.0/0")
        return []
    import ipaddress

    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise InputError(f"--ssh-cidr {cidr!r}: give a CIDR like 203.0.113.7/32") from None
    if net.version != 4:
        raise InputError(f"--ssh-cidr {cidr!r}: give an IPv4 CIDR")
    if net.prefixlen == 0 and not public_ssh:
        raise InputError(
            f"--ssh-cidr {cidr} opens SSH to the whole internet; give your own address "
            "(e.g. 203.0.113.7/32), or add --public-ssh if you really mean it"
        )
    return [str(net)]


@dataclass(frozen=True)
class Desired:
    """What the stack should be."""

    stack: str
    model: str
    region: str
    vpc_id: str
    subnets: tuple[str, ...]
    zones: tuple[str, ...]
    types: tuple[TypeChoice, ...]  # cheapest first
    spot: bool
    on_demand_base: int
    ssh_cidrs: tuple[str, ...]
    engine_port: int
    ami: str
    root_device: str
    volume_gib: int
    volume_throughput: int
    key_name: str | None
    create_key: bool
    eip: bool
    user_data: str
    policy: Mapping[str, Any]
    alb: bool = False
    health_path: str = "/health"
    # The model cache on its own volume (attached at boot, kept across replacements); False:
    # on the root volume (or on EFS, which the user data mounts).
    cache_volume: bool = False

    @property
    def name(self) -> str:
        return resource_name(self.stack)

    @property
    def alb_security_group_name(self) -> str:
        return f"{self.name}-alb"

    def launch_template_data(self, security_group_id: str, profile_arn: str | None) -> dict:
        data: dict[str, Any] = {
            "ImageId": self.ami,
            "IamInstanceProfile": {"Name": self.name},
            "SecurityGroupIds": [security_group_id],
            # IMDSv2 only; instance tags readable from IMDS (bootstrap reads its record there).
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,
                "InstanceMetadataTags": "enabled",
            },
            "BlockDeviceMappings": [
                {
                    "DeviceName": self.root_device,
                    "Ebs": {
                        # Root only: with a cache volume, the volume size and throughput are
                        # the cache's (the user data passes them to the boot-time attach).
                        "VolumeSize": CACHE_ROOT_GIB if self.cache_volume else self.volume_gib,
                        "VolumeType": "gp3",
                        "Throughput": 125 if self.cache_volume else self.volume_throughput,
                        "Iops": 3000,
                        "Encrypted": True,
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "UserData": base64.b64encode(self.user_data.encode()).decode(),
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": _tag_list(stack_tags(self.stack, self.model))}
                for kind in ("instance", "volume")
            ],
        }
        if profile_arn:
            data["IamInstanceProfile"] = {"Arn": profile_arn}
        if self.key_name:
            data["KeyName"] = self.key_name
        return data

    def launch_template_digest(self) -> str:
        """What a launch template version holds, independent of resource ids: equal digests,
        nothing to roll (`up` twice changes nothing)."""
        text = json.dumps(self.launch_template_data("SG", None), sort_keys=True)
        return DIGEST_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:40]

    def group_settings(self) -> dict[str, Any]:
        """The Auto Scaling group's comparable settings."""
        return {
            "types": [t.name for t in self.types],
            "subnets": sorted(self.subnets),
            "on_demand_base": self.on_demand_base,
            "on_demand_percent": 0 if self.spot else 100,
            "capacity_rebalance": self.spot,
            "load_balanced": self.alb,
        }

    def usd_per_hour(self) -> float | None:
        """The cheapest type's price in the market the group uses (one instance)."""
        for t in self.types:
            price = (
                t.spot_usd_per_hour if self.spot and self.on_demand_base == 0 else None
            ) or t.on_demand_usd_per_hour
            if price is not None:
                return price
        return None


@dataclass(frozen=True)
class Observed:
    """What the AWS edge found for the stack (each None: absent)."""

    security_group_id: str | None = None
    ssh_cidrs: tuple[str, ...] = ()
    engine_from_alb: bool = False  # the engine port admits the ALB's security group
    alb_security_group_id: str | None = None
    load_balancer_arn: str | None = None
    load_balancer_dns: str | None = None
    target_group_arn: str | None = None
    listener_arn: str | None = None
    eip_allocation: str | None = None
    eip_address: str | None = None
    role: bool = False
    role_policy: Mapping[str, Any] | None = None
    instance_profile: bool = False
    profile_has_role: bool = False
    key_pair: bool = False
    launch_template_id: str | None = None
    launch_template_digest: str | None = None
    launch_template_version: int | None = None
    group: Mapping[str, Any] | None = None  # Desired.group_settings' shape
    group_instances: tuple[str, ...] = ()
    cache_volumes: tuple[CacheVolume, ...] = ()  # the stack's model cache volumes, any zone


@dataclass(frozen=True)
class Change:
    kind: str  # "security-group", "elastic-ip", "iam-role", ...
    name: str
    action: str  # "create" | "update" | "keep"
    detail: str = ""
    fields: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "action": self.action, "detail": self.detail}


def plan_changes(desired: Desired, observed: Observed) -> list[Change]:
    """Every resource of the stack, in creation order, with what `up` does to it."""
    name = desired.name
    changes: list[Change] = []

    def add(kind: str, present: bool, same: bool, detail: str, update_detail: str = "") -> None:
        action = "keep" if present and same else ("update" if present else "create")
        text = update_detail if action == "update" and update_detail else detail
        changes.append(Change(kind, name, action, text))

    if desired.create_key:
        add("key-pair", observed.key_pair, True, "private key kept 0600 in tgiops' state dir")
    if desired.alb:
        changes.append(
            Change(
                "alb-security-group",
                desired.alb_security_group_name,
                "keep" if observed.alb_security_group_id else "create",
                f"HTTP {ALB_PORT} from {WORLD} (the public endpoint)",
            )
        )
    ssh = ", ".join(desired.ssh_cidrs) or "none"
    engine = (
        f"; engine port {desired.engine_port} from the ALB's security group only"
        if desired.alb
        else ""
    )
    add(
        "security-group",
        observed.security_group_id is not None,
        set(observed.ssh_cidrs) == set(desired.ssh_cidrs)
        and (observed.engine_from_alb or not desired.alb),
        f"in {desired.vpc_id}; SSH from: {ssh}{engine}",
        f"SSH ingress {', '.join(observed.ssh_cidrs) or 'none'} -> {ssh}{engine}",
    )
    if desired.eip:
        add("elastic-ip", observed.eip_allocation is not None, True, "the endpoint's address")
    add(
        "iam-role",
        observed.role,
        observed.role_policy == desired.policy,
        f"instance role with {len(desired.policy.get('Statement', []))} policy statements",
        "the inline policy changes",
    )
    add(
        "instance-profile",
        observed.instance_profile,
        observed.profile_has_role,
        "holds the role",
        "attach the role",
    )
    same_lt = observed.launch_template_digest == desired.launch_template_digest()
    version = (observed.launch_template_version or 0) + 1
    volumes = (
        f"encrypted gp3 root {CACHE_ROOT_GIB} GiB; the model cache on its own encrypted gp3 "
        f"volume, {desired.volume_gib} GiB at {desired.volume_throughput} MiB/s, one per zone, "
        "attached at boot and kept across replacements"
        if desired.cache_volume
        else f"encrypted gp3 {desired.volume_gib} GiB at {desired.volume_throughput} MiB/s"
    )
    add(
        "launch-template",
        observed.launch_template_id is not None,
        same_lt,
        f"{desired.ami}, IMDSv2 required, {volumes}, user data for {desired.model}",
        f"new version {version} ({desired.model}, {desired.ami})",
    )
    for v in observed.cache_volumes:  # made by the instances, not by `up`: listed, kept
        changes.append(
            Change(
                "cache-volume",
                v.volume_id,
                "keep",
                f"{v.size_gib} GiB in {v.zone}, {v.state}"
                + (f" (attached to {', '.join(v.attached_to)})" if v.attached_to else ""),
            )
        )
    if desired.alb:
        add(
            "target-group",
            observed.target_group_arn is not None,
            True,
            f"HTTP {desired.engine_port}, health check {desired.health_path}",
        )
        add("load-balancer", observed.load_balancer_arn is not None, True, "internet-facing ALB")
        add("listener", observed.listener_arn is not None, True, f"HTTP {ALB_PORT} -> targets")
    market = (
        f"spot, price-capacity-optimized, capacity rebalance, on-demand base "
        f"{desired.on_demand_base}"
        if desired.spot
        else "on-demand"
    )
    types = ", ".join(_type_text(t, desired.spot) for t in desired.types)
    group_same = observed.group is not None and dict(observed.group) == desired.group_settings()
    add(
        "autoscaling-group",
        observed.group is not None,
        group_same,
        f"1 instance ({market}) in {', '.join(desired.zones)}; types: {types}",
        f"settings change; types: {types}",
    )
    if observed.group is not None and observed.launch_template_id is not None and not same_lt:
        changes.append(
            Change(
                "instance-refresh",
                name,
                "create",
                f"replace {len(observed.group_instances)} instance(s) with launch template "
                f"version {version}"
                + (
                    "; with one instance the endpoint is down while its replacement starts"
                    if len(observed.group_instances) < 2
                    else "; at least one instance stays in service"
                ),
            )
        )
    return changes


def _type_text(t: TypeChoice, spot: bool) -> str:
    price = t.spot_usd_per_hour if spot else t.on_demand_usd_per_hour
    return f"{t.name} (${price:.3f}/h)" if price is not None else f"{t.name} (price unknown)"


def pending(changes: Iterable[Change]) -> list[Change]:
    return [c for c in changes if c.action != "keep"]


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


# -- host keys -----------------------------------------------------------------------------

_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")


def parse_host_key(tag_value: str) -> str:
    """``TYPE BASE64`` from an instance's host-key tag; InputError when it is not one."""
    parts = (tag_value or "").split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise InputError(f"the instance's {HOST_KEY_TAG} tag is not an SSH public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"the instance's {HOST_KEY_TAG} tag is not base64") from None
    # The blob starts with its own key type (RFC 4253 §6.6): a mismatch is not a key.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != parts[0].encode():
        raise InputError(f"the instance's {HOST_KEY_TAG} tag does not match its key type")
    return f"{parts[0]} {parts[1]}"


def pin_host_key(known_hosts: str, names: Sequence[str], key: str) -> str:
    """known_hosts text with ``names`` pinned to ``key``: lines naming any of them go (a
    replacement instance behind the same Elastic IP has a new key, verified through AWS), one
    line for all of them is added; other lines stay as they were."""
    wanted = [n for n in dict.fromkeys(names) if n]
    kept: list[str] = []
    for line in known_hosts.splitlines():
        fields = line.split()
        hosts = fields[0].split(",") if fields and not line.startswith("#") else []
        if any(h in wanted for h in hosts):
            continue
        kept.append(line)
    if wanted:
        kept.append(f"{','.join(wanted)} {key}")
    return "\n".join(kept) + "\n"


HOST_KEY_SNIPPET = """
# tgiops up: publish this instance's SSH host key as its {tag} tag (instance role:
# ec2:CreateTags of that one key on the group's instances), so `tgiops` pins it instead of
# trusting the first connection. The bootstrap environment (AWS SDK settings) applies here too.
publish_host_key() (
  set -a; . /etc/tgiops/bootstrap.env; set +a
  imds=${{AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}}
  token=$(curl -sS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$imds/latest/api/token")
  iid=$(curl -sS -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/instance-id")
  reg=$(curl -sS -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/placement/region")
  key=$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)
  {python} - "$iid" "$reg" "$key" <<'TGIOPS_PY'
import sys, boto3
boto3.client("ec2", region_name=sys.argv[2]).create_tags(
    Resources=[sys.argv[1]], Tags=[{{"Key": "{tag}", "Value": sys.argv[3]}}])
TGIOPS_PY
)
publish_host_key || echo "tgiops user data: could not publish the SSH host key" >&2
"""


def with_host_key_publishing(user_data: str) -> str:
    return (
        user_data.rstrip("\n")
        + "\n"
        + HOST_KEY_SNIPPET.format(tag=HOST_KEY_TAG, python=TGIOPS_BIN.rsplit("/", 1)[0] + "/python")
    )
