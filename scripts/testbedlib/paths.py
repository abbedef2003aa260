"""Where the testbed keeps its cache (built once) and its state (one run of hosts).

- Cache (``TGIOPS_TESTBED_CACHE``, default /var/cache/tgiops-testbed): the debootstrap
  root filesystem and the saved emulator image tar. Kept by ``down --all``; delete the
  directory to force a cold build.
- State (``TGIOPS_TESTBED_STATE``, default /var/lib/tgiops-testbed): one directory per
  host (overlay upper/work/merged root, dockerd data/exec roots, socket, logs, record),
  the shared SSH files (client key, ssh_config, known_hosts), the moto record, and a lock.
  ``down --all`` removes it entirely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE_DIR = "/var/cache/tgiops-testbed"
DEFAULT_STATE_DIR = "/var/lib/tgiops-testbed"

# Every kernel object the testbed names starts with these, so stale ones can be found
# without touching anything else: netns "tgtb-NAME", root-side veth "tgtbN" (peer
# "tgtbNp" until it moves into the namespace), cgroups "tgtb-NAME" (nspawn) and
# "tgtbd-NAME" (the host's containers, via dockerd --cgroup-parent).
NETNS_PREFIX = "tgtb-"
LINK_PREFIX = "tgtb"
CGROUP_PREFIXES = ("tgtb-", "tgtbd-")

# Environment marker put on every process the testbed starts; children inherit it.
# Stale processes are found by reading /proc/PID/environ for these, then killed by PID.
OWNER_ENV = "TGIOPS_TESTBED_OWNER"
HOST_ENV = "TGIOPS_TESTBED_HOST"


@dataclass(frozen=True)
class TestbedPaths:
    """The two roots and the fixed layout under them."""

    cache_dir: Path
    state_dir: Path
    __test__ = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TestbedPaths:
        env = dict(os.environ) if env is None else env
        cache = env.get("TGIOPS_TESTBED_CACHE") or DEFAULT_CACHE_DIR
        state = env.get("TGIOPS_TESTBED_STATE") or DEFAULT_STATE_DIR
        return cls(Path(cache).absolute(), Path(state).absolute())

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    def host_dir(self, name: str) -> Path:
        return self.hosts_dir / name

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def identity(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"

    @property
    def moto_record(self) -> Path:
        return self.state_dir / "moto.json"

    @property
    def moto_log(self) -> Path:
        return self.state_dir / "moto.log"

    @property
    def baseline_record(self) -> Path:
        return self.state_dir / "baseline.json"

    @property
    def build_lock(self) -> Path:
        return self.cache_dir / "build.lock"
