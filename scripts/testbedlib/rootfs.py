"""The host root filesystem: Debian bookworm from debootstrap, built once into the cache.

Hosts boot it read-only as the lower layer of an overlay, so they never share writes.
The same tree (plus the emulator) becomes the TGI emulator image (images.py).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from testbedlib.errors import TestbedError
from testbedlib.kernel import unmount_tree
from testbedlib.locking import file_lock
from testbedlib.paths import TestbedPaths
from testbedlib.processes import run_command

log = logging.getLogger(__name__)

SUITE = "bookworm"
# Bump when the recipe below changes: a new key means a new cache entry.
RECIPE_VERSION = 4
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "iproute2",
    "openssh-server",
    "ca-certificates",
    "curl",
    "sudo",
)
# An EC2-like login user: Ubuntu AMIs log in as `ubuntu` with passwordless sudo (uid 1000).
LOGIN_USER = "ubuntu"
LOGIN_UID = 1000
# Units that only add boot time or periodic jobs in a throw-away test host.
DISABLED_UNIT_LINKS = (
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
    "multi-user.target.wants/e2scrub_reap.service",
    "sysinit.target.wants/systemd-pstore.service",
)
# Trimmed from the tree: nothing in a test host reads them, and they make every image
# load slower (the tree is loaded into each host's dockerd).
TRIMMED_GLOBS = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/locale/*",
    "usr/share/info/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_*",
    "var/log/*.log",
    "var/log/apt/*",
)
SSHD_CONFIG = """\
# tgiops testbed: key-only root login with the per-host ed25519 key.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""
COMPLETE_MARKER = ".testbed-rootfs-complete"


def find_mirror(sources_dirs: tuple[str, ...] = ("/etc/apt/sources.list.d",)) -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or one-line .list)."""
    candidates = []
    for directory in sources_dirs:
        candidates += sorted(glob.glob(f"{directory}/*.sources"))
        candidates += sorted(glob.glob(f"{directory}/*.list"))
    candidates.append("/etc/apt/sources.list")
    for path in candidates:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        mirror = _mirror_from_sources(text)
        if mirror:
            return mirror
    return "http://deb.debian.org/debian"


def _mirror_from_sources(text: str) -> str | None:
    # deb822 stanzas: URIs + Suites with the plain suite (not -security).
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and SUITE in fields.get("suites", "").split():
            uri = fields.get("uris", "").split()
            if uri and uri[0].startswith("http"):
                return uri[0]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb" and SUITE in parts:
            uris = [p for p in parts[1:] if p.startswith("http")]
            if uris and parts[parts.index(uris[0]) + 1] == SUITE:
                return uris[0]
    return None


def rootfs_key() -> str:
    recipe = f"{RECIPE_VERSION}|{SUITE}|{','.join(PACKAGES)}|{SSHD_CONFIG}|{DISABLED_UNIT_LINKS}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def rootfs_dir(paths: TestbedPaths) -> Path:
    return paths.cache_dir / f"rootfs-{rootfs_key()}"


def rootfs_ready(paths: TestbedPaths) -> bool:
    return (rootfs_dir(paths) / COMPLETE_MARKER).exists()


def ensure_rootfs(paths: TestbedPaths) -> Path:
    """Return the cached root filesystem, building it first if needed (~1 min)."""
    final = rootfs_dir(paths)
    if (final / COMPLETE_MARKER).exists():
        return final
    paths.cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(paths.build_lock):
        if (final / COMPLETE_MARKER).exists():
            return final
        building = final.with_name(final.name + ".building")
        _remove_tree(building)
        _remove_tree(final)
        mirror = find_mirror()
        log.info(
            "building the host root filesystem: debootstrap %s from %s (about a minute)",
            SUITE,
            mirror,
        )
        started = time.monotonic()
        log_path = paths.cache_dir / "debootstrap.log"
        result = run_command(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(building),
                mirror,
            ],
            check=False,
            timeout_s=900,
        )
        log_path.write_bytes(result.stdout + result.stderr)
        if result.returncode != 0:
            _remove_tree(building)
            tail = (result.stderr or result.stdout).decode(errors="replace")[-1500:]
            raise TestbedError(f"debootstrap failed (log: {log_path}): {tail}")
        customize_rootfs(building)
        (building / COMPLETE_MARKER).write_text(f"{mirror}\n", encoding="utf-8")
        building.rename(final)
        log.info("root filesystem ready in %.1f s: %s", time.monotonic() - started, final)
        _prune_old(paths, final)
    return final


def customize_rootfs(root: Path) -> None:
    """Make the debootstrap tree a testbed host base (per-host parts come at boot)."""
    # Host keys are generated per host at `up`; none may be shared through the base.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/testbed.conf").write_text(SSHD_CONFIG, encoding="utf-8")
    # An empty machine-id: each host writes its own into its overlay.
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    for link in DISABLED_UNIT_LINKS:
        (root / "etc/systemd/system" / link).unlink(missing_ok=True)
    for pattern in TRIMMED_GLOBS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    (root / "var/lib/tgiops/data").mkdir(parents=True, exist_ok=True)
    run_command(
        [
            "chroot",
            str(root),
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--uid",
            str(LOGIN_UID),
            "--user-group",
            LOGIN_USER,
        ],
        timeout_s=60,
    )
    sudoers = root / "etc/sudoers.d" / LOGIN_USER
    sudoers.write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n", encoding="ascii")
    os.chmod(sudoers, 0o440)


def _remove_tree(path: Path) -> None:
    if path.exists():
        unmount_tree(path)  # a crashed debootstrap leaves proc/sys mounted in the tree
        shutil.rmtree(path)


def _prune_old(paths: TestbedPaths, keep: Path) -> None:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        mounts = handle.read()
    for old in paths.cache_dir.glob("rootfs-*"):
        in_use = f"lowerdir={old}," in mounts or f"lowerdir={old} " in mounts
        if old != keep and old.is_dir() and not old.name.endswith(".building") and not in_use:
            log.info("removing the outdated root filesystem %s", old)
            _remove_tree(old)
