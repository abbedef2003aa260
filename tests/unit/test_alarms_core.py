"""tgiops.core.alarms: names, thresholds, periods, queries and the CloudWatch limits (pure)."""

from __future__ import annotations

import pytest

from tgiops.core import alarms as core
from tgiops.core import monitor
from tgiops.core.errors import InputError
from tgiops.core.hardware import Gpu

STACK = core.owner_for(stack="llm", asg=None)
TOPIC = "arn:aws:sns:us-east-1:123456789012:tgiops-alarms-llm"


def test_the_monitor_constants_are_what_it_publishes() -> None:
    """The alarms query the names metric_data() sends: a rename there must fail here."""
    gpus = (Gpu(0, "NVIDIA A10G", 23028, (8, 6), memory_used_mib=1, utilization_pct=3),)
    dims = monitor.dimensions(group="g", unit="u", instance_id="i")
    data = monitor.metric_data(
        monitor.Readings(0.0, gpus, {"tgi_queue_size": 2.0}, healthy=True), dims
    )
    names = {d["MetricName"]: {x["Name"] for x in d["Dimensions"]} for d in data}
    host = {monitor.GROUP_DIMENSION, monitor.UNIT_DIMENSION, monitor.INSTANCE_DIMENSION}
    assert names[monitor.HEALTHY] == host
    assert names[monitor.REQUESTS_WAITING] == host
    assert names[monitor.GPU_UTILIZATION] == host | {monitor.GPU_DIMENSION}


def test_owner_of_a_stack_is_its_asg_and_tag() -> None:
    assert STACK.group == "tgiops-llm"  # the group `tgiops up` made (core.stack.resource_name)
    assert STACK.tags == {"tgiops:stack": "llm"}
    assert STACK.prefix == "tgiops-llm-"
    assert STACK.topic_name == "tgiops-alarms-llm"
    assert STACK.budget_name == "tgiops-llm-monthly"
    asg = core.owner_for(stack=None, asg="my-asg")
    assert (asg.group, asg.tags, asg.prefix) == (
        "my-asg",
        {"tgiops:asg": "my-asg"},
        "tgiops-asg_my-asg-",
    )
    # no stack name can give the ASG's prefix: stack names have no '_'
    assert not asg.owns({"tgiops:stack": "my-asg"})


@pytest.mark.parametrize(
    ("stack", "asg"),
    [(None, None), ("llm", "x"), ("Bad_Name", None), (None, "it's"), (None, "a" * 81)],
)
def test_owner_refuses_bad_targets(stack: str | None, asg: str | None) -> None:
    with pytest.raises(InputError):
        core.owner_for(stack=stack, asg=asg)


def test_unhealthy_alarm_is_breaching_on_missing_data() -> None:
    spec = core.unhealthy_alarm(STACK, 7)
    assert (spec.comparison, spec.threshold) == ("LessThanThreshold", 1.0)
    assert (spec.period_s, spec.evaluation_periods) == (60, 7)
    assert spec.treat_missing == "breaching"
    assert spec.query == (
        'SELECT MIN("Healthy") FROM SCHEMA("tgiops", "Group", "InstanceId", "Unit") '
        "WHERE \"Group\" = 'tgiops-llm'"
    )


def test_idle_alarm_uses_five_minute_periods_within_the_limits() -> None:
    spec = core.idle_alarm(STACK, 4.5, 2.5)
    assert (spec.comparison, spec.threshold) == ("LessThanThreshold", 4.5)
    assert (spec.period_s, spec.evaluation_periods) == (300, 30)
    assert spec.treat_missing == "notBreaching"
    assert 'MAX("GPUUtilization")' in (spec.query or "")
    assert 'SCHEMA("tgiops", "GPU", "Group", "InstanceId", "Unit")' in (spec.query or "")
    # the whole window: at most 3 h (Metrics Insights) and 1 day (period under 1 h)
    longest = core.idle_alarm(STACK, 5, 3)
    assert longest.period_s * longest.evaluation_periods == 3 * 3600


@pytest.mark.parametrize(("percent", "hours"), [(0, 2), (101, 2), (5, 0), (5, 3.5)])
def test_idle_alarm_refuses_what_cloudwatch_cannot_evaluate(percent: float, hours: float) -> None:
    with pytest.raises(InputError):
        core.idle_alarm(STACK, percent, hours)


@pytest.mark.parametrize("minutes", [0, 181])
def test_minute_windows_stay_in_three_hours(minutes: int) -> None:
    with pytest.raises(InputError, match="3 hours"):
        core.unhealthy_alarm(STACK, minutes)
    with pytest.raises(InputError, match="3 hours"):
        core.queue_alarm(STACK, 5, minutes)


def test_queue_alarm() -> None:
    spec = core.queue_alarm(STACK, 12, 9)
    assert (spec.comparison, spec.threshold, spec.evaluation_periods) == (
        "GreaterThanThreshold",
        12.0,
        9,
    )
    assert 'MAX("RequestsWaiting")' in (spec.query or "")
    with pytest.raises(InputError):
        core.queue_alarm(STACK, -1, 5)


def test_billing_alarm_is_in_us_east_1_on_estimated_charges() -> None:
    spec = core.billing_alarm(STACK, 250)
    params = spec.put_params([TOPIC], STACK.tags)
    assert spec.region == "us-east-1"
    assert params["Namespace"] == "AWS/Billing"
    assert params["MetricName"] == "EstimatedCharges"
    assert params["Dimensions"] == [{"Name": "Currency", "Value": "USD"}]
    assert params["Threshold"] == 250.0 and params["Period"] == 21600
    assert "Metrics" not in params
    with pytest.raises(InputError):
        core.billing_alarm(STACK, 0)


def test_put_params_carry_query_actions_and_tags() -> None:
    spec = core.unhealthy_alarm(STACK)
    params = spec.put_params([TOPIC], STACK.tags)
    assert params["Metrics"][0]["Expression"] == spec.query
    assert params["Metrics"][0]["Period"] == 60
    assert params["AlarmActions"] == params["OKActions"] == [TOPIC]
    assert params["Tags"] == [{"Key": "tgiops:stack", "Value": "llm"}]
    assert params["DatapointsToAlarm"] == params["EvaluationPeriods"] == 5


def test_differs_from_names_what_changed() -> None:
    spec = core.queue_alarm(STACK, 10, 5)
    described = {
        k: v for k, v in spec.put_params([TOPIC], STACK.tags).items() if k not in ("Tags",)
    }
    assert spec.differs_from(described, [TOPIC]) == []
    assert core.queue_alarm(STACK, 11, 5).differs_from(described, [TOPIC]) == [
        "description",
        "threshold",
    ]
    assert spec.differs_from(described, ["arn:other"]) == ["actions"]


def test_budget_spec() -> None:
    spec = core.budget_spec(STACK, 500)
    assert spec.budget() == {
        "BudgetName": "tgiops-llm-monthly",
        "BudgetLimit": {"Amount": "500.00", "Unit": "USD"},
        "TimeUnit": "MONTHLY",
        "BudgetType": "COST",
    }
    (n,) = spec.notifications(TOPIC)
    assert n["Subscribers"] == [{"SubscriptionType": "SNS", "Address": TOPIC}]
    assert n["Notification"]["Threshold"] == 100.0
    assert spec.same_limit({"BudgetLimit": {"Amount": "500.0", "Unit": "USD"}})
    assert not spec.same_limit({"BudgetLimit": {"Amount": "400", "Unit": "USD"}})
    with pytest.raises(InputError):
        core.budget_spec(STACK, -1)


def test_topic_policy_lets_budgets_publish_from_this_account_only() -> None:
    policy = core.topic_policy(TOPIC, "123456789012")
    by_service = {s["Principal"].get("Service"): s for s in policy["Statement"]}
    budgets = by_service["budgets.amazonaws.com"]
    assert budgets["Action"] == "SNS:Publish" and budgets["Resource"] == TOPIC
    assert budgets["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:budgets::123456789012:*"},
    }
    alarms = by_service["cloudwatch.amazonaws.com"]
    assert alarms["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_request_builds_what_was_asked() -> None:
    req = core.alarms_request(STACK, region="us-east-1")
    assert [a.kind for a in req.alarms] == ["unhealthy", "gpu-idle"]
    req = core.alarms_request(
        STACK, region="us-east-1", queue_above=3, billing_usd=10, budget_usd_month=20
    )
    assert [a.kind for a in req.alarms] == ["unhealthy", "gpu-idle", "queue", "billing"]
    assert req.budget is not None and req.warnings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sns_topic": "not-an-arn"},
        {"sns_topic": TOPIC, "email": "a@example.com"},
        {"sns_topic": TOPIC.replace("us-east-1", "eu-west-1")},  # not the alarms' region
        {"email": "nobody"},
    ],
)
def test_request_refuses(kwargs: dict) -> None:
    with pytest.raises(InputError):
        core.alarms_request(STACK, region="us-east-1", **kwargs)


def test_billing_alarm_needs_a_topic_in_us_east_1() -> None:
    west = TOPIC.replace("us-east-1", "us-west-2")
    core.alarms_request(STACK, region="us-west-2", sns_topic=west)  # fine without billing
    with pytest.raises(InputError, match="us-east-1"):
        core.alarms_request(STACK, region="us-west-2", sns_topic=west, billing_usd=5)
