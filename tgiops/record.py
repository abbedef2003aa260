"""The deployment record: what tgiops deployed, so a new instance or a controller can rebuild it.

A spot instance is reclaimed with two minutes' notice and its Auto Scaling group launches a
replacement with a new root volume and a new address. What must survive is *what to deploy*;
the plan itself is redone on the new hardware. So the record keeps the inputs of a deploy (model
alias, TGI version, overrides, unit, port, secret names: never a secret value) plus, for people
and for change detection, the facts of the deploy that produced it (image, shards, limits).

Where it lives (``tgiops.state`` is something else: the operator's local list of hosts):

- the host's persistent data volume, next to the model cache:
  ``<data_dir>/tgiops/deployments/<unit>.json`` (mode 0644; it holds no secret). Written by
  deploy after a healthy deploy, only when it differs, so an unchanged deploy writes nothing.
- EC2 tags on the instance (and, written by reconcile, on its Auto Scaling group), for a
  replacement that does not get the old data volume::

      tgiops:managed = true
      tgiops:model = ALIAS                   tgiops:unit = UNIT   (for people and filters)
      tgiops:record:UNIT = N                 the spec as compact JSON in N chunks,
      tgiops:record:UNIT:1 .. :N             because an EC2 tag value holds at most 256 chars

  Tag keys use only letters, digits and ``: . _ -``, so they are readable through instance
  metadata tags too (IMDS refuses keys with ``/`` or spaces).
- the user data printed by ``tgiops userdata`` (``tgiops.bootstrap``), as the bootstrap config.

File format (``format`` names the version; readers refuse other majors)::

    {
      "format": "tgiops.deployment/1",
      "spec": {"model": "llama-3.1-70b-awq", "repo_id": "...", "tgi_version": "3.3.7",
               "overrides": {"max_total_tokens": 8192}, "unit": "tgiops-llama-3.1-70b-awq",
               "port": 8080, "public": false, "data_dir": "/var/lib/tgiops/data",
               "gpu_devices": [], "token_secret": "tgiops/hf-token", "api_key_secret": null},
      "model_spec": {... the catalog entry, so a --model-config model can be rebuilt ...},
      "deployed": {"image": "...", "num_shard": 4, "quantize": "awq", "dtype": "float16",
                   "max_input_tokens": 4096, "max_total_tokens": 8192,
                   "hardware": "4x NVIDIA A10G (22 GiB each)", "offline": false,
                   "at": "2025-01-01T00:00:00+00:00", "tgiops_version": "0.1.0"},
      "last_stop": null | {"reason": "...", "at": "...", "instance_id": "...", ...}
    }
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from tgiops.catalog import ModelSpec, find_model
from tgiops.errors import InputError, TgiopsError, UnknownModelError
from tgiops.plan import Overrides, Plan
from tgiops.render import UNIT_NAME_RE

log = logging.getLogger(__name__)

FORMAT = "tgiops.deployment/1"
RECORD_SUBDIR = "tgiops/deployments"
TAG_PREFIX = "tgiops:record:"
MANAGED_TAG = "tgiops:managed"  # on every instance tgiops deployed to (`status --all`)
TAG_VALUE_MAX_CHARS = 256  # EC2 tag values (and Auto Scaling group tag values)
_FORMAT_RE = re.compile(r"tgiops\.deployment/(\d+)")
_UNIT_RE = UNIT_NAME_RE  # the one unit-name pattern (tgiops-NAME)
_DATA_DIR_RE = re.compile(r"/[A-Za-z0-9_./-]*")  # as render.UnitOptions checks --data-dir
_OVERRIDE_NAMES = tuple(f.name for f in fields(Overrides))
_OVERRIDE_DEFAULTS = Overrides()


@dataclass(frozen=True)
class DeploymentSpec:
    """The inputs of one deploy: enough to rebuild the same DeployRequest anywhere."""

    model: str  # catalog alias
    repo_id: str
    tgi_version: str
    unit: str
    port: int = 8080
    public: bool = False
    data_dir: str = "/var/lib/tgiops/data"
    gpu_devices: tuple[int, ...] = ()
    token_secret: str | None = "tgiops/hf-token"
    api_key_secret: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # only what differs from default

    def __post_init__(self) -> None:
        if not _UNIT_RE.fullmatch(self.unit):
            raise InputError(f"deployment record: unit name {self.unit!r} is not usable")
        if not _DATA_DIR_RE.fullmatch(self.data_dir) or ".." in self.data_dir:
            raise InputError(
                f"deployment record for {self.unit}: data dir {self.data_dir!r} is not an "
                "absolute path of letters, digits and _ . / -"
            )
        unknown = sorted(set(self.overrides) - set(_OVERRIDE_NAMES))
        if unknown:
            raise InputError(
                f"deployment record for {self.unit}: unknown override(s) {', '.join(unknown)}; "
                "was it written by a newer tgiops? Upgrade tgiops on this machine."
            )
        object.__setattr__(self, "overrides", dict(sorted(self.overrides.items())))
        object.__setattr__(self, "gpu_devices", tuple(int(d) for d in self.gpu_devices))

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "repo_id": self.repo_id,
            "tgi_version": self.tgi_version,
            "overrides": dict(self.overrides),
            "unit": self.unit,
            "port": self.port,
            "public": self.public,
            "data_dir": self.data_dir,
            "gpu_devices": list(self.gpu_devices),
            "token_secret": self.token_secret,
            "api_key_secret": self.api_key_secret,
        }

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> DeploymentSpec:
        if not isinstance(data, Mapping):
            raise InputError(f"{origin}: the deployment spec is not a JSON object")
        missing = [k for k in ("model", "repo_id", "tgi_version", "unit") if not data.get(k)]
        if missing:
            raise InputError(f"{origin}: the deployment spec lacks {', '.join(missing)}")
        try:
            return cls(
                model=str(data["model"]),
                repo_id=str(data["repo_id"]),
                tgi_version=str(data["tgi_version"]),
                unit=str(data["unit"]),
                port=int(data.get("port", 8080)),
                public=bool(data.get("public", False)),
                data_dir=str(data.get("data_dir") or "/var/lib/tgiops/data"),
                gpu_devices=tuple(data.get("gpu_devices") or ()),
                token_secret=_optional_str(data.get("token_secret")),
                api_key_secret=_optional_str(data.get("api_key_secret")),
                overrides=dict(data.get("overrides") or {}),
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"{origin}: the deployment spec is not valid ({exc})") from exc

    @classmethod
    def from_request(cls, request: Any) -> DeploymentSpec:
        """The spec of a ``tgiops.deploy.DeployRequest``."""
        from tgiops.deploy import default_unit_name

        overrides = {
            name: getattr(request.overrides, name)
            for name in _OVERRIDE_NAMES
            if getattr(request.overrides, name) != getattr(_OVERRIDE_DEFAULTS, name)
        }
        return cls(
            model=request.model.alias,
            repo_id=request.model.repo_id,
            tgi_version=request.engine.version_text,
            unit=request.unit_name or default_unit_name(request.model.alias),
            port=request.port,
            public=request.public,
            data_dir=request.data_dir,
            gpu_devices=tuple(request.gpu_devices),
            token_secret=request.token_secret,
            api_key_secret=request.api_key_secret,
            overrides=overrides,
        )


@dataclass(frozen=True)
class Deployed:
    """Facts of the deploy that wrote the record (what the plan decided on that hardware)."""

    image: str
    num_shard: int
    quantize: str | None
    dtype: str
    max_input_tokens: int
    max_total_tokens: int
    hardware: str
    offline: bool
    at: str = ""  # ISO 8601, UTC
    tgiops_version: str = ""

    def essentials(self) -> Deployed:
        """Without the timestamp and version: what a redeploy must reproduce to be 'the same'."""
        return replace(self, at="", tgiops_version="")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LastStop:
    """Why the unit was last stopped on purpose (watch-interruption writes it)."""

    reason: str
    at: str
    instance_id: str | None = None
    action: str | None = None  # terminate / stop / hibernate / rebalance
    action_time: str | None = None  # when EC2 said it will act

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DeploymentRecord:
    spec: DeploymentSpec
    model_spec: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    deployed: Deployed | None = None
    last_stop: LastStop | None = field(default=None, compare=False, hash=False)

    @property
    def unit(self) -> str:
        return self.spec.unit

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "spec": self.spec.as_dict(),
            "model_spec": dict(self.model_spec) if self.model_spec is not None else None,
            "deployed": self.deployed.as_dict() if self.deployed else None,
            "last_stop": self.last_stop.as_dict() if self.last_stop else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> DeploymentRecord:
        if not isinstance(data, Mapping):
            raise InputError(f"{origin}: a deployment record is a JSON object")
        check_format(data.get("format"), origin)
        deployed = data.get("deployed")
        last_stop = data.get("last_stop")
        model_spec = data.get("model_spec")
        try:
            return cls(
                spec=DeploymentSpec.from_dict(data.get("spec"), origin=origin),
                model_spec=dict(model_spec) if isinstance(model_spec, Mapping) else None,
                deployed=Deployed(**deployed) if isinstance(deployed, Mapping) else None,
                last_stop=LastStop(**last_stop) if isinstance(last_stop, Mapping) else None,
            )
        except TypeError as exc:
            raise InputError(f"{origin}: the deployment record is not valid ({exc})") from exc

    @classmethod
    def from_json(cls, text: str, *, origin: str) -> DeploymentRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno}); move it away and "
                "deploy again with `tgiops deploy`"
            ) from exc
        return cls.from_dict(data, origin=origin)

    def same_deployment(self, other: DeploymentRecord | None) -> bool:
        """Same inputs and same outcome (timestamps and tgiops version aside)."""
        if other is None or other.spec != self.spec:
            return False
        if (self.deployed is None) != (other.deployed is None):
            return False
        if self.deployed is None or other.deployed is None:
            return True
        return self.deployed.essentials() == other.deployed.essentials()

    def resolve_model(self, catalog: Mapping[str, ModelSpec]) -> ModelSpec:
        """The ModelSpec to deploy: the catalog's entry when it is the same checkpoint, else the
        one stored in the record (a --model-config or --catalog model), else a clear error."""
        try:
            found = find_model(catalog, self.spec.model)
            if found.repo_id == self.spec.repo_id:
                return found
        except UnknownModelError:
            pass
        if self.model_spec is not None:
            return model_from_dict(self.model_spec, origin=f"the record of {self.unit}")
        raise InputError(
            f"the record of {self.unit} names model {self.spec.model!r} ({self.spec.repo_id}), "
            "which is not in this machine's catalog and the record does not carry the model's "
            "facts: pass the catalog that has it with --catalog FILE"
        )

    def to_request(
        self,
        catalog: Mapping[str, ModelSpec],
        *,
        offline: bool,
        timeout_s: float | None = None,
    ) -> Any:
        """The ``tgiops.deploy.DeployRequest`` that rebuilds this deployment."""
        from tgiops.deploy import DeployRequest
        from tgiops.engine import Engine

        spec = self.spec
        return DeployRequest(
            model=self.resolve_model(catalog),
            engine=Engine.tgi(spec.tgi_version),
            overrides=Overrides(**spec.overrides),
            unit_name=spec.unit,
            port=spec.port,
            public=spec.public,
            data_dir=spec.data_dir,
            gpu_devices=spec.gpu_devices,
            token_secret=spec.token_secret,
            api_key_secret=spec.api_key_secret,
            offline=offline,
            timeout_s=timeout_s,
        )


def check_format(value: Any, origin: str) -> None:
    match = _FORMAT_RE.fullmatch(str(value or ""))
    if not match:
        raise InputError(f"{origin}: not a tgiops deployment record (format {value!r})")
    if int(match[1]) != 1:
        raise InputError(
            f"{origin}: deployment record format {value} is newer than this tgiops understands "
            "(1); upgrade tgiops here"
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


# -- the model's facts ---------------------------------------------------------------------


def model_as_dict(model: ModelSpec) -> dict[str, Any]:
    data = {f.name: getattr(model, f.name) for f in fields(model)}
    data["sources"] = dict(model.sources)
    data["notes"] = list(model.notes)
    return data


def model_from_dict(data: Mapping[str, Any], *, origin: str) -> ModelSpec:
    known = {f.name for f in fields(ModelSpec)}
    values = {k: v for k, v in data.items() if k in known}
    values["notes"] = tuple(values.get("notes") or ())
    values["sources"] = dict(values.get("sources") or {})
    try:
        return ModelSpec(**values)
    except TypeError as exc:
        raise InputError(f"{origin}: the stored model facts are incomplete ({exc})") from exc


# -- from a deploy ---------------------------------------------------------------------------


def from_deploy(
    request: Any, the_plan: Plan, *, tgiops_version: str, now: datetime | None = None
) -> DeploymentRecord:
    """The record of a healthy deploy of ``request`` (a DeployRequest) with ``the_plan``."""
    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return DeploymentRecord(
        spec=DeploymentSpec.from_request(request),
        model_spec=model_as_dict(request.model),
        deployed=Deployed(
            image=the_plan.image,
            num_shard=the_plan.num_shard,
            quantize=the_plan.quantize,
            dtype=the_plan.dtype,
            max_input_tokens=the_plan.max_input_tokens,
            max_total_tokens=the_plan.max_total_tokens,
            hardware=the_plan.inventory.describe(),
            offline=bool(request.offline),
            at=at,
            tgiops_version=tgiops_version,
        ),
    )


# -- on the host's data volume ------------------------------------------------------------


def record_dir(data_dir: str) -> str:
    return posixpath.join(data_dir, RECORD_SUBDIR)


def record_path(data_dir: str, unit: str) -> str:
    return posixpath.join(record_dir(data_dir), f"{unit}.json")


_BEGIN = "@@tgiops-record "
_END = "@@tgiops-record-end"


def read_records(host: Any, data_dir: str) -> list[DeploymentRecord]:
    """Every record on the host's data volume (one round trip), sorted by unit.

    A record that cannot be read is logged and skipped: one bad file must not hide the others.
    """
    directory = shlex.quote(record_dir(data_dir))
    script = (
        f'for f in {directory}/*.json; do [ -f "$f" ] || continue; '
        f'echo "{_BEGIN}$f"; cat -- "$f"; echo; echo "{_END}"; done\n'
    )
    out = host.run_script(script, check=False).stdout
    records = []
    for chunk in out.split(_BEGIN)[1:]:
        path, _, rest = chunk.partition("\n")
        text = rest.rsplit(_END, 1)[0]
        origin = f"{host.name}:{path}"
        try:
            records.append(DeploymentRecord.from_json(text, origin=origin))
        except InputError as exc:
            log.warning("skipping an unreadable deployment record: %s", exc)
    return sorted(records, key=lambda r: r.unit)


def read_record(host: Any, data_dir: str, unit: str) -> DeploymentRecord | None:
    path = record_path(data_dir, unit)
    raw = host.read_file(path)
    if raw is None:
        return None
    return DeploymentRecord.from_json(raw.decode("utf-8", "replace"), origin=f"{host.name}:{path}")


def save_on_host(host: Any, record: DeploymentRecord) -> bool:
    """Write ``record`` on the data volume unless the same deployment is recorded already.

    Keeps the recorded ``last_stop`` (the history of why the previous unit stopped). Returns
    True when it wrote.
    """
    path = record_path(record.spec.data_dir, record.unit)
    host.run(["mkdir", "-p", "--", posixpath.dirname(path)])
    try:
        existing = read_record(host, record.spec.data_dir, record.unit)
    except InputError as exc:
        log.warning("replacing an unreadable record: %s", exc)
        existing = None
    if record.same_deployment(existing) and (existing is None or _same_model(existing, record)):
        log.debug("%s: the record of %s is up to date", host.name, record.unit)
        return False
    if existing is not None and record.last_stop is None:
        record = replace(record, last_stop=existing.last_stop)
    host.put_file_atomic(path, record.to_json(), mode=0o644)
    log.info("%s: wrote the deployment record %s", host.name, path)
    return True


def _same_model(a: DeploymentRecord, b: DeploymentRecord) -> bool:
    return a.model_spec == b.model_spec or a.model_spec is None or b.model_spec is None


def remember_deploy(host: Any, request: Any, the_plan: Plan, *, tgiops_version: str) -> None:
    """After a healthy deploy: record it on the data volume. Never fails the deploy."""
    try:
        save_on_host(host, from_deploy(request, the_plan, tgiops_version=tgiops_version))
    except TgiopsError as exc:
        log.warning("deployed, but could not write the deployment record on %s: %s", host.name, exc)


def note_stop(host: Any, data_dir: str, unit: str, stop: LastStop) -> bool:
    """Put ``stop`` into the unit's record (watch-interruption). False when there is none."""
    existing = read_record(host, data_dir, unit)
    if existing is None:
        return False
    path = record_path(data_dir, unit)
    host.put_file_atomic(path, replace(existing, last_stop=stop).to_json(), mode=0o644)
    return True


# -- as EC2 tags ------------------------------------------------------------------------------


def spec_json(spec: DeploymentSpec) -> str:
    """The compact JSON that goes into tags (nulls and empty values left out)."""
    data = {k: v for k, v in spec.as_dict().items() if v not in (None, [], {})}
    if data.get("token_secret") is None and spec.token_secret is None:
        data["token_secret"] = None  # "no token" must survive (absent means the default)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def instance_tags(record: DeploymentRecord) -> dict[str, str]:
    """The EC2 tags of ``record`` (see the module docstring)."""
    text = spec_json(record.spec)
    chunks = [text[i : i + TAG_VALUE_MAX_CHARS] for i in range(0, len(text), TAG_VALUE_MAX_CHARS)]
    tags = {
        MANAGED_TAG: "true",
        "tgiops:model": record.spec.model,
        "tgiops:unit": record.unit,
        f"{TAG_PREFIX}{record.unit}": str(len(chunks)),
    }
    for index, chunk in enumerate(chunks, start=1):
        tags[f"{TAG_PREFIX}{record.unit}:{index}"] = chunk
    return tags


def tags_of_unit(tags: Mapping[str, str], unit: str) -> list[str]:
    """The keys of ``tags`` that describe ``unit``: its record (``instance_tags``) and the
    ``tgiops:unit`` / ``tgiops:model`` pair deploy sets when they name it."""
    own = f"{TAG_PREFIX}{unit}"
    keys = [key for key in tags if key == own or key.startswith(own + ":")]
    if tags.get("tgiops:unit") == unit:
        keys += [key for key in ("tgiops:unit", "tgiops:model") if key in tags]
    return sorted(keys)


def records_from_tags(tags: Mapping[str, str], *, origin: str) -> list[DeploymentRecord]:
    """The records carried by a resource's tags (instance or Auto Scaling group)."""
    records = []
    for key, value in sorted(tags.items()):
        if not key.startswith(TAG_PREFIX):
            continue
        unit = key[len(TAG_PREFIX) :]
        if ":" in unit or not value.isdigit():
            continue
        parts = [tags.get(f"{key}:{i}") for i in range(1, int(value) + 1)]
        if any(p is None for p in parts):
            log.warning("%s: tag %s names %s chunks, some are missing", origin, key, value)
            continue
        text = "".join(p for p in parts if p is not None)
        try:
            data = json.loads(text)
            if isinstance(data, dict) and "token_secret" not in data:
                data["token_secret"] = DeploymentSpec.__dataclass_fields__["token_secret"].default
            spec = DeploymentSpec.from_dict(data, origin=f"{origin} tag {key}")
        except (json.JSONDecodeError, InputError) as exc:
            log.warning("%s: tag %s does not hold a deployment spec: %s", origin, key, exc)
            continue
        records.append(DeploymentRecord(spec=spec))
    return records


def tags_differ(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return any(current.get(key) != value for key, value in wanted.items())


# -- convenience for callers that juggle several sources ----------------------------------


@dataclass(frozen=True)
class Found:
    """Records and where they came from, in words (``data volume``, ``instance tags`` ...)."""

    records: tuple[DeploymentRecord, ...]
    source: str


def first_found(
    sources: list[tuple[str, Callable[[], list[DeploymentRecord]]]],
) -> Found | None:
    """The records of the first source that has any; a failing source is logged and skipped."""
    for name, read in sources:
        try:
            found = read()
        except TgiopsError as exc:
            log.warning("could not read deployment records from %s: %s", name, exc)
            continue
        if found:
            log.info("deployment record(s) %s from %s", ", ".join(r.unit for r in found), name)
            return Found(tuple(found), name)
    return None
