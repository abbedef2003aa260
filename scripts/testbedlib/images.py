"""The engine emulator images (the TGI and vLLM test doubles), built once and cached.

For every version in ``tgi_emulator.versions.SUPPORTED_VERSIONS`` the image
``ghcr.io/huggingface/text-generation-inference:VERSION`` is the host root filesystem
plus the emulator package at /opt/tgi_emulator and its entrypoint at /tgi-entrypoint.sh
(TGI's own entrypoint path), with ``IMAGE_ENV[VERSION]`` and ``PYTHONPATH=/opt`` baked in:
``tar -C ROOTFS -c . | docker import -c 'ENV ..' -c 'ENTRYPOINT ["/tgi-entrypoint.sh"]'``.
For every tag of ``vllm_emulator.versions.image_tags()`` (``vX.Y.Z``, and ``vX.Y.Z-cu129``
from v0.20) the image ``vllm/vllm-openai:TAG`` is the same tree, which also holds
/opt/vllm_emulator and its ``vllm`` command at /usr/local/bin/vllm, with
``image_env(TAG)`` and vLLM's entrypoint ``["vllm", "serve"]``.
No registry is reachable, so images are imported into a throw-away builder dockerd,
``docker save``d to one tar (one shared layer), and ``docker load``ed into each host.
The cache key covers both emulators' files, so editing either rebuilds the images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbedlib.dockerd import DockerDaemon, docker_client
from testbedlib.errors import TestbedError
from testbedlib.kernel import unmount_tree
from testbedlib.locking import file_lock
from testbedlib.paths import TestbedPaths
from testbedlib.processes import marker_env, run_command

log = logging.getLogger(__name__)

RECIPE_VERSION = 3
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference"
ENTRYPOINT = "/tgi-entrypoint.sh"
VLLM_COMMAND = "/usr/local/bin/vllm"
VLLM_ENTRYPOINT = '["vllm", "serve"]'
SCRIPTS_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ImageSet:
    """A saved tar of the emulator images and the tags in it."""

    tar_path: Path
    tags: tuple[str, ...]


def emulator_dir() -> Path:
    override = os.environ.get("TGIOPS_TESTBED_EMULATOR_DIR")
    return Path(override) if override else SCRIPTS_DIR / "tgi_emulator"


def vllm_emulator_dir() -> Path:
    override = os.environ.get("TGIOPS_TESTBED_VLLM_EMULATOR_DIR")
    return Path(override) if override else SCRIPTS_DIR / "vllm_emulator"


def load_vllm_tags(package_dir: Path) -> dict[str, dict[str, str]]:
    """{image reference: baked environment} from vllm_emulator.versions, in a fresh interpreter."""
    tags: dict[str, dict[str, str]] = _read_versions(
        package_dir,
        "vllm_emulator.versions",
        "{t.reference: v.image_env(t) for t in v.image_tags()}",
    )
    return tags


def load_emulator_versions(package_dir: Path) -> tuple[tuple[str, ...], dict[str, dict]]:
    """SUPPORTED_VERSIONS and IMAGE_ENV from the emulator, read in a fresh interpreter."""
    data = _read_versions(
        package_dir,
        "tgi_emulator.versions",
        "{'versions': list(v.SUPPORTED_VERSIONS), "
        "'env': {k: dict(e) for k, e in v.IMAGE_ENV.items()}}",
    )
    versions = tuple(data["versions"])
    missing = [v for v in versions if v not in data["env"]]
    if missing:
        raise TestbedError(f"tgi_emulator.versions.IMAGE_ENV lacks {missing}")
    return versions, data["env"]


def _read_versions(package_dir: Path, module: str, expression: str) -> Any:
    """``expression`` (JSON-able, over ``module`` imported as ``v``) evaluated in a fresh
    interpreter with ``package_dir``'s parent on the path: the emulator copy the images are
    built from."""
    code = f"import json, {module} as v; print(json.dumps({expression}))"
    env = dict(os.environ, PYTHONPATH=str(package_dir.parent), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, check=False, timeout=60
    )
    if result.returncode != 0:
        raise TestbedError(
            f"cannot read {module} from {package_dir}: "
            f"{result.stderr.decode(errors='replace')[-800:]}"
        )
    return json.loads(result.stdout)


def _package_files(package_dir: Path) -> list[Path]:
    files = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if "__pycache__" in relative.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        if relative.parts[0] in ("tests", "test"):
            continue
        files.append(path)
    return files


def images_key(
    rootfs: Path, package_dir: Path, versions, image_env, vllm_dir: Path, vllm_tags
) -> str:
    """One key over both emulators' files and images (either changing rebuilds the tar)."""
    digest = hashlib.sha256()
    digest.update(f"{RECIPE_VERSION}|{rootfs.name}|{versions}|{sorted_env(image_env)}".encode())
    digest.update(f"|{sorted_env(vllm_tags)}".encode())
    for directory in (package_dir, vllm_dir):
        digest.update(f"|{directory.name}|".encode())
        for path in _package_files(directory):
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def sorted_env(image_env: dict[str, dict]) -> list:
    return [(v, sorted(e.items())) for v, e in sorted(image_env.items())]


def dockerfile_env(key: str, value: str) -> str:
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'ENV {key}="{escaped}"'


def ensure_images(paths: TestbedPaths, rootfs: Path) -> ImageSet:
    """Return the saved emulator images, building them first if needed (~15 s)."""
    package_dir = emulator_dir()
    if not (package_dir / "__init__.py").exists():
        raise TestbedError(
            f"the TGI emulator package is missing at {package_dir} (scripts/tgi_emulator); "
            "set TGIOPS_TESTBED_EMULATOR_DIR to use another copy"
        )
    entrypoint = package_dir / "entrypoint.sh"
    if not entrypoint.exists():
        raise TestbedError(f"{entrypoint} is missing: the image needs it as {ENTRYPOINT}")
    vllm_dir = vllm_emulator_dir()
    if not (vllm_dir / "__init__.py").exists() or not (vllm_dir / "vllm").exists():
        raise TestbedError(
            f"the vLLM emulator package is missing at {vllm_dir} (scripts/vllm_emulator, with "
            "its `vllm` command); set TGIOPS_TESTBED_VLLM_EMULATOR_DIR to use another copy"
        )
    versions, image_env = load_emulator_versions(package_dir)
    vllm_tags = load_vllm_tags(vllm_dir)
    key = images_key(rootfs, package_dir, versions, image_env, vllm_dir, vllm_tags)
    tar_path = paths.cache_dir / f"images-{key}.tar"
    tags = tuple(f"{TGI_IMAGE}:{v}" for v in versions) + tuple(vllm_tags)
    if tar_path.exists():
        return ImageSet(tar_path, tags)
    with file_lock(paths.build_lock):
        if tar_path.exists():
            return ImageSet(tar_path, tags)
        started = time.monotonic()
        log.info("building the emulator images %s", ", ".join(tags))
        _build(
            paths,
            rootfs,
            package_dir,
            entrypoint,
            versions,
            image_env,
            tar_path,
            tags,
            vllm_dir,
            vllm_tags,
        )
        log.info("emulator images ready in %.1f s: %s", time.monotonic() - started, tar_path)
        _prune(paths.cache_dir, keep=tar_path)
    return ImageSet(tar_path, tags)


KEEP_OTHER_TARS = 3


def _prune(cache_dir: Path, keep: Path) -> None:
    """Drop all but the newest few other image tars.

    Worktrees of the same repository share the cache and may carry different emulator
    versions; deleting every other tar would make them rebuild in turn.
    """
    others = sorted(
        (p for p in cache_dir.glob("images-*.tar") if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[KEEP_OTHER_TARS:]:
        old.unlink(missing_ok=True)


def _build(
    paths, rootfs, package_dir, entrypoint, versions, image_env, tar_path, tags, vllm_dir, vllm_tags
) -> None:
    work = paths.cache_dir / "image-build"
    if work.exists():
        unmount_tree(work)
        shutil.rmtree(work)
    stage = work / "stage"
    (stage / "opt").mkdir(parents=True)
    destination = stage / "opt" / "tgi_emulator"
    destination.mkdir()
    for path in _package_files(package_dir):
        target = destination / path.relative_to(package_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shutil.copy2(entrypoint, stage / ENTRYPOINT.lstrip("/"))
    os.chmod(stage / ENTRYPOINT.lstrip("/"), 0o755)
    vllm_destination = stage / "opt" / "vllm_emulator"
    for path in _package_files(vllm_dir):
        target = vllm_destination / path.relative_to(vllm_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    command = stage / VLLM_COMMAND.lstrip("/")
    command.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(vllm_dir / "vllm", command)
    os.chmod(command, 0o755)
    rootfs_tar = work / "rootfs.tar"
    run_command(
        [
            "tar",
            "--numeric-owner",
            "-C",
            str(rootfs),
            "--exclude=./.testbed-rootfs-complete",
            "-cf",
            str(rootfs_tar),
            ".",
            "-C",
            str(stage),
            "opt/tgi_emulator",
            "opt/vllm_emulator",
            ENTRYPOINT.lstrip("/"),
            VLLM_COMMAND.lstrip("/"),
        ],
        timeout_s=300,
    )
    daemon = DockerDaemon(
        directory=work / "dockerd",
        socket=work / "dockerd" / "docker.sock",
        netns=None,
        bip=None,
        cgroup_parent=None,
    )
    pid = daemon.start(marker_env(paths.state_dir, "__image_builder__"))
    try:
        daemon.wait_ready(timeout_s=60, pid=pid)
        client = docker_client()
        for version, tag in zip(versions, tags[: len(versions)], strict=True):
            changes = [dockerfile_env(k, v) for k, v in sorted(image_env[version].items())]
            changes.append(dockerfile_env("PYTHONPATH", "/opt"))
            changes.append(f'ENTRYPOINT ["{ENTRYPOINT}"]')
            cmd = [client, "-H", daemon.url, "import"]
            for change in changes:
                cmd += ["-c", change]
            run_command([*cmd, str(rootfs_tar), tag], timeout_s=300)
        for reference, env in vllm_tags.items():
            changes = [dockerfile_env(k, v) for k, v in sorted(env.items())]
            changes.append(dockerfile_env("PYTHONPATH", "/opt"))
            changes.append(f"ENTRYPOINT {VLLM_ENTRYPOINT}")
            cmd = [client, "-H", daemon.url, "import"]
            for change in changes:
                cmd += ["-c", change]
            run_command([*cmd, str(rootfs_tar), reference], timeout_s=300)
        partial = tar_path.with_name(tar_path.name + ".partial")
        run_command([client, "-H", daemon.url, "save", "-o", str(partial), *tags], timeout_s=300)
        partial.rename(tar_path)
    finally:
        daemon.stop(pid)
        unmount_tree(work)
        shutil.rmtree(work, ignore_errors=True)
