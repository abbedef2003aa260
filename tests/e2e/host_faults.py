"""Faults done to a testbed host from this machine, shared by the e2e tests that cut connections."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from testbedlib.processes import pid_alive


def kill_sshd(host) -> None:
    """SIGKILL every sshd of the host (listener and sessions), by PID; systemd restarts the
    listener, so the host stays reachable but every SSH connection to it is cut.

    Returns once the listener accepts again: the caller's next connection must not race
    systemd's restart (RestartSec=100ms) and fail for a reason the test did not intend.
    """
    ns = f"tgtb-{host.name}"
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    killed = []
    for pid in (int(p) for p in pids.split()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "sshd":
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    assert killed, f"no sshd found in {ns}"
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in killed):
        assert time.monotonic() < deadline, f"sshd of {host.name} survived SIGKILL"
        time.sleep(0.01)
    wait_for_sshd(host, timeout_s=30)  # systemd (Restart=on-failure) brings the listener back


def wait_for_sshd(host, timeout_s: float) -> None:
    """Return once the host's sshd accepts a TCP connection from here (a bound, not a claim)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host.address, 22), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"sshd of {host.name} did not come back"
            time.sleep(0.05)
