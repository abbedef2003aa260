"""A fake Hugging Face Hub (hub/hub.json + hub/ORG--NAME/config.json) and the real cache layout.

Downloads write what `huggingface_hub` writes (docs/tgi.md §6):
`<cache>/models--ORG--NAME/{refs/<rev>, blobs/<sha256>, snapshots/<sha>/<file> -> ../../blobs/..}`.
Weight files are tiny but valid safetensors files whose `__metadata__.real_size` records the
size of the real shard, so a snapshot directory can be passed back as a local `--model-id`.

The cache directory is resolved like huggingface_hub's constants: HF_HUB_CACHE, else
HUGGINGFACE_HUB_CACHE (which `--huggingface-hub-cache` sets for the shards), else
$HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
Which files are weights and when the cache counts as complete follows
server/text_generation_server/utils/hub.py (`weight_hub_files`, `weight_files`,
`_get_cached_revision_directory`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

HUB_DIR = Path(__file__).resolve().parent / "hub"
HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class RepoInfo:
    repo_id: str
    gated: bool
    weight_bytes: int
    files: tuple[str, ...]
    sha: str
    config: dict

    @property
    def weight_files(self) -> tuple[str, ...]:
        # utils/hub.py _weight_hub_files_from_model_info: top-level *.safetensors only.
        return tuple(
            f
            for f in self.files
            if f.endswith(".safetensors")
            and "/" not in f
            and "arguments" not in f
            and "args" not in f
            and "training" not in f
        )


class HubError(Exception):
    """A huggingface_hub failure; `lines` is the traceback tail the download process prints."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[-1] if lines else "hub error")
        self.lines = lines


def load_repo(repo_id: str) -> RepoInfo | None:
    index = json.loads((HUB_DIR / "hub.json").read_text())
    entry = index["repos"].get(repo_id)
    if entry is None:
        return None
    config = json.loads((HUB_DIR / repo_id.replace("/", "--") / "config.json").read_text())
    return RepoInfo(
        repo_id=repo_id,
        gated=bool(entry["gated"]),
        weight_bytes=int(entry["weight_bytes"]),
        files=tuple(entry["files"]),
        sha=str(entry["sha"]),
        config=config,
    )


def list_repos() -> list[str]:
    return sorted(json.loads((HUB_DIR / "hub.json").read_text())["repos"])


def resolve_cache_dir(environ: dict[str, str], hub_cache_flag: str | None) -> Path:
    """The hub cache a TGI shard would use (launcher passes the flag as HUGGINGFACE_HUB_CACHE)."""
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    if hub_cache_flag:
        return Path(hub_cache_flag).expanduser()
    if environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser() / "hub"
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "~"), ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(cache_dir: Path, repo_id: str, revision: str | None) -> Path | None:
    """utils/hub.py `_get_cached_revision_directory`: resolve refs/<rev>, then snapshots/<sha>."""
    rev = revision or "main"
    folder = repo_folder(cache_dir, repo_id)
    if not folder.is_dir():
        return None
    ref = folder / "refs" / rev
    if ref.is_file():
        rev = ref.read_text()
    snapshots = folder / "snapshots"
    if not snapshots.is_dir() or rev not in os.listdir(snapshots):
        return None
    return snapshots / rev


def cached_weights_complete(
    cache_dir: Path, repo: RepoInfo | None, repo_id: str, revision: str | None
) -> bool:
    """utils.weight_files succeeds: every hub weight file (offline: any) is in the snapshot."""
    snapshot = cached_snapshot(cache_dir, repo_id, revision)
    if snapshot is None:
        return False
    if repo is None:
        return any(p.name.endswith(".safetensors") for p in snapshot.iterdir())
    return all((snapshot / f).is_file() for f in repo.weight_files) and bool(repo.weight_files)


def _request_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"


def _traceback_head() -> list[str]:
    # Shape of the download process's stderr; only the last lines carry information.
    return [
        "Traceback (most recent call last):",
        '  File "/opt/conda/bin/text-generation-server", line 8, in <module>',
        "    sys.exit(app())",
        '  File "/opt/conda/lib/python3.11/site-packages/text_generation_server/cli.py",'
        " line 214, in download_weights",
        "    utils.download_and_unload_peft(",
    ]


def gated_error(module: str, repo_id: str, revision: str | None) -> HubError:
    url = f"{HUB_URL}/{repo_id}/resolve/{revision or 'main'}/adapter_config.json"
    return HubError(
        [
            *_traceback_head(),
            f"{module}.GatedRepoError: 401 Client Error. (Request ID: {_request_id()})",
            "",
            f"Cannot access gated repo for url {url}.",
            f"Access to model {repo_id} is restricted. You must have access to it and be "
            "authenticated to access it. Please log in.",
        ]
    )


def invalid_token_error(module: str, repo_id: str) -> HubError:
    url = f"{HUB_URL}/api/models/{repo_id}"
    return HubError(
        [
            *_traceback_head(),
            f"{module}.HfHubHTTPError: 401 Client Error: Unauthorized for url: {url} "
            f"(Request ID: {_request_id()})",
            "",
            "Invalid credentials in Authorization header",
        ]
    )


def not_found_error(module: str, repo_id: str, revision: str | None) -> HubError:
    url = f"{HUB_URL}/{repo_id}/resolve/{revision or 'main'}/adapter_config.json"
    return HubError(
        [
            *_traceback_head(),
            f"{module}.RepositoryNotFoundError: 401 Client Error. (Request ID: {_request_id()})",
            "",
            f"Repository Not Found for url: {url}.",
            "Please make sure you specified the correct `repo_id` and `repo_type`.",
            "If you are trying to access a private or gated repo, make sure you are authenticated.",
            "Invalid username or password.",
        ]
    )


def revision_not_found_error(module: str, repo_id: str, revision: str) -> HubError:
    url = f"{HUB_URL}/api/models/{repo_id}/revision/{revision}"
    return HubError(
        [
            *_traceback_head(),
            f"{module}.RevisionNotFoundError: 404 Client Error. (Request ID: {_request_id()})",
            "",
            f"Revision Not Found for url: {url}.",
            f"Invalid rev id: {revision}",
        ]
    )


def offline_missing_error(module: str, repo_id: str, revision: str | None) -> HubError:
    return HubError(
        [
            *_traceback_head(),
            f"{module}.EntryNotFoundError: No .safetensors weights found for model {repo_id} "
            f"and revision {revision}.",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            f"{module}.LocalEntryNotFoundError: Cannot find the requested files in the disk "
            "cache and outgoing traffic has been disabled. To enable hf.co look-ups and "
            "downloads online, set 'local_files_only' to False.",
        ]
    )


def check_access(
    repo: RepoInfo | None,
    repo_id: str,
    revision: str | None,
    token: str | None,
    errors_module: str,
) -> None:
    """Raise HubError the way huggingface_hub fails for this repo / token / revision."""
    if token is not None and not token.startswith("hf_"):
        raise invalid_token_error(errors_module, repo_id)
    if repo is None:
        raise not_found_error(errors_module, repo_id, revision)
    if repo.gated and token is None:
        raise gated_error(errors_module, repo_id, revision)
    if revision not in (None, "main", repo.sha):
        raise revision_not_found_error(errors_module, repo_id, revision)


def _placeholder_safetensors(real_size: int) -> bytes:
    header = {
        "__metadata__": {"format": "pt", "tgi_emulator": "placeholder", "real_size": str(real_size)}
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _file_content(repo: RepoInfo, name: str) -> bytes:
    if name == "config.json":
        return (json.dumps(repo.config, indent=2) + "\n").encode()
    if name.endswith(".safetensors"):
        return _placeholder_safetensors(repo.weight_bytes // max(1, len(repo.weight_files)))
    if name == "model.safetensors.index.json":
        index = {
            "metadata": {"total_size": repo.weight_bytes},
            "weight_map": {},
            "tgi_emulator": "placeholder index",
        }
        return (json.dumps(index, indent=2) + "\n").encode()
    return b"{}\n"


def write_file(cache_dir: Path, repo: RepoInfo, revision: str | None, name: str) -> Path:
    """Store one file as huggingface_hub does: a blob plus a relative snapshot symlink."""
    folder = repo_folder(cache_dir, repo.repo_id)
    content = _file_content(repo, name)
    blob_name = hashlib.sha256(content).hexdigest()
    blob = folder / "blobs" / blob_name
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        tmp = blob.with_suffix(".incomplete")
        tmp.write_bytes(content)
        tmp.replace(blob)
    ref = folder / "refs" / (revision if revision not in (None, repo.sha) else "main")
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(repo.sha)
    target = folder / "snapshots" / repo.sha / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(os.path.relpath(blob, target.parent))
    return target


def download_repo(
    cache_dir: Path,
    repo: RepoInfo,
    revision: str | None,
    seconds: float,
    log_info,
    stop,
) -> bool:
    """Write every file, logging like utils/hub.py `download_weights`. False if stopped."""
    for name in repo.files:
        if not name.endswith(".safetensors"):
            write_file(cache_dir, repo, revision, name)
    weights = repo.weight_files
    per_file = seconds / max(1, len(weights))
    start = time.monotonic()
    for i, name in enumerate(weights):
        log_info(f"Download file: {name}")
        file_start = time.monotonic()
        if stop.wait(per_file):
            return False
        path = write_file(cache_dir, repo, revision, name)
        log_info(f"Downloaded {path} in {timedelta(seconds=int(time.monotonic() - file_start))}.")
        elapsed = timedelta(seconds=int(time.monotonic() - start))
        remaining = len(weights) - (i + 1)
        eta = (elapsed / (i + 1)) * remaining if remaining > 0 else 0
        log_info(f"Download: [{i + 1}/{len(weights)}] -- ETA: {eta}")
    return True


def read_local_model(path: Path) -> tuple[dict, int]:
    """(config, weight bytes) of a local model directory; placeholders report their real size."""
    config = json.loads((path / "config.json").read_text())
    total = 0
    for item in sorted(path.iterdir()):
        if not item.name.endswith(".safetensors"):
            continue
        size = item.stat().st_size
        try:
            with item.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                meta = json.loads(handle.read(min(length, 1 << 20))).get("__metadata__", {})
            if meta.get("tgi_emulator") == "placeholder":
                size = int(meta["real_size"])
        except (struct.error, ValueError, KeyError, AttributeError):
            pass
        total += size
    return config, total
