"""Run the tgiops CLI as a user would: a fresh interpreter, from the repository root.

Importable from every test folder (pytest puts tests/, where the root conftest.py lives, on
sys.path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_tgiops(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m tgiops.cli ARGS``; output captured as text, exit code left to the caller."""
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
        check=False,
    )
