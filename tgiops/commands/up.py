"""`tgiops up MODEL --name NAME`: from an AWS account to a self-healing spot endpoint.

The pure plan is tgiops.core.stack; every AWS call is in tgiops.edges.aws.stack (StackEdge). Order:

1. checks that change nothing (exit 2 on refusal): the stack name, the token secret exists, the
   subnets, the AMI, the instance types that fit (tgiops.core.recommend, the planner's ranking),
   the Service Quotas;
2. the plan: every resource with create/update/keep (``--dry-run`` stops here; without
   ``--yes`` the caller confirms);
3. create or update in dependency order, each step idempotent, so a failure halfway leaves a
   stack that a second `up` completes and `down` removes (everything is tagged as it is made);
4. wait (unless ``--no-wait``) until the group has an instance in service and, with an Elastic
   IP, until bootstrap pointed it there (it does so only once the endpoint is healthy:
   tgiops.commands.bootstrap.point_elastic_ip), reporting scaling-activity failures in words.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tgiops.core import stack as st
from tgiops.core.errors import AWSError, InputError, TgiopsError
from tgiops.core.request import DeployRequest

log = logging.getLogger(__name__)

POLICY_NAME = "tgiops-instance"
DEFAULT_WAIT_S = 1800.0
POLL_S = 10.0


@dataclass(frozen=True)
class UpOptions:
    stack: str
    request: DeployRequest
    install: dict[str, Any]  # pip_spec / pip_requirements / preinstalled for the user data
    spot: bool = True
    on_demand_base: int = 0
    instance_types: Sequence[str] = ()  # empty: every type the planner says fits
    max_usd_per_hour: float | None = None
    subnets: Sequence[str] = ()
    ssh_cidr: str | None = None
    public_ssh: bool = False
    key_name: str | None = None
    data_volume_gib: int | None = None
    data_volume_throughput: int | None = None
    ami: str | None = None
    eip: bool = True
    alb: bool = False
    # The model cache on the stack's own EBS volume, attached at boot and kept across
    # replacements (tgiops.commands.cache_volume); off with --efs (EFS is then the cache) or
    # --no-cache-volume (on the root volume: a replacement downloads again).
    cache_volume: bool = True
    dry_run: bool = False
    wait: bool = True
    wait_s: float = DEFAULT_WAIT_S


@dataclass
class UpResult:
    stack: str
    region: str
    changes: list[st.Change]
    applied: bool = False
    quotas: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    endpoint: str | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)
    usd_per_hour: float | None = None
    types: list[dict[str, Any]] = field(default_factory=list)
    healthy: bool | None = None
    cache_volumes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "applied": self.applied,
            "changes": [c.as_dict() for c in self.changes],
            "instance_types": self.types,
            "quotas": self.quotas,
            "warnings": self.warnings,
            "endpoint": self.endpoint,
            "instances": self.instances,
            "usd_per_hour": self.usd_per_hour,
            "healthy": self.healthy,
            "cache_volumes": self.cache_volumes,
        }


def choose_types(options: UpOptions, region: str, spot_prices: Any) -> tuple[st.TypeChoice, ...]:
    """The group's types: the planner's ranking (tgiops.core.recommend), cheapest first."""
    from tgiops.core import hardware
    from tgiops.core import recommend as rc

    # Each engine ranks with its own planner and overrides (Engine.plan_on).
    engine, overrides = options.request.engine, options.request.overrides
    filters = rc.Filters(
        region=region, max_usd_per_hour=options.max_usd_per_hour, spot=options.spot
    )
    rec = rc.recommend(
        options.request.model,
        engine,
        hardware.all_instance_types(),
        filters,
        spot_prices,
        overrides,
    )
    fitting = {c.instance_type.name: c for c in rec.candidates}
    if options.instance_types:
        why = {r.instance_type: r.why for r in rec.rejected}
        for name in options.instance_types:
            if name not in fitting:
                hardware.find_instance_type(name)  # unknown type: UnknownHardwareError
                raise InputError(
                    f"--instance-types {name}: {why.get(name, 'not in the ranking')}. "
                    "`tgiops plan MODEL` lists the types that serve it"
                )
        chosen = [fitting[n] for n in options.instance_types]
    else:
        chosen = list(rec.candidates)
    if not chosen:
        raise InputError(rc.nothing_fits_message(rec))
    return tuple(
        st.TypeChoice(
            c.instance_type.name,
            c.instance_type.vcpus,
            c.on_demand_usd_per_hour,
            c.spot_usd_per_hour,
        )
        for c in chosen[:20]  # a mixed-instances policy takes at most 20 overrides
    )


def uses_cache_volume(options: UpOptions) -> bool:
    return options.cache_volume and not options.install.get("efs_id")


def cache_volume_spec(options: UpOptions, gib: int, throughput: int) -> Any:
    """bootstrap.CacheVolumeSpec of the stack, or None (EFS or the root volume is the cache)."""
    from tgiops.commands import bootstrap

    if not uses_cache_volume(options):
        return None
    return bootstrap.CacheVolumeSpec(
        stack=options.stack, gib=gib, throughput=throughput, model=options.request.model.alias
    )


def render_user_data(
    options: UpOptions, asg_name: str, region: str, eip: str | None, cache: Any = None
) -> str:
    from tgiops.commands import bootstrap
    from tgiops.edges import resources

    rec = bootstrap.userdata_record(options.request, resources.load_catalog(environ={}))
    ud = bootstrap.UserdataOptions(
        record=rec,
        elastic_ip=eip,
        region=region,
        asg_name=asg_name,
        cache_volume=cache,
        **options.install,
    )
    templates = resources.shipped_path("unit_templates")
    text = bootstrap.render_userdata(
        ud,
        userdata_template=(templates / "userdata.sh.j2").read_text(),
        bootstrap_unit_template=(templates / "tgiops-bootstrap.service.j2").read_text(),
        watch_unit_template=(templates / "tgiops-watch-interruption.service.j2").read_text(),
    )
    return st.with_host_key_publishing(text)


def instance_policy(
    options: UpOptions, asg_name: str, region: str, account: str, eip: str | None
) -> dict[str, Any]:
    """Exactly `userdata --iam-policy`'s policy, plus the host-key statement."""
    from tgiops.commands import bootstrap
    from tgiops.edges import resources

    rec = bootstrap.userdata_record(options.request, resources.load_catalog(environ={}))
    base = bootstrap.iam_policy(
        bootstrap.secret_names(rec),
        eip,
        region=region,
        account=account,
        asg_name=asg_name,
        cache_volume_stack=options.stack if uses_cache_volume(options) else None,
        monitor=bool(options.install.get("monitor")),
    )
    return st.with_host_key_statement(base, asg_name, region, account)


def observe(edge: Any, stack: str, port: int = 8080) -> st.Observed:
    name = st.resource_name(stack)
    all_sgs = edge.find_security_groups(stack)
    sgs = [g for g in all_sgs if g.get("GroupName") == name]
    alb_sgs = [g for g in all_sgs if g.get("GroupName") == f"{name}-alb"]
    alb_sg = alb_sgs[0]["GroupId"] if alb_sgs else None
    lb = edge.find_load_balancer(name, stack)
    addresses = edge.find_addresses(stack)
    role = edge.role_tags(name)
    role_ours = role is not None and role.get(st.STACK_TAG) == stack
    if role is not None and not role_ours:
        raise InputError(
            f"an IAM role {name} exists without the tag {st.STACK_TAG}={stack}: tgiops does not "
            "own it. Pick another --name"
        )
    profile = edge.instance_profile(name)
    if profile is not None and profile["tags"].get(st.STACK_TAG) != stack:
        raise InputError(
            f"an instance profile {name} exists without the tag {st.STACK_TAG}={stack}: pick "
            "another --name"
        )
    lts = edge.find_launch_templates(stack)
    groups = edge.find_groups(stack)
    return st.Observed(
        security_group_id=sgs[0]["GroupId"] if sgs else None,
        ssh_cidrs=tuple(edge.ingress_cidrs(sgs[0], st.SSH_PORT)) if sgs else (),
        engine_from_alb=bool(sgs and alb_sg and edge.admits_group(sgs[0], port, alb_sg)),
        alb_security_group_id=alb_sg,
        load_balancer_arn=lb["arn"] if lb else None,
        load_balancer_dns=lb["dns"] if lb else None,
        listener_arn=lb["listeners"][0] if lb and lb["listeners"] else None,
        target_group_arn=edge.find_target_group(name, stack),
        eip_allocation=addresses[0]["AllocationId"] if addresses else None,
        eip_address=addresses[0].get("PublicIp") if addresses else None,
        role=role_ours,
        role_policy=edge.role_policy(name, POLICY_NAME) if role_ours else None,
        instance_profile=profile is not None,
        profile_has_role=profile is not None and name in profile["roles"],
        key_pair=bool(edge.find_key_pairs(stack)),
        launch_template_id=lts[0]["id"] if lts else None,
        launch_template_digest=lts[0]["digest"] if lts else None,
        launch_template_version=lts[0]["latest"] if lts else None,
        group=edge.group_settings(groups[0]) if groups else None,
        group_instances=tuple(
            i["InstanceId"] for i in (groups[0].get("Instances", []) if groups else [])
        ),
        cache_volumes=tuple(edge.find_cache_volumes(stack, st.ROLE_TAG, st.CACHE_ROLE)),
    )


def up(
    aws: Any,
    options: UpOptions,
    *,
    confirm: Callable[[UpResult], bool],
    progress: Callable[[object], None] = lambda _e: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    key_dir: Path | None = None,
    known_hosts: Path | None = None,
) -> UpResult:
    from tgiops.core import hardware
    from tgiops.core.recommend import SpotPrice, SpotPrices
    from tgiops.core.recovery import GP3_BASELINE_MIB_S, checkpoint_bytes, estimate
    from tgiops.edges.aws.stack import StackEdge

    stack = st.check_stack_name(options.stack)
    name = st.resource_name(stack)
    ssh_cidrs = st.check_ssh_cidr(options.ssh_cidr, options.public_ssh)
    if options.on_demand_base < 0:
        raise InputError("--on-demand-base N: give 0 or more")
    edge = StackEdge(aws, st.STACK_TAG)
    region = aws.region
    result = UpResult(stack=stack, region=region, changes=[])
    if options.public_ssh:
        result.warnings.append("SSH (port 22) is open to the whole internet (--public-ssh)")

    # 1. Checks that change nothing.
    for secret in (options.request.token_secret, options.request.api_key_secret):
        if secret and not aws.secret_exists(secret):
            raise InputError(
                f"the token secret {secret} does not exist in {region}: create it first with "
                f"`tgiops secret set --secret-name {secret}` (nothing was created)"
            )
    subnets = edge.subnets(options.subnets)
    if not subnets:
        raise InputError(
            f"no subnets: the default VPC of {region} has no default subnets; give --subnets"
        )
    vpcs = {vpc for _, _, vpc in subnets}
    if len(vpcs) > 1:
        raise InputError(f"--subnets are in several VPCs ({', '.join(sorted(vpcs))}): pick one")
    ami = options.ami or edge.ssm_parameter(st.DEFAULT_AMI_PARAMETER)
    root_device = edge.image_root_device(ami)
    try:
        prices = SpotPrices(
            {n: SpotPrice(p, z) for n, (p, z) in aws.lowest_spot_prices(
                [t.name for t in hardware.all_instance_types()]).items()}
        )  # fmt: skip
    except AWSError as exc:
        prices = SpotPrices({}, f"spot prices unavailable: {exc}")
        result.warnings.append(prices.unavailable or "")
    types = choose_types(options, region, prices)
    result.types = [
        {
            "instance_type": t.name,
            "vcpus": t.vcpus,
            "spot_usd_per_hour": t.spot_usd_per_hour,
            "on_demand_usd_per_hour": t.on_demand_usd_per_hour,
        }
        for t in types
    ]
    quota_problems = _check_quotas(edge, types, options, region, result)
    account = edge.account_id()
    observed = observe(edge, stack, options.request.port or 8080)
    model = options.request.model
    # Recovery advice (tgiops.core.recovery): gp3 throughput that reads the checkpoint in the
    # default recovery target on the group's first type, else the baseline.
    advice = estimate(
        model,
        hardware.find_instance_type(types[0].name),
        throughput_mib_s=options.data_volume_throughput,
        target_s=120.0,
    )
    throughput = options.data_volume_throughput or advice.recommended_mib_s or GP3_BASELINE_MIB_S
    cached = uses_cache_volume(options)
    volume_gib = options.data_volume_gib or (
        st.cache_volume_gib(checkpoint_bytes(model))
        if cached
        else st.data_volume_gib(checkpoint_bytes(model))
    )
    cache = cache_volume_spec(options, volume_gib, throughput)
    eip_id = observed.eip_allocation
    # Until the Elastic IP exists its id is unknown: a placeholder of the right shape renders
    # the plan's user data (its size, its policy); the real one goes into what is created.
    shown_eip = eip_id or ("eipalloc-00000000" if options.eip else None)
    desired = st.Desired(
        stack=stack,
        model=model.alias,
        region=region,
        vpc_id=next(iter(vpcs)),
        subnets=tuple(s for s, _, _ in subnets),
        zones=tuple(sorted({z for _, z, _ in subnets})),
        types=types,
        spot=options.spot,
        on_demand_base=options.on_demand_base,
        ssh_cidrs=tuple(ssh_cidrs),
        engine_port=options.request.port or 8080,
        ami=ami,
        root_device=root_device,
        volume_gib=volume_gib,
        volume_throughput=throughput,
        key_name=options.key_name or name,
        create_key=options.key_name is None,
        eip=options.eip,
        user_data=render_user_data(options, name, region, shown_eip, cache),
        policy=instance_policy(options, name, region, account, shown_eip),
        alb=options.alb,
        health_path=options.request.engine.health_path,
        cache_volume=cached,
    )
    result.cache_volumes = [v.as_dict() for v in observed.cache_volumes]
    result.changes = st.plan_changes(desired, observed)
    result.usd_per_hour = desired.usd_per_hour()
    if quota_problems:
        raise InputError("; ".join(quota_problems) + " (nothing was created)")
    if options.dry_run or not st.pending(result.changes):
        if not options.dry_run and options.wait:
            _wait(edge, aws, stack, name, eip_id, result, options, progress, sleep, clock,
                  known_hosts)  # fmt: skip
        return result
    if not confirm(result):
        raise InputError("not confirmed: nothing was created")

    # 3. Create or update, in dependency order; each step is idempotent.
    try:
        desired = _apply(edge, aws, desired, observed, options, progress, key_dir, account)
    except TgiopsError as exc:
        raise AWSError(
            f"{exc}. The stack {stack} is partly built, everything tagged {st.STACK_TAG}={stack}:"
            f" run `tgiops up` again to complete it, or `tgiops down {stack}` to remove it"
        ) from exc
    result.applied = True
    if options.wait:
        addresses = edge.find_addresses(stack)
        eip_id = addresses[0]["AllocationId"] if addresses else None
        _wait(edge, aws, stack, name, eip_id, result, options, progress, sleep, clock, known_hosts)
    return result


def _check_quotas(
    edge: Any, types: Sequence[st.TypeChoice], options: UpOptions, region: str, result: UpResult
) -> list[str]:
    problems: list[str] = []
    for need in st.quota_needs(types, spot=options.spot, on_demand_base=options.on_demand_base):
        entry: dict[str, Any] = {"code": need.code, "name": need.name, "needed_vcpus": need.vcpus}
        try:
            value = edge.service_quota(need.code)
        except AWSError as exc:
            entry["value"] = None
            entry["unreadable"] = str(exc)
            result.warnings.append(
                f"could not read the quota '{need.name}' ({need.code}): {exc}; going on without "
                "checking it"
            )
        else:
            entry["value"] = value
            refusal = st.quota_refusal(need, value, region)
            if refusal:
                problems.append(refusal)
        result.quotas.append(entry)
    return problems


def _apply(
    edge: Any,
    aws: Any,
    desired: st.Desired,
    observed: st.Observed,
    options: UpOptions,
    progress: Callable[[object], None],
    key_dir: Path | None,
    account: str,
) -> st.Desired:
    stack, name = desired.stack, desired.name
    tags = st.stack_tags(stack, desired.model)
    if desired.create_key and not observed.key_pair:
        progress(f"creating key pair {name}")
        material = edge.create_key_pair(name, tags)
        if key_dir is not None:
            key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = key_dir / f"{name}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(material)
    alb_sg = observed.alb_security_group_id
    if desired.alb and alb_sg is None:
        progress(f"creating security group {desired.alb_security_group_name}")
        alb_sg = edge.create_security_group(desired.alb_security_group_name, desired.vpc_id, tags)
        edge.set_ingress(alb_sg, st.ALB_PORT, [st.WORLD], [])
    sg = observed.security_group_id
    if sg is None:
        progress(f"creating security group {name}")
        sg = edge.create_security_group(name, desired.vpc_id, tags)
    have = set(observed.ssh_cidrs)
    want = set(desired.ssh_cidrs)
    if have != want:
        edge.set_ingress(sg, st.SSH_PORT, sorted(want - have), sorted(have - want))
    if desired.alb and alb_sg and not observed.engine_from_alb:
        edge.admit_group(sg, desired.engine_port, alb_sg)
    eip = observed.eip_allocation
    if desired.eip and eip is None:
        progress("allocating the Elastic IP")
        eip, _ip = edge.allocate_address(tags)
    # The real Elastic IP id goes into the user data and policy now that it exists.
    desired = replace(
        desired,
        user_data=render_user_data(
            options,
            name,
            desired.region,
            eip if desired.eip else None,
            cache_volume_spec(options, desired.volume_gib, desired.volume_throughput),
        ),
        policy=instance_policy(
            options, name, desired.region, account, eip if desired.eip else None
        ),
    )
    if not observed.role:
        progress(f"creating IAM role {name}")
        edge.create_role(name, st.ASSUME_ROLE_POLICY, tags)
    if observed.role_policy != desired.policy:
        edge.put_role_policy(name, POLICY_NAME, desired.policy)
    if not observed.instance_profile:
        edge.create_instance_profile(name, tags)
    if not observed.profile_has_role:
        edge.add_role_to_profile(name, name)
    data = desired.launch_template_data(sg, None)
    digest = desired.launch_template_digest()
    template = observed.launch_template_id
    new_version = False
    if template is None:
        progress(f"creating launch template {name}")
        template = edge.create_launch_template(name, data, digest, tags)
    elif observed.launch_template_digest != digest:
        version = edge.create_launch_template_version(template, data, digest)
        progress(f"launch template {name}: new version {version}")
        new_version = True
    target_group = observed.target_group_arn
    if desired.alb:
        if target_group is None:
            progress(f"creating target group {name}")
            target_group = edge.create_target_group(
                name, desired.vpc_id, desired.engine_port, desired.health_path, tags
            )
        lb = observed.load_balancer_arn
        if lb is None:
            progress(f"creating load balancer {name}")
            lb, _dns = edge.create_load_balancer(name, desired.subnets, alb_sg, tags)
        if observed.listener_arn is None:
            edge.create_listener(lb, st.ALB_PORT, target_group, tags)
    settings = desired.group_settings()
    if observed.group is None:
        progress(f"creating Auto Scaling group {name}")
        edge.create_group(
            name, template, settings, tags, [target_group] if desired.alb and target_group else []
        )
    elif dict(observed.group) != settings:
        edge.update_group(name, template, settings)
        if desired.alb and target_group and not observed.group.get("load_balanced"):
            edge.attach_target_group(name, target_group)
    if new_version and observed.group is not None and observed.group_instances:
        # Rolling: with two or more instances, half stay in service (MinHealthyPercentage).
        healthy = 50 if len(observed.group_instances) >= 2 else 0
        refresh = edge.start_instance_refresh(name, healthy)
        progress(f"instance refresh {refresh} started")
    return desired


def _wait(
    edge: Any,
    aws: Any,
    stack: str,
    name: str,
    eip_id: str | None,
    result: UpResult,
    options: UpOptions,
    progress: Callable[[object], None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    known_hosts: Path | None,
) -> None:
    """Until an instance is in service and (with an Elastic IP) bootstrap pointed it there."""
    deadline = clock() + options.wait_s
    reported: set[str] = set()
    while True:
        for activity in reversed(edge.scaling_activities(name)):
            words = st.activity_in_words(
                str(activity.get("StatusCode", "")), str(activity.get("StatusMessage", ""))
            )
            key = str(activity.get("ActivityId"))
            if words and key not in reported:
                reported.add(key)
                result.warnings.append(words)
                progress(f"the group could not launch: {words}")
        groups = edge.find_groups(stack)
        in_service = [
            i["InstanceId"]
            for g in groups
            for i in g.get("Instances", [])
            if i.get("LifecycleState") == "InService"
        ]
        address = None
        if eip_id:
            for a in edge.find_addresses(stack):
                if a.get("AllocationId") == eip_id:
                    address = a
        ready = bool(in_service) and (address is None or address.get("InstanceId") in in_service)
        if ready:
            _report(edge, aws, stack, in_service, address, result, options, known_hosts)
            return
        if clock() >= deadline:
            result.healthy = False
            _report(edge, aws, stack, in_service, address, result, options, known_hosts)
            raise AWSError(
                f"the stack {stack} is not healthy after {options.wait_s:g} s"
                + (f": {result.warnings[-1]}" if result.warnings else "")
                + f". Look with `tgiops stacks`; `tgiops down {stack}` removes it"
            )
        progress(
            f"waiting: {len(in_service)} instance(s) in service"
            + ("; Elastic IP not yet pointed by a healthy instance" if eip_id else "")
        )
        sleep(POLL_S)


def _report(
    edge: Any,
    aws: Any,
    stack: str,
    in_service: Sequence[str],
    address: Any,
    result: UpResult,
    options: UpOptions,
    known_hosts: Path | None,
) -> None:
    from tgiops.edges import known_hosts as kh

    instances = edge.live_instances(stack)
    result.instances = [
        {
            "instance_id": i.instance_id,
            "instance_type": i.instance_type,
            "lifecycle": i.lifecycle,
            "state": i.state,
            "zone": i.availability_zone,
            "public_ip": i.public_ip,
            "host_key_pinned": False,
        }
        for i in instances
    ]
    public_ip = address.get("PublicIp") if address else None
    if result.healthy is None:
        result.healthy = bool(in_service) and (address is not None or not options.eip)
    if public_ip:
        result.endpoint = f"{public_ip}:{options.request.port}"
    if options.alb:
        lb = edge.find_load_balancer(st.resource_name(stack), stack)
        if lb and lb.get("dns"):
            result.endpoint = f"{lb['dns']}:{st.ALB_PORT}"
    if known_hosts is None:
        return
    for entry, inst in zip(result.instances, instances, strict=True):
        key_text = inst.tags.get(st.HOST_KEY_TAG)
        if not key_text:
            continue
        key = st.parse_host_key(key_text)
        names = [inst.instance_id, inst.public_ip or "", inst.private_ip or ""]
        if address is not None and address.get("InstanceId") == inst.instance_id:
            names.append(public_ip or "")
        kh.pin(known_hosts, names, key)
        entry["host_key_pinned"] = True
