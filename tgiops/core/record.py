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

Trust (issue 12): the data volume and the tags are not the operator's. Anyone allowed
``ec2:CreateTags`` writes tags, and a shared data volume outlives the instance that wrote it.
So a record read from either says only *what* to serve (model, release, overrides, unit,
port, GPUs); what decides *who may see what* -- the secret names the token is read from, the
data dir, ``public`` -- comes only from the operator (:class:`OperatorSettings`: the CLI
flags of ``reconcile``, the Lambda's environment, the bootstrap config the operator's user
data wrote) and :meth:`DeploymentRecord.under` replaces the record's values with those.
Tags no longer carry them at all. The engine's container does not see the records: it gets
only ``<data_dir>/cache`` as /data (tgiops.core.layout.CACHE_SUBDIR). Every record is decoded by
one validating decoder (:meth:`DeploymentRecord.from_dict`): wrong types, out-of-range
numbers, unknown fields in the spec and paths outside the allowed data-dir prefixes are
refused with the field's name; a record that fails becomes an :class:`Unreadable`, reported
as that unit's failure while the other units and instances go on.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, TypeGuard

from tgiops.core.catalog import ModelSpec, find_model
from tgiops.core.catalog_file import ALIAS_RE, ENTRY_FIELDS, REPO_RE
from tgiops.core.engines.vllm import VllmOverrides, VllmPlan
from tgiops.core.errors import (
    HostKeyError,
    InputError,
    SSHConnectError,
    TgiopsError,
    UnknownModelError,
)
from tgiops.core.layout import DEFAULT_DATA_DIR, DEFAULT_TOKEN_SECRET, RECORD_SUBDIR, UNIT_NAME_RE
from tgiops.core.plan import Overrides, Plan
from tgiops.core.render import check_data_dir, comment_safe
from tgiops.core.request import DeployRequest, default_unit_name

log = logging.getLogger(__name__)

FORMAT = "tgiops.deployment/1"
TAG_PREFIX = "tgiops:record:"
MANAGED_TAG = "tgiops:managed"  # on every instance tgiops deployed to (`status --all`)
TAG_VALUE_MAX_CHARS = 256  # EC2 tag values (and Auto Scaling group tag values)
_FORMAT_RE = re.compile(r"tgiops\.deployment/(\d+)")
# Secrets Manager names: 1-512 of letters, digits and /_+=.@- (AWS Secrets Manager API
# reference, CreateSecret "Name").
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,300}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_OVERRIDE_NAMES = tuple(f.name for f in fields(Overrides))
_OVERRIDE_DEFAULTS = Overrides()
# vLLM's overrides (tgiops.core.engines.vllm.VllmOverrides), by the same rules.
_VLLM_OVERRIDE_NAMES = tuple(f.name for f in fields(VllmOverrides))
_VLLM_OVERRIDE_DEFAULTS = VllmOverrides()
_MAX_TOKENS = 10_000_000
# What each override may hold: (kind, minimum, maximum); None is always allowed but for
# full_length_requests.
_OVERRIDE_KINDS: dict[str, tuple[str, float, float]] = {
    "num_shard": ("int", 1, 64),
    "quantize": ("name", 0, 0),
    "dtype": ("name", 0, 0),
    "max_input_tokens": ("int", 1, _MAX_TOKENS),
    "max_total_tokens": ("int", 1, _MAX_TOKENS),
    "max_batch_prefill_tokens": ("int", 1, _MAX_TOKENS),
    "cuda_memory_fraction": ("float", 0.01, 1.0),
    "flash_attention": ("bool", 0, 0),
    "full_length_requests": ("int", 1, 4096),
    "gpu_memory_utilization": ("float", 0.01, 1.0),
    "max_model_len": ("int", 1, _MAX_TOKENS),
    "max_num_seqs": ("int", 1, 1_000_000),
    "max_num_batched_tokens": ("int", 1, _MAX_TOKENS),
    "enforce_eager": ("bool", 0, 0),
}
_SPEC_KEYS = frozenset(
    ("model", "repo_id", "tgi_version", "unit", "port", "public", "data_dir", "gpu_devices",
     "token_secret", "api_key_secret", "overrides", "engine", "engine_version")
)  # fmt: skip
# Fields only the operator decides (OperatorSettings); tags never carry them.
OPERATOR_FIELDS = ("token_secret", "api_key_secret", "data_dir", "public")


@dataclass(frozen=True)
class DeploymentSpec:
    """The inputs of one deploy: enough to rebuild the same DeployRequest anywhere."""

    model: str  # catalog alias
    repo_id: str
    # The engine's release. Named for TGI, the first engine: a TGI record says "tgi_version"
    # (as every record before vLLM did); another engine's says "engine" + "engine_version".
    tgi_version: str
    unit: str
    port: int = 8080
    public: bool = False
    data_dir: str = DEFAULT_DATA_DIR
    gpu_devices: tuple[int, ...] = ()
    token_secret: str | None = DEFAULT_TOKEN_SECRET
    api_key_secret: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # only what differs from default
    engine: str = "tgi"  # an EngineName; records without one are TGI's

    @property
    def engine_version(self) -> str:
        return self.tgi_version

    def __post_init__(self) -> None:
        where = f"deployment record for {self.unit!r}"
        if not isinstance(self.unit, str) or not UNIT_NAME_RE.fullmatch(self.unit):
            raise InputError(
                f"deployment record: unit {self.unit!r} is not tgiops' (its units are named "
                "tgiops-NAME); refused"
            )
        _check(isinstance(self.model, str) and ALIAS_RE.fullmatch(self.model), where, "model",
               self.model, "a catalog alias (letters, digits, . _ -)")  # fmt: skip
        _check(isinstance(self.repo_id, str) and REPO_RE.fullmatch(self.repo_id), where,
               "repo_id", self.repo_id, "a Hugging Face repository id like org/name")  # fmt: skip
        from tgiops.core.engine_names import ENGINE_NAMES
        from tgiops.core.engines import engine_for

        _check(self.engine in ENGINE_NAMES, where, "engine", self.engine,
               " or ".join(ENGINE_NAMES))  # fmt: skip
        version_key = "tgi_version" if self.engine == "tgi" else "engine_version"
        _check(isinstance(self.tgi_version, str), where, version_key, self.tgi_version,
               "a version like 3.3.7")  # fmt: skip
        engine_for(self.engine, self.tgi_version)
        _check(_is_int(self.port) and 1 <= self.port <= 65535, where, "port", self.port,
               "a port number 1-65535")  # fmt: skip
        _check(isinstance(self.public, bool), where, "public", self.public, "true or false")
        check_data_dir(self.data_dir, f"{where}: data dir")
        devices = tuple(self.gpu_devices)
        _check(all(_is_int(d) and 0 <= d < 64 for d in devices) and len(set(devices)) ==
               len(devices), where, "gpu_devices", self.gpu_devices,
               "distinct GPU indices 0-63")  # fmt: skip
        for name in ("token_secret", "api_key_secret"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, str) and SECRET_NAME_RE.fullmatch(value)),
                   where, name, value, "a Secrets Manager secret name or null")  # fmt: skip
        _check(isinstance(self.overrides, Mapping), where, "overrides", self.overrides,
               "an object")  # fmt: skip
        names = _VLLM_OVERRIDE_NAMES if self.engine == "vllm" else _OVERRIDE_NAMES
        unknown = sorted(str(k) for k in set(self.overrides) - set(names))
        if unknown:
            raise InputError(
                f"deployment record for {self.unit}: unknown override(s) {', '.join(unknown)}; "
                "was it written by a newer tgiops? Upgrade tgiops on this machine."
            )
        for name, value in self.overrides.items():
            _check_override(name, value, where)
        object.__setattr__(self, "overrides", dict(sorted(self.overrides.items())))
        object.__setattr__(self, "gpu_devices", devices)

    def under(self, settings: OperatorSettings) -> DeploymentSpec:
        """This spec with the operator's values for what only the operator decides."""
        return replace(
            self,
            token_secret=settings.token_secret,
            api_key_secret=settings.api_key_secret,
            data_dir=settings.data_dir,
            public=settings.public,
        )

    def as_dict(self) -> dict[str, Any]:
        release = (
            {"tgi_version": self.tgi_version}
            if self.engine == "tgi"
            else {"engine": self.engine, "engine_version": self.tgi_version}
        )
        return {
            "model": self.model,
            "repo_id": self.repo_id,
            **release,
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
        """The validating decoder of a spec: no conversion, every field's type and range."""
        if not isinstance(data, Mapping):
            raise InputError(f"{origin}: the deployment spec is not a JSON object")
        engine = data.get("engine", "tgi")  # records before vLLM: TGI's
        version_key = "tgi_version" if engine == "tgi" else "engine_version"
        missing = [k for k in ("model", "repo_id", version_key, "unit") if not data.get(k)]
        if missing:
            raise InputError(f"{origin}: the deployment spec lacks {', '.join(missing)}")
        unknown = sorted(str(k) for k in set(data) - _SPEC_KEYS)
        if unknown:
            raise InputError(f"{origin}: the deployment spec has unknown field(s) {unknown}")
        try:
            return cls(
                model=data["model"],
                repo_id=data["repo_id"],
                tgi_version=data[version_key],
                engine=engine,
                unit=data["unit"],
                port=data.get("port", 8080),
                public=data.get("public", False),
                data_dir=data.get("data_dir") or DEFAULT_DATA_DIR,
                gpu_devices=_sequence(data.get("gpu_devices") or (), origin, "gpu_devices"),
                token_secret=data.get("token_secret", DEFAULT_TOKEN_SECRET) or None,
                api_key_secret=data.get("api_key_secret") or None,
                overrides=data.get("overrides") or {},
            )
        except InputError as exc:
            raise InputError(f"{origin}: {exc}") from exc

    @classmethod
    def from_request(cls, request: DeployRequest) -> DeploymentSpec:
        """The spec of a ``tgiops.commands.DeployRequest``."""
        vllm = request.engine.name == "vllm"
        names = _VLLM_OVERRIDE_NAMES if vllm else _OVERRIDE_NAMES
        defaults = _VLLM_OVERRIDE_DEFAULTS if vllm else _OVERRIDE_DEFAULTS
        overrides = {
            name: getattr(request.overrides, name)
            for name in names
            if getattr(request.overrides, name) != getattr(defaults, name)
        }
        return cls(
            model=request.model.alias,
            repo_id=request.model.repo_id,
            tgi_version=request.engine.version_text,
            engine=request.engine.name,
            unit=request.unit_name or default_unit_name(request.model.alias),
            # None before deploy chose one (deploy records the resolved request)
            port=request.port if request.port is not None else 8080,
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
    # The image the unit ran, as docker knows it (``sha256:...`` of ``docker image inspect
    # .Id``), and its registry digest when the image came from a registry (RepoDigests);
    # None when unknown (an image built or imported locally has no registry digest).
    image_id: str | None = None
    image_digest: str | None = None

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> Deployed:
        where = f"{origin}: deployed"
        known = _known_fields(cls, data, where)
        _check(isinstance(data.get("image"), str) and _IMAGE_RE.fullmatch(data["image"]),
               where, "image", data.get("image"), "an image reference")  # fmt: skip
        for name in ("num_shard", "max_input_tokens", "max_total_tokens"):
            value = data.get(name)
            _check(_is_int(value) and 1 <= value <= _MAX_TOKENS, where, name, value,
                   "a positive integer")  # fmt: skip
        for name in ("image_id", "image_digest"):
            value = data.get(name)
            _check(value is None or (isinstance(value, str) and DIGEST_RE.fullmatch(value)),
                   where, name, value, "sha256:<64 hex digits> or null")  # fmt: skip
        _check(isinstance(data.get("offline"), bool), where, "offline", data.get("offline"),
               "true or false")  # fmt: skip
        for name in ("quantize", "dtype", "hardware", "at", "tgiops_version"):
            value = data.get(name)
            optional = name in ("quantize", "at", "tgiops_version")
            _check((optional and value is None) or _short_line(value), where, name, value,
                   "one short line of text")  # fmt: skip
        values = {k: v for k, v in data.items() if k in known}
        for name in ("at", "tgiops_version"):
            values[name] = values.get(name) or ""
        return cls(**values)

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

    @classmethod
    def from_dict(cls, data: Any, *, origin: str) -> LastStop:
        where = f"{origin}: last_stop"
        known = _known_fields(cls, data, where)
        for name in known:
            value = data.get(name)
            required = name in ("reason", "at")
            _check((value is None and not required) or _short_line(value, 1000), where, name,
                   value, "one line of text")  # fmt: skip
        return cls(**{k: v for k, v in data.items() if k in known})

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
        unknown = sorted(str(k) for k in set(data) - {"format", "spec", "model_spec",
                                                       "deployed", "last_stop"})  # fmt: skip
        if unknown:
            raise InputError(f"{origin}: the deployment record has unknown field(s) {unknown}")
        deployed = data.get("deployed")
        last_stop = data.get("last_stop")
        model_spec = data.get("model_spec")
        if model_spec is not None:
            if not isinstance(model_spec, Mapping):
                raise InputError(f"{origin}: model_spec is not a JSON object")
            model_from_dict(model_spec, origin=origin)  # the same checks as a catalog entry
        return cls(
            spec=DeploymentSpec.from_dict(data.get("spec"), origin=origin),
            model_spec=dict(model_spec) if model_spec is not None else None,
            deployed=None if deployed is None else Deployed.from_dict(deployed, origin=origin),
            last_stop=None if last_stop is None else LastStop.from_dict(last_stop, origin=origin),
        )

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

    def under(self, settings: OperatorSettings) -> DeploymentRecord:
        """This record with the operator's secret names, data dir and ``public``; the
        differences are logged (a record that asks for more than the operator gave)."""
        spec = self.spec.under(settings)
        for name in OPERATOR_FIELDS:
            asked, given = getattr(self.spec, name), getattr(spec, name)
            if asked != given:
                log.warning(
                    "%s: the record says %s=%r; using the operator's %r (records and tags do "
                    "not decide secrets, data dir or public)",
                    self.unit,
                    name,
                    asked,
                    given,
                )
        return replace(self, spec=spec)

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
            found = find_model(catalog, self.spec.model, self.spec.engine)
            if found.repo_id == self.spec.repo_id:
                return found
        except UnknownModelError:
            pass
        if self.model_spec is not None:
            model = model_from_dict(self.model_spec, origin=f"the record of {self.unit}")
            if model.repo_id != self.spec.repo_id:
                raise InputError(
                    f"the record of {self.unit} names {self.spec.repo_id} but carries the facts "
                    f"of {model.repo_id}; deploy it again with `tgiops deploy`"
                )
            return model
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
        """The ``tgiops.commands.DeployRequest`` that rebuilds this deployment."""
        from tgiops.core.engines import engine_for
        from tgiops.core.engines.tgi import TgiEngine
        from tgiops.core.engines.vllm import VllmEngine

        spec = self.spec
        engine = engine_for(spec.engine, spec.engine_version)
        assert isinstance(engine, (TgiEngine, VllmEngine))  # the registered engines
        overrides = (
            VllmOverrides(**spec.overrides)
            if spec.engine == "vllm"
            else Overrides(**spec.overrides)
        )
        return DeployRequest(
            model=self.resolve_model(catalog),
            engine=engine,
            overrides=overrides,
            unit_name=spec.unit,
            port=spec.port,
            public=spec.public,
            data_dir=spec.data_dir,
            gpu_devices=spec.gpu_devices,
            token_secret=spec.token_secret,
            api_key_secret=spec.api_key_secret,
            offline=offline,
            timeout_s=timeout_s,
            image_digest=self.pinned_digest(),
        )

    def pinned_digest(self) -> str | None:
        """The registry digest to pin when it is the same release the spec asks for."""
        from tgiops.core.engines import engine_of_image

        deployed = self.deployed
        if deployed is None:
            return None
        # the same engine and release (vLLM's image variant follows the host's driver)
        ran = engine_of_image(deployed.image)
        if (ran.name, ran.version_text, ran.image) != (
            self.spec.engine,
            self.spec.engine_version,
            deployed.image,
        ):
            return None
        return deployed.image_digest


def check_format(value: Any, origin: str) -> None:
    match = _FORMAT_RE.fullmatch(str(value or ""))
    if not match:
        raise InputError(f"{origin}: not a tgiops deployment record (format {value!r})")
    if int(match[1]) != 1:
        raise InputError(
            f"{origin}: deployment record format {value} is newer than this tgiops understands "
            "(1); upgrade tgiops here"
        )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _short_line(value: Any, limit: int = 300) -> bool:
    return isinstance(value, str) and len(value) <= limit and comment_safe(value) == value


def _known_fields(cls: Any, data: Any, where: str) -> set[str]:
    """The dataclass ``cls``'s field names, once ``data`` is an object with no other keys."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where} is not a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise InputError(f"{where} has unknown field(s) {unknown}")
    return known


def _check(ok: Any, where: str, name: str, value: Any, wanted: str) -> None:
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InputError(f"{where}: {name} is {shown} ({type(value).__name__}); want {wanted}")


def _check_override(name: str, value: Any, where: str) -> None:
    kind, low, high = _OVERRIDE_KINDS[name]
    if value is None and name != "full_length_requests":
        return
    if kind == "int":
        ok = _is_int(value) and low <= value <= high
        wanted = f"an integer {low:g}-{high:g}"
    elif kind == "float":
        ok = (_is_int(value) or isinstance(value, float)) and low <= value <= high
        wanted = f"a number {low:g}-{high:g}"
    elif kind == "bool":
        ok, wanted = isinstance(value, bool), "true, false or null"
    else:
        ok = isinstance(value, str) and bool(re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value))
        wanted = "a name like awq or bfloat16"
    _check(ok, where, f"override {name}", value, wanted)


def _sequence(value: Any, origin: str, name: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{origin}: {name} is {value!r}; want a list")
    return tuple(value)


@dataclass(frozen=True)
class OperatorSettings:
    """What only the operator decides for a restored deployment (see the module docstring):
    from ``reconcile``'s flags, the Lambda's environment, or the bootstrap config."""

    token_secret: str | None = DEFAULT_TOKEN_SECRET
    api_key_secret: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
    public: bool = False

    def __post_init__(self) -> None:
        check_data_dir(self.data_dir, "--data-dir")
        for name in ("token_secret", "api_key_secret"):
            value = getattr(self, name)
            if value is not None and not SECRET_NAME_RE.fullmatch(value):
                raise InputError(f"{name} {value!r} is not a Secrets Manager secret name")

    @classmethod
    def of(cls, spec: DeploymentSpec) -> OperatorSettings:
        """The settings an operator-written spec (the bootstrap config) carries."""
        return cls(spec.token_secret, spec.api_key_secret, spec.data_dir, spec.public)


@dataclass(frozen=True)
class Unreadable:
    """A record that was found but refused by the decoder: reported as its unit's failure."""

    unit: str  # the unit it names (from the file or tag name), for the report
    where: str
    reason: str


# -- the model's facts ---------------------------------------------------------------------


def model_as_dict(model: ModelSpec) -> dict[str, Any]:
    data = {f.name: getattr(model, f.name) for f in fields(model)}
    data["sources"] = dict(model.sources)
    data["notes"] = list(model.notes)
    return data


def model_from_dict(data: Mapping[str, Any], *, origin: str) -> ModelSpec:
    """The stored model facts, checked like a catalog entry (tgiops.core.catalog)."""
    from tgiops.core.catalog_file import spec_from_entry, validate_model

    alias = data.get("alias")
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise InputError(f"{origin}: the stored model facts have no usable alias ({alias!r})")
    unknown = sorted(str(k) for k in set(data) - set(ENTRY_FIELDS) - {"alias", "origin"})
    if unknown:
        raise InputError(f"{origin}: the stored model facts have unknown field(s) {unknown}")
    entry = {k: v for k, v in data.items() if k in ENTRY_FIELDS and v is not None}
    entry["sources"] = {}  # provenance is for people; it does not travel into a restore
    spec = spec_from_entry(alias, entry, f"{origin} (model_spec)", {}, {})
    validate_model(spec)
    return spec


# -- from a deploy ---------------------------------------------------------------------------


def from_deploy(
    request: DeployRequest,
    the_plan: Plan | VllmPlan,
    *,
    tgiops_version: str,
    now: datetime,
) -> DeploymentRecord:
    """The record of a healthy deploy of ``request`` (a DeployRequest) with ``the_plan``."""
    at = now.astimezone(timezone.utc).isoformat(timespec="seconds")
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


# -- where records live on the host's data volume (read and written by tgiops.edges.record_store)


def record_dir(data_dir: str) -> str:
    return posixpath.join(data_dir, RECORD_SUBDIR)


def record_path(data_dir: str, unit: str) -> str:
    return posixpath.join(record_dir(data_dir), f"{unit}.json")


Entry = DeploymentRecord | Unreadable


# -- as EC2 tags ------------------------------------------------------------------------------


def spec_json(spec: DeploymentSpec) -> str:
    """The compact JSON that goes into tags: what to serve, never the operator's fields
    (secret names, data dir, public: OPERATOR_FIELDS), which a tag writer must not decide."""
    data = {
        k: v
        for k, v in spec.as_dict().items()
        if v not in (None, [], {}) and k not in OPERATOR_FIELDS
    }
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


def tag_entries(tags: Mapping[str, str], *, origin: str) -> list[Entry]:
    """The records carried by a resource's tags (instance or Auto Scaling group), with the
    default operator fields (callers apply the operator's: ``DeploymentRecord.under``)."""
    entries: list[Entry] = []
    for key, value in sorted(tags.items()):
        if not key.startswith(TAG_PREFIX):
            continue
        unit = key[len(TAG_PREFIX) :]
        if ":" in unit or not value.isdigit() or not 1 <= int(value) <= 40:
            continue
        where = f"{origin} tag {key}"
        parts = [tags.get(f"{key}:{i}") for i in range(1, int(value) + 1)]
        if any(p is None for p in parts):
            log.warning("%s: tag %s names %s chunks, some are missing", origin, key, value)
            continue
        text = "".join(p for p in parts if p is not None)
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in OPERATOR_FIELDS}
            spec = DeploymentSpec.from_dict(data, origin=where)
        except (json.JSONDecodeError, RecursionError) as exc:
            entries.append(Unreadable(comment_safe(unit)[:63], where, f"{where}: not JSON ({exc})"))
            continue
        except InputError as exc:
            log.warning("%s: tag %s does not hold a deployment spec: %s", origin, key, exc)
            entries.append(Unreadable(comment_safe(unit)[:63], where, str(exc)))
            continue
        entries.append(DeploymentRecord(spec=spec))
    return entries


def records_from_tags(tags: Mapping[str, str], *, origin: str) -> list[DeploymentRecord]:
    """The valid records of ``tag_entries``."""
    return [e for e in tag_entries(tags, origin=origin) if isinstance(e, DeploymentRecord)]


def tags_differ(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return any(current.get(key) != value for key, value in wanted.items())


# -- convenience for callers that juggle several sources ----------------------------------


@dataclass(frozen=True)
class Found:
    """Records and where they came from, in words (``data volume``, ``instance tags`` ...);
    ``unreadable``: records that source holds but the decoder refused."""

    records: tuple[DeploymentRecord, ...]
    source: str
    unreadable: tuple[Unreadable, ...] = ()


def first_found(sources: list[tuple[str, Callable[[], Sequence[Entry]]]]) -> Found | None:
    """The records of the first source that has any (refused ones count: they are reported,
    not skipped for an older source); a failing source is logged and skipped, but a host that
    cannot be reached (or whose key is refused) is the caller's failure, not "no record"."""
    for name, read in sources:
        try:
            found = read()
        except (HostKeyError, SSHConnectError):
            raise
        except TgiopsError as exc:
            log.warning("could not read deployment records from %s: %s", name, exc)
            continue
        if found:
            records = tuple(e for e in found if isinstance(e, DeploymentRecord))
            refused = tuple(e for e in found if isinstance(e, Unreadable))
            log.info("deployment record(s) %s from %s", ", ".join(e.unit for e in found), name)
            return Found(records, name, refused)
    return None
