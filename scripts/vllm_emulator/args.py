"""`vllm serve` command line: vLLM's flags, parsed and refused the way its argparse does.

vLLM builds its CLI with `FlexibleArgumentParser` (an argparse.ArgumentParser, prog "vllm" in
the error line, `allow_abbrev=False`) that also accepts `--flag_name` for `--flag-name` and
`--flag=value`. Unknown flags end with argparse's own
`vllm: error: unrecognized arguments: --foo` on stderr and status 2 (facts: startup failures
quoted publicly, e.g. "vllm: error: unrecognized arguments: --disable-log-requests"). The model
is `vllm serve MODEL` (positional `model_tag`) or `--model MODEL`; the docker image's
entrypoint is `vllm serve`, so `docker run IMAGE --model M` reaches here as `serve --model M`.

Only the flags the emulator models are declared with types; the rest of vLLM's common flags
are accepted (value or switch) so real command lines parse, and are otherwise ignored.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .versions import VersionProfile

PROG = "vllm"
USAGE = "vllm serve [model_tag] [options]"

# vLLM's DType / CacheDType choices (facts §1.2, vllm/config/model.py, vllm/config/cache.py).
DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")
# QuantizationMethods the emulator knows (vllm/model_executor/layers/quantization/__init__.py).
QUANTIZATIONS = (
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "fbgemm_fp8",
    "compressed-tensors",
    "bitsandbytes",
    "gguf",
    "marlin",
    "experts_int8",
)

# Other real `vllm serve` flags taking one value, accepted and ignored by the emulator.
_IGNORED_VALUE_FLAGS = (
    "--tokenizer",
    "--revision",
    "--tokenizer-revision",
    "--seed",
    "--block-size",
    "--swap-space",
    "--load-format",
    "--config-format",
    "--tokenizer-mode",
    "--chat-template",
    "--uvicorn-log-level",
    "--root-path",
    "--pipeline-parallel-size",
    "--data-parallel-size",
    "--distributed-executor-backend",
    "--max-logprobs",
    "--limit-mm-per-prompt",
    "--generation-config",
    "--override-generation-config",
    "--hf-overrides",
    "--reasoning-parser",
    "--tool-call-parser",
    "--compilation-config",
    "--model-loader-extra-config",
    "--allowed-local-media-path",
    "--response-role",
    "--ssl-keyfile",
    "--ssl-certfile",
    "--cpu-offload-gb",
    "--kv-cache-memory-bytes",
)
_IGNORED_SWITCHES = (
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--disable-custom-all-reduce",
    "--enable-auto-tool-choice",
    "--disable-fastapi-docs",
    "--disable-frontend-multiprocessing",
    "--enable-lora",
    "--skip-tokenizer-init",
    "--disable-uvicorn-access-log",
)


class ArgsError(Exception):
    """argparse refused the command line; `text` is what it printed (usage + error)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class HelpRequested(Exception):
    """`vllm serve --help`: argparse prints the help on stdout and exits 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own format, without exiting the process
        raise ArgsError(f"usage: {self.usage}\n{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def _model_len(text: str) -> int:
    """--max-model-len accepts suffixes: 32k / 32K / 1m (facts §1.2, docs cli)."""
    raw = text.strip()
    multipliers = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}
    try:
        if raw and raw[-1] in multipliers:
            return int(float(raw[:-1]) * multipliers[raw[-1]])
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid human_readable_int value: {text!r}") from None


def _normalize(argv: list[str]) -> list[str]:
    """FlexibleArgumentParser: `--max_model_len` -> `--max-model-len` (names only)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg.partition("=")
            out.append(name.replace("_", "-") + sep + value)
        else:
            out.append(arg)
    return out


def build_parser(profile: VersionProfile) -> _Parser:
    parser = _Parser(prog=PROG, usage=USAGE, allow_abbrev=False, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--model", default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=_int, default=8000)
    parser.add_argument("--tensor-parallel-size", "-tp", type=_positive_int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None)
    parser.add_argument("--max-model-len", type=_model_len, default=None)
    parser.add_argument("--max-num-seqs", type=_positive_int, default=None)
    parser.add_argument("--max-num-batched-tokens", type=_positive_int, default=None)
    parser.add_argument("--quantization", "-q", choices=QUANTIZATIONS, default=None)
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--download-dir", default=None)
    parser.add_argument("--api-key", nargs="+", default=None)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument(
        "--enable-log-requests", action=argparse.BooleanOptionalAction, default=False
    )
    if profile.accepts_disable_log_requests:
        parser.add_argument("--disable-log-requests", action="store_true")
    parser.add_argument("--disable-log-stats", action="store_true")
    for flag in _IGNORED_VALUE_FLAGS:
        parser.add_argument(flag, default=None)
    for flag in _IGNORED_SWITCHES:
        parser.add_argument(flag, action="store_true")
    return parser


@dataclass(frozen=True)
class ServeArgs:
    model: str
    served_model_names: tuple[str, ...]
    host: str | None
    port: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    quantization: str | None
    dtype: str
    kv_cache_dtype: str
    enforce_eager: bool
    download_dir: str | None
    api_keys: tuple[str, ...]
    trust_remote_code: bool
    non_default: dict


def parse_serve(argv: list[str], profile: VersionProfile, environ: dict[str, str]) -> ServeArgs:
    """Parse `serve ...` (argv without the program name). Raises ArgsError like argparse."""
    argv = list(argv)
    if not argv or argv[0] != "serve":
        # `vllm` without a subcommand or with another one: the emulator only serves.
        shown = argv[0] if argv else ""
        raise ArgsError(
            "usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ...\n"
            f"vllm: error: argument subparser: invalid choice: {shown!r} (choose from "
            "'chat', 'complete', 'serve', 'bench', 'collect-env', 'run-batch')\n"
        )
    parser = build_parser(profile)
    namespace, unknown = parser.parse_known_args(_normalize(argv[1:]))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if namespace.help:
        raise HelpRequested(build_parser(profile).format_help())
    # vLLM: the positional model_tag wins over --model; with neither, `vllm serve` falls back
    # to its default model (Qwen/Qwen3-0.6B, not in the emulator's hub: it then fails).
    model = namespace.model_tag or namespace.model or "Qwen/Qwen3-0.6B"
    utilization = namespace.gpu_memory_utilization
    if utilization is None:
        utilization = profile.default_gpu_memory_utilization
    api_keys = tuple(namespace.api_key or ())
    if not api_keys and environ.get("VLLM_API_KEY"):
        api_keys = (environ["VLLM_API_KEY"],)  # vllm/envs.py VLLM_API_KEY (facts §1.2)
    defaults = vars(build_parser(profile).parse_args([]))
    non_default = {
        key: value
        for key, value in vars(namespace).items()
        if key not in ("help", "model_tag", "api_key") and value != defaults.get(key)
    }
    non_default["model"] = model
    if api_keys:
        non_default["api_key"] = ["<redacted>"]  # deliberate: secrets never reach a log
    names = tuple(namespace.served_model_name or (model,))
    return ServeArgs(
        model=model,
        served_model_names=names,
        host=namespace.host,
        port=namespace.port,
        tensor_parallel_size=namespace.tensor_parallel_size,
        gpu_memory_utilization=float(utilization),
        max_model_len=namespace.max_model_len,
        max_num_seqs=namespace.max_num_seqs,
        max_num_batched_tokens=namespace.max_num_batched_tokens,
        quantization=namespace.quantization,
        dtype=namespace.dtype,
        kv_cache_dtype=namespace.kv_cache_dtype,
        enforce_eager=bool(namespace.enforce_eager),
        download_dir=namespace.download_dir,
        api_keys=api_keys,
        trust_remote_code=bool(namespace.trust_remote_code),
        non_default=non_default,
    )


def write_args_error(error: ArgsError) -> None:
    sys.stderr.write(error.text)
    sys.stderr.flush()
