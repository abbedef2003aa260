"""The emulated vLLM releases, their image tags and what differs between them.

The emulator never reads tgiops (it must be able to catch tgiops' errors); its facts come
from the repository's tgiops/docs/vllm.md ("facts §n") and the vLLM sources cited there:

- Image `vllm/vllm-openai`, entrypoint `vllm serve` (facts §1.1). Since PR #39878 (v0.20.0) the
  plain `vX.Y.Z` tag is a CUDA 13.0 build that needs NVIDIA driver R580+, and `vX.Y.Z-cu129` is
  the CUDA 12.9 build for older drivers; before it the plain tag was CUDA 12.x (12.8 for the
  0.11 line) and there was no `-cu129` tag (facts §1.1).
- `--gpu-memory-utilization` defaults to 0.9 through the 0.11.x line, 0.92 later (facts §1.2,
  `vllm/config/cache.py`).
- `vllm:gpu_cache_usage_perc` was deprecated by PR #18354 (2025-05) and its removal scheduled
  by PR #29330 (2025-11): the 0.11 line still exports it beside `vllm:kv_cache_usage_perc`,
  the 0.20+ releases export only `vllm:kv_cache_usage_perc` (facts §1.3).
- CUDA-graph memory is estimated and taken out of the KV budget by default from v0.21.0
  ("CUDA graph memory profiling is enabled (default since v0.21.0)", vLLM's own log line,
  quoted in public startup logs); before it graph memory came on top of the budget.
- `--disable-log-requests` was deprecated in favour of `--enable-log-requests` /
  `--no-enable-log-requests` in the 0.10/0.11 line and removed by 0.19: public startup
  failures read `vllm: error: unrecognized arguments: --disable-log-requests` on 0.19.x and
  0.20.1 (deployment notes found by text search); the 0.11 line still accepts it.
- The pinned default is v0.20.0: the first release of the CUDA 13 tag convention, its tags
  `v0.20.0` and `v0.20.0-cu129` are named in PR #39878's downstream fixes (facts §1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE = "vllm/vllm-openai"
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.11.0", "0.20.0", "0.27.1")
DEFAULT_VERSION = "0.20.0"
# CUDA 13 runtimes need a driver of this major version or newer (facts §1.1).
CUDA13_MIN_DRIVER = 580


@dataclass(frozen=True)
class VersionProfile:
    version: str
    default_gpu_memory_utilization: float
    legacy_cache_usage_metric: bool  # also export vllm:gpu_cache_usage_perc
    cudagraph_in_kv_budget: bool  # "Estimated CUDA graph memory" subtracted (>= 0.21.0)
    accepts_disable_log_requests: bool
    min_compute_capability: tuple[int, int]  # below it: no kernels in the build
    device_in_free_memory_error: bool  # "Free memory on device cuda:0 (...)" vs "device (...)"


PROFILES: dict[str, VersionProfile] = {
    "0.11.0": VersionProfile(
        version="0.11.0",
        default_gpu_memory_utilization=0.9,
        legacy_cache_usage_metric=True,
        cudagraph_in_kv_budget=False,
        accepts_disable_log_requests=True,
        # CUDA 12.8 builds still carry sm70 kernels (V100 ran V1 from v0.10.2, facts §1.5).
        min_compute_capability=(7, 0),
        device_in_free_memory_error=False,
    ),
    "0.20.0": VersionProfile(
        version="0.20.0",
        default_gpu_memory_utilization=0.92,
        legacy_cache_usage_metric=False,
        cudagraph_in_kv_budget=False,
        accepts_disable_log_requests=False,
        # "compute capability 7.5 or higher" (facts §1.5, gpu.cuda.inc.md).
        min_compute_capability=(7, 5),
        device_in_free_memory_error=True,
    ),
    "0.27.1": VersionProfile(
        version="0.27.1",
        default_gpu_memory_utilization=0.92,
        legacy_cache_usage_metric=False,
        cudagraph_in_kv_budget=True,
        accepts_disable_log_requests=False,
        min_compute_capability=(7, 5),
        device_in_free_memory_error=True,
    ),
}


@dataclass(frozen=True)
class ImageTag:
    tag: str  # e.g. "v0.20.0-cu129"
    version: str
    cuda: str  # CUDA runtime of the build, "13.0" / "12.9" / "12.8"

    @property
    def reference(self) -> str:
        return f"{IMAGE}:{self.tag}"


def image_tags() -> tuple[ImageTag, ...]:
    tags = []
    for version in SUPPORTED_VERSIONS:
        major, minor, _ = (int(p) for p in version.split("."))
        if (major, minor) >= (0, 20):
            tags.append(ImageTag(f"v{version}", version, "13.0"))
            tags.append(ImageTag(f"v{version}-cu129", version, "12.9"))
        else:
            tags.append(ImageTag(f"v{version}", version, "12.8"))
    return tuple(tags)


def image_env(tag: ImageTag) -> dict[str, str]:
    """The environment baked into the emulator image of one tag (test-double inputs)."""
    return {"VLLM_EMULATOR_VERSION": tag.version, "VLLM_EMULATOR_CUDA": tag.cuda}


def get_profile(version: str) -> VersionProfile:
    try:
        return PROFILES[version]
    except KeyError:
        raise ValueError(
            f"VLLM_EMULATOR_VERSION={version!r} is not one of {', '.join(SUPPORTED_VERSIONS)}"
        ) from None
