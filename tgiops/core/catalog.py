"""The model catalog: aliases -> checkpoint + architecture facts (pure: text in, facts out).

``models.yaml`` (shipped) and user catalogs (``--catalog FILE`` / ``TGIOPS_MODELS``) share one
format, read by ``parse_catalog``; the caller reads the file and passes its text and a name
for messages. ``model_from_hf_config`` turns a Hugging Face ``config.json`` (already parsed
into a dict) into the same ``ModelSpec`` for models that are not in any catalog.

Every error is a ``CatalogError`` (exit 2) that names where the text came from, the model alias,
the field and, where known, the line.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import yaml

from tgiops.core.errors import CatalogError, PlanInputError, UnknownModelError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# TGI's --quantize values in its newest release (the engine module keeps them per version).
# The quantization names a catalog entry may give: the checkpoint formats tgiops plans for, in
# TGI's spelling (its --quantize values at 3.3.7, plus NON_TGI_QUANTIZE_VALUES; every engine maps
# them to its own flags, and tests/unit/test_catalog.py checks this list against
# TgiEngine.accepted_quantize).
QUANTIZE_VALUES: tuple[str, ...] = (
    "awq",
    "eetq",
    "gptq",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
    "exl2",
    "marlin",
    "compressed-tensors",
    # Not TGI's: MXFP4 (gpt-oss' experts), which no TGI release runs; vLLM does (from 0.10.1,
    # tgiops.core.engines.vllm). The catalog names what a checkpoint IS; each engine says what
    # it can serve (TGI refuses these entries with unsupported_by_tgi).
    "mxfp4",
)
# The names above that are no TGI --quantize value (tests/unit/test_catalog.py).
NON_TGI_QUANTIZE_VALUES: tuple[str, ...] = ("mxfp4",)
# config.json quantization_config.quant_method -> TGI --quantize name. TGI auto-detects exactly
# these (server/text_generation_server/models/__init__.py@737 l.447-462, tgi-facts.md §1).
QUANT_METHOD_TO_TGI: Mapping[str, str] = MappingProxyType(
    {
        "awq": "awq",
        "gptq": "gptq",
        "exl2": "exl2",
        "fp8": "fp8",
        "fbgemm_fp8": "fp8",
        "compressed-tensors": "compressed-tensors",
        "compressed_tensors": "compressed-tensors",
    }
)
TORCH_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class ModelSpec:
    """One servable checkpoint and the architecture facts the planner needs."""

    alias: str  # what users type, e.g. "llama-3.1-70b-awq"
    repo_id: str  # Hugging Face repository
    revision: str | None  # pinned commit/branch where it matters, else None
    gated: bool | None  # None = not verified
    model_type: str  # config.json model_type
    num_layers: int  # num_hidden_layers (mllama: text layers incl. cross-attention)
    hidden_size: int
    intermediate_size: int | None
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int  # explicit when config.json has it (gemma-2: 256), else hidden/heads
    vocab_size: int
    max_position_embeddings: int
    num_experts: int | None  # MoE: num_local_experts
    experts_per_token: int | None  # MoE: num_experts_per_tok
    tie_word_embeddings: bool | None
    torch_dtype: str | None  # "bfloat16" | "float16" | "float32" | None (unknown)
    parameters_b: float  # parameters in billions
    quantization: str | None  # TGI --quantize name of the checkpoint's quantization; None=16-bit
    quantization_bits: int | None
    weight_bytes: int | None  # safetensors bytes where verified, else None
    kv_layers: int | None  # layers with a per-token KV cache when != num_layers (mllama: 80)
    vision: bool  # multimodal
    sources: Mapping[str, str] = field(hash=False)  # fact name -> source
    origin: str  # where it was loaded from
    notes: tuple[str, ...] = ()  # caveats worth showing to a user (e.g. revision advice)
    # Why no TGI release serves this checkpoint, naming the engine that does (gpt-oss: MXFP4);
    # None when TGI serves it. find_model refuses such an alias (exit 2).
    unsupported_by_tgi: str | None = None

    def __post_init__(self) -> None:
        # Freeze the mutable inputs so a spec can be shared safely.
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def kv_cache_layers(self) -> int:
        """Layers that keep a per-token KV cache (mllama: only the self-attention layers)."""
        return self.kv_layers if self.kv_layers is not None else self.num_layers

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V for one token over all KV layers and heads (model-facts.md note 1)."""
        return 2 * self.kv_cache_layers * self.num_key_value_heads * self.head_dim * dtype_bytes

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None and self.num_experts > 1

    def describe(self) -> str:
        """``llama-3.1-70b-awq (hugging-quants/...-AWQ-INT4, 70.55B params, awq 4-bit)``."""
        quant = (
            f"{self.quantization} {self.quantization_bits}-bit"
            if self.quantization and self.quantization_bits
            else (self.quantization or self.torch_dtype or "16-bit")
        )
        return f"{self.alias} ({self.repo_id}, {self.parameters_b:g}B params, {quant})"


# --------------------------------------------------------------------------------------------
# Catalog entries: field kinds
# --------------------------------------------------------------------------------------------

_POSITIVE_INT = "a positive whole number"
_ENTRY_KINDS: dict[str, str] = {
    "repo_id": "repo",
    "revision": "opt_str",
    "gated": "opt_bool",
    "model_type": "str",
    "num_layers": "int",
    "hidden_size": "int",
    "intermediate_size": "opt_int",
    "num_attention_heads": "int",
    "num_key_value_heads": "int",
    "head_dim": "opt_int",  # absent -> hidden_size / num_attention_heads, like transformers
    "vocab_size": "int",
    "max_position_embeddings": "int",
    "num_experts": "opt_int",
    "experts_per_token": "opt_int",
    "tie_word_embeddings": "opt_bool",
    "torch_dtype": "dtype",
    "parameters_b": "number",
    "quantization": "quant",
    "quantization_bits": "opt_int",
    "weight_bytes": "opt_int",
    "kv_layers": "opt_int",
    "vision": "bool",
    "unsupported_by_tgi": "opt_str",
    "sources": "sources",
    "notes": "notes",
}
ENTRY_FIELDS: tuple[str, ...] = tuple(_ENTRY_KINDS)
REQUIRED_FIELDS: tuple[str, ...] = (
    "repo_id",
    "model_type",
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "parameters_b",
)
# A `config:` key in `sources:` stands for every field read from the checkpoint's config.json.
_CONFIG_SOURCE_FIELDS: tuple[str, ...] = (
    "repo_id",
    "model_type",
    "num_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "num_experts",
    "experts_per_token",
    "tie_word_embeddings",
    "torch_dtype",
    "quantization",
    "quantization_bits",
    "kv_layers",
    "vision",
)
_SOURCE_KEYS = frozenset(ENTRY_FIELDS) - {"sources", "notes"} | {"config"}
_TOP_LEVEL_KEYS = ("schema_version", "models")
# Used with fullmatch only: ``re.match(r"...$")`` also accepts a trailing newline, which
# would carry a new line into the unit comments and the user-data script root runs at boot.
ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_ALIAS_RE, _REPO_RE = ALIAS_RE, REPO_RE
_MAX_PARAMETERS_B = 10_000.0  # a bigger value is almost surely a raw count, not billions
# TGI counts tokens of a batch in u32 (`max_batch_prefill_tokens: Option<u32>`,
# launcher/src/main.rs@v3.3.7 l.715; the launcher casts the context to it, l.2150): a context
# longer than that cannot be served, and is a typo or a unit mix-up.
MAX_CONTEXT_TOKENS = 2**32 - 1


def _where(origin: str, line: int | None) -> str:
    return f"{origin}, line {line}" if line else origin


def _error(
    origin: str, line: int | None, alias: str | None, fld: str | None, msg: str
) -> CatalogError:
    """``models.yaml, line 12: model 'x', field 'num_layers': <problem and fix>``."""
    subject = []
    if alias is not None:
        subject.append(f"model {alias!r}")
    if fld is not None:
        subject.append(f"field {fld!r}")
    parts = [_where(origin, line), *([", ".join(subject)] if subject else []), msg]
    return CatalogError(": ".join(parts))


# libyaml's parser when PyYAML has it: the same nodes and marks, ~10x faster on models.yaml
# (the pure-Python one took ~40 ms of every `tgiops plan`).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CatalogLoader(_SafeLoader):
    """SafeLoader that refuses duplicate keys (a repeated alias would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable key: SafeLoader reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _locate_by_line(text: str, line: int) -> tuple[str | None, str | None]:
    """Best guess of (alias, field) around ``line`` of a catalog that failed to parse."""
    alias: str | None = None
    fld: str | None = None
    in_models = False
    alias_indent: int | None = None
    field_indent = 0
    key_re = re.compile(r"^(\s*)([^\s#:][^:]*?)\s*:(\s|$)")
    for number, raw in enumerate(text.splitlines(), start=1):
        if number > line:
            break
        match = key_re.match(raw)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2).strip("'\"")
        if indent == 0:
            in_models = key == "models"
            alias, fld, alias_indent = None, None, None
        elif in_models:
            if alias_indent is None or indent <= alias_indent:
                alias_indent, alias, fld = indent, key, None
            elif fld is None or indent <= field_indent:
                field_indent, fld = indent, key
    return alias, fld


def _lines_of(node: yaml.Node | None) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Line numbers (1-based) of each alias and of each alias's fields."""
    alias_lines: dict[str, int] = {}
    field_lines: dict[tuple[str, str], int] = {}
    if not isinstance(node, yaml.MappingNode):
        return alias_lines, field_lines
    for key_node, value_node in node.value:
        if getattr(key_node, "value", None) != "models" or not isinstance(
            value_node, yaml.MappingNode
        ):
            continue
        for alias_node, entry_node in value_node.value:
            alias = str(alias_node.value)
            alias_lines[alias] = alias_node.start_mark.line + 1
            if isinstance(entry_node, yaml.MappingNode):
                for fkey, _ in entry_node.value:
                    field_lines[(alias, str(fkey.value))] = fkey.start_mark.line + 1
    return alias_lines, field_lines


def parse_catalog(text: str, origin: str) -> dict[str, ModelSpec]:
    """Parse catalog YAML text (``models.yaml`` format) into alias -> ModelSpec."""
    try:
        loader = _CatalogLoader(text)  # the pure-Python reader checks characters right here
    except yaml.reader.ReaderError as exc:
        raise _error(origin, None, None, None, _unreadable(exc)) from exc
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # libyaml's reader: while parsing
        raise _error(origin, None, None, None, _unreadable(exc)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        alias, fld = _locate_by_line(text, line) if line else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise _error(origin, line, alias, fld, f"not valid YAML: {detail}") from exc
    finally:
        loader.dispose()

    if not isinstance(data, Mapping):
        raise _error(
            origin,
            None,
            None,
            None,
            "a catalog is a YAML mapping with `schema_version: 1` and `models:`; got "
            f"{type(data).__name__}.",
        )
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise _error(
                origin,
                None,
                None,
                str(key),
                f"unknown top-level key; a catalog has only {', '.join(_TOP_LEVEL_KEYS)}.",
            )
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise _error(
            origin,
            None,
            None,
            "schema_version",
            f"this tgiops reads schema_version {SCHEMA_VERSION}, got {version!r}.",
        )
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise _error(
            origin,
            None,
            None,
            "models",
            "`models:` must be a non-empty mapping of alias -> model facts.",
        )

    alias_lines, field_lines = _lines_of(node)
    catalog: dict[str, ModelSpec] = {}
    for alias, entry in models.items():
        if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
            raise _error(
                origin,
                alias_lines.get(str(alias)),
                str(alias),
                None,
                "an alias is letters, digits, '.', '_' and '-' (e.g. llama-3.1-8b).",
            )
        catalog[alias] = _spec_from_entry(alias, entry, origin, alias_lines, field_lines)
    return catalog


def _unreadable(exc: yaml.reader.ReaderError) -> str:
    """A control character or the like: say which and where (one line, no stream name)."""
    char = exc.character
    shown = repr(chr(char)) if isinstance(char, int) else repr(char)
    reason = str(exc.reason).split(":")[-1].strip()
    return f"not valid YAML: {reason} ({shown} at character {exc.position})"


def _check_kind(value: Any, kind: str, fail: Any) -> Any:
    """Validate one YAML value by field kind; ``fail(msg)`` builds the error."""
    got = f"got {value!r} ({type(value).__name__})"
    if kind in ("opt_str", "opt_bool", "opt_int", "dtype", "quant") and value is None:
        return None
    if kind in ("str", "opt_str"):
        if not isinstance(value, str) or not value.strip():
            raise fail(f"must be a non-empty string, {got}.")
        return value
    if kind == "repo":
        if not isinstance(value, str) or not _REPO_RE.fullmatch(value):
            raise fail(f"must be a Hugging Face repository id like org/name, {got}.")
        return value
    if kind in ("bool", "opt_bool"):
        if not isinstance(value, bool):
            raise fail(f"must be true or false, {got}.")
        return value
    if kind in ("int", "opt_int"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(f"must be {_POSITIVE_INT}, {got}.")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise fail(f"must be a positive number, {got}.")
        return float(value)
    if kind == "dtype":
        if value not in TORCH_DTYPES:
            raise fail(f"must be one of {', '.join(TORCH_DTYPES)} (or null), {got}.")
        return value
    if kind == "quant":
        if value not in QUANTIZE_VALUES:
            hint = (
                f" Did you mean {QUANT_METHOD_TO_TGI[value]!r} (TGI's name for it)?"
                if isinstance(value, str) and value in QUANT_METHOD_TO_TGI
                else ""
            )
            raise fail(
                "must be one of the quantization names tgiops knows "
                f"({', '.join(QUANTIZE_VALUES)}) or "
                f"null for a 16-bit checkpoint, {got}.{hint}"
            )
        return value
    if kind == "notes":
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"must be a string or a list of strings, {got}.")
        return tuple(value)
    raise AssertionError(kind)  # pragma: no cover - every kind is handled above


def _spec_from_entry(
    alias: str,
    entry: Any,
    origin: str,
    alias_lines: Mapping[str, int],
    field_lines: Mapping[tuple[str, str], int],
) -> ModelSpec:
    def fail_for(fld: str | None) -> Any:
        line = field_lines.get((alias, fld)) if fld else alias_lines.get(alias)
        return lambda msg: _error(origin, line or alias_lines.get(alias), alias, fld, msg)

    if not isinstance(entry, Mapping):
        raise fail_for(None)(f"the entry must be a mapping of facts, got {type(entry).__name__}.")
    for key in entry:
        if key not in _ENTRY_KINDS:
            close = difflib.get_close_matches(str(key), ENTRY_FIELDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise fail_for(str(key))(
                f"unknown field.{hint} Known fields: {', '.join(ENTRY_FIELDS)}."
            )
    for req in REQUIRED_FIELDS:
        if entry.get(req) is None:
            raise fail_for(req)(f"missing required fact (required: {', '.join(REQUIRED_FIELDS)}).")

    values: dict[str, Any] = {}
    for key, kind in _ENTRY_KINDS.items():
        if kind == "sources" or key not in entry:
            continue
        values[key] = _check_kind(entry[key], kind, fail_for(key))

    sources = _parse_sources(entry.get("sources"), fail_for("sources"))
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    if values.get("head_dim") is None:
        if hidden % heads:
            raise fail_for("head_dim")(
                f"not given and hidden_size {hidden} is not divisible by num_attention_heads "
                f"{heads}; write head_dim from config.json."
            )
        values["head_dim"] = hidden // heads
        sources.setdefault(
            "head_dim", f"derived: hidden_size / num_attention_heads = {hidden}/{heads}"
        )

    spec = ModelSpec(
        alias=alias,
        repo_id=values["repo_id"],
        revision=values.get("revision"),
        gated=values.get("gated"),
        model_type=values["model_type"],
        num_layers=values["num_layers"],
        hidden_size=hidden,
        intermediate_size=values.get("intermediate_size"),
        num_attention_heads=heads,
        num_key_value_heads=values["num_key_value_heads"],
        head_dim=values["head_dim"],
        vocab_size=values["vocab_size"],
        max_position_embeddings=values["max_position_embeddings"],
        num_experts=values.get("num_experts"),
        experts_per_token=values.get("experts_per_token"),
        tie_word_embeddings=values.get("tie_word_embeddings"),
        torch_dtype=values.get("torch_dtype"),
        parameters_b=values["parameters_b"],
        quantization=values.get("quantization"),
        quantization_bits=values.get("quantization_bits"),
        weight_bytes=values.get("weight_bytes"),
        kv_layers=values.get("kv_layers"),
        vision=values.get("vision", False),
        sources=sources,
        origin=origin,
        notes=values.get("notes", ()),
        unsupported_by_tgi=values.get("unsupported_by_tgi"),
    )
    _check_consistency(spec, lambda fld, msg: fail_for(fld)(msg))
    return spec


def _parse_sources(raw: Any, fail: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise fail(f"must be a mapping of fact name -> source, got {type(raw).__name__}.")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _SOURCE_KEYS:
            raise fail(
                f"unknown fact {key!r}; keys are the entry's field names or `config` "
                "(for every fact read from config.json)."
            )
        if not isinstance(value, str) or not value.strip():
            raise fail(f"the source of {key!r} must be a non-empty string.")
        out[key] = value
    config_source = out.pop("config", None)
    if config_source is not None:
        for name in _CONFIG_SOURCE_FIELDS:
            out.setdefault(name, config_source)
    return out


def _check_consistency(spec: ModelSpec, fail: Any) -> None:
    """Cross-field checks; ``fail(field, msg)`` builds the CatalogError."""
    if spec.num_attention_heads % spec.num_key_value_heads:
        raise fail(
            "num_key_value_heads",
            f"num_attention_heads {spec.num_attention_heads} is not divisible by "
            f"num_key_value_heads {spec.num_key_value_heads}.",
        )
    if spec.head_dim <= 0:
        raise fail("head_dim", f"must be positive, got {spec.head_dim}.")
    if spec.kv_layers is not None and spec.kv_layers > spec.num_layers:
        raise fail(
            "kv_layers",
            f"{spec.kv_layers} KV-cache layers but only {spec.num_layers} layers (num_layers).",
        )
    if (spec.num_experts is None) != (spec.experts_per_token is None):
        missing = "experts_per_token" if spec.experts_per_token is None else "num_experts"
        raise fail(
            missing, "a mixture-of-experts model needs both num_experts and experts_per_token."
        )
    if (
        spec.num_experts is not None
        and spec.experts_per_token is not None
        and spec.experts_per_token > spec.num_experts
    ):
        raise fail(
            "experts_per_token",
            f"{spec.experts_per_token} experts per token but only {spec.num_experts} experts.",
        )
    if spec.quantization_bits is not None and spec.quantization is None:
        raise fail("quantization_bits", "is set but quantization is null (a 16-bit checkpoint).")
    if spec.max_position_embeddings > MAX_CONTEXT_TOKENS:
        raise fail(
            "max_position_embeddings",
            f"{spec.max_position_embeddings} tokens is beyond what TGI can serve: it counts "
            f"tokens in 32 bits, so at most {MAX_CONTEXT_TOKENS} (real models: 2048 to a few "
            "million).",
        )
    if spec.parameters_b > _MAX_PARAMETERS_B:
        raise fail(
            "parameters_b",
            f"{spec.parameters_b:g} is in billions (8.03 for 8.03e9), not a raw parameter count.",
        )


def validate_model(spec: ModelSpec) -> None:
    """Raise CatalogError if a ModelSpec built by hand is inconsistent (same checks as parsing)."""
    _check_consistency(spec, lambda fld, msg: _error(spec.origin, None, spec.alias, fld, msg))


# --------------------------------------------------------------------------------------------
# Merging and lookup
# --------------------------------------------------------------------------------------------


def merge_catalogs(
    base: Mapping[str, ModelSpec], overlay: Mapping[str, ModelSpec]
) -> dict[str, ModelSpec]:
    """Base entries plus the overlay's; an overlay alias replaces the base entry of that alias."""
    merged = dict(base)
    for alias, spec in overlay.items():
        if alias in merged:
            logger.info(
                "model %s from %s overrides the one from %s",
                alias,
                spec.origin,
                merged[alias].origin,
            )
        merged[alias] = spec
    return merged


def find_model(catalog: Mapping[str, ModelSpec], alias: str, engine: str = "tgi") -> ModelSpec:
    """A model by alias (exact, then case-insensitive) or by Hugging Face repo id, that
    ``engine`` can serve (TGI: not ``unsupported_by_tgi``; other engines check in their planner).

    Raises UnknownModelError carrying the closest aliases.
    """
    spec = _find_model(catalog, alias)
    return require_tgi_servable(spec) if engine == "tgi" else spec


def _find_model(catalog: Mapping[str, ModelSpec], alias: str) -> ModelSpec:
    if alias in catalog:
        return catalog[alias]
    wanted = alias.strip().casefold()
    for name in sorted(catalog):
        if name.casefold() == wanted:
            return catalog[name]
    by_repo = [name for name in sorted(catalog) if catalog[name].repo_id.casefold() == wanted]
    if by_repo:
        if len(by_repo) > 1:
            logger.info(
                "repo %s is in the catalog as %s; using %s", alias, ", ".join(by_repo), by_repo[0]
            )
        return catalog[by_repo[0]]
    raise UnknownModelError(alias, closest_models(catalog, alias))


def require_tgi_servable(spec: ModelSpec) -> ModelSpec:
    """The spec, or PlanInputError (exit 2) when no TGI release serves it: plan and deploy refuse
    it by name before touching anything, and the message names the engine that can."""
    if spec.unsupported_by_tgi:
        raise PlanInputError(
            f"{spec.alias} ({spec.repo_id}): TGI cannot serve it. {spec.unsupported_by_tgi}"
        )
    return spec


def quantized_siblings(catalog: Mapping[str, ModelSpec], model: ModelSpec) -> list[ModelSpec]:
    """Pre-quantized checkpoints of ``model``'s architecture in ``catalog`` (70b -> 70b-awq).

    Same model type, layers, widths, heads and vocabulary, and an alias that extends the
    model's (``llama-3.1-70b`` -> ``llama-3.1-70b-awq``): the same network with its weights
    quantized. The shape alone is not enough: Llama 3.3 70B has Llama 3.1 70B's shapes but
    other weights. Empty for a model that is itself quantized.
    """
    if model.quantization is not None:
        return []

    def shape(spec: ModelSpec) -> tuple[Any, ...]:
        return (
            spec.model_type,
            spec.num_layers,
            spec.hidden_size,
            spec.num_attention_heads,
            spec.num_key_value_heads,
            spec.head_dim,
            spec.vocab_size,
        )

    return [
        spec
        for _, spec in sorted(catalog.items())
        if spec.quantization is not None
        and shape(spec) == shape(model)
        and spec.alias.startswith(model.alias + "-")
    ]


def closest_models(catalog: Mapping[str, ModelSpec], alias: str, n: int = 3) -> list[str]:
    """Aliases whose name or repo id resembles ``alias`` (best first)."""
    keys: dict[str, str] = {}
    for name in sorted(catalog):
        keys.setdefault(name.casefold(), name)
    for name in sorted(catalog):
        spec = catalog[name]
        keys.setdefault(spec.repo_id.casefold(), name)
        keys.setdefault(spec.repo_id.split("/")[-1].casefold(), name)
    matches = difflib.get_close_matches(alias.strip().casefold(), list(keys), n=n * 3, cutoff=0.5)
    result: list[str] = []
    for match in matches:
        name = keys[match]
        if name not in result:
            result.append(name)
    return result[:n]


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------

# MllamaTextConfig/MllamaVisionConfig defaults. transformers writes nested sub-configs as a diff
# against these defaults, so a real mllama config.json omits them (model-facts.md S12 lists only
# non-default fields). Source: huggingface/transformers
# src/transformers/models/mllama/configuration_mllama.py @032b32a.
_MLLAMA_SOURCE = "MllamaTextConfig default (transformers configuration_mllama.py)"
_MLLAMA_TEXT_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "cross_attention_layers": (3, 8, 13, 18, 23, 28, 33, 38),
    }
)
_MLLAMA_VISION_DEFAULTS: Mapping[str, int] = MappingProxyType(
    {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_global_layers": 8,
        "intermediate_size": 5120,
        "vision_output_dim": 7680,
    }
)
# tie_word_embeddings is left out of config.json when it equals the class default; these
# classes default to tied (model-facts.md row 11: Gemma2Config default = true).
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2"})


def estimate_parameters(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    intermediate_size: int,
    num_experts: int | None = None,
    tie_word_embeddings: bool = False,
    extra: int = 0,
) -> int:
    """Parameter count of a decoder-only transformer from its config.json shapes.

    With V vocab, H hidden, L layers, A heads, K kv heads, d head_dim, I intermediate size and
    E experts (1 if dense)::

        P = V*H * (1 if tied else 2)                  embeddings (+ lm_head)
          + L * ( H*d*(2A + 2K)                       q, o and k, v projections
                + E*3*H*I + (E*H if E > 1)            gated MLP (gate, up, down) + router
                + 2*H )                               the two RMSNorms
          + H                                         final norm
          + extra                                     e.g. a vision tower

    Biases and model-specific extras (qkv bias, gemma's 4 norms) are ignored: they are <0.1%.
    Checks: Llama-3.1-8B 8.03B, Mixtral-8x7B 46.70B, gemma-2-9b 9.24B, Phi-3-mini 3.82B.
    """
    experts = num_experts if num_experts and num_experts > 1 else 1
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    attention = hidden_size * head_dim * (2 * num_attention_heads + 2 * num_key_value_heads)
    mlp = experts * 3 * hidden_size * intermediate_size + (
        experts * hidden_size if experts > 1 else 0
    )
    per_layer = attention + mlp + 2 * hidden_size
    return embeddings + num_layers * per_layer + hidden_size + extra


def _mllama_vision_parameters(vision: Mapping[str, Any], text_hidden: int) -> int:
    """Vision tower + projector of mllama: (Lv+Lg)*(4*Hv^2 + 2*Hv*Iv) + Ov*H."""

    def get(key: str) -> int:
        value = vision.get(key, _MLLAMA_VISION_DEFAULTS[key])
        return (
            int(value)
            if isinstance(value, int) and not isinstance(value, bool)
            else _MLLAMA_VISION_DEFAULTS[key]
        )

    hv, iv = get("hidden_size"), get("intermediate_size")
    layers = get("num_hidden_layers") + get("num_global_layers")
    return layers * (4 * hv * hv + 2 * hv * iv) + get("vision_output_dim") * text_hidden


def model_from_hf_config(
    config: Mapping[str, Any], origin: str, repo_id: str | None = None
) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` dict (for models not in a catalog).

    Reads num_hidden_layers, hidden_size, intermediate_size, num_attention_heads,
    num_key_value_heads (default: num_attention_heads), head_dim (explicit, else hidden/heads),
    vocab_size, max_position_embeddings, num_local_experts (or num_experts) /
    num_experts_per_tok, tie_word_embeddings, torch_dtype (or dtype) and
    quantization_config (quant_method -> TGI name; bits). Multimodal configs with a nested
    ``text_config`` (mllama) are read from it; mllama's cross-attention layers hold no per-token
    KV cache, so kv_layers = layers - len(cross_attention_layers). The parameter count is
    estimated from the shapes (``estimate_parameters``).
    """
    if not isinstance(config, Mapping):
        raise _error(
            origin,
            None,
            None,
            None,
            f"config.json must be a JSON object, got {type(config).__name__}.",
        )
    cfg_source = f"config.json ({origin})"
    sources: dict[str, str] = {}

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise _error(
            origin, None, None, "model_type", "missing from config.json (or not a string)."
        )

    repo = repo_id
    if repo is None:
        name_or_path = config.get("_name_or_path")
        if isinstance(name_or_path, str) and _REPO_RE.fullmatch(name_or_path):
            repo = name_or_path
    if repo is None or not _REPO_RE.fullmatch(repo):
        raise _error(
            origin,
            None,
            None,
            "repo_id",
            f"config.json does not say which Hugging Face repository it belongs to (got "
            f"{repo!r}); pass the repository id with --model-id ORG/NAME.",
        )
    alias = repo.split("/")[-1].lower()

    text_config = config.get("text_config")
    nested = isinstance(text_config, Mapping) and "num_hidden_layers" not in config
    text: Mapping[str, Any] = text_config if nested else config  # type: ignore[assignment]
    prefix = "text_config." if nested else ""
    defaults = _MLLAMA_TEXT_DEFAULTS if model_type == "mllama" else {}

    def read(key: str, spec_field: str, *, required: bool = True) -> Any:
        value = text.get(key)
        if value is None and key in defaults:
            value = defaults[key]
            sources[spec_field] = _MLLAMA_SOURCE
        elif value is not None:
            sources[spec_field] = cfg_source
        if value is None:
            if required:
                raise _error(origin, None, alias, prefix + key, "missing from config.json.")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _error(
                origin, None, alias, prefix + key, f"must be {_POSITIVE_INT}, got {value!r}."
            )
        return value

    num_layers = read("num_hidden_layers", "num_layers")
    hidden = read("hidden_size", "hidden_size")
    heads = read("num_attention_heads", "num_attention_heads")
    intermediate = read("intermediate_size", "intermediate_size")
    vocab = read("vocab_size", "vocab_size")
    max_pos = read("max_position_embeddings", "max_position_embeddings")
    kv_heads = read("num_key_value_heads", "num_key_value_heads", required=False)
    if kv_heads is None:
        kv_heads = heads
        sources["num_key_value_heads"] = f"{cfg_source}: absent, so equal to num_attention_heads"
    head_dim = read("head_dim", "head_dim", required=False)
    if head_dim is None:
        if hidden % heads:
            raise _error(
                origin,
                None,
                alias,
                prefix + "head_dim",
                f"missing, and hidden_size {hidden} is not divisible by "
                f"num_attention_heads {heads}.",
            )
        head_dim = hidden // heads
        sources["head_dim"] = f"{cfg_source}: hidden_size / num_attention_heads"

    num_experts = read("num_local_experts", "num_experts", required=False)
    if num_experts is None:
        num_experts = read("num_experts", "num_experts", required=False)
    experts_per_token = read("num_experts_per_tok", "experts_per_token", required=False)
    if num_experts is None:
        experts_per_token = None
        sources.pop("experts_per_token", None)

    tie = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    if isinstance(tie, bool):
        sources["tie_word_embeddings"] = cfg_source
    elif "tie_word_embeddings" in defaults:
        tie = defaults["tie_word_embeddings"]
        sources["tie_word_embeddings"] = _MLLAMA_SOURCE
    elif model_type in _TIED_BY_DEFAULT:
        tie = True
        sources["tie_word_embeddings"] = (
            f"{model_type} config class default (true); absent in config.json"
        )
    else:
        tie = None

    dtype = config.get("torch_dtype", config.get("dtype", text.get("torch_dtype")))
    torch_dtype = dtype if dtype in TORCH_DTYPES else None
    if torch_dtype is not None:
        sources["torch_dtype"] = cfg_source

    quantization, bits = _quantization_of(config.get("quantization_config"), origin, alias)
    if quantization is not None:
        sources["quantization"] = f"{cfg_source}: quantization_config"
        if bits is not None:
            sources["quantization_bits"] = f"{cfg_source}: quantization_config"

    kv_layers = None
    extra_parameters = 0
    vision_config = config.get("vision_config")
    vision = isinstance(vision_config, Mapping) or model_type == "mllama"
    if model_type == "mllama":
        cross = text.get("cross_attention_layers", _MLLAMA_TEXT_DEFAULTS["cross_attention_layers"])
        if not isinstance(cross, (list, tuple)) or len(cross) >= num_layers:
            raise _error(
                origin,
                None,
                alias,
                prefix + "cross_attention_layers",
                f"expected a list of layer indexes, got {cross!r}.",
            )
        kv_layers = num_layers - len(cross)
        sources["kv_layers"] = f"{cfg_source}: num_hidden_layers - len(cross_attention_layers)"
        extra_parameters = _mllama_vision_parameters(
            vision_config if isinstance(vision_config, Mapping) else {}, hidden
        )
    if vision:
        sources["vision"] = cfg_source

    parameters = estimate_parameters(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        num_experts=num_experts,
        tie_word_embeddings=bool(tie),
        extra=extra_parameters,
    )
    sources["parameters_b"] = (
        "estimated from config.json shapes (tgiops.core.catalog.estimate_parameters)"
    )
    sources["model_type"] = cfg_source
    sources["repo_id"] = cfg_source if repo_id is None else "given with the config"

    spec = ModelSpec(
        alias=alias,
        repo_id=repo,
        revision=None,
        gated=None,
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        num_experts=num_experts,
        experts_per_token=experts_per_token,
        tie_word_embeddings=tie,
        torch_dtype=torch_dtype,
        parameters_b=round(parameters / 1e9, 3),
        quantization=quantization,
        quantization_bits=bits,
        weight_bytes=None,
        kv_layers=kv_layers,
        vision=vision,
        sources=sources,
        origin=origin,
    )
    _check_consistency(spec, lambda fld, msg: _error(origin, None, alias, fld, msg))
    return spec


# Checkpoint formats TGI cannot load but another engine serves, named in the refusal.
# MXFP4 (gpt-oss): TGI 3.3.7 has neither a `gpt_oss` ModelType nor an mxfp4 --quantize value
# (server/text_generation_server/models/__init__.py, launcher/src/main.rs @v3.3.7); vLLM has
# GptOssForCausalLM (vllm/model_executor/models/gpt_oss.py, docs.vllm.ai v0.10.2 API) and a
# gpt-oss recipe (github.com/vllm-project/recipes OpenAI/GPT-OSS.md).
# Engine support for MXFP4 (tgiops/docs/gpus-and-instances.md "gpt-oss"): vLLM from 0.10.1
# (launched as the vllm==0.10.1+gptoss build, openai/openai-cookbook#1990); its recipe runs it
# on Hopper and Blackwell (H100, H200, B200) and on Ampere (A100) through Marlin MXFP4 MoE
# kernels (github.com/vllm-project/recipes OpenAI/GPT-OSS.md).
MXFP4_ENGINES = (
    "TGI has no gpt_oss model class and no MXFP4 kernels in any release up to 3.3.7, its last; "
    "serve it with vLLM >= 0.10.1 (`vllm serve openai/gpt-oss-20b`), which runs MXFP4 on "
    "Hopper/Blackwell (H100, H200, B200: p5, p5e/p5en) and on Ampere A100 through Marlin "
    "kernels (p4d/p4de)"
)
_OTHER_ENGINES = {"mxfp4": f" {MXFP4_ENGINES}."}


def _quantization_of(qc: Any, origin: str, alias: str) -> tuple[str | None, int | None]:
    """(TGI --quantize name, bits) from a config.json quantization_config."""
    if qc is None:
        return None, None
    if not isinstance(qc, Mapping):
        raise _error(origin, None, alias, "quantization_config", f"must be an object, got {qc!r}.")
    method = qc.get("quant_method")
    if not isinstance(method, str) or method.lower() not in QUANT_METHOD_TO_TGI:
        raise _error(
            origin,
            None,
            alias,
            "quantization_config.quant_method",
            f"{method!r} is not a quantization TGI detects from config.json "
            f"({', '.join(sorted(QUANT_METHOD_TO_TGI))})."
            + _OTHER_ENGINES.get(str(method).lower(), ""),
        )
    tgi_name = QUANT_METHOD_TO_TGI[method.lower()]
    bits: Any
    if tgi_name == "fp8":
        bits = 8
    elif tgi_name == "compressed-tensors":
        bits = _compressed_tensors_bits(qc.get("config_groups"))
    else:
        bits = qc.get("bits", qc.get("w_bit"))
    if isinstance(bits, float) and bits.is_integer():
        bits = int(bits)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        bits = None  # exl2's fractional bits per weight, or not stated
    return tgi_name, bits


def _compressed_tensors_bits(groups: Any) -> int | None:
    if not isinstance(groups, Mapping):
        return None
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if isinstance(weights, Mapping) and isinstance(weights.get("num_bits"), int):
            return int(weights["num_bits"])
    return None


def spec_fact_fields() -> Iterable[str]:
    """Names of the ModelSpec fields that are facts about the checkpoint (have sources)."""
    return tuple(
        f.name for f in fields(ModelSpec) if f.name not in ("alias", "sources", "origin", "notes")
    )
