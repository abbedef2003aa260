"""A stack's Application Load Balancer (--alb): ELBv2 has no tag filter in the API, so each
lookup goes by name, then the tag must match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tgiops.core.errors import AWSError
from tgiops.edges.aws.base import tag_list, tag_map
from tgiops.edges.aws.stack_base import StackCalls


class LoadBalancerCalls(StackCalls):
    """The ELBv2 calls of ``StackEdge``."""

    def _elb(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "elbv2", op, what=what, iam_action=f"elasticloadbalancing:{action}", **params
        )

    def _elb_ours(self, arn: str, stack: str) -> bool:
        described = self._elb(
            "describe_tags", "reading load balancer tags", "DescribeTags", ResourceArns=[arn]
        ).get("TagDescriptions", [])
        return any(tag_map(d.get("Tags")).get(self.tag) == stack for d in described)

    def find_load_balancer(self, name: str, stack: str) -> dict[str, Any] | None:
        try:
            found = self._elb(
                "describe_load_balancers",
                f"looking up load balancer {name}",
                "DescribeLoadBalancers",
                Names=[name],
            ).get("LoadBalancers", [])
        except AWSError as exc:
            if self._code(exc) == "LoadBalancerNotFound":
                return None
            raise
        lb = found[0] if found else None
        if lb is None or not self._elb_ours(lb["LoadBalancerArn"], stack):
            return None
        listeners = self._elb(
            "describe_listeners",
            f"looking up {name}'s listeners",
            "DescribeListeners",
            LoadBalancerArn=lb["LoadBalancerArn"],
        ).get("Listeners", [])
        return {
            "arn": lb["LoadBalancerArn"],
            "dns": lb.get("DNSName"),
            "listeners": [x["ListenerArn"] for x in listeners],
        }

    def find_target_group(self, name: str, stack: str) -> str | None:
        try:
            found = self._elb(
                "describe_target_groups",
                f"looking up target group {name}",
                "DescribeTargetGroups",
                Names=[name],
            ).get("TargetGroups", [])
        except AWSError as exc:
            if self._code(exc) == "TargetGroupNotFound":
                return None
            raise
        if not found or not self._elb_ours(found[0]["TargetGroupArn"], stack):
            return None
        return str(found[0]["TargetGroupArn"])

    def create_target_group(
        self, name: str, vpc_id: str, port: int, health_path: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._elb(
                "create_target_group",
                f"creating target group {name}",
                "CreateTargetGroup",
                Name=name,
                Protocol="HTTP",
                Port=port,
                VpcId=vpc_id,
                TargetType="instance",
                HealthCheckProtocol="HTTP",
                HealthCheckPath=health_path,
                Matcher={"HttpCode": "200"},
                Tags=tag_list(tags),
            )["TargetGroups"][0]["TargetGroupArn"]
        )

    def create_load_balancer(
        self, name: str, subnets: Sequence[str], security_group: str, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        lb = self._elb(
            "create_load_balancer",
            f"creating load balancer {name}",
            "CreateLoadBalancer",
            Name=name,
            Subnets=list(subnets),
            SecurityGroups=[security_group],
            Scheme="internet-facing",
            Type="application",
            Tags=tag_list(tags),
        )["LoadBalancers"][0]
        return str(lb["LoadBalancerArn"]), str(lb.get("DNSName", ""))

    def create_listener(
        self, lb_arn: str, port: int, target_group_arn: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._elb(
                "create_listener",
                "creating the load balancer's listener",
                "CreateListener",
                LoadBalancerArn=lb_arn,
                Protocol="HTTP",
                Port=port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group_arn}],
                Tags=tag_list(tags),
            )["Listeners"][0]["ListenerArn"]
        )

    def healthy_targets(self, target_group_arn: str) -> list[str]:
        described = self._elb(
            "describe_target_health",
            "reading the target group's health",
            "DescribeTargetHealth",
            TargetGroupArn=target_group_arn,
        ).get("TargetHealthDescriptions", [])
        return [
            d["Target"]["Id"]
            for d in described
            if d.get("TargetHealth", {}).get("State") == "healthy"
        ]

    def delete_load_balancer(self, arn: str) -> None:
        self._elb(
            "delete_load_balancer",
            "deleting the load balancer",
            "DeleteLoadBalancer",
            LoadBalancerArn=arn,
        )

    def delete_target_group(self, arn: str) -> None:
        self._elb(
            "delete_target_group",
            "deleting the target group",
            "DeleteTargetGroup",
            TargetGroupArn=arn,
        )
