"""Files tgiops ships (the model catalog, unit templates) and the user's own catalogs.

This is the one place that reads them from disk; the catalog module itself stays pure.
In a wheel they live in ``tgiops/_data/`` (see pyproject's force-include); in a source
checkout at the repository's top level, where the design card puts them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tgiops.core.catalog import ModelSpec, merge_catalogs
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.errors import CatalogError
from tgiops.core.hf_config import model_from_hf_config

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # tgiops/, beside _data/ in a wheel
CATALOG_ENV_VAR = "TGIOPS_MODELS"


def shipped_path(name: str) -> Path:
    """Path of a shipped file or folder: the wheel's copy first, then the source checkout's."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"tgiops is installed without its {name}; reinstall tgiops")


def load_catalog(
    extra_paths: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, ModelSpec]:
    """The built-in catalog, overlaid by $TGIOPS_MODELS (os.pathsep-separated) and --catalog."""
    builtin = shipped_path("models.yaml")
    catalog = parse_catalog(builtin.read_text(encoding="utf-8"), origin=str(builtin))
    environ = os.environ if environ is None else environ
    from_env = [p for p in environ.get(CATALOG_ENV_VAR, "").split(os.pathsep) if p]
    for path in [*from_env, *extra_paths]:
        catalog = merge_catalogs(catalog, parse_catalog(_read_user_file(path), origin=path))
    return catalog


def load_hf_config(path: str, repo_id: str | None = None) -> ModelSpec:
    """A model planned from a Hugging Face config.json (--model-config [--model-id])."""
    text = _read_user_file(path)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); pass the model's "
            "config.json from its Hugging Face repository"
        ) from exc
    if not isinstance(config, dict):
        raise CatalogError(
            f"{path}: a config.json holds a JSON object, not {type(config).__name__}"
        )
    return model_from_hf_config(config, origin=path, repo_id=repo_id)


def _read_user_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except IsADirectoryError as exc:
        raise CatalogError(f"cannot read {path}: it is a directory; give a file") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"cannot read {path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start]:#04x})"
        ) from exc
