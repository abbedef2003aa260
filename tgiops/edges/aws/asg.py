"""A stack's launch template and Auto Scaling group (instance refresh, scaling activities)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tgiops.edges.aws.base import tag_filter, tag_list
from tgiops.edges.aws.stack_base import StackCalls


class AutoScalingCalls(StackCalls):
    """The launch template and Auto Scaling calls of ``StackEdge``."""

    def find_launch_templates(self, stack: str) -> list[dict[str, Any]]:
        """[{"id", "name", "latest", "digest"}]: digest = the latest version's description."""
        found = self._ec2(
            "describe_launch_templates",
            "looking up the stack's launch template",
            "DescribeLaunchTemplates",
            Filters=tag_filter(self.tag, stack),
        ).get("LaunchTemplates", [])
        out = []
        for lt in found:
            versions = self._ec2(
                "describe_launch_template_versions",
                f"reading launch template {lt['LaunchTemplateName']}",
                "DescribeLaunchTemplateVersions",
                LaunchTemplateId=lt["LaunchTemplateId"],
                Versions=["$Latest"],
            ).get("LaunchTemplateVersions", [])
            latest = versions[0] if versions else {}
            out.append(
                {
                    "id": lt["LaunchTemplateId"],
                    "name": lt["LaunchTemplateName"],
                    "latest": int(latest.get("VersionNumber", lt.get("LatestVersionNumber", 1))),
                    "digest": latest.get("VersionDescription"),
                }
            )
        return out

    def create_launch_template(
        self, name: str, data: Mapping[str, Any], digest: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._ec2(
                "create_launch_template",
                f"creating launch template {name}",
                "CreateLaunchTemplate",
                LaunchTemplateName=name,
                VersionDescription=digest,
                LaunchTemplateData=dict(data),
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list(tags)}],
            )["LaunchTemplate"]["LaunchTemplateId"]
        )

    def create_launch_template_version(
        self, template_id: str, data: Mapping[str, Any], digest: str
    ) -> int:
        r = self._ec2(
            "create_launch_template_version",
            f"adding a version to launch template {template_id}",
            "CreateLaunchTemplateVersion",
            LaunchTemplateId=template_id,
            VersionDescription=digest,
            LaunchTemplateData=dict(data),
        )
        return int(r["LaunchTemplateVersion"]["VersionNumber"])

    def delete_launch_template(self, template_id: str) -> None:
        self._ec2(
            "delete_launch_template",
            f"deleting launch template {template_id}",
            "DeleteLaunchTemplate",
            LaunchTemplateId=template_id,
        )

    def _asg(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "autoscaling", op, what=what, iam_action=f"autoscaling:{action}", **params
        )

    def find_groups(self, stack: str | None) -> list[dict[str, Any]]:
        """The stack's groups (every stack's with ``stack=None``), as AWS describes them."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {
                "Filters": [{"Name": "tag-key", "Values": [self.tag]}]
                if stack is None
                else [{"Name": f"tag:{self.tag}", "Values": [stack]}]
            }
            if token:
                params["NextToken"] = token
            page = self._asg(
                "describe_auto_scaling_groups",
                "looking up the stack's Auto Scaling groups",
                "DescribeAutoScalingGroups",
                **params,
            )
            found.extend(dict(g) for g in page.get("AutoScalingGroups", []))
            token = page.get("NextToken")
            if not token:
                break
        return found

    @staticmethod
    def group_settings(group: Mapping[str, Any]) -> dict[str, Any]:
        """core.stack.Desired.group_settings' shape, read back from AWS."""
        mip = group.get("MixedInstancesPolicy") or {}
        dist = mip.get("InstancesDistribution") or {}
        overrides = (mip.get("LaunchTemplate") or {}).get("Overrides") or []
        return {
            "types": [o["InstanceType"] for o in overrides],
            "subnets": sorted(s for s in (group.get("VPCZoneIdentifier") or "").split(",") if s),
            "on_demand_base": int(dist.get("OnDemandBaseCapacity", 0)),
            "on_demand_percent": int(dist.get("OnDemandPercentageAboveBaseCapacity", 100)),
            "capacity_rebalance": bool(group.get("CapacityRebalance", False)),
            "load_balanced": bool(group.get("TargetGroupARNs")),
        }

    @staticmethod
    def _mixed_policy(template_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id,
                    "Version": "$Latest",
                },
                "Overrides": [{"InstanceType": t} for t in settings["types"]],
            },
            "InstancesDistribution": {
                "OnDemandAllocationStrategy": "lowest-price",
                "OnDemandBaseCapacity": settings["on_demand_base"],
                "OnDemandPercentageAboveBaseCapacity": settings["on_demand_percent"],
                "SpotAllocationStrategy": "price-capacity-optimized",
            },
        }

    def create_group(
        self,
        name: str,
        template_id: str,
        settings: Mapping[str, Any],
        tags: Mapping[str, str],
        target_groups: Sequence[str] = (),
    ) -> None:
        extra: dict[str, Any] = {}
        if target_groups:
            # ELB health checks replace an unhealthy endpoint, after the load's grace period.
            extra = {
                "TargetGroupARNs": list(target_groups),
                "HealthCheckType": "ELB",
                "HealthCheckGracePeriod": 1800,
            }
        self._asg(
            "create_auto_scaling_group",
            f"creating Auto Scaling group {name}",
            "CreateAutoScalingGroup",
            **extra,
            AutoScalingGroupName=name,
            MinSize=1,
            MaxSize=1,
            DesiredCapacity=1,
            VPCZoneIdentifier=",".join(settings["subnets"]),
            CapacityRebalance=settings["capacity_rebalance"],
            MixedInstancesPolicy=self._mixed_policy(template_id, settings),
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                }
                for k, v in sorted(tags.items())
            ],
        )

    def update_group(self, name: str, template_id: str, settings: Mapping[str, Any]) -> None:
        self._asg(
            "update_auto_scaling_group",
            f"updating Auto Scaling group {name}",
            "UpdateAutoScalingGroup",
            AutoScalingGroupName=name,
            VPCZoneIdentifier=",".join(settings["subnets"]),
            CapacityRebalance=settings["capacity_rebalance"],
            MixedInstancesPolicy=self._mixed_policy(template_id, settings),
        )

    def start_instance_refresh(self, name: str, min_healthy_percentage: int) -> str:
        return str(
            self._asg(
                "start_instance_refresh",
                f"starting an instance refresh of {name}",
                "StartInstanceRefresh",
                AutoScalingGroupName=name,
                Strategy="Rolling",
                Preferences={"MinHealthyPercentage": min_healthy_percentage},
            )["InstanceRefreshId"]
        )

    def scaling_activities(self, name: str) -> list[dict[str, Any]]:
        return [
            dict(a)
            for a in self._asg(
                "describe_scaling_activities",
                f"reading {name}'s scaling activities",
                "DescribeScalingActivities",
                AutoScalingGroupName=name,
                MaxRecords=20,
            ).get("Activities", [])
        ]

    def delete_group(self, name: str) -> None:
        self._asg(
            "delete_auto_scaling_group",
            f"deleting Auto Scaling group {name}",
            "DeleteAutoScalingGroup",
            AutoScalingGroupName=name,
            ForceDelete=True,
        )

    def attach_target_group(self, name: str, target_group_arn: str) -> None:
        self._asg(
            "attach_load_balancer_target_groups",
            f"attaching the target group to {name}",
            "AttachLoadBalancerTargetGroups",
            AutoScalingGroupName=name,
            TargetGroupARNs=[target_group_arn],
        )
