"""Kernel objects the testbed creates: mounts, network namespaces, veths, cgroups.

All of them outlive the processes that made them, so each has a "find ours" and a
"remove" function used both by ``down`` and by the stale-state sweep in ``up``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from pathlib import Path

from testbedlib.errors import TestbedError
from testbedlib.paths import CGROUP_PREFIXES, LINK_PREFIX, NETNS_PREFIX
from testbedlib.processes import run_command

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The host network: 10.231.IDX.0/24 per host; .1 is the outer (root namespace) end of
# the veth, .2 the host's eth0.
HOST_NETWORK = ipaddress.ip_network("10.231.0.0/16")
MAX_HOST_INDEX = 250


# --- mounts ---------------------------------------------------------------------------


def _unescape_mount_path(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, index = [], 0
    while index < len(field):
        if (
            field[index] == "\\"
            and index + 3 < len(field)
            and field[index + 1 : index + 4].isdigit()
        ):
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first."""
    prefix = str(path).rstrip("/")
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            mount_point = _unescape_mount_path(line.split()[4])
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(Path(mount_point))
    return sorted(set(found), key=lambda p: (len(p.parts), str(p)), reverse=True)


def unmount_tree(path: Path) -> None:
    """Unmount everything at or below path (deepest first); lazy as a last resort."""
    for _ in range(3):
        mounts = mounts_under(path)
        if not mounts:
            return
        for mount_point in mounts:
            result = run_command(["umount", str(mount_point)], check=False)
            if result.returncode != 0:
                log.debug("umount %s: %s", mount_point, result.stderr.decode(errors="replace"))
        time.sleep(0.1)
    for mount_point in mounts_under(path):
        run_command(["umount", "-l", str(mount_point)], check=False)
    if mounts_under(path):
        raise TestbedError(f"cannot unmount {mounts_under(path)}; is a process still using them?")


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    for directory in (upper, work, target):
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    run_command(["mount", "-t", "overlay", "overlay", "-o", options, str(target)])


def bind_mount(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    run_command(["mount", "--bind", str(source), str(target)])


# --- network namespaces and veths -----------------------------------------------------


def netns_name(host: str) -> str:
    return NETNS_PREFIX + host


def netns_path(host: str) -> Path:
    return NETNS_DIR / netns_name(host)


def host_addresses(index: int) -> tuple[str, str]:
    """(outer end, host end) addresses of host number index."""
    base = int(HOST_NETWORK.network_address) + index * 256
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def link_names(index: int) -> tuple[str, str]:
    return f"{LINK_PREFIX}{index}", f"{LINK_PREFIX}{index}p"


def list_netns(prefix: str = NETNS_PREFIX) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(prefix))


def list_links(prefix: str = LINK_PREFIX) -> list[str]:
    """Root-namespace links whose name is ours: LINK_PREFIX + digits (+ "p")."""
    names = []
    for name in os.listdir("/sys/class/net"):
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.rstrip("p").isdigit():
            names.append(name)
    return sorted(names)


def create_host_network(host: str, index: int) -> tuple[str, str]:
    """netns + veth pair: outer end in the root namespace, eth0 in the host's namespace."""
    outer_link, peer_link = link_names(index)
    outer_ip, host_ip = host_addresses(index)
    ns = netns_name(host)
    run_command(["ip", "netns", "add", ns])
    run_command(["ip", "link", "add", outer_link, "type", "veth", "peer", "name", peer_link])
    run_command(["ip", "link", "set", peer_link, "netns", ns])
    run_command(["ip", "-n", ns, "link", "set", peer_link, "name", "eth0"])
    run_command(["ip", "addr", "add", f"{outer_ip}/24", "dev", outer_link])
    run_command(["ip", "link", "set", outer_link, "up"])
    run_command(["ip", "-n", ns, "addr", "add", f"{host_ip}/24", "dev", "eth0"])
    run_command(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run_command(["ip", "-n", ns, "link", "set", "lo", "up"])
    run_command(["ip", "-n", ns, "route", "add", "default", "via", outer_ip])
    return outer_ip, host_ip


def netns_pids(ns: str) -> list[int]:
    result = run_command(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in result.stdout.decode().split() if p.isdigit()]


def delete_netns(ns: str) -> None:
    if (NETNS_DIR / ns).exists():
        run_command(["ip", "netns", "delete", ns], check=False)


def delete_link(name: str) -> None:
    if Path("/sys/class/net", name).exists():
        run_command(["ip", "link", "delete", name], check=False)


def wait_links_gone(names: list[str], timeout_s: float = 5.0) -> None:
    # Deleting a namespace removes its veth ends asynchronously.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(Path("/sys/class/net", n).exists() for n in names):
            return
        time.sleep(0.05)
    for name in names:
        delete_link(name)


# --- cgroups ---------------------------------------------------------------------------


def nspawn_cgroup_name(host: str) -> str:
    return CGROUP_PREFIXES[0] + host


def docker_cgroup_name(host: str) -> str:
    return CGROUP_PREFIXES[1] + host


def nspawn_cgroup_procs(host: str) -> list[Path]:
    """cgroup.procs files of the host's own cgroup in the hierarchies nspawn uses.

    Without its own cgroup every host's systemd-nspawn would put its container in the
    same "/payload" cgroup of the root (nspawn --keep-unit works below its own cgroup).
    """
    files = []
    for hierarchy in ("systemd", "unified"):
        directory = CGROUP_ROOT / hierarchy
        if directory.is_dir():
            group = directory / nspawn_cgroup_name(host)
            group.mkdir(exist_ok=True)
            files.append(group / "cgroup.procs")
    return files


def find_cgroups(names: set[str] | None = None, max_depth: int = 4) -> list[Path]:
    """Our cgroup directories (by exact name, or every one with our prefixes)."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        if not hierarchy.is_dir():
            continue
        stack = [(hierarchy, 0)]
        while stack:
            directory, depth = stack.pop()
            try:
                children = [c for c in directory.iterdir() if c.is_dir()]
            except OSError:
                continue
            for child in children:
                name = child.name
                ours = name in names if names is not None else name.startswith(CGROUP_PREFIXES)
                if ours:
                    found.append(child)
                elif depth + 1 < max_depth:
                    stack.append((child, depth + 1))
    return found


def remove_cgroups(groups: list[Path]) -> None:
    """rmdir each cgroup tree, children first (fails only while processes remain)."""
    for group in groups:
        for attempt in range(20):
            try:
                for root, dirs, _files in os.walk(group, topdown=False):
                    for directory in dirs:
                        os.rmdir(os.path.join(root, directory))
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 19:
                    log.warning("cannot remove cgroup %s: %s", group, exc)
                time.sleep(0.1)
