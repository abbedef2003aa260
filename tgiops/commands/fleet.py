"""What tgiops remembers of deployments off the hosts, and the hosts it remembers.

A healthy deploy to an EC2 target is written into the instance's tags (``tgiops reconcile``
redeploys from them after a spot relaunch, tgiops.core.record), and every healthy deploy into the
local record (``tgiops status`` with no target, tgiops.edges.state); ``undeploy`` forgets both. With
no target given, status, logs and undeploy turn the local record back into targets.

Neither bookkeeping step may undo a deploy that worked: a failure to write the local record is
a warning. Tags are part of the deploy's contract with reconcile, so their errors propagate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from tgiops import __version__
from tgiops.core import record
from tgiops.core.errors import TgiopsError
from tgiops.edges import state
from tgiops.edges.targets import Target

log = logging.getLogger(__name__)


def remember_deploy(
    target: Target, request: Any, result: Any, *, aws: Any, port: int, region: str | None
) -> None:
    """After a healthy, real deploy: tag the instance (if any) and record it locally."""
    if result.dry_run or not result.healthy:
        return
    if target.instance is not None and aws is not None:
        the_record = record.from_deploy(
            request, result.plan, tgiops_version="", now=datetime.now(timezone.utc)
        )
        aws.tag_instance(target.instance.instance_id, record.instance_tags(the_record))
    ssh_config = target.ssh.ssh_config_path
    entry = state.KnownDeployment(
        destination=target.ssh.destination,
        unit=result.unit,
        label=target.label,
        model_alias=result.plan.model.alias,
        repo_id=result.plan.model.repo_id,
        port=port,
        instance_id=target.instance.instance_id if target.instance is not None else None,
        region=region,
        ssh_config_path=os.path.abspath(ssh_config) if ssh_config else None,
        deployed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tgiops_version=__version__,
    )
    try:
        state.record_deployment(entry)
    except (OSError, TgiopsError) as exc:  # the deploy itself succeeded: warn, do not fail
        log.warning("could not record the deploy in %s: %s", state.state_file(), exc)


def forget_deploy(target: Target, result: Any, *, aws: Callable[[], Any]) -> None:
    """After an undeploy: drop the unit's record from the instance's tags (reconcile would
    redeploy it) and ``tgiops:managed`` when no tgiops unit is left; then the local record.
    ``aws`` makes the client only when tags must change."""
    instance = target.instance
    if instance is not None and result.removed:
        keys = record.tags_of_unit(instance.tags, result.unit)
        if not result.other_units and record.MANAGED_TAG in instance.tags:
            keys.append(record.MANAGED_TAG)
        if keys:
            aws().untag_instance(instance.instance_id, keys)
    try:
        state.forget_deployment(target.ssh.destination, result.unit)
    except (OSError, TgiopsError) as exc:
        log.warning("could not update the deploy record: %s", exc)


def recorded_targets(
    records: Sequence[state.KnownDeployment],
    template: Any,
    instances: dict[str, Any],
) -> tuple[list[Target], dict[str, tuple[str, ...]]]:
    """The hosts of recorded deploys as targets (one per destination, first record's label
    and ssh_config), and the units recorded per destination. ``template`` is the SSHTarget
    the command line describes; ``instances`` maps instance ids to what EC2 says of them."""
    known: dict[str, tuple[str, ...]] = {}
    first: dict[str, state.KnownDeployment] = {}
    for r in records:
        known[r.destination] = (*known.get(r.destination, ()), r.unit)
        first.setdefault(r.destination, r)
    targets = []
    for destination, r in first.items():
        ssh = replace(template, destination=destination)
        if r.ssh_config_path and os.path.isfile(r.ssh_config_path) and not ssh.ssh_config_path:
            ssh = replace(ssh, ssh_config_path=r.ssh_config_path)
        targets.append(Target(r.label or destination, ssh, instances.get(r.instance_id or "")))
    return targets, known


def recorded_instances(
    records: Sequence[state.KnownDeployment], *, region: str | None, aws_for: Callable[..., Any]
) -> dict[str, Any]:
    """The EC2 instances of recorded deploys (any state), looked up per region (``region``
    overrides the recorded ones); {} for a region AWS cannot answer for, with a warning."""
    by_region: dict[str | None, list[str]] = {}
    for r in records:
        if r.instance_id:
            by_region.setdefault(region or r.region, []).append(r.instance_id)
    found = {}
    for where, ids in by_region.items():
        ids = list(dict.fromkeys(ids))  # one instance may carry several units
        try:
            for instance in aws_for(where).find_instances(
                instance_ids=ids, states=("pending", "running", "stopping", "stopped")
            ):
                found[instance.instance_id] = instance
        except TgiopsError as exc:
            log.warning("no EC2 facts for %s: %s", ", ".join(ids), exc)
    return found
