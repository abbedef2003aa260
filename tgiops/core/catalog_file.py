"""The catalog's file format: ``models.yaml`` (shipped) and user catalogs (``--catalog FILE`` /
``TGIOPS_MODELS``) parsed and checked field by field into ``ModelSpec`` (pure: text in).

The caller reads the file and passes its text and a name for messages. Every error is a
``CatalogError`` (exit 2) that names where the text came from, the model alias, the field and,
where known, the line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import yaml

from tgiops.core.catalog import QUANT_METHOD_TO_TGI, QUANTIZE_VALUES, TORCH_DTYPES, ModelSpec
from tgiops.core.errors import CatalogError

SCHEMA_VERSION = 1

# --------------------------------------------------------------------------------------------
# Catalog entries: field kinds
# --------------------------------------------------------------------------------------------

# libyaml's parser when PyYAML has it: the same nodes and marks, ~10x faster on models.yaml
# (the pure-Python one took ~40 ms of every `tgiops plan`).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


POSITIVE_INT = "a positive whole number"


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


_MAX_PARAMETERS_B = 10_000.0  # a bigger value is almost surely a raw count, not billions


# TGI counts tokens of a batch in u32 (`max_batch_prefill_tokens: Option<u32>`,
# launcher/src/main.rs@v3.3.7 l.715; the launcher casts the context to it, l.2150): a context
# longer than that cannot be served, and is a typo or a unit mix-up.
MAX_CONTEXT_TOKENS = 2**32 - 1


def _where(origin: str, line: int | None) -> str:
    return f"{origin}, line {line}" if line else origin


def catalog_error(
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
        raise catalog_error(origin, None, None, None, _unreadable(exc)) from exc
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # libyaml's reader: while parsing
        raise catalog_error(origin, None, None, None, _unreadable(exc)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        alias, fld = _locate_by_line(text, line) if line else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise catalog_error(origin, line, alias, fld, f"not valid YAML: {detail}") from exc
    finally:
        loader.dispose()

    if not isinstance(data, Mapping):
        raise catalog_error(
            origin,
            None,
            None,
            None,
            "a catalog is a YAML mapping with `schema_version: 1` and `models:`; got "
            f"{type(data).__name__}.",
        )
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            raise catalog_error(
                origin,
                None,
                None,
                str(key),
                f"unknown top-level key; a catalog has only {', '.join(_TOP_LEVEL_KEYS)}.",
            )
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise catalog_error(
            origin,
            None,
            None,
            "schema_version",
            f"this tgiops reads schema_version {SCHEMA_VERSION}, got {version!r}.",
        )
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise catalog_error(
            origin,
            None,
            None,
            "models",
            "`models:` must be a non-empty mapping of alias -> model facts.",
        )

    alias_lines, field_lines = _lines_of(node)
    catalog: dict[str, ModelSpec] = {}
    for alias, entry in models.items():
        if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
            raise catalog_error(
                origin,
                alias_lines.get(str(alias)),
                str(alias),
                None,
                "an alias is letters, digits, '.', '_' and '-' (e.g. llama-3.1-8b).",
            )
        catalog[alias] = spec_from_entry(alias, entry, origin, alias_lines, field_lines)
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
        if not isinstance(value, str) or not REPO_RE.fullmatch(value):
            raise fail(f"must be a Hugging Face repository id like org/name, {got}.")
        return value
    if kind in ("bool", "opt_bool"):
        if not isinstance(value, bool):
            raise fail(f"must be true or false, {got}.")
        return value
    if kind in ("int", "opt_int"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(f"must be {POSITIVE_INT}, {got}.")
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


def spec_from_entry(
    alias: str,
    entry: Any,
    origin: str,
    alias_lines: Mapping[str, int],
    field_lines: Mapping[tuple[str, str], int],
) -> ModelSpec:
    def fail_for(fld: str | None) -> Any:
        line = field_lines.get((alias, fld)) if fld else alias_lines.get(alias)
        return lambda msg: catalog_error(origin, line or alias_lines.get(alias), alias, fld, msg)

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
    check_consistency(spec, lambda fld, msg: fail_for(fld)(msg))
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


def check_consistency(spec: ModelSpec, fail: Any) -> None:
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
    check_consistency(spec, lambda fld, msg: catalog_error(spec.origin, None, spec.alias, fld, msg))


def spec_fact_fields() -> Iterable[str]:
    """Names of the ModelSpec fields that are facts about the checkpoint (have sources)."""
    return tuple(
        f.name for f in fields(ModelSpec) if f.name not in ("alias", "sources", "origin", "notes")
    )
