"""What a deploy is asked to do and what it reports: the inputs every verb that deploys shares
(deploy, bootstrap, reconcile, the deployment record) and the result, with its JSON shape."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tgiops.core.catalog import ModelSpec
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.engines.vllm import VllmEngine, VllmOverrides, VllmPlan, plan_vllm
from tgiops.core.engines.vllm import plan_as_dict as vllm_plan_as_dict
from tgiops.core.errors import InputError
from tgiops.core.hardware import GpuInventory, InstanceType
from tgiops.core.layout import DEFAULT_DATA_DIR, DEFAULT_TOKEN_SECRET, UNIT_PREFIX
from tgiops.core.plan import Overrides, Plan, plan, plan_as_dict
from tgiops.core.render import UnitOptions, unit_name_from

DEFAULT_PORT = 8080


class Redactor:
    """Replaces every secret value it was told about with ``***`` in text shown to people."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class DeployRequest:
    model: ModelSpec
    engine: TgiEngine | VllmEngine  # a registered engine (tgiops.core.engines._RELEASES)
    overrides: Overrides | VllmOverrides = field(default_factory=Overrides)
    unit_name: str | None = None  # default: tgiops-<alias>
    port: int | None = None  # None: the unit's current port, else the first free from 8080
    public: bool = False
    data_dir: str = DEFAULT_DATA_DIR
    gpu_devices: tuple[int, ...] = ()
    token_secret: str | None = DEFAULT_TOKEN_SECRET  # None: no token (ungated models only)
    api_key_secret: str | None = None
    offline: bool = False  # HF_HUB_OFFLINE=1: start from the cache (spot relaunch)
    dry_run: bool = False
    keep_failed: bool = False
    timeout_s: float | None = None  # default: from the model size
    image_digest: str | None = None  # pin the image (tgiops.core.record: recorded at deploy)

    def __post_init__(self) -> None:
        if (self.engine.name == "vllm") != isinstance(self.overrides, VllmOverrides):
            if self.overrides in (Overrides(), VllmOverrides()):  # defaults: the engine's own
                default = VllmOverrides() if self.engine.name == "vllm" else Overrides()
                object.__setattr__(self, "overrides", default)
            else:
                raise InputError(f"overrides of another engine given for {self.engine.name}")
        if self.unit_name is not None:
            object.__setattr__(self, "unit_name", unit_name_from(self.unit_name))
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InputError(
                f"--timeout {self.timeout_s:g}: give the health wait in seconds (> 0), or leave "
                "it out to size it from the model"
            )
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InputError(f"--port {self.port} must be between 1 and 65535")

    def unit_options(self, secret_env: tuple[str, ...]) -> UnitOptions:
        name = self.unit_name or default_unit_name(self.model.alias)
        return UnitOptions(
            unit_name=name,
            port=self.port or DEFAULT_PORT,
            bind_address="0.0.0.0" if self.public else "127.0.0.1",
            data_dir=self.data_dir,
            gpu_devices=self.gpu_devices,
            extra_env={"HF_HUB_OFFLINE": "1"} if self.offline else {},
            secret_env=secret_env,
            image_digest=self.image_digest,
        )


@dataclass(frozen=True)
class DeployResult:
    host: str
    unit: str
    plan: Plan | VllmPlan
    changed: bool
    healthy: bool
    endpoint: str  # on the host: where TGI listens
    elapsed_s: float
    dry_run: bool = False
    rolled_back: bool = False
    restored: str | None = None  # what serves now after a failure, in words
    failure: str | None = None  # why it failed, in words
    diagnosis: str | None = None
    journal_tail: str = ""
    unit_text: str = ""
    env_text_redacted: str = ""
    remote_commands: tuple[str, ...] = ()
    round_trips: int = 0
    port: int = DEFAULT_PORT  # the host port chosen (--port, the unit's own, or a free one)
    gpu_devices: tuple[int, ...] = ()  # () = every GPU
    replaced: Replaced | None = None  # the earlier deploy this one replaced
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The documented `tgiops deploy --json` object (README: "Deploy JSON")."""
        data: dict[str, Any] = {
            "host": self.host,
            "unit": self.unit,
            "changed": self.changed,
            "healthy": self.healthy,
            "dry_run": self.dry_run,
            "endpoint": self.endpoint,
            "elapsed_s": round(self.elapsed_s, 2),
            "round_trips": self.round_trips,
            "rolled_back": self.rolled_back,
            "restored": self.restored,
            "failure": self.failure,
            "diagnosis": self.diagnosis,
            "plan": any_plan_as_dict(self.plan),
            "port": self.port,
            "gpu_devices": list(self.gpu_devices),
            "replaced": self.replaced.as_dict() if self.replaced else None,
            "warnings": list(self.warnings),
        }
        if self.dry_run:
            data["unit_text"] = self.unit_text
            data["env_file"] = self.env_text_redacted
            data["remote_commands"] = list(self.remote_commands)
        if self.journal_tail:
            data["journal_tail"] = self.journal_tail.splitlines()
        return data


@dataclass(frozen=True)
class Replaced:
    """The deploy of the same unit that this one replaced (from its deployment record)."""

    model: str
    at: str  # ISO 8601, UTC
    age_s: float | None  # seconds between that deploy and the start of this one

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "at": self.at, "age_s": self.age_s}


def default_unit_name(alias: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in alias.lower())
    return f"{UNIT_PREFIX}{safe.strip('-._')}"[:63]


def default_timeout_s(model: ModelSpec) -> float:
    """Download + load + warmup: ~10 min base, plus ~1 min per 10 GB of weights."""
    size_gb = (model.weight_bytes or model.parameters_b * 2e9) / 1e9
    return 600 + 6 * size_gb


def plan_request(
    request: DeployRequest,
    inventory: GpuInventory,
    *,
    instance_types: Iterable[InstanceType] = (),
) -> Plan | VllmPlan:
    """The plan of ``request``'s engine on ``inventory``. vLLM's image variant follows the
    inventory's driver (``vllm.image_for``: -cu129 below 580)."""
    if isinstance(request.engine, VllmEngine):
        overrides = request.overrides
        assert isinstance(overrides, VllmOverrides)  # DeployRequest pairs them
        return plan_vllm(request.model, inventory, overrides, version=request.engine.version_text)
    assert isinstance(request.overrides, Overrides)
    return plan(
        request.model,
        inventory,
        request.engine,
        request.overrides,
        instance_types=instance_types,
    )


def any_plan_as_dict(plan: Plan | VllmPlan) -> dict[str, Any]:
    """Either engine's plan as the one plan JSON shape (README: "Plan JSON")."""
    return vllm_plan_as_dict(plan) if isinstance(plan, VllmPlan) else plan_as_dict(plan)
