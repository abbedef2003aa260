"""EC2 instances and Auto Scaling groups as deploy targets: lookups, tags, open ingress."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tgiops.core.errors import AWSError, TargetNotFoundError
from tgiops.edges.aws.base import AwsBase, client_error_code, client_error_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ec2Instance:
    instance_id: str
    instance_type: str
    lifecycle: str  # "spot" | "on-demand" (| "scheduled" | "capacity-block", as EC2 reports)
    state: str
    availability_zone: str
    public_ip: str | None
    private_ip: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    launch_time: str | None = None

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")

    @property
    def is_spot(self) -> bool:
        return self.lifecycle == "spot"


def _instance_from_api(raw: Mapping[str, Any]) -> Ec2Instance:
    launch = raw.get("LaunchTime")
    return Ec2Instance(
        instance_id=raw["InstanceId"],
        instance_type=raw.get("InstanceType", ""),
        # EC2 omits InstanceLifecycle for on-demand instances.
        lifecycle=raw.get("InstanceLifecycle") or "on-demand",
        state=raw.get("State", {}).get("Name", "unknown"),
        availability_zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        public_ip=raw.get("PublicIpAddress"),
        private_ip=raw.get("PrivateIpAddress"),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        launch_time=launch.isoformat() if isinstance(launch, datetime) else launch,
    )


class InstanceCalls(AwsBase):
    """The EC2 instance and Auto Scaling group calls of ``Aws``."""

    def find_instances(
        self,
        *,
        instance_ids: Iterable[str] = (),
        name_tag: str | None = None,
        asg_name: str | None = None,
        tag_filters: Mapping[str, str] | None = None,
        states: Iterable[str] = ("running",),
    ) -> list[Ec2Instance]:
        """Instances matching every given criterion, oldest launch first.

        ``asg_name`` means the group's InService instances. Nothing found -> TargetNotFoundError.
        """
        ids = list(instance_ids)
        wanted_states = list(states)
        described = []
        if ids:
            described.append("id " + ", ".join(ids))
        if name_tag is not None:
            described.append(f"Name tag {name_tag!r}")
        for key, value in (tag_filters or {}).items():
            described.append(f"tag {key}={value!r}")
        if asg_name is not None:
            described.append(f"Auto Scaling group {asg_name!r}")
            in_service = self._asg_in_service_ids(asg_name)
            ids = [i for i in ids if i in in_service] if ids else in_service
            if not ids:
                raise TargetNotFoundError(
                    f"no InService instance of Auto Scaling group {asg_name!r} matches "
                    f"{', '.join(described)} in {self.region}."
                )
        filters = []
        if wanted_states:
            filters.append({"Name": "instance-state-name", "Values": wanted_states})
        if name_tag is not None:
            filters.append({"Name": "tag:Name", "Values": [name_tag]})
        for key, value in (tag_filters or {}).items():
            filters.append({"Name": f"tag:{key}", "Values": [value]})
        params: dict[str, Any] = {"Filters": filters}
        if ids:
            params["InstanceIds"] = ids
        query = " and ".join(described) or "any instance"
        found: list[Ec2Instance] = []
        next_token: str | None = None
        while True:
            page_params = dict(params, NextToken=next_token) if next_token else params
            try:
                page = self.call(
                    "ec2",
                    "describe_instances",
                    what=f"looking up instances ({query})",
                    iam_action="ec2:DescribeInstances",
                    **page_params,
                )
            except AWSError as exc:
                if client_error_code(exc).startswith("InvalidInstanceID"):
                    raise TargetNotFoundError(
                        f"instance {', '.join(ids)} does not exist in {self.region} "
                        f"({client_error_message(exc)}). Check the id and --region."
                    ) from exc
                raise
            for reservation in page.get("Reservations", []):
                found.extend(_instance_from_api(raw) for raw in reservation.get("Instances", []))
            next_token = page.get("NextToken")
            if not next_token:
                break
        if not found:
            state_text = "/".join(wanted_states) if wanted_states else "any-state"
            raise TargetNotFoundError(
                f"no {state_text} instance matches {query} in {self.region}. Check --region and "
                "the target (`aws ec2 describe-instances` lists them), or start the instance."
            )
        found.sort(key=lambda i: (i.launch_time or "", i.instance_id))
        log.debug("found %d instance(s) for %s", len(found), query)
        return found

    def _asg_in_service_ids(self, asg_name: str) -> list[str]:
        response = self.call(
            "autoscaling",
            "describe_auto_scaling_groups",
            what=f"looking up Auto Scaling group {asg_name!r}",
            iam_action="autoscaling:DescribeAutoScalingGroups",
            AutoScalingGroupNames=[asg_name],
        )
        groups = response.get("AutoScalingGroups", [])
        if not groups:
            raise TargetNotFoundError(
                f"Auto Scaling group {asg_name!r} not found in {self.region}. Check the name and "
                "--region (`aws autoscaling describe-auto-scaling-groups`)."
            )
        group = groups[0]
        instances = group.get("Instances", [])
        in_service = [i["InstanceId"] for i in instances if i.get("LifecycleState") == "InService"]
        if not in_service:
            states = ", ".join(f"{i['InstanceId']}: {i.get('LifecycleState')}" for i in instances)
            raise TargetNotFoundError(
                f"Auto Scaling group {asg_name!r} has no InService instance (desired capacity "
                f"{group.get('DesiredCapacity')}; {states or 'no instances'}). Wait for it to "
                "scale out, or raise its desired capacity."
            )
        return in_service

    def tag_instance(self, instance_id: str, tags: Mapping[str, str]) -> None:
        self.call(
            "ec2",
            "create_tags",
            what=f"tagging instance {instance_id}",
            iam_action="ec2:CreateTags",
            Resources=[instance_id],
            Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )

    def untag_instance(self, instance_id: str, keys: Sequence[str]) -> None:
        self.call(
            "ec2",
            "delete_tags",
            what=f"removing tags from instance {instance_id}",
            iam_action="ec2:DeleteTags",
            Resources=[instance_id],
            Tags=[{"Key": key} for key in keys],
        )

    def world_open_ingress(
        self, instance_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, int, int]]]:
        """instance id -> (group id, from port, to port) of every inbound rule of its security
        groups that is open to 0.0.0.0/0 or ::/0 (all protocols count as ports 0-65535)."""
        if not instance_ids:
            return {}
        reservations = self.call(
            "ec2",
            "describe_instances",
            what="looking up security groups",
            iam_action="ec2:DescribeInstances",
            InstanceIds=list(instance_ids),
        ).get("Reservations", [])
        groups_of = {
            inst["InstanceId"]: [g["GroupId"] for g in inst.get("SecurityGroups", [])]
            for r in reservations
            for inst in r.get("Instances", [])
        }
        group_ids = sorted({g for groups in groups_of.values() for g in groups})
        open_rules: dict[str, list[tuple[str, int, int]]] = {}
        if group_ids:
            described = self.call(
                "ec2",
                "describe_security_groups",
                what="reading security group rules",
                iam_action="ec2:DescribeSecurityGroups",
                GroupIds=group_ids,
            ).get("SecurityGroups", [])
            for group in described:
                for perm in group.get("IpPermissions", []):
                    world = any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", []))
                    world |= any(r.get("CidrIpv6") == "::/0" for r in perm.get("Ipv6Ranges", []))
                    if not world:
                        continue
                    if perm.get("IpProtocol") == "-1":
                        low, high = 0, 65535
                    else:
                        low, high = perm.get("FromPort", 0), perm.get("ToPort", 65535)
                    open_rules.setdefault(group["GroupId"], []).append(
                        (group["GroupId"], low, high)
                    )
        return {
            iid: [rule for g in groups for rule in open_rules.get(g, [])]
            for iid, groups in groups_of.items()
        }
