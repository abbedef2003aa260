"""`tgiops alarms set|list|delete`: the CloudWatch alarms, SNS topic and AWS Budget of a stack
or an Auto Scaling group (specs: tgiops.core.alarms; AWS calls: tgiops.edges.aws.alarms.AlarmsEdge).

``set`` first looks (nothing changed): a topic, alarm or budget of tgiops' name that is not
tagged for this owner is refused (exit 2). Then it creates what is missing and overwrites what
differs, so running it twice changes nothing. The billing alarm lives in us-east-1 and needs
billing alerts enabled: without the metric it is left out, said so, and the rest is still set
(exit 1). ``delete`` removes exactly what ``set`` made: alarms and topics tagged for the owner,
the budget of its name; never an untagged alarm or a topic given with --sns-topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tgiops.core import alarms as core
from tgiops.core import monitor
from tgiops.core.errors import AWSError, InputError
from tgiops.edges.aws.alarms import AlarmsEdge
from tgiops.edges.aws.client import Aws

BILLING_HOWTO = (
    "billing alerts are not enabled for this account (CloudWatch has no AWS/Billing "
    "EstimatedCharges metric in us-east-1): enable 'Receive CloudWatch billing alerts' in the "
    "Billing and Cost Management console (Billing preferences, as the account's root user or "
    "an IAM identity with billing access), wait for the metric (it can take hours), then run "
    "`tgiops alarms set` again; or use --budget-usd-month"
)


@dataclass
class Item:
    kind: str  # alarm | topic | subscription | budget
    name: str
    status: str  # created | updated | unchanged | would create | would update | deleted | ...
    region: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "region": self.region,
            "detail": self.detail,
        }


@dataclass
class AlarmsResult:
    action: str  # set | delete
    owner: core.Owner
    region: str
    dry_run: bool = False
    topic_arn: str | None = None
    topic_created_by_tgiops: bool = False
    items: list[Item] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # asked and not done: exit 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.owner.as_dict(),
            "region": self.region,
            "dry_run": self.dry_run,
            "topic": {"arn": self.topic_arn, "created_by_tgiops": self.topic_created_by_tgiops},
            "items": [i.as_dict() for i in self.items],
            "warnings": list(self.warnings),
            "problems": list(self.problems),
        }


EdgeFor = Callable[[str], AlarmsEdge]


def edges_for(aws: Aws, make: Callable[[str], Aws]) -> EdgeFor:
    """An AlarmsEdge per region: the command's own, and us-east-1 for the billing alarm."""
    cache: dict[str, AlarmsEdge] = {aws.region: AlarmsEdge(aws)}

    def edge(region: str) -> AlarmsEdge:
        if region not in cache:
            cache[region] = AlarmsEdge(make(region))
        return cache[region]

    return edge


def _topic_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{account}:{name}"


def _refuse_foreign(what: str, name: str, owner: core.Owner) -> InputError:
    return InputError(
        f"{what} {name} exists without the tag {owner.tag_key}={owner.tag_value}: tgiops did "
        f"not create it for this {'stack' if owner.tag_key == core.STACK_TAG else 'group'} and "
        "leaves it alone; delete or rename it, or pick another name"
    )


def set_alarms(
    request: core.AlarmsRequest, edge_for: EdgeFor, region: str, *, dry_run: bool = False
) -> AlarmsResult:
    owner = request.owner
    result = AlarmsResult("set", owner, region, dry_run=dry_run, warnings=list(request.warnings))
    home = edge_for(region)
    account = home.account_id()
    billing = [a for a in request.alarms if a.region == core.BILLING_REGION]
    # Look first, change nothing: the billing metric, and names that exist and are not ours.
    if billing and not edge_for(core.BILLING_REGION).has_metric(
        core.BILLING_NAMESPACE, core.BILLING_METRIC, core.BILLING_DIMENSIONS
    ):
        result.problems.append(BILLING_HOWTO)
        result.items.append(
            Item(
                "alarm",
                billing[0].name,
                "not set",
                core.BILLING_REGION,
                "billing alerts not enabled",
            )
        )
        billing = []
    specs = [a for a in request.alarms if a.region is None] + billing
    group = [{"Name": monitor.GROUP_DIMENSION, "Value": owner.group}]
    if not home.has_metric(monitor.NAMESPACE, monitor.HEALTHY, group):
        result.warnings.append(
            f"no host sends metrics for {owner.group} yet (`tgiops monitor enable` with "
            f"--stack or --asg sets the {monitor.GROUP_DIMENSION} dimension): until one does, "
            "the unhealthy alarm reads the silence as an outage"
        )
    regions = sorted({a.region or region for a in specs} | {region})
    existing: dict[tuple[str, str], dict[str, Any]] = {}  # (region, name) -> alarm
    topics: dict[str, tuple[str, bool]] = {}  # region -> (arn, exists)
    for where in regions:
        edge = edge_for(where)
        for alarm in edge.alarms(owner.prefix):
            existing[(where, alarm["AlarmName"])] = alarm
        if request.sns_topic is None:
            arn = _topic_arn(where, account, owner.topic_name)
            tags = edge.topic_tags(arn)
            if tags is not None and not owner.owns(tags):
                raise _refuse_foreign("the SNS topic", arn, owner)
            topics[where] = (arn, tags is not None)
    if request.sns_topic is not None and home.topic_tags(request.sns_topic) is None:
        raise InputError(f"--sns-topic {request.sns_topic}: no such topic in {region}")
    for spec in specs:
        found = existing.get((spec.region or region, spec.name))
        if found is not None and not owner.owns(found["Tags"]):
            raise _refuse_foreign("the alarm", spec.name, owner)
    budget_now = home.budget(account, request.budget.name) if request.budget else None

    # The topic(s), then the alarms, then the budget.
    if request.sns_topic is not None:
        result.topic_arn = request.sns_topic
        topic_in = {region: request.sns_topic, core.BILLING_REGION: request.sns_topic}
    else:
        result.topic_created_by_tgiops = True
        topic_in = {}
        for where, (arn, exists) in topics.items():
            topic_in[where] = arn
            _ensure_topic(result, edge_for(where), owner, arn, exists, account, request.email)
        result.topic_arn = topic_in[region]
    for spec in specs:
        where = spec.region or region
        actions = [topic_in[where]]
        found = existing.pop((where, spec.name), None)
        if found is None:
            status, detail = "created", spec.watches
        else:
            diff = spec.differs_from(found, actions)
            status = "updated" if diff else "unchanged"
            detail = f"changed: {', '.join(diff)}" if diff else spec.watches
        if status != "unchanged" and not dry_run:
            edge_for(where).put_alarm(spec.put_params(actions, owner.tags))
        result.items.append(Item("alarm", spec.name, _maybe(status, dry_run), where, detail))
    for (where, name), alarm in sorted(existing.items()):  # set before, not asked this time
        if owner.owns(alarm["Tags"]) and not any(i.name == name for i in result.items):
            result.items.append(
                Item(
                    "alarm", name, "kept", where, "not asked this time; `alarms delete` removes it"
                )
            )
    if request.budget is not None:
        _ensure_budget(result, home, account, request.budget, budget_now, topic_in[region])
    return result


def _maybe(status: str, dry_run: bool) -> str:
    return f"would {status.removesuffix('d')}" if dry_run and status != "unchanged" else status


def _ensure_topic(
    result: AlarmsResult,
    edge: AlarmsEdge,
    owner: core.Owner,
    arn: str,
    exists: bool,
    account: str,
    email: str | None,
) -> None:
    policy = core.topic_policy(arn, account)
    if not exists:
        result.items.append(Item("topic", arn, _maybe("created", result.dry_run), edge.region))
        if not result.dry_run:
            created = edge.create_topic(owner.topic_name, owner.tags)
            if created != arn:  # the ARN tgiops looked up must be the one SNS made
                raise AWSError(f"SNS created the topic {created}, tgiops expected {arn}")
            edge.set_topic_policy(arn, policy)
    else:
        same = edge.topic_policy(arn) == policy
        result.items.append(
            Item(
                "topic",
                arn,
                "unchanged" if same else _maybe("updated", result.dry_run),
                edge.region,
                "" if same else "access policy",
            )
        )
        if not same and not result.dry_run:
            edge.set_topic_policy(arn, policy)
    if email is None:
        return
    subscribed = exists and ("email", email) in edge.subscriptions(arn)
    result.items.append(
        Item(
            "subscription",
            f"email:{email}",
            "unchanged" if subscribed else _maybe("created", result.dry_run),
            edge.region,
            ""
            if subscribed
            else "AWS mails a confirmation link: nothing arrives before it is followed",
        )
    )
    if not subscribed and not result.dry_run:
        edge.subscribe_email(arn, email)


def _ensure_budget(
    result: AlarmsResult,
    edge: AlarmsEdge,
    account: str,
    spec: core.BudgetSpec,
    now: dict[str, Any] | None,
    topic: str,
) -> None:
    detail = f"${spec.usd_per_month:g} a month (COST), actual spend above 100% to {topic}"
    if now is None:
        result.items.append(
            Item("budget", spec.name, _maybe("created", result.dry_run), "global", detail)
        )
        if not result.dry_run:
            edge.create_budget(account, spec.budget(), spec.notifications(topic), result.owner.tags)
    elif spec.same_limit(now):
        result.items.append(Item("budget", spec.name, "unchanged", "global", detail))
    else:
        result.items.append(
            Item(
                "budget",
                spec.name,
                _maybe("updated", result.dry_run),
                "global",
                f"changed: limit; {detail}",
            )
        )
        if not result.dry_run:
            edge.update_budget(account, spec.budget())


@dataclass(frozen=True)
class AlarmRow:
    name: str
    region: str
    state: str
    comparison: str
    threshold: float
    period_s: int | None
    evaluation_periods: int
    watches: str
    actions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "state": self.state,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "period_s": self.period_s,
            "evaluation_periods": self.evaluation_periods,
            "watches": self.watches,
            "actions": list(self.actions),
        }


@dataclass
class AlarmsListing:
    owner: core.Owner
    region: str
    alarms: list[AlarmRow] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    topics: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.owner.as_dict(),
            "region": self.region,
            "alarms": [a.as_dict() for a in self.alarms],
            "budget": self.budget,
            "topics": list(self.topics),
        }


def _regions(region: str) -> list[str]:
    return sorted({region, core.BILLING_REGION})


def list_alarms(owner: core.Owner, edge_for: EdgeFor, region: str) -> AlarmsListing:
    listing = AlarmsListing(owner, region)
    home = edge_for(region)
    account = home.account_id()
    for where in _regions(region):
        edge = edge_for(where)
        for a in edge.alarms(owner.prefix):
            if not owner.owns(a["Tags"]):
                continue
            metrics = a.get("Metrics") or []
            period = metrics[0].get("Period") if metrics else a.get("Period")
            listing.alarms.append(
                AlarmRow(
                    name=a["AlarmName"],
                    region=where,
                    state=a.get("StateValue", "?"),
                    comparison=a.get("ComparisonOperator", "?"),
                    threshold=float(a.get("Threshold", 0.0)),
                    period_s=period,
                    evaluation_periods=int(a.get("EvaluationPeriods", 0)),
                    watches=a.get("AlarmDescription", ""),
                    actions=tuple(a.get("AlarmActions") or ()),
                )
            )
        arn = _topic_arn(where, account, owner.topic_name)
        tags = edge.topic_tags(arn)
        if tags is not None and owner.owns(tags):
            listing.topics.append(arn)
    budget = home.budget(account, owner.budget_name)
    if budget is not None:
        limit = budget.get("BudgetLimit") or {}
        listing.budget = {
            "name": owner.budget_name,
            "usd_per_month": float(limit.get("Amount", 0.0)),
            "time_unit": budget.get("TimeUnit"),
            "budget_type": budget.get("BudgetType"),
        }
    return listing


def delete_alarms(owner: core.Owner, edge_for: EdgeFor, region: str) -> AlarmsResult:
    """Delete what ``set`` made for ``owner``; what is gone already is not an error."""
    result = AlarmsResult("delete", owner, region)
    home = edge_for(region)
    account = home.account_id()
    for where in _regions(region):
        edge = edge_for(where)
        ours: list[str] = []
        foreign: list[str] = []
        for a in edge.alarms(owner.prefix):
            (ours if owner.owns(a["Tags"]) else foreign).append(a["AlarmName"])
        if ours:
            edge.delete_alarms(ours)
        result.items.extend(Item("alarm", n, "deleted", where) for n in ours)
        result.items.extend(
            Item("alarm", n, "left", where, f"not tagged {owner.tag_key}={owner.tag_value}")
            for n in foreign
        )
        arn = _topic_arn(where, account, owner.topic_name)
        tags = edge.topic_tags(arn)
        if tags is not None and owner.owns(tags):
            edge.delete_topic(arn)
            result.items.append(Item("topic", arn, "deleted", where))
        elif tags is not None:
            result.items.append(
                Item("topic", arn, "left", where, f"not tagged {owner.tag_key}={owner.tag_value}")
            )
    if home.budget(account, owner.budget_name) is not None:
        home.delete_budget(account, owner.budget_name)
        result.items.append(Item("budget", owner.budget_name, "deleted", "global"))
    return result
