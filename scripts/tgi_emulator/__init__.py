"""TGI emulator: a stdlib-only stand-in for `text-generation-launcher` + router.

A test double of Hugging Face Text Generation Inference for tgiops' testbed (the image
`ghcr.io/huggingface/text-generation-inference:TAG` is this package plus python3). It takes
the launcher's flags, logs like the launcher, keeps its port closed while "downloading",
"loading" and "warming up", fails the way TGI fails, then serves TGI's HTTP API. Facts are
from tgiops/docs/tgi.md (cited "§n") and the TGI sources cited there.

Run: `PYTHONPATH=scripts python3 -m tgi_emulator --model-id ORG/NAME --port 8080`
Image: entrypoint.sh (`exec python3 -m tgi_emulator "$@"`), PYTHONPATH=/opt,
environment `versions.IMAGE_ENV[version]`.

Inputs
------
Launcher flags of the emulated release and their env equivalents (`--max-total-tokens` ==
MAX_TOTAL_TOKENS; the command line wins; an empty variable is unset). Unknown flags, bad
values and repeated flags fail like clap (stderr, exit 2). Flags by release: `--max-input-length`
only in 2.0.4; `--max-input-tokens`, `--kv-cache-dtype`, `--api-key`, `--usage-stats`,
`--lora-adapters` from 2.4.1; `--prometheus-port`, `--payload-limit`,
`--graceful-termination-timeout`, `--enable-prefill-logprobs` in 3.3.7. `--quantize` values
per §1 (2.0.4 has no exl2/marlin/compressed-tensors).

Test-double inputs (environment):
  TGI_EMULATOR_VERSION      2.0.4 | 2.4.1 | 3.3.7 (default 3.3.7; baked into each image)
  TGI_EMULATOR_GPUS         JSON list [{"name", "memory_mib", "compute_capability": "8.6"}];
                            absent/empty = no GPU visible. CUDA_VISIBLE_DEVICES (integer
                            list) selects from it like the CUDA runtime.
  TGI_EMULATOR_LOAD_SECONDS     shard load + warmup time (default 2; 70% load, 30% warmup)
  TGI_EMULATOR_DOWNLOAD_SECONDS download time spread over the weight files (default 1)
  TGI_EMULATOR_HEALTH_FLAP  N: /health answers N x 200, N x 503, N x 200, ...
  TGI_EMULATOR_CRASH_AFTER_SECONDS  N: after N s of serving, shard 0 "crashes" (exit 1)
TGI's own variables that change behaviour: HF_TOKEN / HUGGING_FACE_HUB_TOKEN / HF_API_TOKEN,
HF_HOME / HUGGINGFACE_HUB_CACHE / HF_HUB_CACHE, HF_HUB_OFFLINE, CUDA_VISIBLE_DEVICES /
NVIDIA_VISIBLE_DEVICES / ZE_AFFINITY_MASK, USE_FLASH_ATTENTION, ATTENTION, PREFIX_CACHING,
TGI_WIGGLE_ROOM, COMPUTE_TYPE.

Hub and cache (hub.py)
----------------------
hub/hub.json + hub/ORG--NAME/config.json: the models of docs/models.md plus
`tgiops-test/tiny-llama` (ungated, ~89 MB "weights"). A token is valid iff it starts with
"hf_". Gated repo without token -> GatedRepoError 401; bad token -> 401 Unauthorized;
unknown repo -> RepositoryNotFoundError; each ends `Error: DownloadError`. Tokens read:
2.0.4 HUGGING_FACE_HUB_TOKEN only; 2.4.1/3.3.7 HF_TOKEN then HUGGING_FACE_HUB_TOKEN;
HF_API_TOKEN is copied to the release's variable (§1). Downloads write the real layout
(refs/, blobs/, snapshots/<sha>/ symlinks) under the cache directory; a complete snapshot
skips the download ("Files are already present on the host. Skipping download.", no
"Download file" lines). HF_HUB_OFFLINE=1|true|yes with no snapshot -> LocalEntryNotFoundError.
Offline (exactly "1") the router has no hub model info: /info model_sha and
model_pipeline_tag are null.

Engine path, per release (engine.py; cc = lowest compute capability of the shards' GPUs)
-------------------------------------------------------------------------------------
1. No GPU -> "RuntimeError: Found no NVIDIA driver on your system" (emulator's choice of
   message). num_shard > visible GPUs -> "CUDA error: invalid device ordinal" on that rank.
2. 2.0.4 predates Llama 3.1 / Gemma 2 / mllama: rope_type "llama3" fails transformers'
   rope_scaling validation; model types gemma2/mllama are not recognised.
3. Attention. 2.0.4: paged (block 16). 2.4.1/3.3.7: launcher resolve_attention (§2):
   flashinfer (block 1) unless ATTENTION is set or head_dim is not 64/128/256 (or the
   launcher cannot read config.json, e.g. mllama's nested config -> head_dim unknown), then
   flashdecoding (block 256) on cc >= 8 and paged (block 16) below.
4. Flash availability. USE_FLASH_ATTENTION=false (any case) -> non-flash path. Else
   cc >= 8.0 -> flash. cc 7.5: 2.0.4 runs flash-attn v1 (#2037: 2.0.3 worked on T4);
   2.4.1/3.3.7 run when attention is flashinfer (built for sm75), otherwise fail
   "ImportError: FlashAttention only supports Ampere GPUs or newer." cc < 7.5 (V100) fails
   "ImportError: GPU with CUDA capability 7 0 is not supported" (2.4.1/3.3.7 chain it after
   the Ampere message). These import errors are fatal here by design (the tgiops brief);
   real >= 2.3 may instead log them and fall back to AutoModel (§2).
5. Non-flash path: num_shard > 1 -> "NotImplementedError: Sharded Llama requires Flash
   Attention enabled models." (FLASH_ATT_ERROR_MESSAGE; "sharded is not supported for
   AutoModel" for model types without a flash class). The router then logs "Model does not
   support automatic max batch total tokens" and uses max(16000, max_total, prefill).
6. Quantization: checkpoint quant_method auto-detected (gptq, awq, exl2, fp8/fbgemm_fp8,
   compressed-tensors from 2.4.1). marlin needs cc >= 8.0; fp8 (and compressed-tensors FP8)
   needs cc >= 8.0 (8.9 in 2.0.4); awq/exl2 on cc < 8 fail at warmup with "no kernel image
   is available" (kernels built for 8.0+); --quantize awq/gptq/exl2 on an unquantized
   checkpoint -> "weight ... qweight does not exist". exl2 with num_shard > 1 is refused by
   the launcher. awq/gptq/exl2/marlin force float16.
7. Sharding (§3): num_heads and num_key_value_heads (if > 1) must divide by num_shard
   (TGI's ValueError text, which has no closing parenthesis); intermediate_size (and its
   per-shard part / AWQ-GPTQ group size) must divide ("The choosen size ...").
   num_shard unset: CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES, ZE_AFFINITY_MASK entries,
   else 1; "all" counts as 1 up to 3.3.6 (so 2.0.4, 2.4.1), as every GPU in 3.3.7.
8. --dtype bfloat16 on cc < 8 fails at warmup (emulator message, vLLM/triton wording).
9. Memory: see engine.py (weights OOM -> torch OutOfMemoryError at load; prefill OOM ->
   "Not enough memory to handle N prefill tokens..."; KV capacity -> "Setting max batch
   total tokens to N"; max_total_tokens above it -> 3.x/2.4.1 `Error:
   Backend(NotEnoughMemory(N))`, 2.0.4 ArgumentValidation "`max_total_tokens` must be <=
   `max_batch_total_tokens`"). TGI_WIGGLE_ROOM 0.90 (2.4.1, as a share of the free memory),
   0.90 (3.3.7, of the total); 2.0.4 uses a hard-coded 0.95 x free. Warmup counts
   full-vocabulary prefill logits before v3.0 (two copies in 2.0.4, one in 2.4.1).
10. Token defaults (§1b): 2.0.4 launcher: min(mpe, 4096) - 1 / min(mpe, 4096) / input + 50.
   2.4.1: prefill min(4096, mpe); max_total = prefill (no chunking). 3.3.7: prefill from the
   launcher's own rule (zeroconfig.py: card FLOPs / model FLOPs for the cards its table
   knows by nvidia-smi name, else 4096 / Gemma 3's 8000 / Qwen-VL's 10000; capped at the
   top-level mpe and its VRAM estimate, skipped for quantized checkpoints; "Unkown compute
   for card ..." and "Reducing the max batch prefill ..." warnings as TGI prints them);
   max_total = min(KV capacity, mpe) with chunking (flashinfer/flashdecoding).
   max_input = max_total - 1.

Failures end like the launcher: an ERROR line with the Python traceback (shard) or the
router's `Error: ...` relayed on stdout, then `Error: ShardCannotStart | WebserverFailed |
DownloadError | ArgumentValidation(...)` on stderr and exit status 1. SIGTERM/SIGINT stop
gracefully with status 0 at any stage ("Terminating webserver", "Shutting down shards").

HTTP (server.py): /health, /ping, /info (the release's field set; version "3.3.6-dev0" for
3.3.7, which is what its Cargo.toml says), /v1/models, /metrics (tgi_* Prometheus text),
POST /, /generate, /generate_stream, /v1/chat/completions, /v1/completions, /invocations,
/tokenize, /chat_tokenize. "Generation" echoes the prompt's words then EOS. --api-key
(2.4.1+) guards the POST routes only. Deliberate deviations: the Args line prints secrets
as "<redacted>"; no ANSI colours; /docs and the OpenAPI route are not served.
"""

__all__ = ["versions"]
