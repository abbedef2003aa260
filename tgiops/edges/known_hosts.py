"""Pinning a host key that tgiops verified through AWS (the instance published it as a tag, see
tgiops.core.stack.HOST_KEY_SNIPPET) in tgiops' own known_hosts file, atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tgiops.core.stack import pin_host_key


def default_path(state_dir: Path) -> Path:
    return state_dir / "known_hosts"


def pin(path: Path, names: Sequence[str], key: str) -> None:
    """Pin ``names`` to ``key`` in ``path`` (0600; created with its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = path.read_text() if path.exists() else ""
    text = pin_host_key(old, names, key)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".known_hosts.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
