"""Running commands, starting daemons, and ending them by PID.

Every daemon the testbed starts carries the environment marker (paths.OWNER_ENV,
paths.HOST_ENV), so a crashed run's processes can be found in /proc and ended one PID at
a time: nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from testbedlib.errors import TestbedError
from testbedlib.paths import HOST_ENV, OWNER_ENV

log = logging.getLogger(__name__)


def run_command(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout_s: float | None = 120,
    input_bytes: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command, capture its output; on failure raise TestbedError with the tail."""
    log.debug("run: %s", " ".join(cmd))
    try:
        result = subprocess.run(
            list(cmd),
            input=input_bytes,
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TestbedError(f"{cmd[0]} is not installed; run scripts/install-testbed-deps") from exc
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"`{' '.join(cmd)}` did not finish in {timeout_s} s") from exc
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).decode(errors="replace").strip()[-1500:]
        raise TestbedError(f"`{' '.join(cmd)}` exited {result.returncode}: {tail}")
    return result


def marker_env(owner: Path, host: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env[OWNER_ENV] = str(owner)
    env[HOST_ENV] = host
    return env


def spawn_daemon(cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> int:
    """Start a long-lived process detached from us (own session), output to log_path."""
    log.debug("spawn: %s", " ".join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file, open(os.devnull, "rb") as devnull:
        try:
            process = subprocess.Popen(
                list(cmd),
                stdin=devnull,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            raise TestbedError(
                f"{cmd[0]} is not installed; run scripts/install-testbed-deps"
            ) from exc
    return process.pid


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect the exit status if pid is our own child (fixtures start daemons in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def read_marker(pid: int) -> tuple[str, str] | None:
    """(owner, host) of a process the testbed started, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    owner = host = None
    for item in raw.split(b"\0"):
        if item.startswith(OWNER_ENV.encode() + b"="):
            owner = item.split(b"=", 1)[1].decode(errors="replace")
        elif item.startswith(HOST_ENV.encode() + b"="):
            host = item.split(b"=", 1)[1].decode(errors="replace")
    if owner is None:
        return None
    return owner, host or ""


def find_marked_pids(owner: Path, host: str | None = None) -> list[int]:
    """PIDs carrying our marker (for one host, or all of them when host is None)."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        marker = read_marker(int(entry))
        if marker is None or marker[0] != str(owner):
            continue
        if host is None or marker[1] == host:
            pids.append(int(entry))
    return sorted(pids)


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Send sig, wait up to timeout_s for the process to end, then SIGKILL it."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if wait_pid_gone(pid, timeout_s):
        return
    log.warning("pid %d ignored signal %d for %.0f s; killing it", pid, sig, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_pid_gone(pid, 5.0)


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each listed PID (already identified as ours) and wait for them."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_pid_gone(pid, 5.0)


def wait_pid_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)
