"""`tgiops deploy` to several hosts at once: the fan-out, its outcomes and their summary.

``deploy_fleet`` runs one deploy (tgiops.commands.deploy) per target, in parallel; one host's
error is its outcome and never stops the others. The outcomes make the exit code (0 all done,
2 all refused before any change, 1 otherwise), the one JSON object and the summary line that
tgiops/cli/deploy.py prints. Not to be confused with tgiops.commands.fleet, which is what
tgiops remembers of deployments off the hosts (tags, local record).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tgiops.core.errors import InputError
from tgiops.core.request import DeployRequest, DeployResult


@dataclass(frozen=True)
class HostOutcome:
    """One host of a fleet deploy: its result, or the error that stopped it."""

    label: str
    result: DeployResult | None
    error: str | None = None
    exit_code: int = 0  # of the error (errors.py): 2 refused before changing anything, 1 failed

    @property
    def ok(self) -> bool:
        return self.result is not None and (self.result.dry_run or self.result.healthy)


def deploy_fleet(
    targets: list[Any],
    run_one: Callable[[Any], DeployResult],
    *,
    max_parallel: int,
    label: Callable[[Any], str] = lambda target: str(target),
) -> list[HostOutcome]:
    """Run ``run_one(target)`` for every target, at most ``max_parallel`` at once (as
    ``tgiops status`` fans out), in the targets' order. One host's error (unreachable,
    refused) is its outcome; it never stops the others."""
    from concurrent.futures import ThreadPoolExecutor

    from tgiops.core.errors import TgiopsError

    if max_parallel < 1:
        raise InputError(f"--parallel {max_parallel}: give at least 1")

    def one(target: Any) -> HostOutcome:
        try:
            return HostOutcome(label(target), run_one(target))
        except TgiopsError as exc:
            return HostOutcome(label(target), None, str(exc), exc.exit_code)

    workers = max(1, min(max_parallel, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tgiops-deploy") as pool:
        return list(pool.map(one, targets))


def fleet_exit_code(outcomes: list[HostOutcome]) -> int:
    """0 all done; 2 when every failure was refused before a change and nothing changed; 1."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return 0
    changed = any(o.result is not None and o.result.changed for o in outcomes)
    if not changed and all(o.result is None and o.exit_code == 2 for o in failed):
        return 2
    return 1


def fleet_summary(outcomes: list[HostOutcome]) -> dict[str, int]:
    counts = {"hosts": len(outcomes), "healthy": 0, "failed": 0, "refused": 0, "errors": 0}
    for o in outcomes:
        if o.result is not None and (o.result.healthy or o.result.dry_run):
            counts["healthy"] += 1
        elif o.result is not None:
            counts["failed"] += 1
        elif o.exit_code == 2:
            counts["refused"] += 1
        else:
            counts["errors"] += 1
    return counts


def fleet_as_dict(
    outcomes: list[HostOutcome], result_as_dict: Callable[[DeployResult], dict[str, Any]]
) -> dict[str, Any]:
    """The one JSON object of a deploy to several hosts."""
    return {
        "summary": fleet_summary(outcomes),
        "hosts": [
            {"target": o.label, "error": o.error, "exit_code": o.exit_code}
            | (result_as_dict(o.result) if o.result is not None else {})
            for o in outcomes
        ],
    }


def fleet_summary_text(outcomes: list[HostOutcome]) -> str:
    c = fleet_summary(outcomes)
    return (
        f"{c['hosts']} hosts: {c['healthy']} healthy, {c['failed']} failed (rolled back), "
        f"{c['refused']} refused, {c['errors']} errors"
    )


def resolved_request(request: DeployRequest, result: DeployResult) -> DeployRequest:
    """``request`` with the port and GPUs the deploy chose on its host (for records/tags)."""
    return replace(request, port=result.port, gpu_devices=result.gpu_devices)
