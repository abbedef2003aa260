"""`tgiops reconcile`: from the outside, make the live instances serve what was deployed.

One pass (safe to repeat from cron, a systemd timer, ``--watch`` or an EventBridge-triggered
Lambda: :func:`lambda_handler`):

1. the live instances: the Auto Scaling group's InService ones (``--asg``) or the running ones
   with a Name tag (``--name``), oldest first;
2. per instance, over SSH, the deployment record (tgiops.core.record): its data volume first, then
   its own tags, then the group's tags (reconcile keeps the record there, so a replacement that
   lacks the old volume still finds it), then the tags of earlier instances of the group;
3. per record, :func:`tgiops.commands.bootstrap.restore`: offline start when the model is
   cached, wait for a unit that is still loading, else the regular deploy, which changes nothing
   when the installed unit is the same and healthy; the record goes onto the instance's tags;
4. the Elastic IP (``--eip``) stays on a live, healthy instance, or moves to the oldest healthy
   one (to a live one when none is healthy yet: the old holder is gone anyway);
5. the ALB target group (``--target-group``): healthy live instances are registered on each
   unit's port; targets whose instance is no longer live are deregistered. Growing past one
   instance is the load balancer's job; the Elastic IP is for single-instance groups.

The controller needs: ec2:DescribeInstances, autoscaling:DescribeAutoScalingGroups, ec2:CreateTags,
autoscaling:CreateOrUpdateTags, ec2:DescribeAddresses + ec2:AssociateAddress (``--eip``),
elasticloadbalancing:DescribeTargetHealth/RegisterTargets/DeregisterTargets
(``--target-group``), secretsmanager:GetSecretValue on the token; and SSH to the instances.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tgiops.commands.bootstrap import (
    EipOutcome,
    Restored,
    check_elastic_ip,
    point_elastic_ip,
    restore_found,
)
from tgiops.core.catalog import ModelSpec
from tgiops.core.errors import InputError, TargetNotFoundError, TgiopsError
from tgiops.core.layout import DEFAULT_DATA_DIR, DEFAULT_TOKEN_SECRET
from tgiops.core.record import (
    DeploymentRecord,
    Entry,
    OperatorSettings,
    first_found,
    instance_tags,
    tag_entries,
    tags_differ,
)
from tgiops.edges.record_store import read_entries
from tgiops.edges.targets import ssh_config_hosts

log = logging.getLogger(__name__)

_TARGET_GROUP_RE = re.compile(
    r"arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/[A-Za-z0-9-]+/[0-9a-f]+"
)
_ANY_STATE = ("pending", "running", "shutting-down", "stopping", "stopped", "terminated")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReconcileOptions:
    asg_name: str | None = None
    name_tag: str | None = None
    elastic_ip: str | None = None
    target_group_arn: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    timeout_s: float | None = None
    address: str = "public"  # how to reach an instance without an ssh_config alias
    # The operator's, never a record's or a tag's (tgiops.core.record.OperatorSettings):
    token_secret: str | None = DEFAULT_TOKEN_SECRET
    api_key_secret: str | None = None
    public: bool = False

    @property
    def settings(self) -> OperatorSettings:
        return OperatorSettings(self.token_secret, self.api_key_secret, self.data_dir, self.public)

    def __post_init__(self) -> None:
        _ = self.settings  # validates the secret names and the data dir
        if bool(self.asg_name) == bool(self.name_tag):
            raise InputError(
                "which instances? Give exactly one of --asg NAME (an Auto Scaling group) or "
                "--name TAG (running instances with that Name tag)"
            )
        if self.elastic_ip:
            check_elastic_ip(self.elastic_ip)
        if self.target_group_arn and not _TARGET_GROUP_RE.fullmatch(self.target_group_arn):
            raise InputError(
                f"--target-group {self.target_group_arn!r} is not a target group ARN "
                "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
            )
        if self.address not in ("public", "private"):
            raise InputError(f"address {self.address!r}: give public or private")

    @property
    def selector(self) -> str:
        if self.asg_name:
            return f"Auto Scaling group {self.asg_name}"
        return f"instances named {self.name_tag}"


@dataclass(frozen=True)
class InstanceOutcome:
    instance_id: str
    destination: str | None
    units: tuple[Restored, ...] = ()
    record_source: str | None = None
    failure: str | None = None
    tags_written: bool = False

    @property
    def healthy(self) -> bool:
        return bool(self.units) and all(u.healthy for u in self.units)

    @property
    def changed(self) -> bool:
        return self.tags_written or any(u.changed for u in self.units)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "destination": self.destination,
            "healthy": self.healthy,
            "changed": self.changed,
            "record_source": self.record_source,
            "units": [u.as_dict() for u in self.units],
            "tags_written": self.tags_written,
            "failure": self.failure,
        }


@dataclass(frozen=True)
class TargetGroupOutcome:
    arn: str
    registered: tuple[str, ...] = ()  # "i-...:PORT"
    deregistered: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.registered or self.deregistered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "registered": list(self.registered),
            "deregistered": list(self.deregistered),
            "changed": self.changed,
        }


@dataclass(frozen=True)
class ReconcileResult:
    selector: str
    instances: tuple[InstanceOutcome, ...]
    elastic_ip: EipOutcome | None = None
    target_group: TargetGroupOutcome | None = None
    group_tags_written: bool = False
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return (
            any(i.changed for i in self.instances)
            or bool(self.elastic_ip and self.elastic_ip.changed)
            or bool(self.target_group and self.target_group.changed)
            or self.group_tags_written
        )

    @property
    def healthy(self) -> bool:
        if not self.instances or not all(i.healthy for i in self.instances):
            return False
        healthy_ids = {i.instance_id for i in self.instances if i.healthy}
        return self.elastic_ip is None or self.elastic_ip.after in healthy_ids

    def as_dict(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "healthy": self.healthy,
            "changed": self.changed,
            "instances": [i.as_dict() for i in self.instances],
            "elastic_ip": self.elastic_ip.as_dict() if self.elastic_ip else None,
            "target_group": self.target_group.as_dict() if self.target_group else None,
            "group_tags_written": self.group_tags_written,
            "elapsed_s": round(self.elapsed_s, 2),
            "notes": list(self.notes),
        }


def reconcile(
    aws: Any,
    options: ReconcileOptions,
    *,
    ssh_template: Any,
    catalog: Mapping[str, ModelSpec],
    template_text: str,
    connect: Callable[[Any], Any] | None = None,
    on_progress: Progress = lambda message: None,
) -> ReconcileResult:
    """One reconcile pass (see the module docstring). ``aws`` is a tgiops.edges.aws.client.Aws,
    ``ssh_template`` a tgiops.edges.ssh.SSHTarget (config, user, key, host-key policy)."""
    if connect is None:
        from tgiops.edges.ssh import RemoteHost

        connect = RemoteHost
    started = time.monotonic()
    notes: list[str] = []
    live = _live_instances(aws, options, notes)
    on_progress(f"{options.selector}: {len(live)} live instance(s)")
    aliases = ssh_config_hosts(ssh_template.ssh_config_path)
    group = _GroupRecords(aws, options, exclude={i.instance_id for i in live})
    outcomes = []
    for instance in live:
        try:
            outcome = _reconcile_instance(
                aws,
                instance,
                options,
                group,
                ssh_template,
                aliases,
                catalog,
                template_text,
                connect,
                on_progress,
            )
        except Exception as exc:  # one instance's failure never stops the others (issue 12)
            log.debug("reconciling %s", instance.instance_id, exc_info=True)
            failure = str(exc) if isinstance(exc, TgiopsError) else f"{type(exc).__name__}: {exc}"
            outcome = InstanceOutcome(instance.instance_id, None, failure=failure)
        outcomes.append(outcome)
    group_tags_written = False
    healthy_records = [r for o in outcomes if o.healthy for r in group.records_of(o.instance_id)]
    if options.asg_name and healthy_records:
        group_tags_written = _GroupTags(aws, options.asg_name).ensure(healthy_records)
    eip = _place_elastic_ip(aws, options, live, outcomes, notes, on_progress)
    target_group = None
    if options.target_group_arn:
        target_group = _TargetGroup(aws, options.target_group_arn).reconcile(live, outcomes)
    return ReconcileResult(
        selector=options.selector,
        instances=tuple(outcomes),
        elastic_ip=eip,
        target_group=target_group,
        group_tags_written=group_tags_written,
        elapsed_s=time.monotonic() - started,
        notes=tuple(notes),
    )


def _live_instances(aws: Any, options: ReconcileOptions, notes: list[str]) -> list[Any]:
    """The live instances; none (with the reason as a note) when AWS finds none."""
    try:
        if options.asg_name:
            return list(aws.find_instances(asg_name=options.asg_name))
        return list(aws.find_instances(name_tag=options.name_tag))
    except TargetNotFoundError as exc:
        notes.append(str(exc))
        return []


def _reconcile_instance(
    aws: Any,
    instance: Any,
    options: ReconcileOptions,
    group: _GroupRecords,
    ssh_template: Any,
    aliases: set[str],
    catalog: Mapping[str, ModelSpec],
    template_text: str,
    connect: Callable[[Any], Any],
    on_progress: Progress,
) -> InstanceOutcome:
    iid = instance.instance_id
    destination = _destination(instance, aliases, options.address)
    if destination is None:
        return InstanceOutcome(
            iid,
            None,
            failure=f"{iid} has no {options.address} address and no ssh_config entry: add "
            f"`Host {iid}` (HostName/ProxyJump) to the ssh_config",
        )
    on_progress(f"{iid}: connecting to {destination}")
    try:
        with connect(replace(ssh_template, destination=destination)) as host:
            found = first_found(
                [
                    (f"the data volume of {iid}", lambda: read_entries(host, options.data_dir)),
                    (f"the tags of {iid}", lambda: tag_entries(instance.tags, origin=iid)),
                    *group.sources(),
                ]
            )
            if found is None:
                return InstanceOutcome(
                    iid,
                    destination,
                    failure=(
                        f"no deployment record for {iid}: not on its data volume "
                        f"({options.data_dir}), not in its tags or the group's. Deploy once "
                        "with `tgiops deploy --instance ID ...`"
                    ),
                )
            # Records and tags say what to serve; secrets, data dir and public are the
            # operator's (tgiops.core.record, "Trust").
            records, units = restore_found(
                host,
                found,
                lambda unit: options.settings,
                catalog=catalog,
                get_secret=aws.get_secret,
                template_text=template_text,
                timeout_s=options.timeout_s,
                on_progress=_prefixed(on_progress, iid),
            )
    except TgiopsError as exc:
        log.error("%s: %s", iid, exc)
        return InstanceOutcome(iid, destination, failure=str(exc))
    healthy = [r for r, u in zip(records, units, strict=False) if u.healthy]
    group.remember(iid, healthy)
    tags_written = False
    if healthy:
        wanted: dict[str, str] = {}
        for record in healthy:
            wanted.update(instance_tags(record))
        if tags_differ(instance.tags, wanted):
            try:
                aws.tag_instance(iid, wanted)
                tags_written = True
            except TgiopsError as exc:
                log.warning("could not tag %s with its deployment record: %s", iid, exc)
    return InstanceOutcome(iid, destination, units, found.source, None, tags_written)


def _prefixed(on_progress: Progress, prefix: str) -> Progress:
    def show(message: str) -> None:
        on_progress(f"{prefix}: {message}")

    return show


def _destination(instance: Any, aliases: set[str], address: str) -> str | None:
    if instance.instance_id in aliases:
        return str(instance.instance_id)
    ip = instance.public_ip if address == "public" else instance.private_ip
    return str(ip) if ip else None


class _GroupRecords:
    """Records known for the group: its own tags (ASG) and the tags of earlier instances."""

    def __init__(self, aws: Any, options: ReconcileOptions, exclude: set[str]) -> None:
        self._aws = aws
        self._options = options
        self._exclude = exclude
        self._healthy: dict[str, list[DeploymentRecord]] = {}

    def remember(self, instance_id: str, records: list[DeploymentRecord]) -> None:
        self._healthy[instance_id] = records

    def records_of(self, instance_id: str) -> list[DeploymentRecord]:
        return self._healthy.get(instance_id, [])

    def sources(self) -> list[tuple[str, Callable[[], Sequence[Entry]]]]:
        sources: list[tuple[str, Callable[[], Sequence[Entry]]]] = []
        if self._options.asg_name:
            name = self._options.asg_name
            sources.append(
                (
                    f"the tags of Auto Scaling group {name}",
                    lambda: tag_entries(_GroupTags(self._aws, name).read() or {}, origin=name),
                )
            )
        sources.append(("the tags of earlier instances of the group", self._earlier))
        return sources

    def _earlier(self) -> list[Entry]:
        options = self._options
        tag_filters = (
            {"aws:autoscaling:groupName": options.asg_name}
            if options.asg_name
            else {"Name": str(options.name_tag)}
        )
        try:
            instances = self._aws.find_instances(tag_filters=tag_filters, states=_ANY_STATE)
        except TargetNotFoundError:
            return []
        for instance in reversed(instances):  # newest first
            if instance.instance_id in self._exclude:
                continue
            found = tag_entries(instance.tags, origin=instance.instance_id)
            if found:
                return found
        return []


class _GroupTags:
    """The record on the Auto Scaling group's tags (not propagated: instances get their own).

    They go through ``Aws.call``, so errors are translated the same way (and name the IAM
    action)."""

    def __init__(self, aws: Any, name: str) -> None:
        self._aws = aws
        self._name = name

    def read(self) -> dict[str, str] | None:
        """The group's tags; None when the group does not exist (any more)."""
        response = self._aws.call(
            "autoscaling",
            "describe_auto_scaling_groups",
            what=f"looking up Auto Scaling group {self._name!r}",
            iam_action="autoscaling:DescribeAutoScalingGroups",
            AutoScalingGroupNames=[self._name],
        )
        groups = response.get("AutoScalingGroups", [])
        if not groups:
            return None
        return {t["Key"]: t.get("Value", "") for t in groups[0].get("Tags", [])}

    def ensure(self, records: list[DeploymentRecord]) -> bool:
        wanted: dict[str, str] = {}
        for record in records:
            wanted.update(instance_tags(record))
        current = self.read()
        if current is None or not tags_differ(current, wanted):
            return False
        self._aws.call(
            "autoscaling",
            "create_or_update_tags",
            what=f"tagging Auto Scaling group {self._name!r} with the deployment record",
            iam_action="autoscaling:CreateOrUpdateTags",
            Tags=[
                {
                    "ResourceId": self._name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": False,
                }
                for key, value in wanted.items()
            ],
        )
        log.info("Auto Scaling group %s now carries the deployment record", self._name)
        return True


class _TargetGroup:
    """An ALB target group: register healthy live instances, deregister gone ones."""

    def __init__(self, aws: Any, arn: str) -> None:
        self._aws = aws
        self._arn = arn

    def _call(self, operation: str, action: str, what: str, **params: Any) -> Any:
        return self._aws.call(
            "elbv2",
            operation,
            what=f"{what} target group {self._arn}",
            iam_action=f"elasticloadbalancing:{action}",
            TargetGroupArn=self._arn,
            **params,
        )

    def reconcile(self, live: list[Any], outcomes: list[InstanceOutcome]) -> TargetGroupOutcome:
        described = self._call("describe_target_health", "DescribeTargetHealth", "reading")
        current = {
            (d["Target"]["Id"], int(d["Target"].get("Port", 0)))
            for d in described.get("TargetHealthDescriptions", [])
        }
        live_ids = {i.instance_id for i in live}
        wanted = {(o.instance_id, u.port) for o in outcomes if o.healthy for u in o.units}
        register = sorted(wanted - current)
        deregister = sorted(t for t in current if t[0] not in live_ids)
        if register:
            self._call(
                "register_targets",
                "RegisterTargets",
                "registering in",
                Targets=[{"Id": i, "Port": p} for i, p in register],
            )
        if deregister:
            self._call(
                "deregister_targets",
                "DeregisterTargets",
                "deregistering from",
                Targets=[{"Id": i, "Port": p} for i, p in deregister],
            )
        return TargetGroupOutcome(
            self._arn,
            tuple(f"{i}:{p}" for i, p in register),
            tuple(f"{i}:{p}" for i, p in deregister),
        )


def _place_elastic_ip(
    aws: Any,
    options: ReconcileOptions,
    live: list[Any],
    outcomes: list[InstanceOutcome],
    notes: list[str],
    on_progress: Progress,
) -> EipOutcome | None:
    allocation = options.elastic_ip
    if not allocation:
        return None
    current = aws.describe_elastic_ip(allocation)
    holder = current["instance_id"]
    live_ids = [i.instance_id for i in live]
    healthy_ids = [o.instance_id for o in outcomes if o.healthy]
    if holder in healthy_ids or (holder in live_ids and not healthy_ids):
        return EipOutcome(allocation, current["public_ip"], holder, holder, False)
    target = healthy_ids[0] if healthy_ids else (live_ids[0] if live_ids else None)
    if target is None:
        notes.append(f"Elastic IP {allocation} left on {holder}: no live instance to move it to")
        return EipOutcome(allocation, current["public_ip"], holder, holder, False)
    on_progress(f"moving Elastic IP {allocation} from {holder or 'nowhere'} to {target}")
    return point_elastic_ip(aws, allocation, target)


# -- a Lambda function ------------------------------------------------------------------------


def lambda_handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """One reconcile pass per invocation (an EventBridge rule on "EC2 Spot Instance
    Interruption Warning" / "EC2 Instance Launch Successful", or a schedule).

    Settings come from the function's environment only (an invoking event cannot change
    them: whoever may invoke the function must not point it at other instances, keys or
    secrets): ``TGIOPS_ASG`` or ``TGIOPS_NAME``, ``TGIOPS_EIP``, ``TGIOPS_TARGET_GROUP``,
    ``TGIOPS_SSH_KEY_SECRET`` (a Secrets Manager secret holding the SSH private key),
    ``TGIOPS_SSH_USER``, ``TGIOPS_SSH_CONFIG`` (an ssh_config of your own instead),
    ``TGIOPS_SSH_ADDRESS`` (private by default: the function runs in the VPC),
    ``TGIOPS_TIMEOUT``, and what only the operator decides for a restored unit:
    ``TGIOPS_SECRET_NAME`` (the token's secret, default tgiops/hf-token; empty: no token),
    ``TGIOPS_API_KEY_SECRET``, ``TGIOPS_DATA_DIR``, ``TGIOPS_PUBLIC=1``. Unknown host keys are
    refused unless ``TGIOPS_ACCEPT_NEW_HOST_KEY=1`` (a function keeps no known_hosts between
    cold starts: give an ssh_config whose known_hosts lists the group's host keys, or opt in).
    Returns the result as a dict (it lands in the function's response and logs).
    """
    from tgiops.edges import resources
    from tgiops.edges.aws.base import AwsSettings
    from tgiops.edges.aws.client import Aws
    from tgiops.edges.ssh import SSHTarget

    settings = dict(os.environ)
    if isinstance(event, Mapping) and "tgiops" in event:
        log.warning('ignoring the event\'s "tgiops" settings: only the environment decides')
    if isinstance(event, Mapping) and event.get("detail-type"):
        log.info("reconcile for %s (%s)", event.get("detail-type"), event.get("resources"))
    timeout = settings.get("TGIOPS_TIMEOUT")
    try:
        timeout_s = float(timeout) if timeout else None
    except ValueError as exc:
        raise InputError(f"TGIOPS_TIMEOUT={timeout!r} is not a number of seconds") from exc
    options = ReconcileOptions(
        asg_name=settings.get("TGIOPS_ASG") or None,
        name_tag=settings.get("TGIOPS_NAME") or None,
        elastic_ip=settings.get("TGIOPS_EIP") or None,
        target_group_arn=settings.get("TGIOPS_TARGET_GROUP") or None,
        timeout_s=timeout_s,
        address=settings.get("TGIOPS_SSH_ADDRESS", "private"),
        data_dir=settings.get("TGIOPS_DATA_DIR") or DEFAULT_DATA_DIR,
        token_secret=settings.get("TGIOPS_SECRET_NAME", DEFAULT_TOKEN_SECRET) or None,
        api_key_secret=settings.get("TGIOPS_API_KEY_SECRET") or None,
        public=settings.get("TGIOPS_PUBLIC") == "1",
    )
    aws = Aws(AwsSettings(region=settings.get("TGIOPS_REGION") or None))
    ssh_config = settings.get("TGIOPS_SSH_CONFIG") or _lambda_ssh_config(aws, settings)
    template = SSHTarget(
        destination="",
        ssh_config_path=ssh_config,
        user=settings.get("TGIOPS_SSH_USER") or None,
        accept_new_host_key=settings.get("TGIOPS_ACCEPT_NEW_HOST_KEY") == "1",
    )
    result = reconcile(
        aws,
        options,
        ssh_template=template,
        catalog=resources.load_catalog(),
        template_text=(resources.shipped_path("unit_templates") / "tgi.service.j2").read_text(),
    )
    return result.as_dict()


def _lambda_ssh_config(aws: Any, settings: Mapping[str, str]) -> str | None:
    """An ssh_config under /tmp with the key from TGIOPS_SSH_KEY_SECRET (0600)."""
    secret = settings.get("TGIOPS_SSH_KEY_SECRET")
    if not secret:
        return None
    base = os.path.join(settings.get("TGIOPS_TMP", "/tmp"), "tgiops-ssh")
    os.makedirs(base, mode=0o700, exist_ok=True)
    key_path = os.path.join(base, "id")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(aws.get_secret(secret).strip() + "\n")
    config_path = os.path.join(base, "ssh_config")
    with open(config_path, "w") as handle:
        handle.write(
            "Host *\n"
            f"    IdentityFile {key_path}\n"
            f"    UserKnownHostsFile {os.path.join(base, 'known_hosts')}\n"
        )
    return config_path
