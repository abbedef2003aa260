"""The model cache volume of a stack (tgiops.core.stack.choose_cache_volume; docs/aws.md §3.5):
find, create and attach the tagged gp3 volume (`tgiops cache-volume`, up, down)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tgiops.core.errors import AWSError
from tgiops.core.stack import CacheVolume
from tgiops.edges.aws.base import tag_filter, tag_list, tag_map
from tgiops.edges.aws.stack_base import StackCalls


class CacheVolumeCalls(StackCalls):
    """The cache volume calls of ``StackEdge``."""

    @staticmethod
    def _cache_volume(raw: Mapping[str, Any]) -> CacheVolume:
        created = raw.get("CreateTime")
        return CacheVolume(
            volume_id=str(raw["VolumeId"]),
            zone=str(raw.get("AvailabilityZone", "")),
            state=str(raw.get("State", "")),
            tags=tag_map(raw.get("Tags")),
            attached_to=tuple(
                str(a["InstanceId"])
                for a in raw.get("Attachments") or []
                if a.get("State") in ("attaching", "attached", "busy") and a.get("InstanceId")
            ),
            size_gib=int(raw.get("Size", 0)),
            created=created.isoformat() if isinstance(created, datetime) else str(created or ""),
        )

    def find_cache_volumes(self, stack: str | None, role_tag: str, role: str) -> list[CacheVolume]:
        """The volumes tagged ``tgiops:stack=stack`` (any stack's with None) and
        ``role_tag=role``, in every state but deleted, as core.stack.CacheVolume."""
        filters = [*tag_filter(self.tag, stack), {"Name": f"tag:{role_tag}", "Values": [role]}]
        found: list[CacheVolume] = []
        token: str | None = None
        for _ in range(100):
            page = self._ec2(
                "describe_volumes",
                "looking up the stack's model cache volumes",
                "DescribeVolumes",
                Filters=filters,
                **({"NextToken": token} if token else {}),
            )
            found.extend(self._cache_volume(v) for v in page.get("Volumes", []))
            token = page.get("NextToken")
            if not token:
                break
        return [v for v in found if v.state not in ("deleting", "deleted")]

    def cache_volume(self, volume_id: str) -> CacheVolume | None:
        try:
            vols = self._ec2(
                "describe_volumes",
                f"looking up volume {volume_id}",
                "DescribeVolumes",
                VolumeIds=[volume_id],
            ).get("Volumes", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidVolume"):
                return None
            raise
        return self._cache_volume(vols[0]) if vols else None

    def create_cache_volume(
        self, zone: str, gib: int, throughput: int, tags: Mapping[str, str]
    ) -> str:
        """An encrypted gp3 volume, tagged in the same call (the role may tag only then)."""
        return str(
            self._ec2(
                "create_volume",
                f"creating the model cache volume in {zone}",
                "CreateVolume",
                AvailabilityZone=zone,
                Size=gib,
                VolumeType="gp3",
                Iops=3000,
                Throughput=throughput,
                Encrypted=True,
                TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
            )["VolumeId"]
        )

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        """AttachVolume; AWSError with the code (VolumeInUse, IncorrectState) when another
        instance took it first."""
        self._ec2(
            "attach_volume",
            f"attaching volume {volume_id} to {instance_id}",
            "AttachVolume",
            VolumeId=volume_id,
            InstanceId=instance_id,
            Device=device,
        )
