"""vLLM emulator: a stdlib-only stand-in for `vllm serve` (the vLLM OpenAI-compatible server).

A test double of vLLM for tgiops' testbed, beside the TGI emulator: the images
`vllm/vllm-openai:vX.Y.Z` (and `vX.Y.Z-cu129` from v0.20) are this package plus python3 and
the TGI emulator package, whose fake hub (tgi_emulator/hub) and GPU-inventory parser it shares.
It takes vLLM's flags (unknown ones refused like vLLM's argparse), logs in vLLM's line format,
keeps its port closed until the engine is "up", fails the way vLLM fails for the GPUs it is
given, then serves the OpenAI API. Its memory arithmetic (memory.py) is its own, derived from
vLLM's sources; it never imports tgiops, so tests can catch tgiops' planner errors with it.

Run: `PYTHONPATH=scripts python3 -m vllm_emulator serve MODEL --port 8000` (or `--model MODEL`).
Image: /usr/local/bin/vllm (`exec python3 -m vllm_emulator "$@"`), ENTRYPOINT ["vllm", "serve"],
PYTHONPATH=/opt, environment `versions.image_env(tag)`.

Test-double inputs (environment):
  VLLM_EMULATOR_VERSION   0.11.0 | 0.20.0 | 0.27.1 (default 0.20.0; baked into each image)
  VLLM_EMULATOR_CUDA      the build's CUDA: 13.0 (plain v0.20+ tags), 12.9 (-cu129), 12.8
  TGI_EMULATOR_GPUS       JSON list [{"name", "memory_mib", "compute_capability"}], set by
                          the testbed's --gpus shim for every container; CUDA_VISIBLE_DEVICES
                          (integer list) selects from it
  TESTBED_GPU_MEMORY_USED_MIB  JSON list, memory used by other processes per GPU (the
                          shim copies the fake nvidia-smi's memory.used)
  TESTBED_GPU_DRIVER_VERSION   the fake driver (shim); < 580 refuses a CUDA 13 build
  VLLM_EMULATOR_LOAD_SECONDS   load + profile + capture time (default: TGI_EMULATOR_LOAD_SECONDS,
                          else 2); TGI_EMULATOR_DOWNLOAD_SECONDS: download time (default 1)
  VLLM_EMULATOR_TOKEN_SECONDS  time per generated token (default 0.002)
  VLLM_EMULATOR_HEALTH_FLAP    N: /health answers N x 200, N x 503, ... (fault tests)
  VLLM_EMULATOR_CRASH_AFTER_SECONDS  N: after N s of serving the engine core "dies" (exit 1)
                          (both also read under their TGI_EMULATOR_* names, which the
                          testbed's host-wide emulator.env sets)
vLLM's own variables that change behaviour: VLLM_API_KEY, HF_TOKEN / HUGGING_FACE_HUB_TOKEN,
HF_HOME / HF_HUB_CACHE / HUGGINGFACE_HUB_CACHE (or --download-dir), HF_HUB_OFFLINE,
CUDA_VISIBLE_DEVICES, VLLM_ALLOW_LONG_MAX_MODEL_LEN, VLLM_ENABLE_CUDA_COMPATIBILITY,
VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS.

Failures (engine.py, launcher.py), each with vLLM's text and exit status 1: no GPU; a CUDA 13
build on a driver < 580; gated/unknown/offline-missing model; max_model_len above the model's
positions; attention heads not divisible by the tensor-parallel size; more ranks than GPUs;
a quantization kernel the GPU cannot run (AWQ sm75+, Marlin and FP8 sm80+); explicit bfloat16
below sm80; a GPU below the release's minimum capability (7.5 from v0.20); free memory below
`gpu_memory_utilization x total`; CUDA OOM loading the weights, in the profile run or (before
v0.21) in CUDA-graph capture; no memory for KV blocks; max_model_len above the KV capacity
(with vLLM's suggested length). Bad flags exit 2 with argparse's message.

Deliberate deviations: secrets (--api-key) are printed as "<redacted>" in `non-default args`;
only the flags tgiops may use are modelled, other common flags are accepted and ignored; no
tokenizer, one whitespace word is one token.
"""

__all__ = ["versions"]
