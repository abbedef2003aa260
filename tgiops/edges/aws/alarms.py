"""`tgiops alarms` (tgiops.commands.alarms, specs in tgiops.core.alarms): CloudWatch alarms, the
SNS topic they notify, an AWS Budget, and the billing metric's presence (issue 17). Same error
translation as every call (AwsBase.call); "not found" answers become None."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tgiops.core.errors import AWSError
from tgiops.edges.aws.base import AwsEdge, client_error_code, tag_list, tag_map


class AlarmsEdge(AwsEdge):
    """The AWS calls of `tgiops alarms` in one region (the billing alarm's: us-east-1)."""

    # CloudWatch -------------------------------------------------------------------------------

    def _cw(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "cloudwatch", op, what=what, iam_action=f"cloudwatch:{action}", **params
        )

    def alarms(self, prefix: str) -> list[dict[str, Any]]:
        """The metric alarms whose name starts with ``prefix``, each with its ``Tags`` (a dict)."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._cw(
                "describe_alarms",
                f"listing the alarms named {prefix}*",
                "DescribeAlarms",
                AlarmNamePrefix=prefix,
                AlarmTypes=["MetricAlarm"],
                **({"NextToken": token} if token else {}),
            )
            found.extend(page.get("MetricAlarms", []))
            token = page.get("NextToken")
            if not token:
                break
        for alarm in found:
            alarm["Tags"] = self.alarm_tags(alarm["AlarmArn"])
        return found

    def alarm_tags(self, arn: str) -> dict[str, str]:
        answer = self._cw(
            "list_tags_for_resource",
            f"reading the tags of {arn}",
            "ListTagsForResource",
            ResourceARN=arn,
        )
        return tag_map(answer.get("Tags"))

    def put_alarm(self, params: Mapping[str, Any]) -> None:
        """Create or overwrite (by name) one alarm. An overwrite keeps the alarm's tags as they
        are: PutMetricAlarm ignores Tags when the alarm exists (docs/aws.md §9)."""
        self._cw(
            "put_metric_alarm",
            f"setting the alarm {params['AlarmName']}",
            "PutMetricAlarm",
            **params,
        )

    def delete_alarms(self, names: Sequence[str]) -> None:
        for i in range(0, len(names), 100):  # DeleteAlarms takes up to 100 names
            self._cw(
                "delete_alarms",
                f"deleting the alarms {', '.join(names[i : i + 100])}",
                "DeleteAlarms",
                AlarmNames=list(names[i : i + 100]),
            )

    def has_metric(self, namespace: str, name: str, dims: Sequence[Mapping[str, str]]) -> bool:
        """True when CloudWatch has the metric with (at least) these dimensions: the billing
        metric exists only once billing alerts are enabled (docs/aws.md §9); the monitor's
        only once a host of the group sends."""
        answer = self._cw(
            "list_metrics",
            f"looking for the {namespace} {name} metric",
            "ListMetrics",
            Namespace=namespace,
            MetricName=name,
            Dimensions=[dict(d) for d in dims],
        )
        return bool(answer.get("Metrics"))

    # SNS --------------------------------------------------------------------------------------

    def _sns(self, op: str, what: str, action: str, **params: Any) -> Any:
        # SNS spells an IAM denial AuthorizationError (403), not AccessDenied.
        denied = (
            f"{what} was denied (AuthorizationError): the AWS identity needs the IAM "
            f"permission sns:{action} in {self.region}. Grant it, or use --profile with one "
            "that has it."
        )
        return self.aws.call(
            "sns", op, what=what, iam_action=f"sns:{action}",
            messages={"AuthorizationError": denied}, **params,
        )  # fmt: skip

    def topic_tags(self, arn: str) -> dict[str, str] | None:
        """The topic's tags; None when there is no such topic."""
        try:
            self._sns(
                "get_topic_attributes",
                f"looking up the topic {arn}",
                "GetTopicAttributes",
                TopicArn=arn,
            )
        except AWSError as exc:
            if client_error_code(exc) in ("NotFound", "NotFoundException"):
                return None
            raise
        answer = self._sns(
            "list_tags_for_resource",
            f"reading the tags of {arn}",
            "ListTagsForResource",
            ResourceArn=arn,
        )
        return tag_map(answer.get("Tags"))

    def create_topic(self, name: str, tags: Mapping[str, str]) -> str:
        answer = self._sns(
            "create_topic",
            f"creating the topic {name}",
            "CreateTopic",
            Name=name,
            Tags=tag_list(tags),
        )
        return str(answer["TopicArn"])

    def set_topic_policy(self, arn: str, policy: Mapping[str, Any]) -> None:
        self._sns(
            "set_topic_attributes",
            f"setting the access policy of {arn}",
            "SetTopicAttributes",
            TopicArn=arn,
            AttributeName="Policy",
            AttributeValue=json.dumps(policy, sort_keys=True),
        )

    def topic_policy(self, arn: str) -> dict[str, Any] | None:
        answer = self._sns(
            "get_topic_attributes", f"reading the topic {arn}", "GetTopicAttributes", TopicArn=arn
        )
        text = answer.get("Attributes", {}).get("Policy")
        return json.loads(text) if text else None

    def subscriptions(self, arn: str) -> list[tuple[str, str]]:
        """(protocol, endpoint) of each subscription of the topic."""
        found: list[tuple[str, str]] = []
        token: str | None = None
        while True:
            page = self._sns(
                "list_subscriptions_by_topic",
                f"listing the subscriptions of {arn}",
                "ListSubscriptionsByTopic",
                TopicArn=arn,
                **({"NextToken": token} if token else {}),
            )
            found.extend((s["Protocol"], s["Endpoint"]) for s in page.get("Subscriptions", []))
            token = page.get("NextToken")
            if not token:
                break
        return found

    def subscribe_email(self, arn: str, address: str) -> None:
        self._sns(
            "subscribe",
            f"subscribing {address} to {arn}",
            "Subscribe",
            TopicArn=arn,
            Protocol="email",
            Endpoint=address,
        )

    def delete_topic(self, arn: str) -> None:
        """Deletes its subscriptions too (SNS does)."""
        self._sns("delete_topic", f"deleting the topic {arn}", "DeleteTopic", TopicArn=arn)

    # Budgets ----------------------------------------------------------------------------------

    def _budgets(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("budgets", op, what=what, iam_action=f"budgets:{action}", **params)

    def budget(self, account: str, name: str) -> dict[str, Any] | None:
        try:
            answer = self._budgets(
                "describe_budget",
                f"looking up the budget {name}",
                "ViewBudget",
                AccountId=account,
                BudgetName=name,
            )
        except AWSError as exc:
            if client_error_code(exc) == "NotFoundException":
                return None
            raise
        return dict(answer["Budget"])

    def create_budget(
        self,
        account: str,
        budget: Mapping[str, Any],
        notifications: Sequence[Mapping[str, Any]],
        tags: Mapping[str, str],
    ) -> None:
        self._budgets(
            "create_budget",
            f"creating the budget {budget['BudgetName']}",
            "ModifyBudget",  # CreateBudget is authorised by budgets:ModifyBudget
            AccountId=account,
            Budget=dict(budget),
            NotificationsWithSubscribers=[dict(n) for n in notifications],
            ResourceTags=tag_list(tags),
        )

    def update_budget(self, account: str, budget: Mapping[str, Any]) -> None:
        self._budgets(
            "update_budget",
            f"changing the budget {budget['BudgetName']}",
            "ModifyBudget",
            AccountId=account,
            NewBudget=dict(budget),
        )

    def delete_budget(self, account: str, name: str) -> None:
        self._budgets(
            "delete_budget",
            f"deleting the budget {name}",
            "ModifyBudget",
            AccountId=account,
            BudgetName=name,
        )
