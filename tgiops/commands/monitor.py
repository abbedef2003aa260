"""`tgiops monitor enable|disable|show`, and `monitor run`: the loop its unit runs on the host.

``run`` (the tgiops-monitor unit, on the instance): every interval, read the host with the
script ``tgiops status`` runs (tgiops.core.status.status_script: nvidia-smi's query interface,
the managed units, each one's /health and /metrics through curl with a connect and a total
timeout) through LocalHost, turn it into MetricDatum dicts (tgiops.core.monitor) and send them
with one PutMetricData call per 1000 points, with the credentials boto3 takes from the instance
role (IMDSv2, as bootstrap does). While CloudWatch does not answer, points wait in a bounded
buffer that drops the oldest; the outage is logged once, and its end once (core.monitor.Outbox).
The read itself is bounded (``read_timeout_s``) and the unit runs at the lowest priority with a
CPU quota (unit_templates/tgiops-monitor.service.j2): the engine is never waited for.

``enable`` installs that unit on a host over SSH (marked, like every unit tgiops writes; a
tgiops-monitor unit without the marker is refused, exit 2), ``disable`` stops and removes
exactly it, ``show`` reads the latest values back (ListMetrics + GetMetricData).
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tgiops.core import monitor as core
from tgiops.core.errors import InputError, TgiopsError
from tgiops.core.layout import MANAGED_MARKER, MONITOR_UNIT, TGIOPS_BIN, UNIT_DIR
from tgiops.edges.host import Host

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = core.DEFAULT_INTERVAL_S
DEFAULT_BUFFER_POINTS = 10_000  # ~ 1 h of a 4-GPU host at 60 s (13 points a tick) x 12
READ_TIMEOUT_S = 30.0  # the whole host read; each curl inside has its own (core.status)
UNIT_PATH = f"{UNIT_DIR}/{MONITOR_UNIT}.service"


# -- the on-host loop ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    interval_s: float = DEFAULT_INTERVAL_S
    group: str | None = None  # the stack's or ASG's name: the Group dimension
    instance_id: str | None = None  # default: from IMDS
    buffer_points: int = DEFAULT_BUFFER_POINTS
    read_timeout_s: float = READ_TIMEOUT_S
    max_ticks: int | None = None  # tests and --once

    def __post_init__(self) -> None:
        check_interval(self.interval_s)
        if self.buffer_points < 1:
            raise InputError(f"--buffer {self.buffer_points}: give a number of points >= 1")
        if self.group is not None:
            check_group(self.group)


@dataclass
class RunSummary:
    ticks: int = 0
    sent: int = 0
    failed_sends: int = 0
    dropped: int = 0
    buffered: int = 0
    units: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "sent": self.sent,
            "failed_sends": self.failed_sends,
            "dropped": self.dropped,
            "buffered": self.buffered,
            "units": self.units,
        }


check_interval = core.check_interval
check_group = core.check_group
render_unit = core.render_unit


def run(
    host: Host,
    options: RunOptions,
    *,
    instance_id: str,
    put: Callable[[list[dict[str, Any]]], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RunSummary:
    """Read, queue, send every ``options.interval_s`` until ``max_ticks`` (forever without)."""
    from tgiops.core.status import status_script

    outbox = core.Outbox(core.Buffer(options.buffer_points))
    previous: dict[str, core.Readings] = {}
    summary = RunSummary()
    last_read_problem: str | None = None
    script = status_script()
    log.info(
        "monitoring %s to CloudWatch (namespace %s) every %g s%s",
        instance_id, core.NAMESPACE, options.interval_s,
        f", group {options.group}" if options.group else "",
    )  # fmt: skip
    while True:
        started = time.monotonic()
        now = clock()
        try:
            report = host.run_script(script, check=False, timeout_s=options.read_timeout_s)
            readings = core.unit_readings(report.stdout, now)
            problem = None if readings else "no engine unit of tgiops on this host yet"
        except Exception as exc:  # one bad read never ends the service; said when it changes
            shown = str(exc) if isinstance(exc, TgiopsError) else f"{type(exc).__name__}: {exc}"
            readings, problem = [], f"cannot read the host: {shown}"
        if problem != last_read_problem:  # said when it changes, not every tick
            if problem:
                log.warning("%s (will keep trying every %g s)", problem, options.interval_s)
            else:
                log.info("reading %s", ", ".join(u for u, _ in readings))
            last_read_problem = problem
        data: list[dict[str, Any]] = []
        for unit, reading in readings:
            dims = core.dimensions(group=options.group, unit=unit, instance_id=instance_id)
            data += core.metric_data(reading, dims, previous=previous.get(unit))
            previous[unit] = reading
        summary.units = sorted(previous)
        for line in outbox.queue(data):
            log.warning(line)
        for batch in outbox.batches():
            try:
                put(batch)
            except TgiopsError as exc:
                summary.failed_sends += 1
                for line in outbox.failed(str(exc), clock()):
                    log.warning(line)
                break
            summary.sent += len(batch)
            for line in outbox.delivered(len(batch), clock()):
                log.warning(line)
        summary.ticks += 1
        summary.dropped = outbox.buffer.dropped
        summary.buffered = len(outbox.buffer.points)
        if options.max_ticks is not None and summary.ticks >= options.max_ticks:
            return summary
        sleep(max(0.0, options.interval_s - (time.monotonic() - started)))


def resolve_region(explicit: str | None, imds: Any) -> str:
    """--region, else the SDK's environment (AWS_REGION, AWS_DEFAULT_REGION), else IMDS."""
    return (
        explicit
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or imds.region()
    )


# -- the unit ------------------------------------------------------------------------------


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Environment for the unit's AWS SDK (endpoints, proxies): never a secret, one line each.
    The same rules as `tgiops userdata --env` (tgiops.commands.bootstrap.check_env_options)."""
    from tgiops.commands.bootstrap import check_env_options

    check_env_options(
        env,
        no_secret_because="the monitor's unit holds no secret; the instance role provides "
        "AWS credentials",
    )
    return dict(env)


# -- enable / disable on a host --------------------------------------------------------------


@dataclass(frozen=True)
class HostChange:
    host: str
    unit: str
    action: str  # enabled / unchanged / disabled / absent
    active: str | None  # systemctl is-active afterwards (None: not asked)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "unit": self.unit, "action": self.action, "active": self.active}


def _ownership_check() -> str:
    """Bash: exit 4 (REFUSED_EXIT) when a tgiops-monitor unit exists that tgiops did not write
    (a file without the marker, or a unit of that name elsewhere that systemd knows)."""
    q = shlex.quote
    foreign = f"{UNIT_PATH} exists and was not written by tgiops; refusing to touch it"
    elsewhere = f"{MONITOR_UNIT}.service is installed outside {UNIT_DIR}, not by tgiops"
    return f"""if [ -e {q(UNIT_PATH)} ]; then
  if ! grep -q {q("^" + MANAGED_MARKER)} {q(UNIT_PATH)}; then echo {q(foreign)} >&2; exit 4; fi
else
  load=$(systemctl show -p LoadState --value {q(MONITOR_UNIT + ".service")} 2>/dev/null)
  if [ -n "$load" ] && [ "$load" != not-found ]; then echo {q(elsewhere)} >&2; exit 4; fi
fi
"""


def enable(host: Host, unit_text: str, *, on_progress: Callable[[str], None]) -> HostChange:
    """Install and start the unit; an identical, active one is left as it is."""
    from tgiops.edges.ssh import FileUpload

    q = shlex.quote
    name = q(MONITOR_UNIT + ".service")
    missing = (
        f"{TGIOPS_BIN} is not on {host.name}: the monitor runs tgiops on the host. Install "
        "it there as `tgiops userdata` does (baked into the AMI, or --pip-spec/--pip-requirements)"
    )
    guard = f"[ -x {q(TGIOPS_BIN)} ] || {{ echo {q(missing)} >&2; exit 4; }}\n" + _ownership_check()
    on_progress(f"checking {UNIT_PATH}")
    current = host.read_file(UNIT_PATH)
    state = host.run(f"systemctl is-active {name}", check=False).stdout.strip()
    if (
        current is not None
        and current.decode("utf-8", "replace") == unit_text
        and state == "active"
    ):
        checked = host.run_script(guard, check=False)  # still ours, tgiops still there
        if checked.exit_code == 4:
            raise InputError(f"on {host.name}: {checked.stderr.strip()}. Nothing was changed.")
        return HostChange(host.name, MONITOR_UNIT, "unchanged", state)
    on_progress(f"installing {MONITOR_UNIT}.service")
    host.install_files(
        [FileUpload(UNIT_PATH, unit_text.encode(), mode=0o644, owner="root:root")],
        guard=guard,
        after=f"systemctl daemon-reload\nsystemctl enable --quiet {name}\n"
        f"systemctl restart {name}\n",
    )
    state = host.run(f"systemctl is-active {name}", check=False).stdout.strip()
    if state not in ("active", "activating"):
        from tgiops.core.errors import DeployError

        journal = host.run(
            f"journalctl -u {name} -n 20 -o cat --no-pager", check=False
        ).stdout.strip()
        raise DeployError(
            f"{MONITOR_UNIT} on {host.name} is {state or 'unknown'} after its start: "
            f"{journal[-800:] or 'no journal lines'}"
        )
    return HostChange(host.name, MONITOR_UNIT, "enabled", state)


def disable(host: Host, *, on_progress: Callable[[str], None]) -> HostChange:
    """Stop, disable and remove exactly tgiops' monitor unit; nothing else is touched."""
    q = shlex.quote
    name = q(MONITOR_UNIT + ".service")
    on_progress(f"checking {UNIT_PATH}")
    out = host.run_script(
        _ownership_check()
        + f"""if [ ! -e {q(UNIT_PATH)} ]; then echo absent; exit 0; fi
systemctl disable --now --quiet {name}
rm -f {q(UNIT_PATH)}
systemctl daemon-reload
systemctl reset-failed {name} 2>/dev/null
echo disabled
""",
        check=False,
    )
    if out.exit_code == 4:
        raise InputError(f"on {host.name}: {out.stderr.strip()}. Nothing was changed.")
    if out.exit_code != 0:
        from tgiops.core.errors import DeployError

        raise DeployError(f"on {host.name}: disabling {MONITOR_UNIT} failed: {out.stderr[-500:]}")
    action = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "disabled"
    return HostChange(host.name, MONITOR_UNIT, action, None)


# -- show ------------------------------------------------------------------------------------


def show(
    aws: Any,
    *,
    filters: Sequence[Mapping[str, str]],
    now: float,
    window_s: float = 3 * 3600,
    period_s: int = 60,
) -> list[core.HostValues]:
    """The latest value of every tgiops metric matching each dimension filter (one ListMetrics
    per filter; ``[]`` filters = the whole namespace)."""
    metrics: list[dict[str, Any]] = []
    seen: set[str] = set()
    for wanted in filters or [{}]:
        dims = [{"Name": k, "Value": v} for k, v in wanted.items()]
        for m in aws.list_metrics(core.NAMESPACE, dims):
            key = repr((m["MetricName"], sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
            if key not in seen:
                seen.add(key)
                metrics.append(m)
    if not metrics:
        return []
    results = aws.get_metric_data(
        core.latest_queries(metrics, period_s), start=now - window_s, end=now + period_s
    )
    return core.latest_values(metrics, results)
