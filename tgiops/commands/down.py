"""`tgiops down NAME` and `tgiops stacks`.

`down` deletes what carries ``tgiops:stack=NAME`` (tgiops.core.stack), in dependency order:
the Auto Scaling group first (force-deleted: its instances terminate) and, once no instance of
the stack is left, what they used: Elastic IP, launch template, instance profile and role,
security group, key pair, leftover volumes, and the model cache volumes (tagged
``tgiops:role=model-cache``; kept with ``--keep-cache``; one attached to an instance that is not
the stack's is never touched). Untagged resources are never looked at twice: every
lookup is by the tag (IAM by name, then the tag must match). A second run finds nothing and
changes nothing. The token secret stays unless ``--delete-secret`` (and only one tgiops tagged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgiops.core import stack as st
from tgiops.core.errors import AWSError, InputError, TargetNotFoundError

TERMINATE_WAIT_S = 900.0
POLL_S = 5.0


@dataclass
class DownResult:
    stack: str
    region: str
    deleted: list[dict[str, str]] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "deleted": self.deleted,
            "kept": self.kept,
            "changed": bool(self.deleted),
        }


def down(
    aws: Any,
    stack: str,
    *,
    delete_secret: str | None = None,
    keep_cache: bool = False,
    progress: Callable[[object], None] = lambda _e: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wait_s: float = TERMINATE_WAIT_S,
    key_dir: Path | None = None,
) -> DownResult:
    from tgiops.edges.aws.stack import StackEdge

    stack = st.check_stack_name(stack)
    name = st.resource_name(stack)
    edge = StackEdge(aws, st.STACK_TAG)
    result = DownResult(stack=stack, region=aws.region)

    def gone(kind: str, ident: str) -> None:
        result.deleted.append({"kind": kind, "id": ident})
        progress(f"deleted {kind} {ident}")

    ours = {i.instance_id for i in edge.live_instances(stack)}
    for group in edge.find_groups(stack):
        ours.update(str(i["InstanceId"]) for i in group.get("Instances", []))
        edge.delete_group(group["AutoScalingGroupName"])
        gone("autoscaling-group", group["AutoScalingGroupName"])
    deadline = clock() + wait_s
    while True:
        live = [i for i in edge.live_instances(stack) if i.state != "terminated"]
        # A terminated instance's cache volume turns available a little later: wait for it.
        live_ids = [i.instance_id for i in live] + [
            f"{v.volume_id} (detaching from {', '.join(v.attached_to)})"
            for v in edge.find_cache_volumes(stack, st.ROLE_TAG, st.CACHE_ROLE)
            if set(v.attached_to) & ours
        ]
        if not live_ids:
            break
        if clock() >= deadline:
            raise AWSError(
                f"instances of {stack} still not terminated after {wait_s:g} s: "
                f"{', '.join(live_ids)}. Run `tgiops down {stack}` again"
            )
        progress(f"waiting for {len(live_ids)} instance(s) and volume(s) to terminate/detach")
        sleep(POLL_S)
    lb = edge.find_load_balancer(name, stack)
    if lb is not None:
        edge.delete_load_balancer(lb["arn"])  # its listeners go with it
        gone("load-balancer", lb["arn"])
    target_group = edge.find_target_group(name, stack)
    if target_group is not None:
        edge.delete_target_group(target_group)
        gone("target-group", target_group)
    for address in edge.find_addresses(stack):
        edge.release_address(address)
        gone("elastic-ip", address["AllocationId"])
    for lt in edge.find_launch_templates(stack):
        edge.delete_launch_template(lt["id"])
        gone("launch-template", lt["id"])
    profile = edge.instance_profile(name)
    if profile is not None and profile["tags"].get(st.STACK_TAG) == stack:
        edge.delete_instance_profile(name, profile["roles"])
        gone("instance-profile", name)
    role = edge.role_tags(name)
    if role is not None and role.get(st.STACK_TAG) == stack:
        edge.delete_role(name)
        gone("iam-role", name)
    # The instances' group first: its ingress names the ALB's group, which AWS then refuses to
    # delete (DependencyViolation); so may a load balancer's interfaces for a while.
    groups = sorted(edge.find_security_groups(stack), key=lambda g: g.get("GroupName") != name)
    for group in groups:
        _delete_security_group(edge, group["GroupId"], sleep, clock, wait_s)
        gone("security-group", group["GroupId"])
    for key in edge.find_key_pairs(stack):
        edge.delete_key_pair(key)
        gone("key-pair", key)
        if key_dir is not None:
            (key_dir / f"{key}.pem").unlink(missing_ok=True)
    caches = {v.volume_id: v for v in edge.find_cache_volumes(stack, st.ROLE_TAG, st.CACHE_ROLE)}
    for volume in edge.find_volumes(stack):  # tagged and available (attached to nothing)
        if volume in caches and keep_cache:
            result.kept.append({"kind": "cache-volume", "id": volume})
            continue
        edge.delete_volume(volume)
        gone("cache-volume" if volume in caches else "volume", volume)
    for v in caches.values():
        if v.attached_to:  # attached to an instance that is not the stack's: never touched
            result.kept.append({"kind": "cache-volume", "id": v.volume_id})
    if delete_secret:
        info = aws.describe_secret(delete_secret)
        if info is None or info.deleted is not None:
            pass
        elif not any(k.startswith("tgiops:") for k in info.tags):
            raise InputError(
                f"--delete-secret: {delete_secret} carries no tgiops tag, so tgiops does not "
                "delete it (the rest of the stack is gone)"
            )
        else:
            aws.delete_secret(delete_secret)
            gone("secret", delete_secret)
    elif result.deleted:
        result.kept.append({"kind": "secret", "id": "the token secret (--delete-secret)"})
    return result


def _delete_security_group(
    edge: Any, group_id: str, sleep: Callable[[float], None], clock: Callable[[], float],
    wait_s: float,
) -> None:  # fmt: skip
    deadline = clock() + wait_s
    while True:
        try:
            edge.delete_security_group(group_id)
            return
        except AWSError as exc:
            from tgiops.edges.aws.base import client_error_code

            if client_error_code(exc) != "DependencyViolation" or clock() >= deadline:
                raise
        sleep(POLL_S)


@dataclass(frozen=True)
class StackRow:
    stack: str
    state: str
    instances: int
    usd_per_hour: float | None
    model: str | None
    cache_volumes: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "state": self.state,
            "instances": self.instances,
            "usd_per_hour": self.usd_per_hour,
            "model": self.model,
            "cache_volumes": list(self.cache_volumes),
        }


def stacks(aws: Any) -> list[StackRow]:
    """Every stack in the region: from the groups and security groups carrying the tag."""
    from tgiops.core import hardware
    from tgiops.edges.aws.stack import StackEdge

    edge = StackEdge(aws, st.STACK_TAG)
    rows: dict[str, dict[str, Any]] = {}
    for group in edge.find_groups(None):
        tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags", [])}
        name = tags.get(st.STACK_TAG, "")
        in_service = [
            i for i in group.get("Instances", []) if i.get("LifecycleState") == "InService"
        ]
        rows[name] = {
            "state": "in-service" if in_service else "starting",
            "model": tags.get("tgiops:model"),
            "instances": [i["InstanceId"] for i in in_service],
        }
    for sg in edge.find_security_groups(None):
        tags = {t["Key"]: t.get("Value", "") for t in sg.get("Tags", [])}
        name = tags.get(st.STACK_TAG, "")
        rows.setdefault(name, {"state": "partial (no group)", "model": None, "instances": []})
    caches: dict[str, list[dict[str, Any]]] = {}
    for v in edge.find_cache_volumes(None, st.ROLE_TAG, st.CACHE_ROLE):
        name = v.tags.get(st.STACK_TAG, "")
        caches.setdefault(name, []).append(v.as_dict())
        rows.setdefault(name, {"state": "cache only", "model": None, "instances": []})
    ids = [i for r in rows.values() for i in r["instances"]]
    try:
        found = aws.find_instances(instance_ids=ids) if ids else []
    except TargetNotFoundError:
        found = []
    prices: dict[str, tuple[float, str]] = {}
    spot_types = sorted({i.instance_type for i in found if i.is_spot and i.instance_type})
    if spot_types:
        try:
            prices = aws.lowest_spot_prices(spot_types)
        except AWSError:
            prices = {}
    by_id = {i.instance_id: i for i in found}
    out = []
    for name, row in sorted(rows.items()):
        total: float | None = 0.0 if row["instances"] else None
        for iid in row["instances"]:
            inst = by_id.get(iid)
            price = None
            if inst is not None and inst.instance_type:
                if inst.is_spot:
                    price = prices.get(inst.instance_type, (None, ""))[0]
                else:
                    try:
                        price = hardware.find_instance_type(
                            inst.instance_type
                        ).on_demand_usd_per_hour
                    except InputError:
                        price = None
            total = None if price is None or total is None else total + price
        out.append(
            StackRow(
                name,
                row["state"],
                len(row["instances"]),
                total,
                row["model"],
                tuple(caches.get(name, [])),
            )
        )
    return out
