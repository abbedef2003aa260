"""`tgiops undeploy`: stop, disable and remove one tgiops unit; keep the model cache by default.

Two round trips: (1) read the host's tgiops unit files (which unit, its data directory and
model, whether another unit shares that model's cache); (2) under the same host lock as
deploy (``flock`` on tgiops.core.layout.LOCK_PATH), ``systemctl disable --now``, remove the
container, the unit file, the env file and their ``.previous`` / staged copies,
``daemon-reload``, ``reset-failed``, optionally remove this model's cache directory, and
then report whatever is still there, so the result says what was checked, not what was hoped.

Other units, their files and their containers are never touched: every path is derived from
the one unit name, and a cache another unit still uses is kept even with ``--purge-cache``.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from typing import Any

from tgiops.commands.logs import choose_unit
from tgiops.core.errors import InputError, TgiopsError
from tgiops.core.layout import (
    ENV_DIR,
    LOCK_PATH,
    MANAGED_MARKER,
    RESERVED_UNITS,
    UNIT_DIR,
    UNIT_NAME_RE,
)
from tgiops.core.probe import split_sections
from tgiops.core.record import record_path
from tgiops.core.render import data_dir_of_mount, unit_name_from
from tgiops.core.status import parse_unit_plan
from tgiops.core.status_schema import UnitPlan
from tgiops.edges.host import Host
from tgiops.edges.ssh import (
    LOCK_BUSY_EXIT,
    STAGE_DIR_GLOB,
    lock_holder_identity,
    lock_release_script,
    lock_script,
)

log = logging.getLogger(__name__)

LOCK_WAIT_S = 60
SCRIPT_TIMEOUT_S = 240.0  # `docker stop --time 90` + systemd's TimeoutStopSec margin
_SECTION = "@@tgiops-section "
_UNIT_MARKER = MANAGED_MARKER
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_LOCKED_EXIT = LOCK_BUSY_EXIT
_NOT_OURS_EXIT = 76  # the unit file lost its marker since the inspection: nothing touched


@dataclass(frozen=True)
class UndeployPlan:
    """What undeploy will remove on one host, decided before anything changes."""

    host: str
    unit: str
    plan: UnitPlan
    files: tuple[str, ...]  # exact paths; staged temporaries are matched by pattern too
    cache_paths: tuple[str, ...]  # this model's cache in the unit's data directory
    cache_shared_with: tuple[str, ...]  # other units serving the same model from the same dir
    other_units: tuple[str, ...]


@dataclass(frozen=True)
class UndeployResult:
    host: str
    unit: str
    removed: bool  # no unit, env file or container is left
    leftovers: tuple[str, ...]  # what is still there, in words
    cache: str  # kept | none | purged | not purged | unknown | kept (shared with UNIT, ...)
    cache_paths: tuple[str, ...]
    other_units: tuple[str, ...]
    round_trips: int

    def as_dict(self, *, already_absent: bool = False) -> dict[str, Any]:
        """The documented `tgiops undeploy --json` object; ``already_absent``: there was no
        unit to remove (the CLI knows it from the plan, not from the result)."""
        return {
            "host": self.host,
            "unit": self.unit or None,
            "removed": self.removed,
            "already_absent": already_absent,
            "leftovers": list(self.leftovers),
            "cache": self.cache,
            "cache_paths": list(self.cache_paths),
            "other_units": list(self.other_units),
            "round_trips": self.round_trips,
        }


def unit_files(unit: str, *, unit_dir: str = UNIT_DIR, env_dir: str = ENV_DIR) -> tuple[str, ...]:
    unit_path = f"{unit_dir}/{unit}.service"
    env_path = f"{env_dir}/{unit}.env"
    return (
        unit_path,
        unit_path + ".previous",
        env_path,
        env_path + ".previous",
    )


def cache_paths_for(data_dir: str | None, repo_id: str | None) -> tuple[str, ...]:
    """The Hugging Face cache directories of ``repo_id`` under ``data_dir``: ``hub/`` from
    TGI 2.3 (HF_HOME=/data), the top level before (docs/tgi.md §6)."""
    if not data_dir or not repo_id or not _REPO_RE.fullmatch(repo_id) or ".." in repo_id:
        return ()
    if not data_dir.startswith("/") or ".." in data_dir or data_dir.rstrip("/") == "":
        return ()
    name = "models--" + repo_id.replace("/", "--")
    base = data_dir.rstrip("/")
    return (f"{base}/hub/{name}", f"{base}/{name}")


def inspect_script(unit_dir: str = UNIT_DIR) -> str:
    q = shlex.quote
    return f"""{{
set +e
s() {{ printf '\\n{_SECTION}%s\\n' "$1"; }}
for f in $(grep -l '^{_UNIT_MARKER}' {q(unit_dir)}/*.service 2>/dev/null); do
  u=${{f##*/}}; s "unit ${{u%.service}}"; cat "$f"
done
s end
}} </dev/null
"""


def plan_undeploy(host_name: str, report: str, requested: str | None) -> UndeployPlan:
    """Pure: which unit, which files, which cache, from ``inspect_script`` output."""
    if requested is not None:
        requested = unit_name_from(requested)  # `--unit docker`: refused before anything runs
    sections = split_sections(report)
    # Only TGI units tgiops named (a marked file under another name is not ours to delete).
    units = {
        name: text
        for k, text in sections.items()
        if k.startswith("unit ")
        and UNIT_NAME_RE.fullmatch(name := k[len("unit ") :])
        and name not in RESERVED_UNITS
    }
    unit = choose_unit(requested, sorted(units), host_name)
    plan = parse_unit_plan(units[unit])
    others = tuple(sorted(u for u in units if u != unit))
    shared = tuple(
        u
        for u in others
        if (p := parse_unit_plan(units[u])).model_id == plan.model_id
        and (p.data_dir or "").rstrip("/") == (plan.data_dir or "").rstrip("/")
    )
    return UndeployPlan(
        host=host_name,
        unit=unit,
        plan=plan,
        # The deployment record goes too: bootstrap and reconcile would bring the unit back.
        files=unit_files(unit)
        + ((record_path(data_dir_of_mount(plan.data_dir), unit),) if plan.data_dir else ()),
        cache_paths=cache_paths_for(plan.data_dir, plan.model_id),
        cache_shared_with=shared,
        other_units=others,
    )


def undeploy_script(plan: UndeployPlan, *, purge_cache: bool, holder: str = "") -> str:
    """Remove the unit under the host lock, then list what is left (``s check``).

    Under the lock, before anything stops, the unit file must still carry the marker."""
    q = shlex.quote
    unit, service = plan.unit, plan.unit + ".service"
    container = plan.plan.container or unit
    purge = purge_cache and not plan.cache_shared_with
    files = " ".join(q(f) for f in plan.files)
    # What interrupted uploads leave (tgiops.edges.ssh): temporary files PATH.tgiops-tmp-XXXX, and
    # staging directories, which may hold a token (no upload runs now: we hold the lock).
    live = [f for f in plan.files if not f.endswith(".previous")]
    temps = " ".join(f"{q(f)}.tgiops-tmp-*" for f in live)
    lines = [
        "{",  # one brace group from /dev/null: parsed whole, stdin never read by a command
        "set +e",
        f"s() {{ printf '\\n{_SECTION}%s\\n' \"$1\"; }}",
        lock_script(LOCK_PATH, wait_s=LOCK_WAIT_S, holder=holder or lock_holder_identity()),
        f"unit_file={q(plan.files[0])}",
        f'if [ -e "$unit_file" ] && ! grep -q {q("^" + MANAGED_MARKER)} "$unit_file"; then',
        '  echo "$unit_file is not tgiops\' (no marker line); nothing was removed" >&2',
        f"  {lock_release_script(LOCK_PATH).strip()}",
        f"  exit {_NOT_OURS_EXIT}",
        "fi",
        f"systemctl disable --now --quiet {q(service)} 2>&1",
        f"docker rm -f {q(container)} >/dev/null 2>&1",
        f"rm -f -- {files} {temps}",
        f"rm -rf -- {STAGE_DIR_GLOB}",
        "systemctl daemon-reload",
        f"systemctl reset-failed {q(service)} >/dev/null 2>&1",
    ]
    if purge:
        lines.append(f"rm -rf -- {' '.join(q(p) for p in plan.cache_paths)}")
    checks = " ".join(q(f) for f in plan.files)
    lines += [
        "s check",
        f'for p in {checks} {temps}; do [ -e "$p" ] && echo "file $p"; done',
        f"docker inspect --type container {q(container)} >/dev/null 2>&1 "
        f"&& echo {q('container ' + container)}",
        f"state=$(systemctl show -p LoadState --value {q(service)} 2>/dev/null)",
        f'[ -n "$state" ] && [ "$state" != not-found ] && echo "systemd {service} $state"',
        "s cache",
        f'for p in {" ".join(q(p) for p in plan.cache_paths)}; do [ -e "$p" ] && echo "$p"; done',
        "s end",
        lock_release_script(LOCK_PATH).strip(),
        "exit 0",
        "} </dev/null",
    ]
    return "\n".join(lines) + "\n"


def parse_undeploy_report(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(leftovers in words, cache paths still present)."""
    sections = split_sections(text)
    leftovers = tuple(line.strip() for line in sections.get("check", "").splitlines() if line)
    cache = tuple(line.strip() for line in sections.get("cache", "").splitlines() if line)
    return leftovers, cache


def inspect(host: Host, requested: str | None) -> UndeployPlan:
    """Round trip 1: read the host's tgiops units and decide (nothing changes)."""
    result = host.run_script(inspect_script(), check=False)
    return plan_undeploy(host.name, result.stdout, requested)


def undeploy(host: Host, plan: UndeployPlan, *, purge_cache: bool) -> UndeployResult:
    """Round trip 2: remove what ``plan`` names and check that it is gone."""
    result = host.run_script(
        undeploy_script(plan, purge_cache=purge_cache), check=False, timeout_s=SCRIPT_TIMEOUT_S
    )
    if result.exit_code == _LOCKED_EXIT:
        raise TgiopsError(
            f"{host.name}: another tgiops operation (a deploy?) holds {LOCK_PATH}; nothing was "
            "removed. Try again when it is done."
        )
    if result.exit_code == _NOT_OURS_EXIT:
        raise InputError(f"{host.name}: {result.stderr.strip() or 'the unit is not tgiops'}")
    leftovers, cache_left = parse_undeploy_report(result.stdout)
    if not plan.cache_paths:
        cache = "unknown"  # the unit names no data directory or model we can map
    elif purge_cache and plan.cache_shared_with:
        cache = "kept (shared with " + ", ".join(plan.cache_shared_with) + ")"
    elif purge_cache:
        cache = "purged" if not cache_left else "not purged"
        leftovers = (*leftovers, *(f"cache {p}" for p in cache_left))
    else:
        cache = "kept" if cache_left else "none"
    log.info("%s: undeployed %s (leftovers: %s)", host.name, plan.unit, leftovers or "none")
    return UndeployResult(
        host=host.name,
        unit=plan.unit,
        removed=not leftovers,
        leftovers=leftovers,
        cache=cache,
        cache_paths=plan.cache_paths if cache == "purged" else cache_left,
        other_units=plan.other_units,
        round_trips=host.round_trips,
    )
