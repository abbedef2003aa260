"""The shapes `tgiops status` reports (pure): its records and its ``--json`` schema.

The facts one run of the status script gives about a host (``HostFacts``: ``UnitPlan``,
``SystemdFacts``, ``ContainerFacts``, ``HttpFacts``, ``TgiMetrics`` per unit), what AWS says
of its instance (``Ec2Facts``), the verdicts (``Verdict``, ``UnitStatus``, ``HostStatus``,
``StatusReport``) and ``JSON_SCHEMA``, the documented ``--json`` object (README "Status JSON")
that tgiops/cli/output.py writes from a ``StatusReport``. How the facts are read and the
verdicts given is tgiops/core/status.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tgiops.core import hardware, probe
from tgiops.core.engines import engine_of_image

SCHEMA = "tgiops.status/1"
Verdict = Literal["healthy", "loading", "degraded", "failed", "not-deployed", "unreachable"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


# --- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitPlan:
    """What the installed unit file says it runs (its ExecStart and tgiops' header line)."""

    alias: str | None = None
    model_id: str | None = None
    image: str | None = None
    container: str | None = None
    bind_address: str | None = None
    port: int | None = None
    data_dir: str | None = None
    num_shard: int | None = None
    quantize: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None

    @property
    def engine(self) -> tuple[str, str] | None:
        """(engine name, release) from the image (tgiops.core.engines.engine_of_image)."""
        if self.image is None:
            return None
        engine = engine_of_image(self.image)
        return engine.name, engine.version_text


@dataclass(frozen=True)
class SystemdFacts:
    state: probe.UnitState
    since_epoch_s: int | None  # ActiveEnterTimestamp (host clock), None when never active
    since_text: str | None  # as systemd printed it
    state_changed_epoch_s: int | None

    @property
    def since_iso(self) -> str | None:
        if self.since_epoch_s is None:
            return None
        from datetime import datetime, timezone  # a conversion, not a clock read

        moment = datetime.fromtimestamp(self.since_epoch_s, tz=timezone.utc)
        return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ContainerFacts:
    id: str
    image: str
    status: str  # created / running / exited / restarting ...
    running: bool
    started_at: str | None
    exit_code: int | None
    restart_count: int


@dataclass(frozen=True)
class HttpFacts:
    endpoint: str | None  # http://ADDR:PORT as seen on the host
    health_code: int | None  # None: no HTTP answer
    curl_exit_code: int | None
    detail: str  # in words
    info: Mapping[str, Any] | None = None
    info_error: str | None = None
    metrics: TgiMetrics | None = None
    metrics_error: str | None = None
    key_guarded: bool = False  # vLLM's /v1/models wants the API key: not compared


@dataclass(frozen=True)
class TgiMetrics:
    """The figures status shows, from TGI's /metrics (names: docs/tgi.md §5)."""

    request_count: float | None
    request_success: float | None
    request_failure: float | None
    queue_size: float | None
    batch_size: float | None
    mean_time_per_token_s: float | None  # lifetime mean: histogram sum / count
    kv_cache_usage: float | None = None  # 0..1 (vLLM; TGI does not export it)
    generation_tokens: float | None = None  # tokens generated since start (vLLM)


@dataclass(frozen=True)
class UnitFacts:
    name: str
    plan: UnitPlan
    systemd: SystemdFacts | None
    container: ContainerFacts | None
    container_error: str | None
    http: HttpFacts
    diagnosis: str | None  # from the journal, when not healthy


@dataclass(frozen=True)
class HostFacts:
    """Everything one run of ``status_script`` said."""

    now_epoch_s: int | None
    managed_units: tuple[str, ...]
    units: tuple[UnitFacts, ...]
    gpus: tuple[hardware.Gpu, ...]
    gpus_error: str | None


@dataclass(frozen=True)
class Ec2Facts:
    instance_id: str
    name: str | None
    instance_type: str
    lifecycle: str
    state: str
    availability_zone: str
    public_ip: str | None
    elastic_ip: bool | None  # None: could not be checked
    on_demand_usd_per_hour: float | None
    spot_usd_per_hour: float | None
    price_date: str = hardware.PRICE_DATE
    price_source: str = hardware.PRICE_SOURCE
    error: str | None = None
    # Inbound rules open to the whole internet: (group id, from port, to port). Filled in with
    # the other EC2 facts; ``warnings`` turns them into words once the units' ports are known.
    open_ingress: tuple[tuple[str, int, int], ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnitStatus:
    unit: str | None  # None: the host could not tell (unreachable, nothing deployed)
    verdict: Verdict
    reason: str
    facts: UnitFacts | None = None


@dataclass(frozen=True)
class HostStatus:
    target: str  # the label the user knows (destination or instance id)
    destination: str
    reachable: bool
    error: str | None
    round_trips: int
    elapsed_s: float
    ec2: Ec2Facts | None
    gpus: tuple[hardware.Gpu, ...]
    gpus_error: str | None
    units: tuple[UnitStatus, ...]
    now_epoch_s: int | None = None


@dataclass(frozen=True)
class StatusReport:
    hosts: tuple[HostStatus, ...]
    elapsed_s: float
    generated_at: str  # ISO 8601 UTC, from the caller's clock

    @property
    def all_units(self) -> list[tuple[HostStatus, UnitStatus]]:
        return [(h, u) for h in self.hosts for u in h.units]

    @property
    def healthy(self) -> bool:
        units = self.all_units
        return bool(units) and all(u.verdict == "healthy" for _, u in units)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(VERDICTS, 0)
        for _, u in self.all_units:
            counts[u.verdict] += 1
        return counts

    def restarts(self) -> dict[tuple[str, str], int]:
        """(destination, unit) -> NRestarts: what the next --watch refresh compares against."""
        found: dict[tuple[str, str], int] = {}
        for h, u in self.all_units:
            if u.unit and u.facts and u.facts.systemd:
                found[(h.destination, u.unit)] = u.facts.systemd.state.n_restarts or 0
        return found


# --- the documented --json schema (JSON Schema draft 2020-12; README "Status JSON") ------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tgiops status --json",
    **_object(
        {
            "schema": {"const": SCHEMA},
            "generated_at": _STR,
            "elapsed_s": _NUM,
            "healthy": _BOOL,
            "counts": _object({v: _INT for v in VERDICTS}),
            "hosts": {
                "type": "array",
                "items": _object(
                    {
                        "target": _STR,
                        "destination": _STR,
                        "reachable": _BOOL,
                        "error": _nullable(_STR),
                        "round_trips": _INT,
                        "elapsed_s": _NUM,
                        "ec2": _nullable(
                            _object(
                                {
                                    "instance_id": _STR,
                                    "name": _nullable(_STR),
                                    "instance_type": _STR,
                                    "lifecycle": _STR,
                                    "state": _STR,
                                    "availability_zone": _STR,
                                    "public_ip": _nullable(_STR),
                                    "elastic_ip": _nullable(_BOOL),
                                    "on_demand_usd_per_hour": _nullable(_NUM),
                                    "spot_usd_per_hour": _nullable(_NUM),
                                    "price_date": _STR,
                                    "price_source": _STR,
                                    "error": _nullable(_STR),
                                    "warnings": {"type": "array", "items": _STR},
                                }
                            )
                        ),
                        "gpus": {
                            "type": "array",
                            "items": _object(
                                {
                                    "index": _INT,
                                    "name": _STR,
                                    "utilization_pct": _INT,
                                    "memory_used_mib": _INT,
                                    "memory_total_mib": _INT,
                                }
                            ),
                        },
                        "gpus_error": _nullable(_STR),
                        "units": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": "#/$defs/unit"},
                        },
                    }
                ),
            },
        }
    ),
    "$defs": {
        "unit": _object(
            {
                "unit": _nullable(_STR),
                "verdict": {"enum": list(VERDICTS)},
                "reason": _STR,
                "model": _nullable(
                    _object({"alias": _nullable(_STR), "model_id": _nullable(_STR)})
                ),
                "endpoint": _nullable(_STR),
                "plan": _nullable(
                    _object(
                        {
                            "image": _nullable(_STR),
                            "engine": _nullable(_object({"name": _STR, "version": _STR})),
                            "model_id": _nullable(_STR),
                            "num_shard": _nullable(_INT),
                            "quantize": _nullable(_STR),
                            "max_input_tokens": _nullable(_INT),
                            "max_total_tokens": _nullable(_INT),
                            "bind_address": _nullable(_STR),
                            "port": _nullable(_INT),
                            "data_dir": _nullable(_STR),
                        }
                    )
                ),
                "systemd": _nullable(
                    _object(
                        {
                            "load_state": _nullable(_STR),
                            "active_state": _nullable(_STR),
                            "sub_state": _nullable(_STR),
                            "unit_file_state": _nullable(_STR),
                            "result": _nullable(_STR),
                            "exec_main_status": _nullable(_INT),
                            "main_pid": _nullable(_INT),
                            "n_restarts": _nullable(_INT),
                            "since": _nullable(_STR),
                            "active_for_s": _nullable(_INT),
                        }
                    )
                ),
                "container": _nullable(
                    _object(
                        {
                            "id": _STR,
                            "image": _STR,
                            "state": _STR,
                            "running": _BOOL,
                            "started_at": _nullable(_STR),
                            "exit_code": _nullable(_INT),
                            "restart_count": _INT,
                        }
                    )
                ),
                "container_error": _nullable(_STR),
                "tgi": _nullable(
                    _object(
                        {
                            "health_status": _nullable(_INT),
                            "health_detail": _STR,
                            "info": _nullable(
                                _object(
                                    {
                                        "model_id": _nullable(_STR),
                                        "model_sha": _nullable(_STR),
                                        "version": _nullable(_STR),
                                        "max_input_tokens": _nullable(_INT),
                                        "max_total_tokens": _nullable(_INT),
                                        "max_concurrent_requests": _nullable(_INT),
                                        "max_batch_total_tokens": _nullable(_INT),
                                    }
                                )
                            ),
                            "info_error": _nullable(_STR),
                            "metrics": _nullable(
                                _object(
                                    {
                                        "request_count": _nullable(_NUM),
                                        "request_success": _nullable(_NUM),
                                        "request_failure": _nullable(_NUM),
                                        "queue_size": _nullable(_NUM),
                                        "batch_size": _nullable(_NUM),
                                        "mean_time_per_token_ms": _nullable(_NUM),
                                        "kv_cache_usage": _nullable(_NUM),
                                        "generation_tokens": _nullable(_NUM),
                                    }
                                )
                            ),
                            "metrics_error": _nullable(_STR),
                        }
                    )
                ),
                "diagnosis": _nullable(_STR),
            }
        )
    },
}
