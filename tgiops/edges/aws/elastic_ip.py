"""Elastic IPs: pointing a spot fleet's address at its live instance (reconcile, fleet)."""

from __future__ import annotations

from tgiops.core.errors import AWSError, TargetNotFoundError
from tgiops.edges.aws.base import AwsBase, client_error_code


class ElasticIpCalls(AwsBase):
    """The Elastic IP calls of ``Aws``."""

    def associate_elastic_ip(self, allocation_id: str, instance_id: str) -> str:
        """Point the Elastic IP at the instance (re-association allowed); the association id."""
        response = self.call(
            "ec2",
            "associate_address",
            what=f"associating Elastic IP {allocation_id} with {instance_id}",
            iam_action="ec2:AssociateAddress",
            AllocationId=allocation_id,
            InstanceId=instance_id,
            AllowReassociation=True,
        )
        return str(response["AssociationId"])

    def describe_elastic_ip(self, allocation_id: str) -> dict[str, str | None]:
        """{"allocation_id", "public_ip", "instance_id", "association_id"} (None when free)."""
        try:
            response = self.call(
                "ec2",
                "describe_addresses",
                what=f"looking up Elastic IP {allocation_id}",
                iam_action="ec2:DescribeAddresses",
                AllocationIds=[allocation_id],
            )
        except AWSError as exc:
            if client_error_code(exc).startswith("InvalidAllocationID"):
                raise TargetNotFoundError(
                    f"Elastic IP allocation {allocation_id} not found in {self.region}. Check the "
                    "id (eipalloc-...) and --region."
                ) from exc
            raise
        addresses = response.get("Addresses", [])
        if not addresses:
            raise TargetNotFoundError(
                f"Elastic IP allocation {allocation_id} not found in {self.region}."
            )
        address = addresses[0]
        return {
            "allocation_id": allocation_id,
            # Normalised: an unassociated address has no (or an empty) InstanceId.
            "public_ip": address.get("PublicIp") or None,
            "instance_id": address.get("InstanceId") or None,
            "association_id": address.get("AssociationId") or None,
        }
