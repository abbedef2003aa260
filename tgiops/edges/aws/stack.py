"""``StackEdge``: every AWS call of `tgiops up` / `tgiops down` (tgiops.core.stack): identity,
network, AMI, security groups, Elastic IPs, key pairs and volumes here; IAM, the Auto Scaling
group, the load balancer and the cache volume from their modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tgiops.core.errors import AWSError, InputError, TargetNotFoundError
from tgiops.edges.aws.asg import AutoScalingCalls
from tgiops.edges.aws.base import client_error_message, tag_filter, tag_list
from tgiops.edges.aws.cache_volumes import CacheVolumeCalls
from tgiops.edges.aws.elb import LoadBalancerCalls
from tgiops.edges.aws.iam import IamCalls
from tgiops.edges.aws.instances import Ec2Instance


class StackEdge(IamCalls, AutoScalingCalls, LoadBalancerCalls, CacheVolumeCalls):
    """Every AWS call of a stack (``StackCalls``: over ``Aws.call``, tagged tgiops:stack)."""

    def subnets(self, ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(subnet id, zone, VPC id) of ``ids``, or of the default VPC's default subnets."""
        params: dict[str, Any] = (
            {"SubnetIds": list(ids)}
            if ids
            else {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]}
        )
        try:
            found = self._ec2(
                "describe_subnets", "looking up subnets", "DescribeSubnets", **params
            ).get("Subnets", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidSubnetID"):
                raise InputError(f"--subnets: {client_error_message(exc)}") from exc
            raise
        return sorted((s["SubnetId"], s["AvailabilityZone"], s["VpcId"]) for s in found)

    def ssm_parameter(self, name: str) -> str:
        return str(
            self.aws.call(
                "ssm",
                "get_parameter",
                what=f"reading the public SSM parameter {name}",
                iam_action="ssm:GetParameter",
                messages={
                    "ParameterNotFound": f"the SSM parameter {name} does not exist in "
                    f"{self.aws.region}; give an AMI with --ami"
                },
                Name=name,
            )["Parameter"]["Value"]
        )

    def image_root_device(self, ami: str) -> str:
        try:
            images = self._ec2(
                "describe_images", f"looking up AMI {ami}", "DescribeImages", ImageIds=[ami]
            ).get("Images", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidAMIID"):
                images = []
            else:
                raise
        if not images:
            raise InputError(f"AMI {ami} does not exist in {self.aws.region} (check --ami)")
        return str(images[0].get("RootDeviceName") or "/dev/sda1")

    def service_quota(self, code: str) -> float:
        response = self.aws.call(
            "service-quotas",
            "get_service_quota",
            what=f"reading the EC2 quota {code}",
            iam_action="servicequotas:GetServiceQuota",
            ServiceCode="ec2",
            QuotaCode=code,
        )
        return float(response["Quota"]["Value"])

    # security group ----------------------------------------------------------------------------

    def find_security_groups(self, stack: str | None) -> list[dict[str, Any]]:
        groups = self._ec2(
            "describe_security_groups",
            "looking up the stack's security groups",
            "DescribeSecurityGroups",
            Filters=tag_filter(self.tag, stack),
        ).get("SecurityGroups", [])
        return [dict(g) for g in groups]

    @staticmethod
    def ingress_cidrs(group: Mapping[str, Any], port: int) -> list[str]:
        return sorted(
            r["CidrIp"]
            for p in group.get("IpPermissions", [])
            if p.get("FromPort") == port and p.get("ToPort") == port
            for r in p.get("IpRanges", [])
        )

    def create_security_group(self, name: str, vpc_id: str, tags: Mapping[str, str]) -> str:
        return str(
            self._ec2(
                "create_security_group",
                f"creating security group {name}",
                "CreateSecurityGroup",
                GroupName=name,
                Description=f"{name}: created by tgiops up",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}],
            )["GroupId"]
        )

    def set_ingress(
        self, group_id: str, port: int, add: Sequence[str], remove: Sequence[str]
    ) -> None:
        def perms(cidrs: Sequence[str]) -> list[dict[str, Any]]:
            return [
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": c, "Description": "tgiops up"} for c in cidrs],
                }
            ]

        if add:
            self._ec2(
                "authorize_security_group_ingress",
                f"opening port {port} on {group_id}",
                "AuthorizeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=perms(add),
            )
        if remove:
            self._ec2(
                "revoke_security_group_ingress",
                f"closing port {port} on {group_id}",
                "RevokeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=perms(remove),
            )

    def delete_security_group(self, group_id: str) -> None:
        self._ec2(
            "delete_security_group",
            f"deleting security group {group_id}",
            "DeleteSecurityGroup",
            GroupId=group_id,
        )

    # Elastic IP, key pair, volumes ----------------------------------------------------------

    def find_addresses(self, stack: str | None) -> list[dict[str, Any]]:
        return [
            dict(a)
            for a in self._ec2(
                "describe_addresses",
                "looking up the stack's Elastic IPs",
                "DescribeAddresses",
                Filters=tag_filter(self.tag, stack),
            ).get("Addresses", [])
        ]

    def allocate_address(self, tags: Mapping[str, str]) -> tuple[str, str]:
        r = self._ec2(
            "allocate_address",
            "allocating an Elastic IP",
            "AllocateAddress",
            Domain="vpc",
            TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tag_list(tags)}],
        )
        return str(r["AllocationId"]), str(r.get("PublicIp", ""))

    def release_address(self, address: Mapping[str, Any]) -> None:
        if address.get("AssociationId"):
            self._ec2(
                "disassociate_address",
                f"detaching Elastic IP {address['AllocationId']}",
                "DisassociateAddress",
                AssociationId=address["AssociationId"],
            )
        self._ec2(
            "release_address",
            f"releasing Elastic IP {address['AllocationId']}",
            "ReleaseAddress",
            AllocationId=address["AllocationId"],
        )

    def find_key_pairs(self, stack: str) -> list[str]:
        pairs = self._ec2(
            "describe_key_pairs",
            "looking up the stack's key pair",
            "DescribeKeyPairs",
            Filters=tag_filter(self.tag, stack),
        ).get("KeyPairs", [])
        return sorted(str(k["KeyName"]) for k in pairs)

    def create_key_pair(self, name: str, tags: Mapping[str, str]) -> str:
        """The private key (PEM): kept only by the caller, never logged."""
        r = self._ec2(
            "create_key_pair",
            f"creating key pair {name}",
            "CreateKeyPair",
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(tags)}],
        )
        return str(r["KeyMaterial"])

    def delete_key_pair(self, name: str) -> None:
        self._ec2("delete_key_pair", f"deleting key pair {name}", "DeleteKeyPair", KeyName=name)

    def find_volumes(self, stack: str) -> list[str]:
        vols = self._ec2(
            "describe_volumes",
            "looking up the stack's volumes",
            "DescribeVolumes",
            Filters=[*tag_filter(self.tag, stack), {"Name": "status", "Values": ["available"]}],
        ).get("Volumes", [])
        return sorted(str(v["VolumeId"]) for v in vols)

    def delete_volume(self, volume_id: str) -> None:
        self._ec2(
            "delete_volume", f"deleting volume {volume_id}", "DeleteVolume", VolumeId=volume_id
        )

    def live_instances(self, stack: str) -> list[Ec2Instance]:
        try:
            return self.aws.find_instances(
                tag_filters={self.tag: stack},
                states=("pending", "running", "stopping", "stopped", "shutting-down"),
            )
        except TargetNotFoundError:
            return []

    def admit_group(self, group_id: str, port: int, source_group: str) -> None:
        """Ingress on ``port`` from the members of ``source_group`` only."""
        self._ec2(
            "authorize_security_group_ingress",
            f"admitting port {port} from {source_group} on {group_id}",
            "AuthorizeSecurityGroupIngress",
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "UserIdGroupPairs": [{"GroupId": source_group}],
                }
            ],
        )

    @staticmethod
    def admits_group(group: Mapping[str, Any], port: int, source_group: str) -> bool:
        return any(
            p.get("FromPort") == port
            and any(u.get("GroupId") == source_group for u in p.get("UserIdGroupPairs", []))
            for p in group.get("IpPermissions", [])
        )
