"""`tgiops status`: every tgiops unit on one host or a fleet, with a verdict and its reason.

Runs tgiops.core.status.status_script on each host (ONE SSH round trip per host) with a bound
on parallel SSH connections, so an unreachable host costs its connect timeout and delays nobody
else; joins EC2 facts and warnings; the verdicts themselves are tgiops.core.status's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tgiops.core.errors import ProbeError, TgiopsError
from tgiops.core.status import (
    DEFAULT_MAX_PARALLEL,
    SCRIPT_TIMEOUT_S,
    ec2_facts,
    exposure_warnings,
    judge_host,
    parse_status_report,
    status_script,
    unreachable_units,
)
from tgiops.core.status_schema import Ec2Facts, HostStatus, StatusReport

log = logging.getLogger(__name__)

# --- the edge: one host, a fleet ---------------------------------------------------------------


@dataclass(frozen=True)
class StatusRequest:
    units: tuple[str, ...] = ()  # --unit: only these (and not-deployed when missing)
    max_parallel: int = DEFAULT_MAX_PARALLEL
    script_timeout_s: float = SCRIPT_TIMEOUT_S
    # destination -> unit names recorded locally: named in rows of an unreachable host
    known_units: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def status_of_host(
    target: Any,  # tgiops.edges.targets.Target
    request: StatusRequest,
    *,
    host_factory: Callable[[Any], Any],
    ec2: Ec2Facts | None = None,
    previous: Mapping[str, int] | None = None,
    clock: Callable[[], float],
) -> HostStatus:
    """Status of one host: one SSH connection, one round trip. Never raises a TgiopsError:
    an SSH failure becomes ``unreachable`` rows."""
    from tgiops.commands.logs import LogRedactor

    started = clock()
    destination = target.ssh.destination
    wanted = request.units or request.known_units.get(destination, ())

    def host_status(**kw: Any) -> HostStatus:
        base: dict[str, Any] = dict(
            target=target.label,
            destination=destination,
            ec2=ec2,
            gpus=(),
            gpus_error=None,
            round_trips=0,
            elapsed_s=clock() - started,
        )
        base.update(kw)
        return HostStatus(**base)

    if ec2 is not None and ec2.state not in ("running", "unknown"):
        reason = f"the instance is {ec2.state}"
        return host_status(reachable=False, error=reason, units=unreachable_units(reason, wanted))
    host = host_factory(target.ssh)
    try:
        result = host.run_script(
            status_script(units=request.units), check=False, timeout_s=request.script_timeout_s
        )
        try:
            facts = parse_status_report(result.stdout, redact=LogRedactor())
        except ProbeError as exc:
            tail = LogRedactor()(result.output_tail(5))
            raise ProbeError(f"{exc} (exit {result.exit_code}; last output: {tail})") from exc
    except TgiopsError as exc:
        reason = f"cannot get the host's status over SSH: {exc}"
        log.info("%s: %s", destination, reason)
        return host_status(
            reachable=False,
            error=str(exc),
            round_trips=host.round_trips,
            units=unreachable_units(reason, wanted),
        )
    finally:
        host.close()
    return host_status(
        reachable=True,
        error=None,
        round_trips=host.round_trips,
        gpus=facts.gpus,
        gpus_error=facts.gpus_error,
        now_epoch_s=facts.now_epoch_s,
        units=judge_host(facts, wanted_units=wanted, previous=previous),
    )


def gather_ec2(aws: Any, instances: Sequence[Any]) -> dict[str, Ec2Facts]:
    """EC2 facts for ``instances``: one DescribeAddresses for all, one spot-price lookup per
    (type, zone) of the spot ones. AWS failures land in ``Ec2Facts.error``, never raise."""
    if not instances:
        return {}
    elastic: dict[str, str] | None
    error = None
    try:
        elastic = elastic_ips_by_instance(aws, [i.instance_id for i in instances])
    except TgiopsError as exc:
        elastic, error = None, f"Elastic IP lookup failed: {exc}"
    ingress: dict[str, list[tuple[str, int, int]]] = {}
    try:
        ingress = aws.world_open_ingress([i.instance_id for i in instances])
    except TgiopsError as exc:
        error = f"security group lookup failed: {exc}"
    prices: dict[tuple[str, str], float | None] = {}
    for inst in instances:
        key = (inst.instance_type, inst.availability_zone)
        if inst.lifecycle == "spot" and key not in prices:
            try:
                prices[key] = aws.spot_price(*key)
            except TgiopsError as exc:
                prices[key] = None
                error = f"spot price lookup failed: {exc}"
    return {
        i.instance_id: replace(
            ec2_facts(
                i,
                elastic_ips=elastic,
                spot_usd_per_hour=prices.get((i.instance_type, i.availability_zone)),
                error=error,
            ),
            open_ingress=tuple(ingress.get(i.instance_id, ())),
        )
        for i in instances
    }


def elastic_ips_by_instance(aws: Any, instance_ids: Sequence[str]) -> dict[str, str]:
    """instance id -> the Elastic IP associated with it (one DescribeAddresses call).

    Through ``Aws.call`` (errors translated, naming the IAM action).
    """
    response = aws.call(
        "ec2",
        "describe_addresses",
        what="looking up Elastic IPs",
        iam_action="ec2:DescribeAddresses",
        Filters=[{"Name": "instance-id", "Values": list(instance_ids)}],
    )
    return {
        a["InstanceId"]: a["PublicIp"]
        for a in response.get("Addresses", [])
        if a.get("InstanceId") and a.get("PublicIp")
    }


def gather_status(
    targets: Sequence[Any],
    request: StatusRequest,
    *,
    aws: Any = None,
    host_factory: Callable[[Any], Any] | None = None,
    previous: StatusReport | None = None,
    on_host: Callable[[HostStatus], None] | None = None,
) -> StatusReport:
    """Status of every target, concurrently (at most ``max_parallel`` SSH connections).

    EC2 facts are looked up while the SSH connections run. ``on_host`` sees each host as soon
    as it is done. Hosts keep the order of ``targets`` in the report.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    if host_factory is None:
        from tgiops.edges.ssh import RemoteHost

        host_factory = RemoteHost
    started = time.monotonic()
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    prev = previous.restarts() if previous else {}
    instances = [t.instance for t in targets if t.instance is not None]
    ec2: dict[str, Ec2Facts] = {}
    # EC2 states decide reachability (a stopped instance is not dialled), so they come from
    # the resolved instances at once; prices and Elastic IPs are filled in after.
    placeholder = {
        i.instance_id: ec2_facts(i, elastic_ips=None, spot_usd_per_hour=None) for i in instances
    }
    workers = max(1, min(request.max_parallel, len(targets) or 1))

    def one(target: Any) -> HostStatus:
        dest = target.ssh.destination
        status = status_of_host(
            target,
            request,
            host_factory=host_factory,
            ec2=placeholder.get(target.instance.instance_id) if target.instance else None,
            previous={u: n for (d, u), n in prev.items() if d == dest},
            clock=time.monotonic,
        )
        if on_host is not None:
            on_host(status)
        return status

    # The bound applies to SSH connections; the EC2 lookup has a thread of its own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tgiops-ec2") as aws_pool:
        ec2_future = aws_pool.submit(gather_ec2, aws, instances) if aws and instances else None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tgiops-ssh") as pool:
            hosts = list(pool.map(one, targets))
        if ec2_future is not None:
            ec2 = ec2_future.result()
    hosts = [
        replace(h, ec2=_with_warnings(ec2.get(h.ec2.instance_id, h.ec2), h))
        if h.ec2 is not None
        else h
        for h in hosts
    ]
    return StatusReport(
        hosts=tuple(hosts), elapsed_s=time.monotonic() - started, generated_at=generated_at
    )


def _with_warnings(facts: Ec2Facts, host: HostStatus) -> Ec2Facts:
    ports = [u.facts.plan.port for u in host.units if u.facts and u.facts.plan.port]
    return replace(facts, warnings=exposure_warnings(facts.open_ingress, ports or [8080]))
