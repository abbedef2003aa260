"""The engine seam: what tgiops needs to know about a serving engine, and which engines exist.

Everything engine-specific (image and tags, flag and environment names per release, the memory
model's warmup terms, the health and metrics contract, failure signatures in the journal) sits
behind ``Engine``; commands only ever call these members. A new engine is a module here that
implements the protocol, a unit template in unit_templates/, and one line in ``_RELEASES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from tgiops.core.engine_names import DEFAULT_ENGINE, ENGINE_NAMES
from tgiops.core.engines.tgi import DEFAULT_TGI_VERSION, TgiEngine
from tgiops.core.engines.vllm import DEFAULT_VLLM_VERSION, VllmEngine
from tgiops.core.errors import InputError

if TYPE_CHECKING:
    from tgiops.core.catalog import ModelSpec
    from tgiops.core.hardware import GpuInventory


class Engine(Protocol):
    """One release of one serving engine."""

    @property
    def name(self) -> str: ...  # an EngineName

    @property
    def version_text(self) -> str: ...

    @property
    def image(self) -> str:
        """The container image (repository:tag) of this release."""
        ...

    @property
    def token_env_var(self) -> str:
        """The environment variable the engine reads the Hugging Face token from."""
        ...

    @property
    def unit_template(self) -> str:
        """The file under unit_templates/ its systemd unit is rendered from."""
        ...

    @property
    def container_port(self) -> int:
        """The port the engine listens on inside its container."""
        ...

    @property
    def health_path(self) -> str:
        """200 here (and only here) means the engine has loaded and warmed up."""
        ...

    def cache_dir_in_container(self, repo_id: str) -> str:
        """Where the model's Hugging Face cache folder is, inside the container."""
        ...

    def info_mismatches(
        self,
        info: Mapping[str, Any],
        *,
        expected_model_id: str,
        expected_max_total_tokens: int | None,
        expected_max_input_tokens: int | None,
    ) -> list[str]:
        """Differences between what the endpoint says it serves and the plan, as sentences."""
        ...

    def diagnose_journal(self, text: str) -> str | None:
        """The engine's own failure in the unit's journal, in words (None: none recognised)."""
        ...

    # Ranking instance types (tgiops.core.recommend): each engine plans with its own planner
    # and its own overrides (TGI: tgiops.core.plan.Overrides; vLLM: vllm.VllmOverrides).

    @property
    def label(self) -> str:
        """The engine's name as people write it (TGI, vLLM)."""
        ...

    @property
    def max_total_flag(self) -> str:
        """The option that sets one request's prompt + answer tokens (--min-context's twin)."""
        ...

    def require_servable(self, model: ModelSpec) -> None:
        """PlanInputError when no release of this engine serves ``model`` on any hardware."""
        ...

    def default_overrides(self) -> Any:
        """This engine's overrides with nothing forced."""
        ...

    def max_total_of(self, overrides: Any) -> int | None:
        """The forced prompt + answer tokens of ``overrides`` (None: the planner decides)."""
        ...

    def with_max_total(self, overrides: Any, tokens: int) -> Any:
        """``overrides`` with one request's prompt + answer tokens forced to ``tokens``."""
        ...

    def plan_on(self, model: ModelSpec, inventory: GpuInventory, overrides: Any) -> RankedPlan:
        """This engine's plan on ``inventory``; PlanInputError for what it refuses there."""
        ...


class PlanMemory(Protocol):
    @property
    def kv_cache_tokens(self) -> int: ...


class RankedPlan(Protocol):
    """What the instance-type ranking reads of any engine's plan (TGI's Plan, vLLM's VllmPlan)."""

    @property
    def fits(self) -> bool: ...
    @property
    def problem(self) -> str | None: ...
    @property
    def inventory(self) -> GpuInventory: ...
    @property
    def num_shard(self) -> int: ...
    @property
    def quantize(self) -> str | None: ...
    @property
    def max_total_tokens(self) -> int: ...
    @property
    def memory(self) -> PlanMemory: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...


_RELEASES: dict[str, tuple[Callable[[str], Engine], str]] = {
    "tgi": (TgiEngine.release, DEFAULT_TGI_VERSION),
    "vllm": (VllmEngine.release, DEFAULT_VLLM_VERSION),
}


def engine_for(name: str = DEFAULT_ENGINE, version_text: str | None = None) -> Engine:
    """The engine called ``name`` at ``version_text`` (default: its pinned release)."""
    if name not in _RELEASES:
        raise InputError(f"--engine {name!r}: tgiops serves with {', '.join(ENGINE_NAMES)}")
    release, default_version = _RELEASES[name]
    return release(version_text or default_version)


def engine_of_image(image: str | None) -> Engine:
    """The engine release an installed unit runs, from its image (``repository:tag``); an image
    tgiops cannot place (a digest, a mirror) is read with the default engine's contract."""
    repository, _, tag = (image or "").split("@")[0].rpartition(":")
    for release, default_version in _RELEASES.values():
        engine = release(default_version)
        if repository and engine.image.rpartition(":")[0] == repository:
            try:
                return release(tag)
            except InputError:
                return engine
    return engine_for()
