"""`tgiops watch-interruption` (on the instance): stop TGI gracefully before a spot reclaim.

EC2 gives a spot instance two minutes' notice: IMDSv2 ``meta-data/spot/instance-action``
turns from 404 into ``{"action": "terminate"|"stop"|"hibernate", "time": "...Z"}`` (AWS EC2
User Guide, "Spot Instance interruption notices"; AWS advises polling every 5 s). A rebalance
recommendation (``meta-data/events/recommendations/rebalance`` -> ``{"noticeTime": ...}``)
comes earlier and only says the risk is elevated (".../rebalance-recommendations.html").

On an interruption notice the watcher stops every tgiops unit recorded on the data volume:
``systemctl stop --no-block`` first (a queued stop job keeps ``Restart=always`` from bringing
the container back), then ``docker stop --time N`` with N bounded by the notice's time, so TGI
finishes in-flight requests (it drains on SIGTERM) and exits before EC2 acts; then it writes
why into each unit's record (``last_stop``), which the next bootstrap reports. A rebalance
recommendation is logged (the units keep serving); with ``--on-rebalance stop`` it is handled
like a notice.

IMDS failures are logged and polling goes on: a watcher that dies on a hiccup is worse than one
that retries.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tgiops.core.errors import AWSError, InputError, TgiopsError
from tgiops.core.layout import DEFAULT_DATA_DIR
from tgiops.core.record import LastStop
from tgiops.edges.host import Host
from tgiops.edges.record_store import note_stop, read_records

log = logging.getLogger(__name__)

POLL_INTERVAL_S = (
    5.0  # AWS: "We recommend that you check for these interruption notices every 5 seconds."
)
TGI_GRACE_S = 90  # TGI's own graceful-termination default (the unit's ExecStop uses it too)
_SAFETY_MARGIN_S = 15  # leave EC2 room to act after the container is gone
_MIN_GRACE_S = 5


@dataclass(frozen=True)
class WatchOptions:
    data_dir: str = DEFAULT_DATA_DIR
    units: tuple[str, ...] = ()  # default: every unit recorded on the data volume
    interval_s: float = POLL_INTERVAL_S
    on_rebalance: str = "log"  # log | stop
    once: bool = False  # one poll, then return (cron-style or tests)
    max_polls: int | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise InputError(f"--interval {self.interval_s:g}: give a number of seconds > 0")
        if self.on_rebalance not in ("log", "stop"):
            raise InputError(f"--on-rebalance {self.on_rebalance!r}: give log or stop")


@dataclass(frozen=True)
class StoppedUnit:
    unit: str
    state_after: str  # systemctl is-active after the stop
    grace_s: int
    recorded: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "state_after": self.state_after,
            "grace_s": self.grace_s,
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class WatchResult:
    notice: str | None  # instance-action / rebalance / None (nothing happened)
    action: str | None  # terminate / stop / hibernate / rebalance
    action_time: str | None
    reason: str | None
    stopped: tuple[StoppedUnit, ...] = ()
    polls: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "notice": self.notice,
            "action": self.action,
            "action_time": self.action_time,
            "reason": self.reason,
            "stopped": [s.as_dict() for s in self.stopped],
            "polls": self.polls,
            "errors": list(self.errors),
            "elapsed_s": round(self.elapsed_s, 2),
        }


def grace_seconds(action_time: str | None, now: datetime) -> int:
    """How long TGI may drain: its own 90 s, less when EC2 acts sooner (pure)."""
    if not action_time:
        return TGI_GRACE_S
    try:
        when = datetime.fromisoformat(action_time.replace("Z", "+00:00"))
    except ValueError:
        return TGI_GRACE_S
    left = (when - now).total_seconds() - _SAFETY_MARGIN_S
    return int(max(_MIN_GRACE_S, min(TGI_GRACE_S, left)))


def stop_script(unit: str, grace_s: int) -> str:
    """Stop one TGI unit: queue systemd's stop job, shorten the drain to ``grace_s``, wait."""
    q = shlex.quote
    name = q(unit + ".service")
    wait_s = grace_s + 20
    return f"""set +e
systemctl stop --no-block {name}
docker stop --time {grace_s} {q(unit)} >/dev/null 2>&1
i=0
while [ "$i" -lt {wait_s} ]; do
  s=$(systemctl is-active {name})
  [ "$s" = active ] || [ "$s" = deactivating ] || [ "$s" = activating ] || break
  sleep 1; i=$((i + 1))
done
systemctl is-active {name}
exit 0
"""


def watch_interruption(
    host: Host,
    imds: Any,
    options: WatchOptions,
    *,
    instance_id: str | None = None,
    on_event: Callable[[str], None] = lambda message: None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> WatchResult:
    """Poll until an interruption notice has been handled (or once, with ``options.once``)."""
    started = time.monotonic()
    polls = 0
    errors: list[str] = []
    rebalance_seen = False
    while True:
        polls += 1
        try:
            action = imds.instance_action()
            rebalance = None if action or rebalance_seen else imds.rebalance_recommendation()
        except AWSError as exc:
            if not errors or errors[-1] != str(exc):
                log.warning("interruption watch: %s (will keep polling)", exc)
            errors.append(str(exc))
            action = rebalance = None
        if action:
            kind = str(action.get("action", "terminate"))
            when = action.get("time")
            reason = f"spot interruption notice: EC2 will {kind} this instance at {when}"
            on_event(reason)
            stopped = _stop_all(host, options, reason, kind, when, instance_id, now())
            return WatchResult(
                "instance-action", kind, when, reason, stopped, polls, tuple(errors),
                time.monotonic() - started,
            )  # fmt: skip
        if rebalance:
            rebalance_seen = True
            when = rebalance.get("noticeTime")
            reason = f"rebalance recommendation at {when}: spot interruption risk is elevated"
            on_event(reason)
            if options.on_rebalance == "stop":
                stopped = _stop_all(host, options, reason, "rebalance", when, instance_id, now())
                return WatchResult(
                    "rebalance", "rebalance", when, reason, stopped, polls, tuple(errors),
                    time.monotonic() - started,
                )  # fmt: skip
            log.warning("%s; the units keep serving until an interruption notice", reason)
        if options.once or (options.max_polls is not None and polls >= options.max_polls):
            return WatchResult(
                "rebalance" if rebalance_seen else None,
                "rebalance" if rebalance_seen else None,
                None,
                None,
                (),
                polls,
                tuple(errors),
                time.monotonic() - started,
            )
        sleep(options.interval_s)


def _units(host: Host, options: WatchOptions) -> list[str]:
    if options.units:
        return list(options.units)
    recorded = [r.unit for r in read_records(host, options.data_dir)]
    if not recorded:
        return []
    # A record names a unit; only one tgiops wrote is stopped (the records are not the
    # operator's: tgiops.core.record, "Trust").
    from tgiops.core.layout import MANAGED_MARKER, UNIT_DIR

    paths = " ".join(shlex.quote(f"{UNIT_DIR}/{u}.service") for u in recorded)
    out = host.run_script(f"grep -l '^{MANAGED_MARKER}' {paths} 2>/dev/null; true", check=False)
    managed = set(out.stdout.split())
    kept = [u for u in recorded if f"{UNIT_DIR}/{u}.service" in managed]
    for unit in sorted(set(recorded) - set(kept)):
        log.warning("not stopping %s: the record names it, but tgiops did not write it", unit)
    return kept


def _stop_all(
    host: Host,
    options: WatchOptions,
    reason: str,
    action: str,
    action_time: str | None,
    instance_id: str | None,
    at: datetime,
) -> tuple[StoppedUnit, ...]:
    grace = grace_seconds(action_time, at)
    units = _units(host, options)
    if not units:
        log.warning("interruption notice, but no tgiops unit is recorded in %s", options.data_dir)
    stopped = []
    for unit in units:
        log.warning("stopping %s (drain up to %d s): %s", unit, grace, reason)
        try:
            out = host.run_script(stop_script(unit, grace), check=False).stdout.strip()
            state = out.splitlines()[-1] if out else "unknown"
        except TgiopsError as exc:
            state = f"error: {exc}"
        stop = LastStop(reason, _iso(at), instance_id, action, action_time)
        stopped.append(StoppedUnit(unit, state, grace, _note(host, options.data_dir, unit, stop)))
    return tuple(stopped)


def _note(host: Host, data_dir: str, unit: str, stop: LastStop) -> bool:
    try:
        return note_stop(host, data_dir, unit, stop)
    except TgiopsError as exc:
        log.warning("could not record why %s stopped: %s", unit, exc)
        return False


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")
