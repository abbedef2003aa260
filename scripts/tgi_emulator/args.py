"""clap-compatible parsing of `text-generation-launcher` flags and their env equivalents.

Every launcher flag is `#[clap(long, env)]` (docs/tgi.md §1), so each one can also come from an
UPPER_SNAKE environment variable; the command line wins, an empty variable counts as unset
(clap 4). Errors are printed the way clap 4 prints them, to stderr, exit status 2.
The flag set, order and defaults follow `struct Args` in launcher/src/main.rs; flags that a
release does not have are rejected as unknown for that release.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import cast

from .versions import VersionProfile

PROGRAM = "text-generation-launcher"

_FALSEY = {"", "n", "no", "f", "false", "off", "0"}


@dataclass(frozen=True)
class FlagSpec:
    name: str  # long name without dashes
    kind: str  # str | int | float | flag | optbool | enum | intlist | strlist
    default: object = None
    choices: tuple[str, ...] = ()
    debug_names: tuple[str, ...] = ()  # Rust Debug names of enum values, same order
    short: str | None = None
    env: bool = True
    secret: bool = False  # never printed in the Args line
    only: str | None = None  # availability key (VersionProfile.extra_flags) or None = all

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env_name(self) -> str:
        return self.attr.upper()

    @property
    def value_name(self) -> str:
        return self.attr.upper()


_QUANT_DEBUG = {
    "awq": "Awq",
    "compressed-tensors": "CompressedTensors",
    "eetq": "Eetq",
    "exl2": "Exl2",
    "gptq": "Gptq",
    "marlin": "Marlin",
    "bitsandbytes": "Bitsandbytes",
    "bitsandbytes-nf4": "BitsandbytesNf4",
    "bitsandbytes-fp4": "BitsandbytesFp4",
    "fp8": "Fp8",
}


def build_specs(profile: VersionProfile) -> list[FlagSpec]:
    """The launcher's flags for `profile`, in `struct Args` order."""
    quant = profile.quantize_values
    specs = [
        FlagSpec("model-id", "str", "bigscience/bloom-560m"),
        FlagSpec("revision", "str"),
        FlagSpec("validation-workers", "int", 2),
        FlagSpec("sharded", "optbool"),
        FlagSpec("num-shard", "int"),
        FlagSpec("quantize", "enum", None, quant, tuple(_QUANT_DEBUG[q] for q in quant)),
        FlagSpec("speculate", "int"),
        FlagSpec("dtype", "enum", None, ("float16", "bfloat16"), ("Float16", "BFloat16")),
        FlagSpec(
            "kv-cache-dtype",
            "enum",
            None,
            ("fp8_e4m3fn", "fp8_e5m2"),
            ("Fp8e4m3fn", "Fp8e5m2"),
            only="kv-cache-dtype",
        ),
        FlagSpec("trust-remote-code", "flag", False),
        FlagSpec("max-concurrent-requests", "int", 128),
        FlagSpec("max-best-of", "int", 2),
        FlagSpec("max-stop-sequences", "int", 4),
        FlagSpec("max-top-n-tokens", "int", 5),
        FlagSpec("max-input-tokens", "int", only="max-input-tokens"),
        FlagSpec("max-input-length", "int", only="max-input-length"),
        FlagSpec("max-total-tokens", "int"),
        FlagSpec("waiting-served-ratio", "float", profile.waiting_served_ratio),
        FlagSpec("max-batch-prefill-tokens", "int"),
        FlagSpec("max-batch-total-tokens", "int"),
        FlagSpec("max-waiting-tokens", "int", 20),
        FlagSpec("max-batch-size", "int"),
        FlagSpec("cuda-graphs", "intlist"),
        FlagSpec("hostname", "str", "0.0.0.0"),
        FlagSpec("port", "int", 3000, short="p"),
        FlagSpec("shard-uds-path", "str", "/tmp/text-generation-server"),
        FlagSpec("master-addr", "str", "localhost"),
        FlagSpec("master-port", "int", 29500),
        FlagSpec("huggingface-hub-cache", "str"),
        FlagSpec("weights-cache-override", "str"),
        FlagSpec("disable-custom-kernels", "flag", False),
        FlagSpec("cuda-memory-fraction", "float", 1.0),
        FlagSpec("rope-scaling", "enum", None, ("linear", "dynamic"), ("Linear", "Dynamic")),
        FlagSpec("rope-factor", "float"),
        FlagSpec("json-output", "flag", False),
        FlagSpec("otlp-endpoint", "str"),
        FlagSpec(
            "otlp-service-name",
            "str",
            "text-generation-inference.router",
            only="otlp-service-name",
        ),
        FlagSpec("cors-allow-origin", "strlist", ()),
        FlagSpec("api-key", "str", secret=True, only="api-key"),
        FlagSpec("watermark-gamma", "float"),
        FlagSpec("watermark-delta", "float"),
        FlagSpec("ngrok", "flag", False),
        FlagSpec("ngrok-authtoken", "str", secret=True),
        FlagSpec("ngrok-edge", "str"),
        FlagSpec("tokenizer-config-path", "str"),
        FlagSpec("disable-grammar-support", "flag", False),
        FlagSpec("env", "flag", False, short="e", env=False),
        FlagSpec("max-client-batch-size", "int", 4),
        FlagSpec("lora-adapters", "str", only="lora-adapters"),
        FlagSpec(
            "usage-stats",
            "enum",
            "on",
            ("on", "off", "no-stack"),
            ("On", "Off", "NoStack"),
            only="usage-stats",
        ),
        FlagSpec("payload-limit", "int", 2000000, only="payload-limit"),
        FlagSpec("enable-prefill-logprobs", "flag", False, only="enable-prefill-logprobs"),
        FlagSpec("graceful-termination-timeout", "int", 90, only="graceful-termination-timeout"),
        FlagSpec("prometheus-port", "int", 9000, only="prometheus-port"),
    ]
    return [s for s in specs if s.only is None or profile.has_flag(s.only)]


class ClapError(Exception):
    """A command-line error; `text` is what clap prints, exit status 2."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class EarlyExit(Exception):
    """--help / --version: print `text` to stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class LauncherArgs:
    values: dict[str, object]
    specs: list[FlagSpec]
    explicit: set[str] = field(default_factory=set)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: object = None) -> object:
        return self.values.get(name, default)

    def debug_text(self, pretty: bool) -> str:
        """`Args { ... }` as Rust's {:?} / {:#?} prints it, secrets redacted."""
        parts = []
        for spec in self.specs:
            parts.append((spec.attr, _debug_value(spec, self.values[spec.attr])))
        if pretty:
            body = "".join(f"    {k}: {v},\n" for k, v in parts)
            return "Args {\n" + body + "}"
        return "Args { " + ", ".join(f"{k}: {v}" for k, v in parts) + " }"


def _jaro(a: str, b: str) -> float:
    """strsim::jaro, which clap's did_you_mean uses (suggests when > 0.7)."""
    if not a or not b:
        return 1.0 if a == b else 0.0
    window = max(0, max(len(a), len(b)) // 2 - 1)
    b_used = [False] * len(b)
    a_hits = []
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not b_used[j] and b[j] == ch:
                b_used[j] = True
                a_hits.append(ch)
                break
    if not a_hits:
        return 0.0
    b_hits = [b[j] for j in range(len(b)) if b_used[j]]
    transpositions = sum(x != y for x, y in zip(a_hits, b_hits, strict=True)) / 2
    m = len(a_hits)
    return (m / len(a) + m / len(b) + (m - transpositions) / m) / 3


def _did_you_mean(value: str, candidates) -> str | None:
    best = max(candidates, key=lambda c: _jaro(value, c), default=None)
    return best if best is not None and _jaro(value, best) > 0.7 else None


def _rust_float(value: float) -> str:
    text = repr(float(value))
    return text if "." in text or "e" in text else text + ".0"


def _debug_scalar(spec: FlagSpec, value: object) -> str:
    if spec.kind == "enum":
        return spec.debug_names[spec.choices.index(str(value))]
    if spec.kind in ("str", "strlist"):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if spec.kind == "float":
        return _rust_float(float(value))  # type: ignore[arg-type]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _debug_value(spec: FlagSpec, value: object) -> str:
    if spec.secret and value is not None:
        # Deliberate deviation: the real launcher's derived Debug prints the value.
        return 'Some("<redacted>")'
    if spec.kind in ("flag",):
        return "true" if value else "false"
    if spec.kind == "strlist":
        return "[" + ", ".join(_debug_scalar(spec, v) for v in cast("list[object]", value)) + "]"
    if spec.kind == "intlist":
        if value is None:
            return "None"
        return "Some([" + ", ".join(str(v) for v in cast("list[object]", value)) + "])"
    required = spec.default is not None and spec.kind != "optbool"
    if value is None:
        return "None"
    text = _debug_scalar(spec, value)
    return text if required else f"Some({text})"


def _usage_tail(with_usage: bool) -> str:
    usage = f"\nUsage: {PROGRAM} [OPTIONS]\n" if with_usage else ""
    return f"{usage}\nFor more information, try '--help'.\n"


def _arg_display(spec: FlagSpec) -> str:
    if spec.kind == "flag":
        return f"--{spec.name}"
    return f"--{spec.name} <{spec.value_name}>"


def _convert(spec: FlagSpec, raw: str, from_env: bool) -> object:
    shown = _arg_display(spec)
    if spec.kind == "flag":
        if from_env:
            return raw.strip().lower() not in _FALSEY
        raise ClapError(
            f"error: unexpected value '{raw}' for '{shown}' found; no more were expected\n\n"
            f"Usage: {PROGRAM} [OPTIONS]\n\nFor more information, try '--help'.\n"
        )
    if spec.kind == "str" or spec.kind == "strlist":
        return raw
    if spec.kind == "int":
        try:
            value = int(raw, 10)
        except ValueError:
            reason = (
                "cannot parse integer from empty string"
                if raw == ""
                else "invalid digit found in string"
            )
            raise ClapError(
                f"error: invalid value '{raw}' for '{shown}': {reason}\n" + _usage_tail(False)
            ) from None
        if value < 0:
            raise ClapError(
                f"error: invalid value '{raw}' for '{shown}': invalid digit found in string\n"
                + _usage_tail(False)
            )
        if spec.name == "port" and value > 65535:
            raise ClapError(
                f"error: invalid value '{raw}' for '{shown}': "
                "number too large to fit in target type\n" + _usage_tail(False)
            )
        return value
    if spec.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ClapError(
                f"error: invalid value '{raw}' for '{shown}': invalid float literal\n"
                + _usage_tail(False)
            ) from None
    if spec.kind == "optbool":
        if raw in ("true", "false"):
            return raw == "true"
        raise ClapError(
            f"error: invalid value '{raw}' for '{shown}': value was not a boolean\n"
            + _usage_tail(False)
        )
    if spec.kind == "enum":
        if raw in spec.choices:
            return raw
        tip = ""
        close = _did_you_mean(raw, spec.choices)
        if close:
            tip = f"\n  tip: a similar value exists: '{close}'\n"
        raise ClapError(
            f"error: invalid value '{raw}' for '{shown}'\n"
            f"  [possible values: {', '.join(spec.choices)}]\n{tip}" + _usage_tail(False)
        )
    if spec.kind == "intlist":
        out = []
        for part in raw.split(","):
            try:
                out.append(int(part))
            except ValueError:
                raise ClapError(
                    f"error: invalid value '{part}' for '{shown}': invalid digit found in string\n"
                    + _usage_tail(False)
                ) from None
        return out
    raise AssertionError(spec.kind)


def render_help(specs: list[FlagSpec]) -> str:
    lines = [f"Text Generation Launcher\n\nUsage: {PROGRAM} [OPTIONS]\n\nOptions:"]
    for spec in specs:
        short = f"-{spec.short}, " if spec.short else "    "
        env = f" [env: {spec.env_name}=]" if spec.env else ""
        default = ""
        if spec.default not in (None, False, ()):
            default = f" [default: {spec.default}]"
        lines.append(f"  {short}{_arg_display(spec)}{env}{default}")
    lines.append("  -h, --help\n          Print help\n  -V, --version\n          Print version")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str], environ: dict[str, str], profile: VersionProfile) -> LauncherArgs:
    """Parse like clap: CLI first, then env, then defaults. Raises ClapError / EarlyExit."""
    specs = build_specs(profile)
    by_long = {s.name: s for s in specs}
    by_short = {s.short: s for s in specs if s.short}
    cli: dict[str, object] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token in ("-h", "--help"):
            raise EarlyExit(render_help(specs))
        if token in ("-V", "--version"):
            raise EarlyExit(f"{PROGRAM} {profile.info_version}\n")
        inline: str | None = None
        if token.startswith("--"):
            name, eq, rest = token[2:].partition("=")
            inline = rest if eq else None
            spec = by_long.get(name)
            if spec is None:
                tip = ""
                close = _did_you_mean(name, list(by_long))
                if close:
                    tip = f"\n  tip: a similar argument exists: '--{close}'\n"
                raise ClapError(
                    f"error: unexpected argument '--{name}' found\n{tip}" + _usage_tail(True)
                )
        elif token.startswith("-") and len(token) > 1:
            spec = by_short.get(token[1])
            if spec is None:
                raise ClapError(f"error: unexpected argument '{token}' found\n" + _usage_tail(True))
            if len(token) > 2:
                inline = token[2:].lstrip("=")
        else:
            raise ClapError(f"error: unexpected argument '{token}' found\n" + _usage_tail(True))
        if spec.kind == "flag":
            if inline is not None:
                _convert(spec, inline, from_env=False)
            if spec.attr in cli:
                raise ClapError(
                    f"error: the argument '{_arg_display(spec)}' cannot be used multiple times\n"
                    + _usage_tail(True)
                )
            cli[spec.attr] = True
            continue
        if inline is None:
            if i >= len(argv) or (argv[i].startswith("--") and len(argv[i]) > 2):
                raise ClapError(
                    f"error: a value is required for '{_arg_display(spec)}' but none was supplied\n"
                    + _usage_tail(False)
                )
            inline = argv[i]
            i += 1
        value = _convert(spec, inline, from_env=False)
        if spec.kind == "strlist":
            cli.setdefault(spec.attr, [])
            cast("list[object]", cli[spec.attr]).append(value)
            continue
        if spec.attr in cli:
            raise ClapError(
                f"error: the argument '{_arg_display(spec)}' cannot be used multiple times\n"
                + _usage_tail(True)
            )
        cli[spec.attr] = value

    values: dict[str, object] = {}
    explicit: set[str] = set()
    for spec in specs:
        if spec.attr in cli:
            values[spec.attr] = cli[spec.attr]
            explicit.add(spec.attr)
            continue
        raw = environ.get(spec.env_name) if spec.env else None
        if raw is not None and raw != "":
            value = _convert(spec, raw, from_env=True)
            values[spec.attr] = [value] if spec.kind == "strlist" else value
            explicit.add(spec.attr)
            continue
        values[spec.attr] = (
            list(cast("list[object]", spec.default)) if spec.kind == "strlist" else spec.default
        )
    return LauncherArgs(values=values, specs=specs, explicit=explicit)


def write_clap_error(error: ClapError) -> None:
    sys.stderr.write(error.text)
    sys.stderr.flush()
