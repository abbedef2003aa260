"""`tgiops alarms`' pure part: what the alarms, the budget and the topic of a stack or an Auto
Scaling group are (names, thresholds, periods, queries, tags), and the checks of the options.

The alarms watch what the monitor service publishes (tgiops.core.monitor: namespace, metric and
dimension names are its constants). One alarm covers the whole group, whichever instances it
has now: each is a CloudWatch Metrics Insights query over the ``Group`` dimension (the ASG's
name; for a stack the group `tgiops up` made, core.stack.resource_name), so spot replacements
join without touching the alarm (docs/aws.md §9). The CloudWatch limits the checks enforce:

- a period is 10, 20, 30 s or a multiple of 60; period x evaluation periods is at most 1 day
  when the period is under an hour, 7 days otherwise (PutMetricAlarm, docs/aws.md §9);
- a Metrics Insights alarm evaluates only the latest 3 hours of data (same §): hence at most
  180 minutes for the unhealthy and queue alarms and 3 hours for the idle one.

Ownership: every alarm, topic and budget is named with ``tgiops-`` and the stack (or
``asg_`` + the ASG's name), and carries the tag ``tgiops:stack=NAME`` (``tgiops:asg=NAME`` for
an ASG that is no stack). Budgets are told apart by name only: moto has no Budgets tags to test
against (docs/aws.md §9), so ``delete`` takes the budget of exactly the name ``set`` gives.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from tgiops.core import monitor
from tgiops.core.alarm_defaults import (
    DEFAULT_IDLE_HOURS,
    DEFAULT_IDLE_PERCENT,
    DEFAULT_QUEUE_MINUTES,
    DEFAULT_UNHEALTHY_MINUTES,
)
from tgiops.core.errors import InputError
from tgiops.core.layout import UNIT_PREFIX
from tgiops.core.stack import STACK_TAG, check_stack_name, resource_name

ASG_TAG = "tgiops:asg"
BILLING_REGION = "us-east-1"  # AWS/Billing metrics exist only there (docs/aws.md §9)
BILLING_NAMESPACE = "AWS/Billing"
BILLING_METRIC = "EstimatedCharges"
BILLING_DIMENSIONS = ({"Name": "Currency", "Value": "USD"},)
BILLING_PERIOD_S = 21600  # the metric is updated a few times a day (docs/aws.md §9)

METRICS_INSIGHTS_WINDOW_S = 3 * 3600  # latest 3 h only, for alarm evaluation
SHORT_PERIOD_LIMIT_S = 86400  # period < 1 h: period x evaluation periods <= 1 day
MINUTE_S = 60
IDLE_PERIOD_S = 300  # 5 minutes: fine enough for fractional hours, well inside every limit


KINDS = ("unhealthy", "gpu-idle", "queue", "billing")
# ASG names may hold almost anything; tgiops puts the name into SNS topic names (letters,
# digits, '-', '_') and a query's string literal, so it takes those only, and a length that
# keeps a budget name (at most 100 characters) within bounds.
ASG_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TOPIC_ARN_RE = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,256})")


@dataclass(frozen=True)
class Owner:
    """Whose alarms: a stack or an Auto Scaling group."""

    tag_key: str  # tgiops:stack | tgiops:asg
    tag_value: str
    group: str  # the Group dimension the monitor publishes

    @property
    def key(self) -> str:
        return self.tag_value if self.tag_key == STACK_TAG else f"asg_{self.tag_value}"

    @property
    def prefix(self) -> str:
        """Every alarm's name starts with it (DescribeAlarms' AlarmNamePrefix)."""
        return f"{UNIT_PREFIX}{self.key}-"

    @property
    def topic_name(self) -> str:
        return f"{UNIT_PREFIX}alarms-{self.key}"

    @property
    def budget_name(self) -> str:
        return f"{self.prefix}monthly"

    @property
    def tags(self) -> dict[str, str]:
        return {self.tag_key: self.tag_value}

    def owns(self, tags: dict[str, str]) -> bool:
        return tags.get(self.tag_key) == self.tag_value

    def as_dict(self) -> dict[str, str | None]:
        return {
            "stack": self.tag_value if self.tag_key == STACK_TAG else None,
            "asg": self.tag_value if self.tag_key == ASG_TAG else None,
            "group": self.group,
        }


def owner_for(*, stack: str | None, asg: str | None) -> Owner:
    if stack and asg:
        raise InputError("give --stack or --asg, not both")
    if stack:
        check_stack_name(stack)
        return Owner(STACK_TAG, stack, resource_name(stack))
    if asg:
        if not ASG_NAME_RE.fullmatch(asg):
            raise InputError(
                f"--asg {asg!r}: tgiops sets alarms for Auto Scaling groups named with letters, "
                "digits, '-' and '_' (at most 80); use --stack for a `tgiops up` stack"
            )
        return Owner(ASG_TAG, asg, asg)
    raise InputError("whose alarms? Give --stack NAME or --asg NAME")


@dataclass(frozen=True)
class AlarmSpec:
    name: str
    kind: str
    watches: str  # in words, also the alarm's description
    comparison: str  # CloudWatch ComparisonOperator
    threshold: float
    period_s: int
    evaluation_periods: int
    treat_missing: str
    query: str | None = None  # Metrics Insights (the tgiops namespace)
    region: str | None = None  # None: the command's region; billing: us-east-1

    def put_params(self, actions: list[str], tags: dict[str, str]) -> dict[str, Any]:
        """PutMetricAlarm's parameters. An alarm that goes back to OK says so too."""
        params: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.watches,
            "ActionsEnabled": True,
            "AlarmActions": list(actions),
            "OKActions": list(actions),
            "ComparisonOperator": self.comparison,
            "Threshold": float(self.threshold),
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.evaluation_periods,
            "TreatMissingData": self.treat_missing,
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        }
        if self.query is not None:
            params["Metrics"] = [
                {
                    "Id": "q1",
                    "Expression": self.query,
                    "Period": self.period_s,
                    "ReturnData": True,
                    "Label": self.kind,
                }
            ]
        else:
            params.update(
                Namespace=BILLING_NAMESPACE,
                MetricName=BILLING_METRIC,
                Dimensions=[dict(d) for d in BILLING_DIMENSIONS],
                Statistic="Maximum",
                Period=self.period_s,
            )
        return params

    def differs_from(self, alarm: dict[str, Any], actions: list[str]) -> list[str]:
        """What of a DescribeAlarms entry is not as this spec asks (empty: nothing to do)."""
        got: dict[str, Any] = {
            "threshold": float(alarm.get("Threshold", math.nan)),
            "comparison": alarm.get("ComparisonOperator"),
            "evaluation_periods": alarm.get("EvaluationPeriods"),
            "treat_missing": alarm.get("TreatMissingData"),
            "actions": sorted(alarm.get("AlarmActions") or []),
            "description": alarm.get("AlarmDescription"),
        }
        want: dict[str, Any] = {
            "threshold": float(self.threshold),
            "comparison": self.comparison,
            "evaluation_periods": self.evaluation_periods,
            "treat_missing": self.treat_missing,
            "actions": sorted(actions),
            "description": self.watches,
        }
        if self.query is not None:
            metrics = alarm.get("Metrics") or [{}]
            got["query"], got["period_s"] = metrics[0].get("Expression"), metrics[0].get("Period")
            want["query"], want["period_s"] = self.query, self.period_s
        else:
            got["period_s"], want["period_s"] = alarm.get("Period"), self.period_s
        return sorted(k for k in want if want[k] != got[k])


def _query(stat: str, metric: str, dims: tuple[str, ...], group: str) -> str:
    """Every identifier double-quoted: GROUP (the dimension ``Group``) is a reserved keyword of
    Metrics Insights, and a quoted name is always read as a name (docs/aws.md §9). ``group`` is
    checked to hold no quote (owner_for)."""
    schema = ", ".join(f'"{d}"' for d in sorted(dims))
    return (
        f'SELECT {stat}("{metric}") FROM SCHEMA("{monitor.NAMESPACE}", {schema}) '
        f"WHERE \"{monitor.GROUP_DIMENSION}\" = '{group}'"
    )


_HOST_DIMS = (monitor.GROUP_DIMENSION, monitor.UNIT_DIMENSION, monitor.INSTANCE_DIMENSION)
_GPU_DIMS = (*_HOST_DIMS, monitor.GPU_DIMENSION)


def _minutes(value: int, option: str) -> int:
    if not 1 <= value <= METRICS_INSIGHTS_WINDOW_S // MINUTE_S:
        raise InputError(
            f"{option} {value}: give 1 to {METRICS_INSIGHTS_WINDOW_S // MINUTE_S} minutes "
            "(CloudWatch evaluates a Metrics Insights alarm over the latest 3 hours only)"
        )
    return value


def unhealthy_alarm(owner: Owner, minutes: int = DEFAULT_UNHEALTHY_MINUTES) -> AlarmSpec:
    """Some unit of the group unhealthy (Healthy < 1) for ``minutes`` in a row. Missing data is
    breaching: no Healthy point at all means no monitor reports, i.e. no host answers (gone,
    hung, or its network cut); silence must not read as health."""
    _minutes(minutes, "--unhealthy-minutes")
    return AlarmSpec(
        name=f"{owner.prefix}unhealthy",
        kind="unhealthy",
        watches=f"{owner.group}: a unit unhealthy (minimum of {monitor.HEALTHY} < 1) or no "
        f"host reporting, {minutes} min in a row",
        comparison="LessThanThreshold",
        threshold=1.0,
        period_s=MINUTE_S,
        evaluation_periods=minutes,
        treat_missing="breaching",
        query=_query("MIN", monitor.HEALTHY, _HOST_DIMS, owner.group),
    )


def idle_alarm(
    owner: Owner, percent: float = DEFAULT_IDLE_PERCENT, hours: float = DEFAULT_IDLE_HOURS
) -> AlarmSpec:
    """Every GPU of the group below ``percent`` utilisation for ``hours``: the fleet is paid for
    and idle. Periods of 5 minutes (under an hour: at most 1 day in all), and at most 3 hours
    (the Metrics Insights window). Missing data is not breaching: no GPU reporting is the
    unhealthy alarm's business, and a group scaled to zero costs no GPU."""
    if not 0 < percent <= 100:
        raise InputError(f"--idle-percent {percent:g}: give a utilisation above 0 and up to 100")
    if not 0 < hours <= METRICS_INSIGHTS_WINDOW_S / 3600:
        raise InputError(
            f"--idle-hours {hours:g}: give more than 0 and at most 3 hours (CloudWatch evaluates "
            "a Metrics Insights alarm over the latest 3 hours only)"
        )
    periods = math.ceil(hours * 3600 / IDLE_PERIOD_S)
    assert periods * IDLE_PERIOD_S <= min(METRICS_INSIGHTS_WINDOW_S, SHORT_PERIOD_LIMIT_S)
    return AlarmSpec(
        name=f"{owner.prefix}gpu-idle",
        kind="gpu-idle",
        watches=f"{owner.group}: every GPU below {percent:g}% utilisation (maximum of "
        f"{monitor.GPU_UTILIZATION}) for {hours:g} h",
        comparison="LessThanThreshold",
        threshold=float(percent),
        period_s=IDLE_PERIOD_S,
        evaluation_periods=periods,
        treat_missing="notBreaching",
        query=_query("MAX", monitor.GPU_UTILIZATION, _GPU_DIMS, owner.group),
    )


def queue_alarm(owner: Owner, above: int, minutes: int = DEFAULT_QUEUE_MINUTES) -> AlarmSpec:
    """Some unit's waiting requests above ``above`` for ``minutes``: time to scale out. The
    maximum over the units, not a sum: a sum per period would count a unit twice when its
    monitor sends more than once a minute. Missing data is not breaching (no queue reported)."""
    if above < 0:
        raise InputError(f"--queue-above {above}: give a number of waiting requests >= 0")
    _minutes(minutes, "--queue-minutes")
    return AlarmSpec(
        name=f"{owner.prefix}queue",
        kind="queue",
        watches=f"{owner.group}: more than {above} requests waiting on a unit (maximum of "
        f"{monitor.REQUESTS_WAITING}) for {minutes} min",
        comparison="GreaterThanThreshold",
        threshold=float(above),
        period_s=MINUTE_S,
        evaluation_periods=minutes,
        treat_missing="notBreaching",
        query=_query("MAX", monitor.REQUESTS_WAITING, _HOST_DIMS, owner.group),
    )


def billing_alarm(owner: Owner, usd: float) -> AlarmSpec:
    """The account's estimated charges this month above ``usd`` (AWS/Billing, us-east-1 only;
    the whole account: the metric has no per-stack dimension). Missing data is not breaching:
    the metric comes a few times a day."""
    if not usd > 0:
        raise InputError(f"--billing-usd {usd:g}: give an amount above 0")
    return AlarmSpec(
        name=f"{owner.prefix}billing",
        kind="billing",
        watches=f"the account's estimated charges this month (AWS/Billing {BILLING_METRIC}, "
        f"USD) above ${usd:g}",
        comparison="GreaterThanThreshold",
        threshold=float(usd),
        period_s=BILLING_PERIOD_S,
        evaluation_periods=1,
        treat_missing="notBreaching",
        region=BILLING_REGION,
    )


@dataclass(frozen=True)
class BudgetSpec:
    name: str
    usd_per_month: float

    def budget(self) -> dict[str, Any]:
        return {
            "BudgetName": self.name,
            "BudgetLimit": {"Amount": _amount(self.usd_per_month), "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
        }

    def notifications(self, topic_arn: str) -> list[dict[str, Any]]:
        """One notification: actual spend above 100% of the limit, to the topic."""
        return [
            {
                "Notification": {
                    "NotificationType": "ACTUAL",
                    "ComparisonOperator": "GREATER_THAN",
                    "Threshold": 100.0,
                    "ThresholdType": "PERCENTAGE",
                },
                "Subscribers": [{"SubscriptionType": "SNS", "Address": topic_arn}],
            }
        ]

    def same_limit(self, budget: dict[str, Any]) -> bool:
        limit = budget.get("BudgetLimit") or {}
        try:
            return float(limit.get("Amount", "nan")) == float(self.usd_per_month)
        except (TypeError, ValueError):
            return False


def _amount(usd: float) -> str:
    return f"{usd:.2f}"


def budget_spec(owner: Owner, usd: float) -> BudgetSpec:
    if not usd > 0:
        raise InputError(f"--budget-usd-month {usd:g}: give an amount above 0")
    return BudgetSpec(owner.budget_name, float(usd))


def topic_policy(topic_arn: str, account: str) -> dict[str, Any]:
    """The created topic's access policy: the account's own use (what SNS grants by default)
    and Publish for CloudWatch and AWS Budgets from this account only (Budgets needs it to
    notify a topic; docs/aws.md §9)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "tgiops-account",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": [
                    "SNS:GetTopicAttributes",
                    "SNS:SetTopicAttributes",
                    "SNS:Subscribe",
                    "SNS:ListSubscriptionsByTopic",
                    "SNS:Publish",
                    "SNS:DeleteTopic",
                ],
                "Resource": topic_arn,
            },
            {
                "Sid": "tgiops-alarms",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "SNS:Publish",
                "Resource": topic_arn,
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
            {  # AWS Budgets' own example statement (docs/aws.md §9)
                "Sid": "tgiops-budgets",
                "Effect": "Allow",
                "Principal": {"Service": "budgets.amazonaws.com"},
                "Action": "SNS:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:budgets::{account}:*"},
                },
            },
        ],
    }


def check_email(address: str) -> str:
    if not EMAIL_RE.fullmatch(address):
        raise InputError(f"--email {address!r}: give an e-mail address")
    return address


def topic_region(arn: str) -> str:
    match = TOPIC_ARN_RE.fullmatch(arn)
    if not match:
        raise InputError(f"--sns-topic {arn!r}: give an SNS topic ARN (arn:aws:sns:REGION:...)")
    return match.group(1)


@dataclass(frozen=True)
class AlarmsRequest:
    """What `alarms set` asks, checked: every spec built before anything is changed."""

    owner: Owner
    alarms: tuple[AlarmSpec, ...]
    budget: BudgetSpec | None = None
    sns_topic: str | None = None  # given: not created, never deleted
    email: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def alarms_request(
    owner: Owner,
    *,
    region: str,
    unhealthy_minutes: int = DEFAULT_UNHEALTHY_MINUTES,
    idle_percent: float = DEFAULT_IDLE_PERCENT,
    idle_hours: float = DEFAULT_IDLE_HOURS,
    queue_above: int | None = None,
    queue_minutes: int = DEFAULT_QUEUE_MINUTES,
    billing_usd: float | None = None,
    budget_usd_month: float | None = None,
    sns_topic: str | None = None,
    email: str | None = None,
) -> AlarmsRequest:
    specs = [unhealthy_alarm(owner, unhealthy_minutes), idle_alarm(owner, idle_percent, idle_hours)]
    if queue_above is not None:
        specs.append(queue_alarm(owner, queue_above, queue_minutes))
    if billing_usd is not None:
        specs.append(billing_alarm(owner, billing_usd))
    if sns_topic is not None:
        where = topic_region(sns_topic)
        if email is not None:
            raise InputError(
                "--email subscribes to the topic tgiops creates; with --sns-topic, subscribe "
                "the address to your topic yourself"
            )
        if where != region:
            raise InputError(
                f"--sns-topic is in {where}, the alarms in {region}: tgiops has each alarm "
                "notify a topic of its own region (docs/aws.md §9)"
            )
        if billing_usd is not None and where != BILLING_REGION:
            raise InputError(
                f"--billing-usd: the billing alarm lives in {BILLING_REGION} and tgiops has it "
                f"notify a topic there, --sns-topic is in {where}; use --budget-usd-month instead"
            )
    if email is not None:
        check_email(email)
    budget = budget_spec(owner, budget_usd_month) if budget_usd_month is not None else None
    warnings = []
    if budget is not None or billing_usd is not None:
        warnings.append(
            "the budget and the billing alarm watch the whole account's spend, not only this "
            "group's (neither has a per-stack filter without cost-allocation tags)"
        )
    if sns_topic is not None and budget is not None:
        warnings.append(
            f"--sns-topic {sns_topic}: its access policy must allow budgets.amazonaws.com to "
            "Publish, or the budget cannot notify it (tgiops does not change a topic it did "
            "not create)"
        )
    return AlarmsRequest(
        owner=owner,
        alarms=tuple(specs),
        budget=budget,
        sns_topic=sns_topic,
        email=email,
        warnings=tuple(warnings),
    )
