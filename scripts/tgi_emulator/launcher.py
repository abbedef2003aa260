"""`text-generation-launcher` main: args, download, shards, warmup, webserver, shutdown.

Follows launcher/src/main.rs `main()` step by step (docs/tgi.md §1, §3, §5): the port is bound
only after download, shard load and warmup succeeded; failures end with the launcher's
`Error: <LauncherError>` on stderr and exit status 1; SIGTERM/SIGINT stop it gracefully with
status 0 (the launcher's ctrlc handler).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import cast

from . import engine, hub, memory
from .args import ClapError, EarlyExit, LauncherArgs, parse_args, write_clap_error
from .gpus import GpuSpecError, parse_gpus, select_visible
from .logs import TracingLog, print_final_error
from .metrics import Metrics
from .server import SERVER_TARGET, EmulatorServer, ServerConfig, bind_address
from .versions import DEFAULT_VERSION, VersionProfile, get_profile

_PY = "/opt/conda/lib/python3.11/site-packages"
_DEVICE_VARS = "CUDA_VISIBLE_DEVICES/NVIDIA_VISIBLE_DEVICES/ZE_AFFINITY_MASK"


class StopFlag:
    """Set from a signal handler, so it takes no lock (threading.Event.set() would deadlock
    when the signal lands while the main thread is inside Event.wait's own lock)."""

    _POLL_S = 0.02

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            if deadline is None:
                time.sleep(self._POLL_S)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self._POLL_S, remaining))
        return self._set


class LauncherFailed(Exception):
    """Ends main() with `Error: <debug>` on stderr and status 1."""

    def __init__(self, debug: str) -> None:
        super().__init__(debug)
        self.debug = debug


def _env_float(environ: dict[str, str], name: str, default: float) -> float:
    try:
        return float(environ.get(name, default))
    except ValueError:
        return default


def _traceback(where: str, exception: str) -> str:
    return "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/opt/conda/bin/text-generation-server", line 8, in <module>',
            "    sys.exit(app())",
            f'  File "{_PY}/text_generation_server/cli.py", line 119, in serve',
            "    server.serve(",
            f'  File "{_PY}/text_generation_server/server.py", line 315, in serve',
            "    asyncio.run(",
            f'  File "{_PY}/text_generation_server/server.py", line 268, in serve_inner',
            "    model = get_model_with_lora_adapters(",
            f'  File "{_PY}/{where}", line 1, in <module>',
            exception,
        ]
    )


class Launcher:
    def __init__(
        self, profile: VersionProfile, args: LauncherArgs, environ: dict[str, str], log: TracingLog
    ):
        self.profile = profile
        self.args = args
        self.environ = environ
        self.log = log
        self.stop = StopFlag()
        self.load_seconds = _env_float(environ, "TGI_EMULATOR_LOAD_SECONDS", 2.0)
        self.download_seconds = _env_float(environ, "TGI_EMULATOR_DOWNLOAD_SECONDS", 1.0)
        self.num_shard = 1
        self.servers: list[EmulatorServer] = []

    # ------------------------------------------------------------------ helpers
    def _router(self, level: str, message: str, location: str, target: str | None = None) -> None:
        if target is None:
            target = (
                "text_generation_router"
                if self.profile.info_fields == "2.0"
                else "text_generation_router_v3"
            )
        self.log.emit(level, message, target=target, location=location)

    def _python_logs(self, entries) -> None:
        for level, message in entries:
            self.log.emit(level, message)

    def _child_env(self) -> dict[str, str]:
        env = dict(self.environ)
        if env.get("HF_API_TOKEN"):
            env[self.profile.hf_api_token_target] = env["HF_API_TOKEN"]
        return env

    def _hub_token(self) -> str | None:
        env = self._child_env()
        for name in self.profile.token_env:
            if env.get(name):
                return env[name]
        return None

    def _offline(self) -> bool:
        return self.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")

    def _cache_dir(self) -> Path:
        return hub.resolve_cache_dir(self.environ, self.args.huggingface_hub_cache)

    # ------------------------------------------------------------------ steps
    def _model_sources(
        self,
    ) -> tuple[hub.RepoInfo | None, engine.ModelArch | None, engine.ModelArch | None, Path | None]:
        """(hub repo, arch the shards load, arch the launcher can read, local dir)."""
        model_id = self.args.model_id
        local = Path(model_id)
        if local.is_dir() and (local / "config.json").is_file():
            config, weight_bytes = hub.read_local_model(local)
            arch = engine.arch_from_config(config, weight_bytes)
            return None, arch, arch, local
        repo = hub.load_repo(model_id)
        if repo is None:
            return None, None, None, None
        arch = engine.arch_from_config(repo.config, repo.weight_bytes)
        # get_config(): hf-hub reads the cache first, then the hub with HF_TOKEN only (>= 2.2);
        # any failure is silent and leaves the launcher without the config (§1).
        launcher_arch = None
        snapshot = hub.cached_snapshot(self._cache_dir(), model_id, self.args.revision)
        if snapshot is not None and (snapshot / "config.json").is_file():
            launcher_arch = arch
        elif not self._offline():
            token = None
            for name in self.profile.launcher_config_token_env:
                if self.environ.get(name):
                    token = self.environ[name]
                    break
            token_ok = token is None or token.startswith("hf_")
            if token_ok and (not repo.gated or token is not None):
                launcher_arch = arch
        return repo, arch, launcher_arch, None

    def _find_num_shards(self, gpus) -> int:
        """find_num_shards (L@737 l.1374-1412), with the <= 3.3.6 NVIDIA_VISIBLE_DEVICES=all bug."""
        sharded, num_shard = self.args.sharded, self.args.num_shard

        def num_cuda_devices() -> int | None:
            for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"):
                value = self.environ.get(name)
                if value is not None:
                    if not self.profile.visible_devices_all_bug and value.strip() in (
                        "all",
                        "void",
                    ):
                        return len(gpus)  # v3.3.7 (#3346) counts them with nvidia-smi
                    return len(value.split(","))
            return None

        if sharded is True and num_shard is None:
            self.log.info(f"Parsing num_shard from {_DEVICE_VARS}")
            devices = num_cuda_devices()
            if devices is None:
                sys.stderr.write(
                    "thread 'main' panicked at launcher/src/main.rs:1393:18:\n"
                    f"--num-shard and {_DEVICE_VARS} are not set\n"
                    "note: run with `RUST_BACKTRACE=1` environment variable to display a "
                    "backtrace\n"
                )
                sys.stderr.flush()
                raise SystemExit(101)
            if devices <= 1:
                raise LauncherFailed(
                    f'NotEnoughCUDADevices("`sharded` is true but only found {devices} CUDA '
                    'devices")'
                )
            n = devices
        elif sharded is True:
            if num_shard <= 1:
                raise LauncherFailed('ArgumentValidation("`sharded` is true but `num_shard` <= 1")')
            n = num_shard
        elif sharded is False:
            n = num_shard if num_shard is not None else 1
        else:
            n = num_shard if num_shard is not None else (num_cuda_devices() or 1)
        if n < 1:
            raise LauncherFailed('ArgumentValidation("`num_shard` cannot be < 1")')
        return n

    def _download(self, repo: hub.RepoInfo | None, local: Path | None) -> bool:
        """download_convert_model; False when stopped by a signal."""
        model_id = self.args.model_id
        span = {"span": "download"}
        self.log.info(self.profile.download_start_log.format(model_id=model_id), **span)
        cache = self._cache_dir()
        revision = self.args.revision
        module = self.profile.hub_errors_module
        try:
            if local is not None or hub.cached_weights_complete(cache, repo, model_id, revision):
                self.log.info("Files are already present on the host. Skipping download.")
            elif self._offline():
                raise hub.offline_missing_error(module, model_id, revision)
            else:
                hub.check_access(repo, model_id, revision, self._hub_token(), module)
                assert repo is not None
                done = hub.download_repo(
                    cache, repo, revision, self.download_seconds, self.log.info, self.stop
                )
                if not done:
                    for line in (
                        "Terminating download",
                        "Waiting for download to gracefully shutdown",
                        "download terminated",
                    ):
                        self.log.info(line, **span)
                    return False
        except hub.HubError as exc:
            self.log.error("Download encountered an error: \n" + "\n".join(exc.lines), **span)
            raise LauncherFailed("DownloadError") from None
        self.log.info(self.profile.download_done_log.format(model_id=model_id), **span)
        return True

    def _shutdown_shards(self, ranks: int) -> None:
        self.log.info("Shutting down shards")
        for rank in range(ranks):
            fields = {"rank": rank}
            self.log.info("Terminating shard", span="shard-manager", fields=fields)
            self.log.info(
                "Waiting for shard to gracefully shutdown", span="shard-manager", fields=fields
            )
            self.log.info("shard terminated", span="shard-manager", fields=fields)

    def _shard_failed(self, failure: engine.Failure) -> None:
        self._python_logs(failure.logs)
        tb = _traceback(failure.where, failure.exception)
        self.log.error("Error when initializing model\n" + tb)
        self.log.error(
            "Shard complete standard error output:\n\n" + tb,
            span="shard-manager",
            fields={"rank": failure.rank},
        )
        self.log.error(f"Shard {failure.rank} failed to start")
        self.log.info("Shutting down shards")
        raise LauncherFailed("ShardCannotStart")

    def _webserver_failed(self, failure: engine.Failure) -> None:
        if failure.stage == "warmup":
            self.log.error(
                "Method Warmup encountered an error.\n"
                + _traceback(failure.where, failure.exception)
            )
        # The launcher relays the router's stderr with println! (no timestamp).
        sys.stdout.write(f"Error: {failure.router_error}\n")
        sys.stdout.flush()
        self.log.error("Webserver Crashed")
        self._shutdown_shards(self.num_shard)
        raise LauncherFailed("WebserverFailed")

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        try:
            return self._run()
        except LauncherFailed as exc:
            print_final_error(exc.debug)
            return 1
        finally:
            for server in self.servers:
                server.shutdown()
                server.server_close()

    def _run(self) -> int:
        args, profile = self.args, self.profile
        self.log.info(args.debug_text(profile.args_pretty))
        try:
            all_gpus = parse_gpus(self.environ.get("TGI_EMULATOR_GPUS"))
        except GpuSpecError as exc:
            sys.stderr.write(f"tgi-emulator: {exc}\n")
            return 1
        gpus = select_visible(all_gpus, self.environ.get("CUDA_VISIBLE_DEVICES"))
        repo, arch, launcher_arch, local = self._model_sources()
        capability = engine.min_capability(gpus) if gpus else None

        if profile.resolves_attention:
            attention, prefix, attn_logs = engine.resolve_attention(
                profile,
                launcher_arch,
                capability,
                self.environ.get("ATTENTION"),
                self.environ.get("PREFIX_CACHING"),
                bool(args.get("lora_adapters")),
            )
            self._python_logs(attn_logs)
            self.log.info(f"Using attention {attention} - Prefix caching {str(prefix).lower()}")

        max_input = args.get("max_input_tokens")
        legacy = args.get("max_input_length")
        if max_input is not None and legacy is not None:
            raise LauncherFailed(
                f'ArgumentValidation("Both `max_input_tokens` ({max_input}) and `max_input_length` '
                f"({legacy}) are set. Please define only `max_input_tokens` as `max_input_length "
                'is deprecated for naming consistency.")'
            )
        max_input = max_input if max_input is not None else legacy

        num_shard = self._find_num_shards(gpus)
        self.num_shard = num_shard
        request = engine.LaunchRequest(
            profile=profile,
            gpus=tuple(gpus),
            num_shard=num_shard,
            arch=arch if arch is not None else engine.arch_from_config({}, 0),
            launcher_arch=launcher_arch,
            quantize_arg=args.quantize,
            dtype_arg=args.dtype,
            kv_cache_dtype=cast("str | None", args.get("kv_cache_dtype")),
            cuda_memory_fraction=float(args.cuda_memory_fraction),
            use_flash_attention_env=self.environ.get("USE_FLASH_ATTENTION"),
            attention_env=self.environ.get("ATTENTION") if profile.resolves_attention else None,
            prefix_caching_env=self.environ.get("PREFIX_CACHING"),
            wiggle_room_env=_env_float(
                self.environ, "TGI_WIGGLE_ROOM", memory.rules_for(profile.version).wiggle_room
            )
            if "TGI_WIGGLE_ROOM" in self.environ
            else None,
            lora_adapters=bool(args.get("lora_adapters")),
            max_input_tokens=cast("int | None", max_input),
            max_total_tokens=args.max_total_tokens,
            max_batch_prefill_tokens=args.max_batch_prefill_tokens,
            max_batch_total_tokens=args.max_batch_total_tokens,
            max_batch_size=args.max_batch_size,
        )
        defaults = engine.compute_token_defaults(request)
        if isinstance(defaults, engine.Failure):
            raise LauncherFailed(defaults.router_error)
        self._python_logs(defaults.logs)

        if args.quantize == "bitsandbytes":
            self.log.warn(
                "Bitsandbytes is deprecated, use `eetq` instead, which provides better latencies "
                "overall and is drop-in in most cases."
            )
        quantize = engine.effective_quantize(profile, request.arch, args.quantize)
        if args.cuda_graphs is None and quantize not in (
            "bitsandbytes",
            "bitsandbytes-nf4",
            "bitsandbytes-fp4",
            "exl2",
        ):
            self.log.info("Using default cuda graphs [1, 2, 4, 8, 16, 32]")
        if args.validation_workers == 0:
            raise LauncherFailed('ArgumentValidation("`validation_workers` must be > 0")')
        if args.trust_remote_code:
            self.log.warn(
                f"`trust_remote_code` is set. Trusting that model `{args.model_id}` do not "
                "contain malicious code."
            )
        if num_shard > 1:
            if args.quantize == "exl2":
                raise LauncherFailed(
                    'ArgumentValidation("Sharding is currently not supported with `exl2` '
                    'quantization")'
                )
            self.log.info(f"Sharding model on {num_shard} processes")
        given_total = defaults.max_total_tokens
        batch_total = args.max_batch_total_tokens
        if batch_total is not None and given_total is not None and given_total > batch_total:
            raise LauncherFailed(
                'ArgumentValidation("`max_total_tokens` must be <= `max_batch_total_tokens`. '
                f'Given: {given_total} and {batch_total}")'
            )

        if not self._download(repo, local):
            return 0
        if self.stop.is_set():
            return 0

        # ---------------------------------------------------------- shards
        shard_start = time.monotonic()
        for rank in range(num_shard):
            self.log.info("Starting shard", span="shard-manager", fields={"rank": rank})
        if self.stop.wait(self.load_seconds * 0.7):
            self._shutdown_shards(num_shard)
            return 0
        plan = engine.load_shards(request)
        if isinstance(plan, engine.Failure):
            self._shard_failed(plan)
        assert isinstance(plan, engine.ShardPlan)
        self._python_logs(plan.logs)
        if profile.resolves_attention and plan.flash:
            self.log.info(f"Using prefix caching = {plan.prefix_caching}")
            self.log.info(f"Using Attention = {plan.attention}")
        for rank in range(num_shard):
            self.log.info(f"Server started at unix://{args.shard_uds_path}-{rank}")
        elapsed = time.monotonic() - shard_start
        for rank in range(num_shard):
            self.log.info(
                f"Shard ready in {elapsed:.9f}s", span="shard-manager", fields={"rank": rank}
            )

        # ---------------------------------------------------------- webserver + warmup
        self.log.info("Starting Webserver")
        model_info = self._router_model_info(repo, local, request.arch)
        warm_loc = (
            "router/src/main.rs:213"
            if profile.info_fields == "2.0"
            else "backends/v3/src/lib.rs:125"
        )
        self._router("INFO", "Warming up model", warm_loc)
        if self.stop.wait(self.load_seconds * 0.3):
            self._shutdown_shards(num_shard)
            return 0
        result = engine.warmup(request, plan, defaults)
        if isinstance(result, engine.Failure):
            self._webserver_failed(result)
        assert isinstance(result, engine.WarmupResult)
        if plan.flash:
            self.log.info(
                f"Cuda Graphs are enabled for sizes {args.cuda_graphs or [32, 16, 8, 4, 2, 1]}"
            )
        for level, message in result.logs:
            self._router(level, message, warm_loc)
        self._router(
            "INFO", f"Setting max batch total tokens to {result.max_batch_total_tokens}", warm_loc
        )
        if profile.info_fields != "2.0":
            self._router("INFO", "Using backend V3", "backends/v3/src/lib.rs:140")

        config = self._server_config(request, plan, result, model_info, gpus)
        metrics = Metrics()
        metrics.set_gauge("tgi_batch_max_total_tokens", result.max_batch_total_tokens)
        self._router("INFO", "Connected", "router/src/server.rs:2423", target=SERVER_TARGET)
        host = bind_address(args.hostname, self.log)
        try:
            server = EmulatorServer((host, args.port), config, metrics, self.log)
        except OSError as exc:
            self._webserver_failed(
                engine.Failure(
                    stage="router",
                    exception="",
                    router_error=(
                        f"WebServer(Axum(Os {{ code: {exc.errno}, kind: AddrInUse, "
                        f'message: "{exc.strerror}" }}))'
                    ),
                )
            )
        self.servers.append(server)
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="router", daemon=True
        ).start()
        if profile.has_flag("prometheus-port"):
            try:
                prom = EmulatorServer(
                    (host, args.prometheus_port), config, metrics, self.log, metrics_only=True
                )
                self.servers.append(prom)
                threading.Thread(
                    target=prom.serve_forever, args=(0.05,), name="prometheus", daemon=True
                ).start()
            except OSError as exc:
                self.log.warn(
                    f"Could not bind the prometheus port {args.prometheus_port}: {exc.strerror}",
                    target=SERVER_TARGET,
                    location="router/src/server.rs:2290",
                )
        return self._serve(num_shard)

    def _router_model_info(self, repo, local, arch) -> tuple[str | None, str | None]:
        """(sha, pipeline_tag) the router gets from the hub: none offline or for a local dir."""
        server_loc = "router/src/server.rs:1578"
        sha = pipeline = None
        if local is None:
            if self.environ.get("HF_HUB_OFFLINE") == "1":  # the router wants exactly "1" (§6)
                self._router(
                    "WARN", "Offline mode active using cache defaults", server_loc, SERVER_TARGET
                )
            else:
                self._router("INFO", "Using the Hugging Face API", server_loc, SERVER_TARGET)
                if repo is not None:
                    sha = repo.sha
                    pipeline = "image-text-to-text" if arch.is_vlm else "text-generation"
                else:
                    self._router(
                        "WARN",
                        "Could not retrieve model info from the Hugging Face hub.",
                        server_loc,
                        SERVER_TARGET,
                    )
        self._router(
            "INFO",
            f"Using config Some({arch.pretty_name})",
            "router/src/server.rs:1731",
            SERVER_TARGET,
        )
        if pipeline is None:
            self._router(
                "WARN",
                f"no pipeline tag found for model {self.args.model_id}",
                "router/src/server.rs:1784",
                SERVER_TARGET,
            )
        return sha, pipeline

    def _server_config(self, request, plan, result, model_info, gpus) -> ServerConfig:
        args = self.args
        arch = request.arch
        card = gpus[0].name.replace(" ", "-").lower() if gpus else "unknown"
        flap = self.environ.get("TGI_EMULATOR_HEALTH_FLAP")
        return ServerConfig(
            profile=self.profile,
            model_id=args.model_id,
            model_sha=model_info[0],
            pipeline_tag=model_info[1],
            compat_return_full_text=model_info[1] in (None, "text-generation"),
            max_input_tokens=result.max_input_tokens,
            max_total_tokens=result.max_total_tokens,
            max_batch_total_tokens=result.max_batch_total_tokens,
            max_batch_prefill_tokens=result.max_batch_prefill_tokens,
            max_concurrent_requests=args.max_concurrent_requests,
            max_best_of=args.max_best_of,
            max_stop_sequences=args.max_stop_sequences,
            max_top_n_tokens=args.max_top_n_tokens,
            max_client_batch_size=args.max_client_batch_size,
            validation_workers=args.validation_workers,
            max_waiting_tokens=args.max_waiting_tokens,
            waiting_served_ratio=args.waiting_served_ratio,
            max_batch_size=args.max_batch_size,
            model_dtype=plan.dtype,
            api_key=cast("str | None", args.get("api_key")),
            vocab_size=arch.vocab_size,
            compute_type=self.environ.get("COMPUTE_TYPE") or f"{self.num_shard}-{card}",
            health_flap_every=int(flap) if flap and flap.isdigit() and int(flap) > 0 else None,
        )

    def _serve(self, num_shard: int) -> int:
        crash_after = self.environ.get("TGI_EMULATOR_CRASH_AFTER_SECONDS")
        timeout = float(crash_after) if crash_after else None
        stopped = self.stop.wait(timeout)
        if not stopped:
            self.log.error(
                "Shard complete standard error output:\n\n",
                span="shard-manager",
                fields={"rank": 0},
            )
            self.log.error(
                "Shard process was signaled to shutdown with signal 9",
                span="shard-manager",
                fields={"rank": 0},
            )
            self.log.error("Shard 0 crashed")
        self.log.info("Terminating webserver")
        self.log.info("Waiting for webserver to gracefully shutdown")
        self.log.info(
            "signal received, starting graceful shutdown",
            target=SERVER_TARGET,
            location="router/src/server.rs:2530",
        )
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers.clear()
        self.log.info("webserver terminated")
        self._shutdown_shards(num_shard)
        if not stopped:
            raise LauncherFailed("ShardFailed")
        return 0


def main(argv: list[str] | None = None, early_signals: list[int] | None = None) -> int:
    """Run the launcher; ``early_signals`` lists SIGTERM/SIGINT caught before it started."""
    environ = dict(os.environ)
    try:
        profile = get_profile(environ.get("TGI_EMULATOR_VERSION", DEFAULT_VERSION))
    except ValueError as exc:
        sys.stderr.write(f"tgi-emulator: {exc}\n")
        return 1
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv), environ, profile)
    except EarlyExit as exc:
        sys.stdout.write(exc.text)
        return 0
    except ClapError as exc:
        write_clap_error(exc)
        return 2
    launcher = Launcher(profile, args, environ, TracingLog(json_output=bool(args.json_output)))

    def on_signal(signum, frame) -> None:
        launcher.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if early_signals:
        launcher.stop.set()
    return launcher.run()
