"""`tgiops alarms set|list|delete` against moto's server: alarms, topic and budget exist with the
thresholds asked and tgiops' tags, `set` twice changes nothing, `delete` leaves nothing behind
and never touches an untagged alarm or a given topic; billing alerts not enabled; errors moto
cannot give go through the answering relay (aws_answers.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_answers import AnsweringRelay, json_answer, query_error
from cli_run import run_tgiops

if TYPE_CHECKING:
    from conftest import Moto

ACCOUNT = "123456789012"  # moto's default account
TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT}:tgiops-alarms-llm"
STACK_TAG = {"Key": "tgiops:stack", "Value": "llm"}


def alarms(region: str = "us-east-1", prefix: str = "tgiops-") -> dict[str, dict[str, Any]]:
    cw = boto3.client("cloudwatch", region_name=region)
    found = cw.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def alarm_tags(alarm: dict[str, Any], region: str = "us-east-1") -> list[dict[str, str]]:
    cw = boto3.client("cloudwatch", region_name=region)
    return cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]


def topics(region: str = "us-east-1") -> list[str]:
    return [t["TopicArn"] for t in boto3.client("sns", region_name=region).list_topics()["Topics"]]


def budget_names() -> list[str]:
    answer = boto3.client("budgets", region_name="us-east-1").describe_budgets(AccountId=ACCOUNT)
    return [b["BudgetName"] for b in answer.get("Budgets", [])]


def set_json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = run_tgiops("alarms", "set", "--stack", "llm", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def enable_billing_metric() -> None:
    """What AWS does once billing alerts are on: the metric appears in us-east-1."""
    boto3.client("cloudwatch", region_name="us-east-1").put_metric_data(
        Namespace="AWS/Billing",
        MetricData=[
            {
                "MetricName": "EstimatedCharges",
                "Dimensions": [{"Name": "Currency", "Value": "USD"}],
                "Value": 12.0,
                "Timestamp": datetime.now(timezone.utc),
            }
        ],
    )


def test_set_creates_alarms_topic_and_budget_as_asked(moto: Moto) -> None:
    rc, out, err = set_json(
        "--unhealthy-minutes", "7", "--idle-percent", "4", "--idle-hours", "1.5",
        "--queue-above", "12", "--queue-minutes", "9",
        "--budget-usd-month", "500", "--email", "ops@example.com",
    )  # fmt: skip
    assert rc == 0, (out, err)
    assert out["topic"] == {"arn": TOPIC, "created_by_tgiops": True}
    found = alarms()
    assert set(found) == {"tgiops-llm-unhealthy", "tgiops-llm-gpu-idle", "tgiops-llm-queue"}
    expect = {
        # name: (comparison, threshold, period, evaluation periods, missing data, metric)
        "tgiops-llm-unhealthy": ("LessThanThreshold", 1.0, 60, 7, "breaching", 'MIN("Healthy")'),
        "tgiops-llm-gpu-idle": (
            "LessThanThreshold", 4.0, 300, 18, "notBreaching", 'MAX("GPUUtilization")'
        ),
        "tgiops-llm-queue": (
            "GreaterThanThreshold", 12.0, 60, 9, "notBreaching", 'MAX("RequestsWaiting")'
        ),
    }  # fmt: skip
    for name, (op, threshold, period, evals, missing, metric) in expect.items():
        a = found[name]
        (query,) = a["Metrics"]
        assert (a["ComparisonOperator"], a["Threshold"]) == (op, threshold), name
        assert (query["Period"], a["EvaluationPeriods"]) == (period, evals), name
        assert a["TreatMissingData"] == missing, name
        assert metric in query["Expression"] and "\"Group\" = 'tgiops-llm'" in query["Expression"]
        assert a["AlarmActions"] == [TOPIC]
        assert alarm_tags(a) == [STACK_TAG]
    sns = boto3.client("sns", region_name="us-east-1")
    assert topics() == [TOPIC]
    assert sns.list_tags_for_resource(ResourceArn=TOPIC)["Tags"] == [STACK_TAG]
    policy = json.loads(sns.get_topic_attributes(TopicArn=TOPIC)["Attributes"]["Policy"])
    assert any(
        s["Principal"].get("Service") == "budgets.amazonaws.com" for s in policy["Statement"]
    )
    subs = sns.list_subscriptions_by_topic(TopicArn=TOPIC)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.com")]
    bud = boto3.client("budgets", region_name="us-east-1")
    b = bud.describe_budget(AccountId=ACCOUNT, BudgetName="tgiops-llm-monthly")["Budget"]
    assert (b["BudgetType"], b["TimeUnit"]) == ("COST", "MONTHLY")
    assert float(b["BudgetLimit"]["Amount"]) == 500.0
    (note,) = bud.describe_notifications_for_budget(
        AccountId=ACCOUNT, BudgetName="tgiops-llm-monthly"
    )["Notifications"]
    assert (note["NotificationType"], note["Threshold"]) == ("ACTUAL", 100.0)

    listed = run_tgiops("alarms", "list", "--stack", "llm", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    rows = {a["name"]: a for a in data["alarms"]}
    assert set(rows) == set(expect)
    assert rows["tgiops-llm-gpu-idle"]["threshold"] == 4.0
    assert rows["tgiops-llm-gpu-idle"]["period_s"] == 300
    assert "every GPU below 4%" in rows["tgiops-llm-gpu-idle"]["watches"]
    assert data["budget"]["usd_per_month"] == 500.0
    assert data["topics"] == [TOPIC]


def test_set_twice_changes_nothing_and_a_new_threshold_updates_in_place(moto: Moto) -> None:
    args = ("--queue-above", "5", "--budget-usd-month", "100", "--email", "ops@example.com")
    assert set_json(*args)[0] == 0
    before = alarms()
    rc, out, _ = set_json(*args)
    assert rc == 0
    assert {i["status"] for i in out["items"]} == {"unchanged"}
    after = alarms()
    for name, a in before.items():  # not rewritten: same configuration time stamp
        assert (
            after[name]["AlarmConfigurationUpdatedTimestamp"]
            == (a["AlarmConfigurationUpdatedTimestamp"])
        )
    subs = boto3.client("sns").list_subscriptions_by_topic(TopicArn=TOPIC)["Subscriptions"]
    assert len(subs) == 1

    rc, out, _ = set_json("--queue-above", "8", "--budget-usd-month", "100")
    assert rc == 0
    status = {i["name"]: i["status"] for i in out["items"]}
    assert status["tgiops-llm-queue"] == "updated"
    assert status["tgiops-llm-unhealthy"] == "unchanged"
    queue = alarms()["tgiops-llm-queue"]
    assert queue["Threshold"] == 8.0
    assert alarm_tags(queue) == [STACK_TAG]

    rc, out, _ = set_json("--budget-usd-month", "100")  # no queue alarm asked: it stays
    assert rc == 0
    status = {i["name"]: i["status"] for i in out["items"]}
    assert status["tgiops-llm-queue"] == "kept"
    assert alarms()["tgiops-llm-queue"]["Threshold"] == 8.0


def test_dry_run_changes_nothing(moto: Moto) -> None:
    rc, out, _ = set_json("--budget-usd-month", "100", "--dry-run")
    assert rc == 0 and out["dry_run"] is True
    assert {i["status"] for i in out["items"]} == {"would create"}
    assert alarms() == {} and topics() == [] and budget_names() == []


def test_delete_removes_what_set_made_and_is_safe_twice(moto: Moto) -> None:
    assert set_json("--queue-above", "5", "--budget-usd-month", "100")[0] == 0
    result = run_tgiops("alarms", "delete", "--stack", "llm", "--json")
    assert result.returncode == 0, result.stderr
    deleted = {(i["kind"], i["name"]) for i in json.loads(result.stdout)["items"]}
    assert ("budget", "tgiops-llm-monthly") in deleted and ("topic", TOPIC) in deleted
    assert alarms() == {} and topics() == [] and budget_names() == []
    again = run_tgiops("alarms", "delete", "--stack", "llm", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["items"] == []


def test_an_untagged_alarm_of_our_name_is_refused_and_never_deleted(moto: Moto) -> None:
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    cw.put_metric_alarm(
        AlarmName="tgiops-llm-unhealthy",
        Namespace="Other",
        MetricName="M",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="LessThanThreshold",
    )
    rc, out, _ = set_json()
    assert rc == 2
    assert "tgiops-llm-unhealthy" in out["error"]["message"]
    assert topics() == []  # refused before anything was created
    assert set(alarms()) == {"tgiops-llm-unhealthy"}
    result = run_tgiops("alarms", "delete", "--stack", "llm", "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)["items"]
    assert (item["name"], item["status"]) == ("tgiops-llm-unhealthy", "left")
    assert alarms()["tgiops-llm-unhealthy"]["Namespace"] == "Other"


def test_a_given_topic_is_used_and_never_deleted(moto: Moto) -> None:
    mine = boto3.client("sns", region_name="us-east-1").create_topic(Name="ops-pager")["TopicArn"]
    rc, out, _ = set_json("--sns-topic", mine, "--budget-usd-month", "50")
    assert rc == 0
    assert out["topic"] == {"arn": mine, "created_by_tgiops": False}
    assert topics() == [mine]  # no topic of tgiops' own
    assert {a["AlarmActions"][0] for a in alarms().values()} == {mine}
    assert any("budgets.amazonaws.com" in w for w in out["warnings"])
    result = run_tgiops("alarms", "delete", "--stack", "llm")
    assert result.returncode == 0, result.stderr
    assert alarms() == {} and budget_names() == []
    assert topics() == [mine]


def test_billing_alarm_without_billing_alerts_sets_the_rest_and_says_how(moto: Moto) -> None:
    rc, out, _ = set_json("--billing-usd", "300")
    assert rc == 1
    assert "billing alerts are not enabled" in out["problems"][0]
    assert "Receive CloudWatch billing alerts" in out["problems"][0]
    assert set(alarms()) == {"tgiops-llm-unhealthy", "tgiops-llm-gpu-idle"}
    text = run_tgiops("alarms", "set", "--stack", "llm", "--billing-usd", "300")
    assert text.returncode == 1 and "not done: billing alerts are not enabled" in text.stdout

    enable_billing_metric()
    rc, out, _ = set_json("--billing-usd", "300")
    assert rc == 0, out
    billing = alarms()["tgiops-llm-billing"]
    assert (billing["Namespace"], billing["MetricName"]) == ("AWS/Billing", "EstimatedCharges")
    assert billing["Dimensions"] == [{"Name": "Currency", "Value": "USD"}]
    assert billing["Threshold"] == 300.0 and billing["AlarmActions"] == [TOPIC]


def test_billing_alarm_from_another_region_gets_a_topic_in_us_east_1(moto: Moto) -> None:
    enable_billing_metric()
    result = run_tgiops(
        "alarms", "set", "--stack", "llm", "--region", "us-west-2", "--billing-usd", "40",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    west = TOPIC.replace("us-east-1", "us-west-2")
    assert set(alarms("us-west-2")) == {"tgiops-llm-unhealthy", "tgiops-llm-gpu-idle"}
    assert alarms("us-west-2")["tgiops-llm-unhealthy"]["AlarmActions"] == [west]
    assert alarms("us-east-1")["tgiops-llm-billing"]["AlarmActions"] == [TOPIC]
    result = run_tgiops("alarms", "delete", "--stack", "llm", "--region", "us-west-2")
    assert result.returncode == 0, result.stderr
    assert alarms("us-west-2") == {} and alarms("us-east-1") == {}
    assert topics("us-west-2") == [] and topics("us-east-1") == []


@pytest.mark.parametrize(
    "args",
    [
        ("--idle-hours", "4"),
        ("--unhealthy-minutes", "0"),
        ("--email", "ops@example.com", "--sns-topic", TOPIC),
        ("--sns-topic", TOPIC.replace("tgiops-alarms-llm", "absent")),
    ],
)
def test_bad_input_is_refused_before_any_call(moto: Moto, args: tuple[str, ...]) -> None:
    rc, out, _ = set_json(*args)
    assert rc == 2 and out["exit_code"] == 2
    assert alarms() == {} and topics() == []


def test_a_denied_topic_creation_is_one_json_error_naming_the_permission(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(operation: str, body: bytes) -> Any:
        if operation == "CreateTopic":
            return query_error("AuthorizationError", "not authorized", status=403)
        return None

    with AnsweringRelay(moto.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        result = run_tgiops("alarms", "set", "--stack", "llm", "--json")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout)["error"]
    assert "sns:CreateTopic" in error["message"]
    assert alarms() == {}  # the alarms come after their topic


def test_a_new_budget_limit_is_an_update_budget_call(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto has no UpdateBudget: the relay answers it and keeps what tgiops sent."""
    assert set_json("--budget-usd-month", "100")[0] == 0

    def answer(operation: str, body: bytes) -> Any:
        if operation == "AWSBudgetServiceGateway.UpdateBudget":
            return json_answer(200, {})
        return None

    with AnsweringRelay(moto.endpoint_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        rc, out, _ = set_json("--budget-usd-month", "250")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    assert rc == 0, out
    status = {i["name"]: i["status"] for i in out["items"]}
    assert status["tgiops-llm-monthly"] == "updated"
    (sent,) = [json.loads(b) for op, b in relay.seen if op.endswith(".UpdateBudget")]
    assert sent["NewBudget"]["BudgetName"] == "tgiops-llm-monthly"
    assert sent["NewBudget"]["BudgetLimit"] == {"Amount": "250.00", "Unit": "USD"}
    assert not [op for op, _ in relay.seen if op.endswith(".CreateBudget")]


def test_set_warns_while_no_host_of_the_group_sends(moto: Moto) -> None:
    rc, out, _ = set_json()
    assert rc == 0
    assert any("no host sends metrics for tgiops-llm" in w for w in out["warnings"])
    boto3.client("cloudwatch", region_name="us-east-1").put_metric_data(
        Namespace="tgiops",
        MetricData=[
            {
                "MetricName": "Healthy",
                "Dimensions": [
                    {"Name": "Group", "Value": "tgiops-llm"},
                    {"Name": "Unit", "Value": "tgiops-phi"},
                    {"Name": "InstanceId", "Value": "i-1"},
                ],
                "Value": 1.0,
            }
        ],
    )
    rc, out, _ = set_json()
    assert rc == 0
    assert not any("no host sends" in w for w in out["warnings"])
