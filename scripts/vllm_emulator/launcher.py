"""`vllm serve`: config, engine core start-up, KV-cache sizing, then the API server.

Follows the order of vLLM's V1 start-up (facts §1.4): the API server process builds the
config (model config from the hub, max model length, tensor-parallel and quantization checks,
batch defaults), the engine core process initialises the workers (dtype check, the free-memory
check against `gpu_memory_utilization x total`), downloads and loads the weights, profiles,
sizes the KV cache, captures CUDA graphs; only then does the API server bind its port (facts
§1.3: "connection refused" during start-up is normal). A failure in the engine core is logged
there as `EngineCore failed to start.` with its traceback, then the API server raises
`RuntimeError: Engine core initialization failed. See root cause above.`; either way the
process exits with status 1. SIGTERM/SIGINT stop it with status 0 at any stage.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tgi_emulator import hub
from tgi_emulator.engine import ModelArch, arch_from_config, format_torch_size
from tgi_emulator.gpus import EmulatedGpu, GpuSpecError, parse_gpus

from . import engine, memory
from .args import ArgsError, HelpRequested, ServeArgs, parse_serve, write_args_error
from .engine import StartupError
from .logs import VllmLog, gib
from .server import ServerState, VllmServer
from .versions import DEFAULT_VERSION, VersionProfile, get_profile

_SITE = "/usr/local/lib/python3.12/dist-packages"
HUB_ERRORS = "huggingface_hub.errors"
_RUNNER = "vllm/v1/worker/gpu_model_runner.py"


class StopFlag:
    """Set from a signal handler; polled (no locks in a handler)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return self._set


class Stopped(Exception):
    """SIGTERM/SIGINT arrived during start-up."""


def _env_float(environ: dict[str, str], names: tuple[str, ...], default: float) -> float:
    for name in names:
        try:
            if environ.get(name):
                return float(environ[name])
        except ValueError:
            pass
    return default


def visible_gpus(environ: dict[str, str]) -> list[tuple[EmulatedGpu, int]]:
    """(GPU, MiB used by other processes), narrowed by CUDA_VISIBLE_DEVICES like CUDA does.

    TGI_EMULATOR_GPUS is what the testbed's --gpus shim hands every container (the TGI
    emulator reads it too); TESTBED_GPU_MEMORY_USED_MIB (a JSON list, same order) is the
    memory.used the fake nvidia-smi reports for those GPUs.
    """
    gpus = parse_gpus(environ.get("TGI_EMULATOR_GPUS"))
    try:
        used = [int(v) for v in json.loads(environ.get("TESTBED_GPU_MEMORY_USED_MIB") or "[]")]
    except (ValueError, TypeError):
        used = []
    pairs = [(gpu, used[i] if i < len(used) else 0) for i, gpu in enumerate(gpus)]
    selector = environ.get("CUDA_VISIBLE_DEVICES")
    if selector is None:
        return pairs
    entries = [e.strip() for e in selector.split(",") if e.strip()]
    if not all(e.isdigit() for e in entries):
        return pairs
    selected = []
    for entry in entries:
        if int(entry) >= len(pairs):
            break  # the CUDA runtime stops at the first invalid ordinal
        selected.append(pairs[int(entry)])
    return selected


def _hub_error(exc: hub.HubError) -> str:
    """The exception part of huggingface_hub's error (the fake hub's lines without TGI's
    own traceback frames, which the vLLM traceback replaces)."""
    return "\n".join(line for line in exc.lines if not line.startswith(("Traceback", "  ")))


def _api_traceback(exception: str) -> str:
    return "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/usr/local/bin/vllm", line 10, in <module>',
            "    sys.exit(main())",
            f'  File "{_SITE}/vllm/entrypoints/cli/main.py", line 73, in main',
            "    args.dispatch_function(args)",
            f'  File "{_SITE}/vllm/entrypoints/cli/serve.py", line 60, in cmd',
            "    uvloop.run(run_server(args))",
            f'  File "{_SITE}/vllm/entrypoints/openai/api_server.py", line 1884, in run_server',
            "    await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)",
            exception,
        ]
    )


def _engine_traceback(where: str, exception: str) -> str:
    return "\n".join(
        [
            "Traceback (most recent call last):",
            f'  File "{_SITE}/vllm/v1/engine/core.py", line 699, in run_engine_core',
            "    engine_core = EngineCoreProc(*args, **kwargs)",
            f'  File "{_SITE}/vllm/v1/engine/core.py", line 83, in __init__',
            "    self._initialize_kv_caches(vllm_config)",
            f'  File "{_SITE}/{where or "vllm/v1/worker/gpu_worker.py"}", line 1, in <module>',
            exception,
        ]
    )


class Launcher:
    def __init__(
        self,
        profile: VersionProfile,
        cuda: str,
        args: ServeArgs,
        environ: dict[str, str],
        log: VllmLog,
    ) -> None:
        self.profile = profile
        self.cuda = cuda
        self.args = args
        self.environ = environ
        self.log = log
        self.stop = StopFlag()
        self.load_seconds = _env_float(
            environ, ("VLLM_EMULATOR_LOAD_SECONDS", "TGI_EMULATOR_LOAD_SECONDS"), 2.0
        )
        self.download_seconds = _env_float(environ, ("TGI_EMULATOR_DOWNLOAD_SECONDS",), 1.0)
        self.server: VllmServer | None = None

    # ------------------------------------------------------------------ helpers
    def _pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped()

    def _token(self) -> str | None:
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            if self.environ.get(name):
                return self.environ[name]
        return None

    def _offline(self) -> bool:
        return self.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")

    def _cache_dir(self) -> Path:
        if self.args.download_dir:
            return Path(self.args.download_dir).expanduser()
        return hub.resolve_cache_dir(self.environ, None)

    def _fail_api(self, exception: str) -> int:
        self.log.raw(_api_traceback(exception))
        return 1

    def _fail_startup(self, exc: StartupError) -> int:
        """A startup error, told by the process that raised it (API server or engine core)."""
        if exc.process == "api":
            return self._fail_api(exc.exception)
        return self._fail_engine(exc.where, exc.exception)

    def _fail_engine(self, where: str, exception: str) -> int:
        self.log.engine("core.py:708", "EngineCore failed to start.", "ERROR")
        self.log.engine("core.py:708", _engine_traceback(where, exception), "ERROR")
        self.log.raw(
            "Process EngineCore_DP0:\nTraceback (most recent call last):\n"
            f'  File "{_SITE}/vllm/v1/engine/core.py", line 712, in run_engine_core\n'
            "    raise e\n" + exception,
            engine=True,
        )
        return self._fail_api(
            "RuntimeError: Engine core initialization failed. See root cause above. "
            "Failed core proc(s): {}"
        )

    # ------------------------------------------------------------------ stages
    def _model(self) -> tuple[hub.RepoInfo | None, ModelArch, Path | None]:
        model = self.args.model
        local = Path(model)
        if local.is_dir() and (local / "config.json").is_file():
            config, weight_bytes = hub.read_local_model(local)
            return None, arch_from_config(config, weight_bytes), local
        repo = hub.load_repo(model)
        cache = self._cache_dir()
        cached = hub.cached_snapshot(cache, model, None)
        if self._offline():
            if cached is None or not (cached / "config.json").is_file():
                raise hub.offline_missing_error(HUB_ERRORS, model, None)
        else:
            hub.check_access(repo, model, None, self._token(), HUB_ERRORS)
        if repo is None:  # cached offline, but not a model of the fake hub
            raise hub.not_found_error(HUB_ERRORS, model, None)
        return repo, arch_from_config(repo.config, repo.weight_bytes), None

    def _download(self, repo: hub.RepoInfo | None) -> None:
        if repo is None:
            return
        cache = self._cache_dir()
        self.log.engine("weight_utils.py:405", "Using model weights format ['*.safetensors']")
        if hub.cached_weights_complete(cache, repo, repo.repo_id, None):
            return
        if self._offline():
            raise hub.offline_missing_error(HUB_ERRORS, repo.repo_id, None)
        done = hub.download_repo(
            cache,
            repo,
            None,
            self.download_seconds,
            lambda message: self.log.engine("weight_utils.py:438", message),
            self.stop,
        )
        if not done:
            raise Stopped()

    def run(self) -> int:
        try:
            return self._run()
        except Stopped:
            self.log.api("launcher.py:99", "Shutting down FastAPI HTTP server.")
            return 0
        finally:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()

    def _run(self) -> int:
        args, profile, environ = self.args, self.profile, self.environ
        self.log.api("api_server.py:1839", f"vLLM API server version {profile.version}")
        self.log.api("utils.py:233", f"non-default args: {args.non_default}")
        try:
            gpus = visible_gpus(environ)
        except GpuSpecError as exc:
            sys.stderr.write(f"vllm-emulator: {exc}\n")
            return 1
        if not gpus:
            return self._fail_api("RuntimeError: Failed to infer device type")
        try:
            engine.check_driver(self.cuda, environ.get("TESTBED_GPU_DRIVER_VERSION"), environ)
            repo, arch, _local = self._model()
        except StartupError as exc:
            return self._fail_api(exc.exception)
        except hub.HubError as exc:
            return self._fail_api(_hub_error(exc))
        architectures = (repo.config.get("architectures") if repo else None) or [arch.model_type]
        try:
            engine.check_architecture(architectures[0])
        except StartupError as exc:
            return self._fail_startup(exc)
        self.log.api("model.py:547", f"Resolved architecture: {architectures[0]}")

        tp = args.tensor_parallel_size
        ranks = gpus[:tp]
        gpu0 = ranks[0][0]
        weakest = min((g for g, _ in ranks), key=engine.capability_int)
        cc = engine.capability_int(weakest)
        try:
            allow_long = environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0") in ("1", "true")
            max_model_len = engine.derive_max_model_len(arch, args.max_model_len, allow_long)
            self.log.api("model.py:1510", f"Using max model len {max_model_len}")
            if weakest.compute_capability < profile.min_compute_capability:
                self._old_gpu_warning(weakest)
            engine.check_attention_heads(arch, tp)
            quant_config = (repo.config if repo else {}).get("quantization_config") or {}
            kernel = engine.resolve_quantization(
                arch, args.quantization, cc, quant_config.get("format")
            )
            config_dtype = (repo.config if repo else {}).get("torch_dtype")
            dtype = engine.resolve_dtype(config_dtype, args.dtype, kernel.quantization, weakest)
            batch = memory.batch_defaults(
                gpu0.name,
                gpu0.memory_bytes,
                max_model_len,
                args.max_num_seqs,
                args.max_num_batched_tokens,
            )
            if batch.max_num_batched_tokens < batch.max_num_seqs:
                raise StartupError(
                    "api",
                    f"ValueError: max_num_batched_tokens ({batch.max_num_batched_tokens}) must "
                    f"be greater than or equal to max_num_seqs ({batch.max_num_seqs}).",
                )
            if not 0 < args.gpu_memory_utilization <= 1:
                raise StartupError(
                    "api",
                    "ValueError: GPU memory utilization must be less than 1.0. Got "
                    f"{args.gpu_memory_utilization}.",
                )
        except StartupError as exc:
            return self._fail_startup(exc)
        self.log.api(
            "scheduler.py:205",
            "Chunked prefill is enabled with max_num_batched_tokens="
            f"{batch.max_num_batched_tokens}.",
        )
        return self._engine_core(
            repo, arch, gpus, ranks, kernel, dtype, batch, max_model_len, weakest
        )

    def _old_gpu_warning(self, gpu: EmulatedGpu) -> None:
        major, minor = self.profile.min_compute_capability
        self.log.raw(
            f"{_SITE}/torch/cuda/__init__.py:283: UserWarning: \n"
            f"    Found GPU0 {gpu.name} which is of cuda capability "
            f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}.\n"
            "    PyTorch no longer supports this GPU because it is too old.\n"
            f"    The minimum cuda capability supported by this library is {major}.{minor}.\n"
        )

    def _engine_core(
        self, repo, arch, gpus, ranks, kernel, dtype, batch, max_model_len, weakest
    ) -> int:
        args, profile = self.args, self.profile
        tp = args.tensor_parallel_size
        self.log.engine("core.py:644", "Waiting for init message from front-end.")
        self.log.engine(
            "core.py:77",
            f"Initializing a V1 LLM engine (v{profile.version}) with config: "
            f"model='{args.model}', speculative_config=None, tokenizer='{args.model}', "
            f"skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
            f"trust_remote_code={args.trust_remote_code}, dtype=torch.{dtype.name}, "
            f"max_seq_len={max_model_len}, download_dir={args.download_dir!r}, "
            f"load_format=auto, tensor_parallel_size={tp}, pipeline_parallel_size=1, "
            f"data_parallel_size=1, disable_custom_all_reduce=False, "
            f"quantization={kernel.quantization}, enforce_eager={args.enforce_eager}, "
            f"kv_cache_dtype={args.kv_cache_dtype}, device_config=cuda, "
            f"served_model_name={args.served_model_names[0]}, enable_prefix_caching=True, "
            f"chunked_prefill_enabled=True",
        )
        try:
            for level, message in (*kernel.logs, *dtype.logs):
                self.log.engine("model.py:1000", message, level)
            engine.check_world_size(tp, len(gpus))
            if weakest.compute_capability < profile.min_compute_capability:
                # No kernels for this architecture in the build: the first launch fails.
                raise StartupError(
                    "engine",
                    "torch.AcceleratorError: CUDA error: no kernel image is available for "
                    "execution on the device\nCUDA kernel errors might be asynchronously "
                    "reported at some other API call, so the stacktrace below might be "
                    "incorrect.",
                    "vllm/v1/worker/gpu_worker.py",
                )
            for rank in range(tp):
                self.log.engine(
                    "parallel_state.py:1208",
                    f"rank {rank} in world size {tp} is assigned as DP rank 0, PP rank 0, "
                    f"TP rank {rank}, EP rank {rank}",
                )
            dtype_bytes = memory.DTYPE_BYTES[dtype.name]
            kv_bytes = memory.KV_DTYPE_BYTES.get(args.kv_cache_dtype, dtype_bytes)
            weights = engine.weight_bytes_per_rank(arch, kernel.quantization, tp, dtype.name)
            in_budget = profile.cudagraph_in_kv_budget and (
                self.environ.get("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "1") != "0"
            )
            accounts = []
            for index, (gpu, used_mib) in enumerate(ranks):
                accounts.append(
                    (
                        index,
                        memory.account(
                            memory.MemoryInputs(
                                shape=engine.shape_of(arch),
                                tp=tp,
                                total_bytes=gpu.memory_bytes,
                                used_by_others_bytes=used_mib * memory.MIB,
                                gpu_memory_utilization=args.gpu_memory_utilization,
                                weight_bytes_per_rank=weights,
                                dtype_bytes=dtype_bytes,
                                kv_dtype_bytes=kv_bytes,
                                max_model_len=max_model_len,
                                max_num_seqs=batch.max_num_seqs,
                                max_num_batched_tokens=batch.max_num_batched_tokens,
                                enforce_eager=args.enforce_eager,
                                cudagraph_in_kv_budget=in_budget,
                            )
                        ),
                    )
                )
            for index, acc in accounts:
                self._check_free(index, acc)
            # The rank with the least memory decides the KV cache (vLLM takes the minimum).
            index, acc = min(accounts, key=lambda pair: pair[1].available_kv_bytes)
            try:
                self._download(repo)
            except hub.HubError as exc:
                raise StartupError("engine", _hub_error(exc), "huggingface_hub") from None
            self.log.engine("gpu_model_runner.py:2602", f"Starting to load model {args.model}...")
            started = time.monotonic()
            self._pause(self.load_seconds * 0.6)
            if acc.weights_bytes > acc.free_at_init_bytes:
                tried = min(acc.weights_bytes, 1024 * memory.MIB)
                free = acc.free_at_init_bytes - (acc.weights_bytes - tried)
                self._oom(
                    index, acc, tried, free, "vllm/model_executor/model_loader/default_loader.py"
                )
            took = time.monotonic() - started
            self.log.engine("default_loader.py:267", f"Loading weights took {took:.2f} seconds")
            self.log.engine(
                "gpu_model_runner.py:2653",
                f"Model loading took {acc.weights_bytes / memory.GIB:.4f} GiB and "
                f"{took:.6f} seconds",
            )
            self._pause(self.load_seconds * 0.2)
            peak = acc.weights_bytes + acc.activation_bytes + acc.non_torch_bytes
            if peak > acc.free_at_init_bytes:
                free_now = acc.free_at_init_bytes - acc.weights_bytes
                self._oom(index, acc, acc.activation_bytes, free_now, _RUNNER)
            if profile.cudagraph_in_kv_budget and not args.enforce_eager:
                self.log.engine(
                    "gpu_model_runner.py:6365",
                    "Estimated CUDA graph memory: "
                    f"{acc.cudagraph_bytes / memory.GIB:.2f} GiB total",
                )
            self.log.engine(
                "gpu_worker.py:298",
                f"Available KV cache memory: {acc.available_kv_bytes / memory.GIB:.2f} GiB",
            )
            if in_budget and not args.enforce_eager:
                util = args.gpu_memory_utilization
                share = acc.cudagraph_bytes / acc.total_bytes
                self.log.engine(
                    "gpu_worker.py:481",
                    "CUDA graph memory profiling is enabled (default since v0.21.0). The "
                    f"current --gpu-memory-utilization={util:.4f} is equivalent to "
                    f"--gpu-memory-utilization={util - share:.4f} without CUDA graph memory "
                    "profiling. To maintain the same effective KV cache size as before, "
                    f"increase --gpu-memory-utilization to {util + share:.4f}. To disable, "
                    "set VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0.",
                )
            self._check_kv(acc, max_model_len)
            tokens = acc.kv_tokens
            self.log.engine("kv_cache_utils.py:1087", f"GPU KV cache size: {tokens:,} tokens")
            self.log.engine(
                "kv_cache_utils.py:1091",
                f"Maximum concurrency for {max_model_len:,} tokens per request: "
                f"{tokens / max_model_len:.2f}x",
            )
            self._pause(self.load_seconds * 0.2)
            if not args.enforce_eager:
                if not in_budget:
                    in_use = acc.requested_bytes - acc.activation_bytes
                    if in_use + acc.cudagraph_bytes > acc.free_at_init_bytes:
                        tried = min(acc.cudagraph_bytes, 512 * memory.MIB)
                        free = acc.free_at_init_bytes - in_use
                        self._oom(index, acc, tried, free, _RUNNER)
                self.log.engine(
                    "gpu_model_runner.py:3480",
                    f"Graph capturing finished in 1 secs, took "
                    f"{acc.cudagraph_bytes / memory.GIB:.2f} GiB",
                )
            self.log.engine(
                "core.py:210",
                "init engine (profile, create kv cache, warmup model) took "
                f"{time.monotonic() - started:.2f} seconds",
            )
        except StartupError as exc:
            return self._fail_startup(exc)
        return self._serve(acc, max_model_len, dtype)

    def _check_free(self, index: int, acc: memory.MemoryAccount) -> None:
        """request_memory() (vllm/v1/worker/utils.py; gpu_worker.py init_device before)."""
        if acc.free_at_init_bytes >= acc.requested_bytes:
            return
        device = f"device cuda:{index} " if self.profile.device_in_free_memory_error else "device "
        raise StartupError(
            "engine",
            f"ValueError: Free memory on {device}({gib(acc.free_at_init_bytes)}/"
            f"{gib(acc.total_bytes)} GiB) on startup is less than desired GPU memory "
            f"utilization ({self.args.gpu_memory_utilization}, {gib(acc.requested_bytes)} GiB). "
            "Decrease GPU memory utilization or reduce GPU memory used by other processes.",
            "vllm/v1/worker/gpu_worker.py",
        )

    def _oom(self, index: int, acc: memory.MemoryAccount, tried: int, free: int, where: str):
        """torch's CUDA OOM text (c10/cuda/CUDACachingAllocator.cpp)."""
        free = max(0, min(free, tried - 1))
        in_use = acc.total_bytes - free
        raise StartupError(
            "engine",
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
            f"{format_torch_size(tried)}. GPU {index} has a total capacity of "
            f"{format_torch_size(acc.total_bytes)} of which {format_torch_size(free)} is free. "
            f"Including non-PyTorch memory, this process has {format_torch_size(in_use)} memory "
            f"in use. Of the allocated memory {format_torch_size(in_use - acc.non_torch_bytes)} "
            "is allocated by PyTorch, and 20.00 MiB is reserved by PyTorch but unallocated. If "
            "reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
            "documentation for Memory Management  "
            "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
            where,
        )

    def _check_kv(self, acc: memory.MemoryAccount, max_model_len: int) -> None:
        """_check_enough_kv_cache_memory (vllm/v1/core/kv_cache_utils.py)."""
        newer = self.profile.version != "0.11.0"
        if acc.available_kv_bytes <= 0 or acc.num_blocks == 0:
            raise StartupError(
                "engine",
                "ValueError: No available memory for the cache blocks. Try increasing "
                "`gpu_memory_utilization` when initializing the engine. See "
                "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
                "details.",
                "vllm/v1/core/kv_cache_utils.py",
            )
        needed = acc.needed_kv_bytes(max_model_len)
        if needed <= acc.available_kv_bytes:
            return
        estimate = acc.max_len_that_fits()
        estimated = (
            f"Based on the available memory, the estimated maximum model length is {estimate}. "
            if estimate > 0
            else ""
        )
        whose = "model's" if newer else "models's"
        raise StartupError(
            "engine",
            f"ValueError: To serve at least one request with the {whose} max seq len "
            f"({max_model_len}), ({gib(needed)} GiB KV cache is needed, which is larger than "
            f"the available KV cache memory ({gib(acc.available_kv_bytes)} GiB). {estimated}"
            "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
            "initializing the engine. See "
            "https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
            "vllm/v1/core/kv_cache_utils.py",
        )

    # ------------------------------------------------------------------ serving
    def _serve(self, acc: memory.MemoryAccount, max_model_len: int, dtype) -> int:
        args = self.args
        host = args.host or "0.0.0.0"
        state = ServerState(
            profile=self.profile,
            model=args.model,
            served_names=args.served_model_names,
            max_model_len=max_model_len,
            api_keys=args.api_keys,
            kv_tokens=acc.kv_tokens,
            num_gpu_blocks=acc.num_blocks,
            block_size=memory.BLOCK_SIZE,
            gpu_memory_utilization=args.gpu_memory_utilization,
            cache_dtype=args.kv_cache_dtype,
            token_seconds=_env_float(self.environ, ("VLLM_EMULATOR_TOKEN_SECONDS",), 0.002),
            health_flap_every=self._option_int("HEALTH_FLAP"),
        )
        self.log.api("api_server.py:1634", "Supported_tasks: ['generate']")
        self.log.api(
            "api_server.py:1912", f"Starting vLLM API server 0 on http://{host}:{args.port}"
        )
        self.log.api("launcher.py:34", "Available routes are:")
        for route, methods in (
            ("/health", "GET"),
            ("/metrics", "GET"),
            ("/version", "GET"),
            ("/v1/models", "GET"),
            ("/v1/chat/completions", "POST"),
            ("/v1/completions", "POST"),
        ):
            self.log.api("launcher.py:42", f"Route: {route}, Methods: {methods}")
        try:
            self.server = VllmServer((host, args.port), state, self.log)
        except OSError as exc:
            return self._fail_api(f"OSError: [Errno {exc.errno}] {exc.strerror}")
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        pid = os.getpid()
        self.log.raw(f"INFO:     Started server process [{pid}]")
        self.log.raw("INFO:     Waiting for application startup.")
        self.log.raw("INFO:     Application startup complete.")
        crash_after = self._option_int("CRASH_AFTER_SECONDS", allow_zero=True)
        stopped = self.stop.wait(None if crash_after is None else float(crash_after))
        if not stopped:
            # The engine core process dies under a serving API server (vLLM V1's
            # core_client.py monitor), which then shuts down with an error.
            self.log.api(
                "core_client.py:564",
                "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.",
                "ERROR",
            )
        self.log.raw("INFO:     Shutting down")
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        self.log.raw("INFO:     Waiting for application shutdown.")
        self.log.raw("INFO:     Application shutdown complete.")
        self.log.raw(f"INFO:     Finished server process [{pid}]")
        if not stopped:
            self.log.raw(
                "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an "
                "issue. See stack trace (above) for the root cause."
            )
            return 1
        return 0

    def _option_int(self, name: str, allow_zero: bool = False) -> int | None:
        """A test-double option: VLLM_EMULATOR_<name>, else TGI_EMULATOR_<name> (the testbed's
        /etc/testbed/emulator.env sets the TGI names host-wide, for either engine)."""
        for prefix in ("VLLM_EMULATOR_", "TGI_EMULATOR_"):
            value = (self.environ.get(prefix + name) or "").strip()
            if value.isdigit() and (int(value) > 0 or allow_zero):
                return int(value)
        return None


def main(argv: list[str] | None = None, early_signals: list[int] | None = None) -> int:
    import signal

    environ = dict(os.environ)
    try:
        profile = get_profile(environ.get("VLLM_EMULATOR_VERSION", DEFAULT_VERSION))
    except ValueError as exc:
        sys.stderr.write(f"vllm-emulator: {exc}\n")
        return 1
    cuda = environ.get("VLLM_EMULATOR_CUDA", "12.9")
    try:
        args = parse_serve(list(sys.argv[1:] if argv is None else argv), profile, environ)
    except ArgsError as exc:
        write_args_error(exc)
        return 2
    except HelpRequested as exc:
        sys.stdout.write(exc.text)
        return 0
    pid = os.getpid()
    log = VllmLog(api_pid=pid, engine_pid=pid + 97)
    launcher = Launcher(profile, cuda, args, environ, log)

    def on_signal(signum, frame) -> None:
        launcher.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if early_signals:
        launcher.stop.set()
    return launcher.run()
