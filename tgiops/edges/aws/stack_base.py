"""The base of the stack edge (`tgiops up` / `tgiops down`, tgiops.core.stack), which the
stack's service modules (iam, asg, elb, cache_volumes) extend and tgiops.edges.aws.stack
composes. Every resource here carries the tag tgiops:stack=NAME; lookups go by that tag (IAM,
which has no tag filter, by name and then the tag), so `down` never finds what it did not
create."""

from __future__ import annotations

from typing import Any

from tgiops.edges.aws.base import AwsEdge, client_error_code
from tgiops.edges.aws.client import Aws


class StackCalls(AwsEdge):
    """The AWS calls of a stack, over ``Aws.call`` (same error translation)."""

    aws: Aws

    def __init__(self, aws: Aws, stack_tag: str) -> None:
        super().__init__(aws)
        self.tag = stack_tag

    def _ec2(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("ec2", op, what=what, iam_action=f"ec2:{action}", **params)

    def _code(self, exc: BaseException) -> str:
        return client_error_code(exc)
