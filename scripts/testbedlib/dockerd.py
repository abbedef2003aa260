"""A private dockerd: one per host (in the host's network namespace) and one for builds.

Each host's engine is a real dockerd from Debian's docker.io, started on the outer
machine as ``nsenter --net=/run/netns/tgtb-NAME dockerd ...`` (``ip netns exec`` would
remount /sys and hide the cgroups dockerd needs). Its flags keep it off the machine's
own networking and files:

- ``--iptables=false --ip-forward=false --ip-masq=false``: no firewall or sysctl changes;
  ``-p 127.0.0.1:8080:80`` still works through docker-proxy inside the namespace.
- ``--bip 192.168.231.1/24``: its docker0 lives in the host's namespace and dies with it.
- ``--data-root/--exec-root/-H unix://SOCK/--pidfile/--config-file`` under the host's
  state directory (the config file also moves the daemon key off /etc/docker).
- ``--cgroup-parent tgtbd-NAME``: the host's containers in cgroups the testbed can find.
- ``--add-runtime nvidia=<runc>``: ``docker info`` lists an "nvidia" runtime, as on a GPU
  AMI with the NVIDIA Container Toolkit; it is plain runc, there is no GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from testbedlib.errors import TestbedError
from testbedlib.processes import pid_alive, spawn_daemon, stop_pid

log = logging.getLogger(__name__)


def docker_client() -> str:
    """The docker CLI of Debian's docker.io (its API matches the daemon)."""
    for candidate in ("/usr/bin/docker",):
        if Path(candidate).exists():
            return candidate
    found = shutil.which("docker")
    if not found:
        raise TestbedError("the docker client is missing; run scripts/install-testbed-deps")
    return found


def dockerd_binary() -> str:
    found = shutil.which("dockerd") or (
        "/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None
    )
    if not found:
        raise TestbedError("dockerd is missing; run scripts/install-testbed-deps")
    return found


def runc_binary() -> str:
    for candidate in ("/usr/sbin/runc", "/usr/bin/runc"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("runc") or "/usr/sbin/runc"


@dataclass(frozen=True)
class DockerDaemon:
    """Where one dockerd keeps its files, and how it is networked."""

    directory: Path
    socket: Path
    netns: Path | None
    bip: str | None
    cgroup_parent: str | None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.directory / "dockerd.pid"

    @property
    def log_path(self) -> Path:
        return self.directory / "dockerd.log"

    def command(self) -> list[str]:
        config = self.directory / "daemon.json"
        cmd = []
        if self.netns is not None:
            cmd += ["nsenter", f"--net={self.netns}"]
        cmd += [
            dockerd_binary(),
            f"--config-file={config}",
            f"--data-root={self.directory / 'data'}",
            f"--exec-root={self.directory / 'exec'}",
            f"--host={self.url}",
            f"--pidfile={self.pidfile}",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            "--shutdown-timeout=5",
            f"--add-runtime=nvidia={runc_binary()}",
        ]
        cmd.append(f"--bip={self.bip}" if self.bip else "--bridge=none")
        if self.cgroup_parent:
            cmd.append(f"--cgroup-parent={self.cgroup_parent}")
        return cmd

    def start(self, env: dict[str, str]) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        # dockerd writes its identity key to /etc/docker/key.json unless told otherwise;
        # 20.10 only takes that path from the config file.
        config = {"deprecated-key-path": str(self.directory / "key.json")}
        (self.directory / "daemon.json").write_text(json.dumps(config), encoding="utf-8")
        self.socket.unlink(missing_ok=True)
        return spawn_daemon(self.command(), self.log_path, env)

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def answers(self) -> bool:
        """True when the API answers /_ping on the socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply

    def wait_ready(self, timeout_s: float = 30.0, pid: int | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answers():
                return
            if pid is not None and not pid_alive(pid):
                break
            time.sleep(0.05)
        tail = ""
        if self.log_path.exists():
            tail = self.log_path.read_text(errors="replace")[-1500:]
        raise TestbedError(f"dockerd at {self.socket} did not start: {tail}")

    def stop(self, pid: int | None = None) -> None:
        pid = pid or self.pid()
        if pid:
            stop_pid(pid, timeout_s=20)
