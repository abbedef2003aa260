"""Compare an output with its pinned copy under tests/data/golden/ (or rewrite the copy).

``TGIOPS_UPDATE_GOLDEN=1`` rewrites instead of comparing; a change meant to alter what users see
regenerates in its own commit, so the golden diff shows exactly what changed."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TGIOPS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with TGIOPS_UPDATE_GOLDEN=1 once"
    assert actual == path.read_text(), f"output differs from {path}"
