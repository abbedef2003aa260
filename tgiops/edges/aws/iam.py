"""IAM for a stack: its instance role, policy and instance profile."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from tgiops.core.errors import AWSError
from tgiops.edges.aws.base import tag_list, tag_map
from tgiops.edges.aws.stack_base import StackCalls


class IamCalls(StackCalls):
    """The IAM calls of ``StackEdge``."""

    def _iam(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("iam", op, what=what, iam_action=f"iam:{action}", **params)

    def role_tags(self, name: str) -> dict[str, str] | None:
        """The role's tags, or None when there is no such role."""
        try:
            role = self._iam("get_role", f"looking up role {name}", "GetRole", RoleName=name)
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        tags = tag_map(role["Role"].get("Tags"))
        if not tags:  # GetRole omits tags on some implementations
            tags = tag_map(
                self._iam("list_role_tags", f"reading role {name}'s tags", "ListRoleTags",
                          RoleName=name).get("Tags")
            )  # fmt: skip
        return tags

    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None:
        try:
            doc = self._iam(
                "get_role_policy",
                f"reading role {role}'s policy",
                "GetRolePolicy",
                RoleName=role,
                PolicyName=policy,
            )["PolicyDocument"]
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        if isinstance(doc, str):  # the API returns it URL-encoded JSON; boto3 decodes it
            doc = json.loads(unquote(doc))
        return dict(doc)

    def create_role(self, name: str, trust: Mapping[str, Any], tags: Mapping[str, str]) -> None:

        self._iam(
            "create_role",
            f"creating role {name}",
            "CreateRole",
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="tgiops up: the instance role of the stack",
            Tags=tag_list(tags),
        )

    def put_role_policy(self, role: str, policy: str, document: Mapping[str, Any]) -> None:

        self._iam(
            "put_role_policy",
            f"setting role {role}'s policy",
            "PutRolePolicy",
            RoleName=role,
            PolicyName=policy,
            PolicyDocument=json.dumps(document),
        )

    def instance_profile(self, name: str) -> dict[str, Any] | None:
        """{"arn", "roles", "tags"} or None."""
        try:
            p = self._iam(
                "get_instance_profile",
                f"looking up instance profile {name}",
                "GetInstanceProfile",
                InstanceProfileName=name,
            )["InstanceProfile"]
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        return {
            "arn": p["Arn"],
            "roles": [r["RoleName"] for r in p.get("Roles", [])],
            "tags": tag_map(p.get("Tags")),
        }

    def create_instance_profile(self, name: str, tags: Mapping[str, str]) -> None:
        self._iam(
            "create_instance_profile",
            f"creating instance profile {name}",
            "CreateInstanceProfile",
            InstanceProfileName=name,
            Tags=tag_list(tags),
        )

    def add_role_to_profile(self, profile: str, role: str) -> None:
        self._iam(
            "add_role_to_instance_profile",
            f"adding role {role} to instance profile {profile}",
            "AddRoleToInstanceProfile",
            InstanceProfileName=profile,
            RoleName=role,
        )

    def delete_instance_profile(self, name: str, roles: Sequence[str]) -> None:
        for role in roles:
            self._iam(
                "remove_role_from_instance_profile",
                f"removing role {role} from instance profile {name}",
                "RemoveRoleFromInstanceProfile",
                InstanceProfileName=name,
                RoleName=role,
            )
        self._iam(
            "delete_instance_profile",
            f"deleting instance profile {name}",
            "DeleteInstanceProfile",
            InstanceProfileName=name,
        )

    def delete_role(self, name: str) -> None:
        policies = self._iam(
            "list_role_policies", f"listing role {name}'s policies", "ListRolePolicies",
            RoleName=name,
        ).get("PolicyNames", [])  # fmt: skip
        for policy in policies:
            self._iam(
                "delete_role_policy",
                f"deleting role {name}'s policy {policy}",
                "DeleteRolePolicy",
                RoleName=name,
                PolicyName=policy,
            )
        self._iam("delete_role", f"deleting role {name}", "DeleteRole", RoleName=name)
