"""`tgiops bootstrap` (on the instance, at boot) and `tgiops userdata` (the launch template side).

Bootstrap flow, run by ``tgiops-bootstrap.service`` (a oneshot the user data installs):

1. Who am I: instance id and region from IMDSv2 (``--instance-id``/``--region`` override).
2. What to deploy: the first source that has a deployment record (tgiops.core.record) wins:
   the data volume (``<data_dir>/tgiops/deployments/*.json``: what last ran, kept with the
   model cache), then ``/etc/tgiops/bootstrap.json`` (written by the user data), then the user
   data itself from IMDS, then the instance's tags from IMDS (InstanceMetadataTags=enabled).
3. For each record (:func:`restore`, shared with ``tgiops reconcile``): look at the host in one
   round trip (is the model complete in the cache? is a unit installed, loading?), start
   offline (``HF_HUB_OFFLINE=1``) when the cache is complete and no online unit is installed,
   wait for an installed unit that is still loading instead of restarting it, then run the
   regular deploy (lock, probe the GPUs, plan, render, atomic install, health wait): the token
   comes from Secrets Manager with the instance role; an unchanged, healthy unit is left alone.
4. When healthy, point the Elastic IP at this instance (unless it already is).

Running it twice changes nothing: the same record renders the same unit, which deploy leaves
running; the Elastic IP is only re-associated when it points elsewhere; the record on the data
volume is rewritten only when the deployment differs.

The instance role needs two permissions, plus one optional read (:func:`iam_policy`):
``secretsmanager:GetSecretValue`` on the token's secret (and ``kms:Decrypt`` when the secret
uses a customer managed key), ``ec2:AssociateAddress`` on the Elastic IP and the instances,
and ``ec2:DescribeAddresses`` (optional: without it bootstrap re-associates every boot, which
AllowReassociation makes harmless).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tgiops import __version__
from tgiops.core import probe
from tgiops.core.catalog import ModelSpec, find_model
from tgiops.core.errors import AWSError, HealthError, InputError, TgiopsError, UnknownModelError
from tgiops.core.layout import BOOTSTRAP_CONFIG_PATH, DEFAULT_DATA_DIR, MANAGED_MARKER, TGIOPS_BIN
from tgiops.core.record import (
    DeploymentRecord,
    DeploymentSpec,
    Entry,
    Found,
    OperatorSettings,
    Unreadable,
    first_found,
    model_as_dict,
    tag_entries,
)
from tgiops.core.render import comment_safe
from tgiops.core.request import default_timeout_s
from tgiops.edges.host import Host
from tgiops.edges.localhost import seconds_since_boot
from tgiops.edges.record_store import read_entries

# What a boot found of the model in the cache, and what it did for a recorded unit.
CacheState = Literal["complete", "partial", "absent", "unknown"]  # unknown: not checked
RestoreAction = Literal["unchanged", "deployed", "failed"]

log = logging.getLogger(__name__)

CONFIG_FORMAT = "tgiops.bootstrap/1"
USERDATA_JSON_DELIMITER = "TGIOPS_BOOTSTRAP_JSON"
_EIP_RE = re.compile(r"eipalloc-[0-9a-f]{8,17}")
_EFS_RE = re.compile(r"fs-[0-9a-f]{8,17}")
_DEVICE_RE = re.compile(r"/dev/[A-Za-z0-9/_.-]+")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
# User data is readable by anyone allowed ec2:DescribeInstanceAttribute: no secrets in it.
_SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|CREDENTIAL")

Progress = Callable[[str], None]


# -- the bootstrap config (user data) ---------------------------------------------------------


@dataclass(frozen=True)
class BootstrapConfig:
    """``/etc/tgiops/bootstrap.json``: what the user data says to deploy, and where."""

    records: tuple[DeploymentRecord, ...]
    elastic_ip: str | None = None
    region: str | None = None
    timeout_s: float | None = None

    def to_json(self) -> str:
        data = {
            "format": CONFIG_FORMAT,
            "deployments": [r.as_dict() for r in self.records],
            "elastic_ip": self.elastic_ip,
            "region": self.region,
            "timeout_s": self.timeout_s,
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, *, origin: str) -> BootstrapConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise InputError(
                f"{origin}: not a tgiops bootstrap config (format {data.get('format')!r} "
                f"instead of {CONFIG_FORMAT!r}); regenerate it with `tgiops userdata`"
                if isinstance(data, dict)
                else f"{origin}: not a tgiops bootstrap config"
            )
        records = tuple(
            DeploymentRecord.from_dict(d, origin=origin) for d in data.get("deployments") or ()
        )
        elastic_ip = data.get("elastic_ip") or None
        if elastic_ip is not None:
            check_elastic_ip(str(elastic_ip))
        timeout = data.get("timeout_s")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise InputError(f"{origin}: timeout_s is {timeout!r}; want seconds > 0 or null")
        region = data.get("region") or None
        if region is not None and not (isinstance(region, str) and _REGION_RE.fullmatch(region)):
            raise InputError(f"{origin}: region is {region!r}; want e.g. us-east-1 or null")
        return cls(
            records=records,
            elastic_ip=elastic_ip,
            region=region,
            timeout_s=float(timeout) if timeout else None,
        )


def config_from_userdata(text: str | None, *, origin: str) -> BootstrapConfig | None:
    """The config embedded in user data printed by ``tgiops userdata`` (a quoted heredoc)."""
    if not text:
        return None
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.endswith(f"<<'{USERDATA_JSON_DELIMITER}'")),
        None,
    )
    if start is None:
        return None
    try:
        end = lines.index(USERDATA_JSON_DELIMITER, start + 1)
    except ValueError:
        return None
    return BootstrapConfig.from_json("\n".join(lines[start + 1 : end]), origin=origin)


def check_elastic_ip(allocation_id: str) -> str:
    if not _EIP_RE.fullmatch(allocation_id):
        raise InputError(
            f"--eip {allocation_id!r} is not an Elastic IP allocation id like eipalloc-0abc1234 "
            "(`aws ec2 describe-addresses` lists them)"
        )
    return allocation_id


# -- restoring one deployment on one host (bootstrap and reconcile) ----------------------------


@dataclass(frozen=True)
class HostLook:
    """What the host says before a restore (one round trip)."""

    cache: CacheState
    # none / online / offline (an installed unit with HF_HUB_OFFLINE=1) / foreign (a unit of
    # that name that tgiops did not write: never replaced)
    installed: str
    state: probe.UnitState


@dataclass(frozen=True)
class Restored:
    """The outcome of restoring one record on one host."""

    unit: str
    model: str
    port: int
    action: RestoreAction
    healthy: bool
    offline: bool
    cache: CacheState
    record_source: str
    deploy: Any = None  # tgiops.commands.DeployResult, when deploy ran
    failure: str | None = None
    waited_for_loading: bool = False
    boot_to_healthy_s: float | None = None

    @property
    def changed(self) -> bool:
        return self.action == "deployed"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "unit": self.unit,
            "model": self.model,
            "port": self.port,
            "action": self.action,
            "changed": self.changed,
            "healthy": self.healthy,
            "offline": self.offline,
            "cache": self.cache,
            "record_source": self.record_source,
            "waited_for_loading": self.waited_for_loading,
            "boot_to_healthy_s": _round(self.boot_to_healthy_s),
            "failure": self.failure,
        }
        if self.deploy is not None:
            data["deploy"] = self.deploy.as_dict()
        return data


def host_cache_dir(record: DeploymentRecord, model: ModelSpec) -> str:
    """The model's Hugging Face cache folder on the host (``<data_dir>/cache`` is /data in
    TGI, vLLM's HF home in vLLM: tgiops.core.render.cache_dir, vllm.docker_run_args)."""
    from tgiops.core.engines import engine_for
    from tgiops.core.engines.vllm import CONTAINER_HF_HOME
    from tgiops.core.render import CONTAINER_DATA, cache_dir

    engine = engine_for(record.spec.engine, record.spec.engine_version)
    in_container = engine.cache_dir_in_container(model.repo_id)
    mount = CONTAINER_HF_HOME if engine.name == "vllm" else CONTAINER_DATA
    return cache_dir(record.spec.data_dir) + in_container[len(mount) :]


def look_script(record: DeploymentRecord, model: ModelSpec) -> str:
    """Bash that prints ``cache=...``, ``installed=...`` and the unit's systemctl facts.

    The cache counts as complete like TGI's own offline check (utils/hub.py
    ``_get_cached_revision_directory`` + ``weight_files``): ``refs/<revision>`` names a
    snapshot that holds ``*.safetensors``; and no ``blobs/*.incomplete`` is left by an
    interrupted download. Anything less starts online, which still works with network.
    """
    from tgiops.core.layout import UNIT_DIR

    q = shlex.quote
    unit_path = f"{UNIT_DIR}/{record.unit}.service"
    return f"""set +e
d={q(host_cache_dir(record, model))}
rev={q(model.revision or "main")}
sha="$rev"
if [ -f "$d/refs/$rev" ]; then sha=$(cat "$d/refs/$rev"); fi
snap="$d/snapshots/$sha"
if [ -n "$sha" ] && [ -d "$snap" ] && ls -- "$snap" 2>/dev/null | grep -q '[.]safetensors$' \\
   && ! ls -- "$d/blobs" 2>/dev/null | grep -q '[.]incomplete$'; then
  echo cache=complete
elif [ -d "$d" ]; then echo cache=partial
else echo cache=absent
fi
load=$(systemctl show -p LoadState --value -- {q(record.unit + ".service")} 2>/dev/null)
if [ -f {q(unit_path)} ]; then
  if ! grep -q '^{MANAGED_MARKER}' {q(unit_path)}; then echo installed=foreign
  elif grep -q 'HF_HUB_OFFLINE=1' {q(unit_path)}; then echo installed=offline
  else echo installed=online; fi
elif [ -n "$load" ] && [ "$load" != not-found ]; then echo installed=foreign
else echo installed=none
fi
{probe.systemctl_show_command(record.unit)}
"""


def look(host: Host, record: DeploymentRecord, model: ModelSpec) -> HostLook:
    out = host.run_script(look_script(record, model), check=False).stdout
    facts = dict(
        line.split("=", 1) for line in out.splitlines() if line.startswith(("cache=", "installed="))
    )
    state = probe.unit_state_from_show(probe.parse_systemctl_show(out))
    cache = facts.get("cache", "absent")
    known: CacheState = cache if cache in get_args(CacheState) else "unknown"  # type: ignore[assignment]
    return HostLook(known, facts.get("installed", "none"), state)


def restore(
    host: Host,
    record: DeploymentRecord,
    *,
    catalog: Mapping[str, ModelSpec],
    get_secret: Callable[[str], str] | None,
    template_text: str,
    record_source: str,
    timeout_s: float | None = None,
    on_progress: Progress = lambda message: None,
) -> Restored:
    """Bring ``record`` up on ``host`` and wait until healthy; never raises a TgiopsError."""
    from tgiops.commands import deploy

    model_alias = record.spec.model
    try:
        model = record.resolve_model(catalog)
        seen = look(host, record, model)
        if seen.installed == "foreign":
            from tgiops.core.errors import DeployError

            raise DeployError(
                f"{record.unit}.service exists on {host.name} and is not tgiops' (no "
                f"'{MANAGED_MARKER}' line): a record may not replace it. Nothing was changed."
            )
        # Keep an installed online unit online: switching it to offline would restart a
        # healthy endpoint for nothing. A fresh root volume (spot relaunch) starts offline
        # when the whole model is in the cache.
        offline = seen.cache == "complete" and seen.installed != "online"
        request = record.to_request(catalog, offline=offline, timeout_s=timeout_s)
        waited = False
        if (
            seen.installed != "none"
            and seen.state.active_state in ("active", "activating")
            and seen.state.sub_state != "auto-restart"  # crash-looping: redeploy at once
        ):
            waited = _wait_if_loading(host, record, seen.state, request, on_progress)
        on_progress(
            f"{record.unit}: model cache {seen.cache}; starting "
            + ("offline (HF_HUB_OFFLINE=1)" if offline else "online")
        )
        expected_id = _check_image(host, record, request, on_progress)
        result = deploy.deploy(
            host,
            request,
            get_secret=get_secret,
            template_text=template_text,
            on_progress=on_progress,
        )
        if expected_id is not None and result.healthy:
            _check_image(host, record, request, on_progress)
    except Exception as exc:  # one unit's failure never stops the others (issue 12)
        failure = str(exc) if isinstance(exc, TgiopsError) else f"{type(exc).__name__}: {exc}"
        log.error("%s: restoring %s failed: %s", host.name, record.unit, failure)
        log.debug("restoring %s", record.unit, exc_info=not isinstance(exc, TgiopsError))
        return Restored(
            unit=record.unit,
            model=model_alias,
            port=record.spec.port,
            action="failed",
            healthy=False,
            offline=False,
            cache="unknown",
            record_source=record_source,
            failure=failure,
        )
    healthy = result.healthy
    return Restored(
        unit=record.unit,
        model=model_alias,
        port=record.spec.port,
        action=("deployed" if result.changed else "unchanged") if healthy else "failed",
        healthy=healthy,
        offline=offline,
        cache=seen.cache,
        record_source=record_source,
        deploy=result,
        failure=None if healthy else (result.failure or "not healthy"),
        waited_for_loading=waited,
        boot_to_healthy_s=seconds_since_boot(host) if healthy else None,
    )


def _check_image(
    host: Host, record: DeploymentRecord, request: Any, on_progress: Progress
) -> str | None:
    """Issue 12.8: the image a restore runs is the one the deploy ran. With a registry digest
    the unit pins ``repo@sha256:...`` (render.image_ref). Without one (an image built or
    loaded locally), the recorded image ID is compared with the local image: a tag that now
    names another image is refused. Returns the ID still to check after the deploy pulled the
    image by tag (None: nothing to check)."""
    from tgiops.core.errors import DeployError
    from tgiops.edges.record_store import inspect_image

    deployed = record.deployed
    if request.image_digest is not None:
        on_progress(f"{record.unit}: image pinned to {request.image_digest[:19]}...")
        return None
    if deployed is None or deployed.image_id is None or deployed.image != request.engine.image:
        on_progress(
            f"{record.unit}: no image digest or ID recorded; using the tag {request.engine.image}"
        )
        return None
    found, _ = inspect_image(host, deployed.image)
    if found is None:
        on_progress(f"{record.unit}: no registry digest known; pulling {deployed.image} by tag")
        return deployed.image_id
    if found != deployed.image_id:
        raise DeployError(
            f"{deployed.image} here is image {found}, but the recorded deploy ran "
            f"{deployed.image_id}: the tag now names another image. Not starting it; check the "
            "image, then `tgiops deploy` again to accept it."
        )
    return None


def refused(entry: Unreadable, record_source: str) -> Restored:
    """A record the decoder refused, reported as its unit's failure (nothing was changed)."""
    return Restored(
        unit=entry.unit,
        model="",
        port=0,
        action="failed",
        healthy=False,
        offline=False,
        cache="unknown",
        record_source=record_source,
        failure=f"refused the deployment record: {entry.reason}",
    )


def restore_found(
    host: Host,
    found: Found,
    settings_for: Callable[[str], OperatorSettings] | None,
    **restore_kwargs: Any,
) -> tuple[tuple[DeploymentRecord, ...], tuple[Restored, ...]]:
    """Restore every record of ``found`` (under the operator's settings when its source is
    not the operator's: ``settings_for(unit)``), then report the refused ones."""
    records = tuple(
        r.under(settings_for(r.unit)) if settings_for is not None else r for r in found.records
    )
    units = tuple(
        restore(host, record, record_source=found.source, **restore_kwargs) for record in records
    )
    return records, units + tuple(refused(u, found.source) for u in found.unreadable)


def _wait_if_loading(
    host: Host,
    record: DeploymentRecord,
    baseline: probe.UnitState,
    request: Any,
    on_progress: Progress,
) -> bool:
    """An installed unit that is still loading (a reboot, a second bootstrap) is waited for,
    not restarted: deploy itself only gives an unchanged unit 30 s before restarting it."""
    from tgiops.edges import health

    with host.forward_local_port(record.spec.port) as local_port:
        base_url = f"http://127.0.0.1:{local_port}"
        if health.probe_health(base_url).state == "ready":
            return False

        def is_alive() -> bool:
            out = host.run(probe.systemctl_show_command(record.unit), check=False).stdout
            state = probe.unit_state_from_show(probe.parse_systemctl_show(out))
            return state.active_state in ("active", "activating") and (state.n_restarts or 0) <= (
                baseline.n_restarts or 0
            )

        on_progress(f"{record.unit} is installed and loading; waiting for it")
        try:
            health.wait_until_healthy(
                base_url,
                timeout_s=request.timeout_s or default_timeout_s(request.model),
                interval_s=2.0,
                consecutive_successes=1,
                is_alive=is_alive,
                on_progress=lambda p, s: on_progress(f"{record.unit}: {p.state} after {s:.0f}s"),
            )
        except HealthError as exc:
            on_progress(f"{record.unit} did not come up by itself ({exc}); redeploying")
    return True


# -- the Elastic IP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EipOutcome:
    allocation_id: str
    public_ip: str | None
    before: str | None  # the instance it pointed at
    after: str | None
    changed: bool
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "allocation_id": self.allocation_id,
            "public_ip": self.public_ip,
            "before": self.before,
            "after": self.after,
            "changed": self.changed,
            "note": self.note,
        }


def point_elastic_ip(aws: Any, allocation_id: str, instance_id: str) -> EipOutcome:
    """Associate the address with ``instance_id`` unless it already is (DescribeAddresses);
    without that read permission, associate anyway (AllowReassociation: harmless)."""
    try:
        current = aws.describe_elastic_ip(allocation_id)
    except AWSError as exc:
        if "DescribeAddresses" not in str(exc):
            raise
        log.warning("cannot read Elastic IP %s (%s); associating it anyway", allocation_id, exc)
        aws.associate_elastic_ip(allocation_id, instance_id)
        return EipOutcome(allocation_id, None, None, instance_id, True, "no DescribeAddresses")
    if current["instance_id"] == instance_id:
        return EipOutcome(allocation_id, current["public_ip"], instance_id, instance_id, False)
    aws.associate_elastic_ip(allocation_id, instance_id)
    log.info("Elastic IP %s now points at %s", allocation_id, instance_id)
    return EipOutcome(
        allocation_id, current["public_ip"], current["instance_id"], instance_id, True
    )


# -- bootstrap ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapOptions:
    config_path: str = BOOTSTRAP_CONFIG_PATH
    data_dir: str | None = None  # where to look for records (default: the config's, or default)
    elastic_ip: str | None = None
    region: str | None = None
    profile: str | None = None
    instance_id: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class BootstrapResult:
    instance_id: str
    region: str
    record_source: str
    units: tuple[Restored, ...]
    elastic_ip: EipOutcome | None
    elapsed_s: float
    boot_to_healthy_s: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        return bool(self.units) and all(u.healthy for u in self.units)

    @property
    def changed(self) -> bool:
        return any(u.changed for u in self.units) or bool(
            self.elastic_ip and self.elastic_ip.changed
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "region": self.region,
            "record_source": self.record_source,
            "healthy": self.healthy,
            "changed": self.changed,
            "units": [u.as_dict() for u in self.units],
            "elastic_ip": self.elastic_ip.as_dict() if self.elastic_ip else None,
            "elapsed_s": _round(self.elapsed_s),
            "boot_to_healthy_s": _round(self.boot_to_healthy_s),
            "notes": list(self.notes),
        }


def bootstrap(
    host: Host,
    options: BootstrapOptions,
    *,
    imds: Any,
    make_aws: Callable[[str], Any],
    catalog: Mapping[str, ModelSpec],
    template_text: str,
    on_progress: Progress = lambda message: None,
) -> BootstrapResult:
    """Restore every recorded deployment on this instance (see the module docstring).

    ``make_aws(region)`` returns a tgiops.edges.aws.client.Aws; ``imds`` is a
    tgiops.edges.imds.Imds.
    Raises InputError when no record is found anywhere (nothing was changed).
    """
    started = time.monotonic()
    config = _read_config(host, options.config_path)
    instance_id = options.instance_id or imds.instance_id()
    region = (
        options.region
        or (config.region if config else None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or imds.region()
    )
    on_progress(f"bootstrap on {instance_id} in {region}")
    data_dirs = _data_dirs(options, config)
    sources: list[tuple[str, Callable[[], Sequence[Entry]]]] = [
        (f"the data volume ({d})", functools.partial(read_entries, host, d)) for d in data_dirs
    ]
    sources.append((options.config_path, lambda: list(config.records) if config else []))
    sources.append(("the user data (IMDS)", lambda: _userdata_records(imds)))
    sources.append(("the instance's tags (IMDS)", lambda: _tag_records(imds, instance_id)))
    found = first_found(sources)
    if found is None:
        raise InputError(
            f"no deployment record on {instance_id}: looked in "
            + ", ".join(name for name, _ in sources)
            + ". Deploy once with `tgiops deploy`, or launch with user data from `tgiops userdata`."
        )
    operator_held = found.source in (options.config_path, "the user data (IMDS)")
    settings_for = None if operator_held else _operator_settings(options, config, imds)
    aws = make_aws(region)
    timeout_s = options.timeout_s or (config.timeout_s if config else None)
    records, units = restore_found(
        host,
        found,
        settings_for,
        catalog=catalog,
        get_secret=aws.get_secret,
        template_text=template_text,
        timeout_s=timeout_s,
        on_progress=on_progress,
    )
    notes = [
        f"the previous {r.unit} stopped: {r.last_stop.reason} ({r.last_stop.at})"
        for r in records
        if r.last_stop is not None
    ]
    allocation = options.elastic_ip or (config.elastic_ip if config else None)
    eip = None
    if allocation:
        if all(u.healthy for u in units):
            on_progress(f"pointing Elastic IP {allocation} at {instance_id}")
            eip = point_elastic_ip(aws, allocation, instance_id)
        else:
            notes.append(f"Elastic IP {allocation} left alone: the endpoint here is not healthy")
    healthy = all(u.healthy for u in units)
    return BootstrapResult(
        instance_id=instance_id,
        region=region,
        record_source=found.source,
        units=units,
        elastic_ip=eip,
        elapsed_s=time.monotonic() - started,
        boot_to_healthy_s=seconds_since_boot(host) if healthy else None,
        notes=tuple(notes),
    )


def _read_config(host: Host, path: str) -> BootstrapConfig | None:
    raw = host.read_file(path)
    if raw is None:
        return None
    return BootstrapConfig.from_json(raw.decode("utf-8", "replace"), origin=path)


def _data_dirs(options: BootstrapOptions, config: BootstrapConfig | None) -> list[str]:
    if options.data_dir:
        return [options.data_dir]
    dirs = [r.spec.data_dir for r in config.records] if config else []
    dirs.append(DEFAULT_DATA_DIR)
    return list(dict.fromkeys(dirs))


def _operator_settings(
    options: BootstrapOptions, config: BootstrapConfig | None, imds: Any
) -> Callable[[str], OperatorSettings]:
    """Where a record from the data volume or the tags gets its secret names, data dir and
    ``public``: the operator's bootstrap config (the same unit's, else its first record's),
    else the user data's, else the defaults (with --data-dir)."""
    if config is None:
        try:
            config = config_from_userdata(imds.user_data(), origin="the instance's user data")
        except TgiopsError as exc:
            log.warning("no operator settings from the user data: %s", exc)
    own = list(config.records) if config else []
    fallback = OperatorSettings(data_dir=options.data_dir or DEFAULT_DATA_DIR)

    def settings_for(unit: str) -> OperatorSettings:
        same = [r for r in own if r.unit == unit] or own
        return OperatorSettings.of(same[0].spec) if same else fallback

    return settings_for


def _userdata_records(imds: Any) -> list[DeploymentRecord]:
    config = config_from_userdata(imds.user_data(), origin="the instance's user data")
    return list(config.records) if config else []


def _tag_records(imds: Any, instance_id: str) -> list[Entry]:
    return tag_entries(imds.tags(), origin=instance_id)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- userdata ----------------------------------------------------------------------------------


def userdata_record(request: Any, builtin_catalog: Mapping[str, ModelSpec]) -> DeploymentRecord:
    """The deployment record that user data carries for ``request`` (a DeployRequest).

    The model's facts travel only for a model the built-in catalog lacks, or has under
    another repo (user data is limited to 16 KB); their sources stay behind.
    """
    try:
        builtin = find_model(builtin_catalog, request.model.alias, request.engine.name)
        carry_model = builtin.repo_id != request.model.repo_id
    except UnknownModelError:
        carry_model = True
    return DeploymentRecord(
        spec=DeploymentSpec.from_request(request),
        model_spec={**model_as_dict(request.model), "sources": {}} if carry_model else None,
    )


PUBLIC_INDEX_HOSTS = ("pypi.org", "pypi.python.org", "files.pythonhosted.org")
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links")
HOW_TO_INSTALL = (
    "user data runs as root at every boot, so tgiops must come from somewhere you control: "
    "--preinstalled (an AMI with tgiops baked in under /opt/tgiops), --pip-requirements FILE "
    "(a lock file with a --hash= on every requirement, e.g. from `pip-compile "
    "--generate-hashes`; installed with --require-hashes), or --pip-spec with a private index "
    "(`--index-url https://pypi.internal/simple tgiops==X -c https://.../constraints.txt`) or a "
    "wheel by absolute path on the AMI; the public index is not a default"
)


def check_pip_spec(spec: str) -> list[str]:
    """pip's arguments of ``--pip-spec``, when they name a source the operator controls: a
    private index (never a public one, not even as an extra index) or a local wheel."""
    if not spec.strip() or any(c in spec for c in "\n\r\x00"):
        raise InputError("--pip-spec must be one line (pip arguments)")
    try:
        args = shlex.split(spec)
    except ValueError as exc:
        raise InputError(f"--pip-spec {spec!r}: {exc}") from exc
    indexes = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in _INDEX_OPTIONS:
            indexes.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    public = [u for u in indexes if _host_of(u) in PUBLIC_INDEX_HOSTS or not _host_of(u)]
    wheel = any(a.startswith("/") and a.endswith(".whl") for a in args)
    private = bool(indexes) and not public
    if public or not (wheel or private):
        why = f" ({', '.join(public)} is public)" if public else ""
        raise InputError(f"--pip-spec {spec!r} is refused{why}: {HOW_TO_INSTALL}")
    return args


def check_pip_requirements(text: str) -> str:
    """A hash-pinned requirements file: every requirement carries ``--hash=``."""
    logical = re.sub(r"\\\n", " ", text).splitlines()
    requirements = [ln.strip() for ln in logical if ln.strip() and not ln.strip().startswith("#")]
    unpinned = [r for r in requirements if not r.startswith("-") and "--hash=" not in r]
    if not requirements or unpinned or "TGIOPS_REQUIREMENTS" in text or "\x00" in text:
        shown = f": {unpinned[0]!r} has no --hash=" if unpinned else ""
        raise InputError(
            f"--pip-requirements is not a hash-pinned lock file{shown}. {HOW_TO_INSTALL}"
        )
    return text if text.endswith("\n") else text + "\n"


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class UserdataOptions:
    record: DeploymentRecord
    elastic_ip: str | None = None
    region: str | None = None
    timeout_s: float | None = None
    # How tgiops gets onto the instance: exactly one (HOW_TO_INSTALL).
    pip_spec: str | None = None
    pip_requirements: str | None = None
    preinstalled: bool = False
    asg_name: str | None = None  # scopes the role's AssociateAddress to the group's instances
    efs_id: str | None = None
    data_device: str | None = None
    cache_volume: CacheVolumeSpec | None = None  # `tgiops up`: the stack's own cache volume
    env: Mapping[str, str] = field(default_factory=dict)
    watch_interruption: bool = True
    on_rebalance: str = "log"
    monitor: bool = False  # the tgiops-monitor unit too (GPU and engine metrics to CloudWatch)

    def __post_init__(self) -> None:
        if self.elastic_ip:
            check_elastic_ip(self.elastic_ip)
        if self.region is not None and not _REGION_RE.fullmatch(self.region):
            raise InputError(f"--region {self.region!r} is not an AWS region like us-east-1")
        if self.efs_id and self.data_device:
            raise InputError("give --efs or --data-device, not both")
        if self.cache_volume and (self.efs_id or self.data_device):
            raise InputError(
                "the stack's cache volume is the model cache: drop --efs/--data-device"
            )
        if self.efs_id and not _EFS_RE.fullmatch(self.efs_id):
            raise InputError(f"--efs {self.efs_id!r} is not an EFS file system id like fs-0abc1234")
        if self.data_device and not _DEVICE_RE.fullmatch(self.data_device):
            raise InputError(f"--data-device {self.data_device!r} is not a /dev/... path")
        if self.on_rebalance not in ("log", "stop"):
            raise InputError(f"--on-rebalance {self.on_rebalance!r}: give log or stop")
        check_env_options(
            self.env,
            no_secret_because="user data is readable by anyone allowed to describe the "
            "instance, so it must not carry secrets; the instance role provides AWS "
            "credentials and Secrets Manager the token",
        )
        sources = [self.pip_spec is not None, self.pip_requirements is not None, self.preinstalled]
        if sum(sources) != 1:
            raise InputError(
                ("give only one of --pip-spec, --pip-requirements, --preinstalled"
                 if sum(sources) > 1 else "how does tgiops get onto the instance?")
                + f": {HOW_TO_INSTALL}"
            )  # fmt: skip
        if self.pip_spec is not None:
            check_pip_spec(self.pip_spec)
        if self.pip_requirements is not None:
            check_pip_requirements(self.pip_requirements)
        if self.asg_name is not None and not re.fullmatch(r"[\x20-\x7e]{1,255}", self.asg_name):
            raise InputError(f"--asg {self.asg_name!r} is not an Auto Scaling group name")


def check_env_options(env: Mapping[str, str], *, no_secret_because: str) -> None:
    """``--env NAME=VALUE`` pairs that may go into user data or a unit (InputError, exit 2,
    otherwise): a variable name, no secret-looking name (``no_secret_because`` says why), a
    value of one line without quotes (tgiops.commands.monitor.check_env too)."""
    for name, value in env.items():
        if not _ENV_NAME_RE.fullmatch(name):
            raise InputError(f"--env {name}=...: not an environment variable name")
        if _SECRET_LOOKING.search(name):
            raise InputError(f"--env {name}: {no_secret_because}")
        if any(c in value for c in "\n\r\x00\"'\\"):
            raise InputError(f"--env {name}: the value must be one line without quotes")


def iam_policy(
    secret_names: list[str],
    elastic_ip: str | None,
    *,
    region: str | None = None,
    account: str | None = None,
    asg_name: str | None = None,
    cache_volume_stack: str | None = None,
    monitor: bool = False,
) -> dict[str, Any]:
    """The instance role's minimal policy. Secrets Manager ARNs end in a random 6-character
    suffix, hence ``NAME-??????`` (AWS Secrets Manager docs, "Resource: secret ARN").
    ``cache_volume_stack``: the stack's model cache volume (``cache_volume_policy``)."""
    r, a = region or "REGION", account or "ACCOUNT_ID"
    statements: list[dict[str, Any]] = []
    if secret_names:
        statements.append(
            {
                "Sid": "ReadTheTokenSecret",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": [
                    f"arn:aws:secretsmanager:{r}:{a}:secret:{n}-??????" for n in secret_names
                ],
            }
        )
    if elastic_ip:
        # AssociateAddress authorizes the address and the instance separately (Service
        # Authorization Reference, "Actions, resources, and condition keys for Amazon EC2",
        # ec2:AssociateAddress: resource types elastic-ip, instance, network-interface, each
        # with the condition key aws:ResourceTag/${TagKey}; see README). So: this one
        # address, and only instances of the group: Auto Scaling tags them
        # aws:autoscaling:groupName, a key no one can set by hand (the aws: prefix is
        # reserved), unlike any tag of our own.
        statements.append(
            {
                "Sid": "PointTheElasticIp",
                "Effect": "Allow",
                "Action": "ec2:AssociateAddress",
                "Resource": f"arn:aws:ec2:{r}:{a}:elastic-ip/{elastic_ip}",
            }
        )
        statements.append(
            {
                "Sid": "AtAnInstanceOfTheGroup",
                "Effect": "Allow",
                "Action": "ec2:AssociateAddress",
                "Resource": f"arn:aws:ec2:{r}:{a}:instance/*",
                "Condition": {
                    "StringEquals": {
                        "aws:ResourceTag/aws:autoscaling:groupName": asg_name or "ASG_NAME"
                    }
                },
            }
        )
        statements.append(
            {
                "Sid": "OptionalSeeWhereTheElasticIpPoints",
                "Effect": "Allow",
                "Action": "ec2:DescribeAddresses",
                "Resource": "*",
            }
        )
    if cache_volume_stack:
        statements.extend(cache_volume_policy(cache_volume_stack, asg_name, r, a))
    if monitor:
        # PutMetricData has no resource to scope (Resource "*"); the cloudwatch:namespace
        # condition key limits it to tgiops' namespace (CloudWatch User Guide, "Using condition
        # keys to limit access to CloudWatch namespaces"; docs/aws.md §5).
        from tgiops.core.monitor import NAMESPACE

        statements.append(
            {
                "Sid": "SendTgiopsMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


# -- the model cache volume of a `tgiops up` stack (tgiops.commands.cache_volume) -------------


@dataclass(frozen=True)
class CacheVolumeSpec:
    """The user data attaches (or creates) the stack's cache volume at boot: these are the
    volume's tags and, when it must be created, its size and throughput."""

    stack: str
    gib: int
    throughput: int
    model: str | None = None

    def __post_init__(self) -> None:
        from tgiops.commands.cache_volume import check_size
        from tgiops.core.stack import check_stack_name

        check_stack_name(self.stack)
        check_size(self.gib, self.throughput)


def cache_volume_policy(
    stack: str, asg_name: str | None, region: str, account: str
) -> list[dict[str, Any]]:
    """Create, tag at creation, attach (to the group's instances) and find the stack's cache
    volumes, each scoped by its tags where AWS allows it (docs/aws.md §3.5)."""
    from tgiops.core.stack import cache_volume_statements

    return cache_volume_statements(stack, asg_name, region, account)


def cache_volume_args(spec: CacheVolumeSpec | None, region: str | None) -> str:
    """`tgiops attach-cache-volume`'s arguments in the user data, shell-quoted ('' without)."""
    if spec is None:
        return ""
    args = ["--stack", spec.stack, "--gib", str(spec.gib), "--throughput", str(spec.throughput)]
    if spec.model:
        args += ["--model", spec.model]
    if region:
        args += ["--region", region]
    return " ".join(shlex.quote(a) for a in args)


def secret_names(record: DeploymentRecord) -> list[str]:
    return [n for n in (record.spec.token_secret, record.spec.api_key_secret) if n]


def render_userdata(
    options: UserdataOptions,
    *,
    userdata_template: str,
    bootstrap_unit_template: str,
    watch_unit_template: str,
    monitor_unit_template: str | None = None,
) -> str:
    """The user-data script (bash, for cloud-init) of a launch template."""
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    spec = options.record.spec
    data_mount = bool(options.efs_id or options.data_device or options.cache_volume)
    unit_vars = {
        "tgiops_version": __version__,
        "tgiops_bin": TGIOPS_BIN,
        "data_dir": spec.data_dir,
        "data_mount": data_mount,
        "on_rebalance": options.on_rebalance,
    }
    bootstrap_unit = env.from_string(bootstrap_unit_template).render(**unit_vars)
    watch_unit = (
        env.from_string(watch_unit_template).render(**unit_vars)
        if options.watch_interruption
        else ""
    )
    monitor_unit = ""
    if options.monitor:
        from tgiops.core.monitor import render_unit

        if monitor_unit_template is None:
            from tgiops.edges import resources

            path = resources.shipped_path("unit_templates") / "tgiops-monitor.service.j2"
            monitor_unit_template = path.read_text()
        monitor_unit = render_unit(
            monitor_unit_template,
            tgiops_version=__version__,
            group=options.asg_name,
            region=options.region,
            installed_by="userdata --monitor",
        )
    config = BootstrapConfig(
        records=(options.record,),
        elastic_ip=options.elastic_ip,
        region=options.region,
        timeout_s=options.timeout_s,
    )
    env_lines = dict(options.env)
    if options.region and "AWS_REGION" not in env_lines:
        env_lines["AWS_REGION"] = options.region
    policy = json.dumps(
        iam_policy(
            secret_names(options.record),
            options.elastic_ip,
            region=options.region,
            asg_name=options.asg_name,
            cache_volume_stack=options.cache_volume.stack if options.cache_volume else None,
            monitor=options.monitor,
        ),
        indent=2,
    )
    units = ["tgiops-bootstrap.service"]
    if options.watch_interruption:
        units.append("tgiops-watch-interruption.service")
    if monitor_unit:
        units.append("tgiops-monitor.service")
    return env.from_string(userdata_template).render(
        tgiops_version=__version__,
        summary=comment_safe(f"{spec.model} as {spec.unit} on port {spec.port}"),
        iam_policy_lines=policy.splitlines(),
        tgiops_bin=TGIOPS_BIN,
        data_dir=spec.data_dir,
        data_dir_q=shlex.quote(spec.data_dir),
        preinstalled=options.preinstalled,
        pip_args=" ".join(shlex.quote(a) for a in check_pip_spec(options.pip_spec))
        if options.pip_spec is not None
        else "",
        pip_requirements=options.pip_requirements or "",
        efs_id=options.efs_id,
        data_device=options.data_device,
        data_device_q=shlex.quote(options.data_device or ""),
        cache_volume_args=cache_volume_args(options.cache_volume, options.region),
        bootstrap_json=config.to_json(),
        env_text="".join(f"{k}={v}\n" for k, v in sorted(env_lines.items())),
        bootstrap_unit=bootstrap_unit,
        watch_unit=watch_unit,
        monitor_unit=monitor_unit,
        units=" ".join(units),
    )
