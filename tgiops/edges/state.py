"""The local record of deploys: which hosts to look at when `tgiops status` gets no target.

One JSON file, ``$XDG_STATE_HOME/tgiops/deployments.json`` (``~/.local/state/tgiops/...`` when
XDG_STATE_HOME is unset or not absolute, as the XDG Base Directory spec says). Deploy adds or
replaces one entry per (SSH destination, unit); undeploy removes it. The record holds where
and what, never a secret: no token, no env-file content, no API key.

Writes are atomic (temporary file + rename in the same directory) and serialised with an
advisory lock, so two deploys finishing together cannot lose each other's entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tgiops.core.errors import TgiopsError

log = logging.getLogger(__name__)

STATE_FILE_NAME = "deployments.json"
STATE_DIR_ENV_VAR = "XDG_STATE_HOME"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class KnownDeployment:
    """One deployed unit as tgiops last left it."""

    destination: str  # the SSH destination used (host, ssh_config alias or IP)
    unit: str
    label: str = ""  # what the user recognises: the instance id or the destination
    model_alias: str | None = None
    repo_id: str | None = None
    port: int | None = None
    instance_id: str | None = None
    region: str | None = None
    ssh_config_path: str | None = None
    deployed_at: str | None = None  # ISO 8601, UTC
    tgiops_version: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.destination, self.unit)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnownDeployment:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/tgiops``, or ``~/.local/state/tgiops``."""
    env = os.environ if environ is None else environ
    base = env.get(STATE_DIR_ENV_VAR, "")
    # The spec: a relative path in an XDG variable is invalid and must be ignored.
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "state")
    return Path(base) / "tgiops"


def state_file(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / STATE_FILE_NAME


def load_deployments(path: Path | None = None) -> list[KnownDeployment]:
    """Every recorded deployment, oldest first; [] when nothing was recorded yet."""
    path = path or state_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TgiopsError(f"cannot read the deploy record {path}: {exc}") from exc
    try:
        data = json.loads(text)
        entries = data["deployments"]
        return [KnownDeployment.from_dict(e) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise TgiopsError(
            f"the deploy record {path} is not valid ({exc}); move it away and deploy again, or "
            "give the target explicitly (--host, --instance, --name, --asg, --all)"
        ) from exc


def record_deployment(record: KnownDeployment, path: Path | None = None) -> None:
    """Add ``record``, replacing an older entry for the same destination and unit."""
    path = path or state_file()
    with _locked(path):
        kept = [r for r in load_deployments(path) if r.key != record.key]
        _write(path, [*kept, record])
    log.debug("recorded %s on %s in %s", record.unit, record.destination, path)


def forget_deployment(destination: str, unit: str, path: Path | None = None) -> bool:
    """Remove the entry for ``unit`` on ``destination``; True when there was one."""
    path = path or state_file()
    if not path.exists():
        return False
    with _locked(path):
        records = load_deployments(path)
        kept = [r for r in records if r.key != (destination, unit)]
        if len(kept) == len(records):
            return False
        _write(path, kept)
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, records: list[KnownDeployment]) -> None:
    payload = {"version": _FORMAT_VERSION, "deployments": [asdict(r) for r in records]}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
