"""The AWS double: one moto server on 127.0.0.1, shared by all hosts and tests.

Started by ``up`` (or the ``aws`` fixture) as ``moto_server -H 127.0.0.1 -p PORT`` with
``MOTO_EC2_LOAD_DEFAULT_AMIS=false`` (faster start); stopped by ``down --all``. Tests
reset it between tests with ``POST /moto-api/reset``.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testbedlib.errors import TestbedError
from testbedlib.paths import TestbedPaths
from testbedlib.processes import marker_env, pid_alive, read_marker, spawn_daemon, stop_pid

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def moto_command(port: int) -> list[str]:
    """moto_server from the repo's .venv (the moto the tests were set up with), else this
    interpreter's environment, else PATH. The .venv comes first: `scripts/testbed up` run by
    the system python3 would otherwise start the system's moto, an older one, for every test
    that shares the server (moto 5.2.1 answers a gzip-compressed PutMetricData with a 500)."""
    candidates = [
        REPO_ROOT / ".venv" / "bin" / "moto_server",
        Path(sys.executable).parent / "moto_server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return [str(candidate), "-H", HOST, "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", HOST, "-p", str(port)]
    raise TestbedError(
        "moto_server is missing: pip install 'moto[server]' (scripts/install-testbed-deps)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def read_moto(paths: TestbedPaths) -> tuple[int, str] | None:
    """(pid, endpoint) of our running moto server, or None."""
    try:
        record = json.loads(paths.moto_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid, endpoint = int(record["pid"]), str(record["endpoint"])
    marker = read_marker(pid)
    if not pid_alive(pid) or marker is None or marker[0] != str(paths.state_dir):
        return None
    if not _installation_present(pid):
        return None
    return pid, endpoint


def _installation_present(pid: int) -> bool:
    """Whether the moto_server a pid runs still has its files. The server is shared by every
    checkout on the machine: one started from a virtualenv that was deleted since (a removed
    git worktree) still answers its health URL but fails each service it has not imported
    yet with a 500, so it must be replaced, not reused."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(Path(arg.decode()).exists() for arg in argv[:2] if arg.startswith(b"/"))


def ensure_moto(paths: TestbedPaths, timeout_s: float = 60.0) -> str:
    """Return the endpoint of the shared moto server, starting it if needed."""
    running = read_moto(paths)
    if running and _answers(running[1]):
        return running[1]
    if running:
        stop_pid(running[0], timeout_s=5)
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    endpoint = f"http://{HOST}:{port}"
    env = marker_env(paths.state_dir, "__moto__")
    env["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    env.pop("AWS_ENDPOINT_URL", None)
    started = time.monotonic()
    pid = spawn_daemon(moto_command(port), paths.moto_log, env)
    paths.moto_record.write_text(json.dumps({"pid": pid, "endpoint": endpoint}), encoding="utf-8")
    while time.monotonic() - started < timeout_s:
        if _answers(endpoint):
            log.info(
                "moto server at %s (pid %d) in %.1f s", endpoint, pid, time.monotonic() - started
            )
            return endpoint
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    stop_pid(pid, timeout_s=5)
    paths.moto_record.unlink(missing_ok=True)
    tail = paths.moto_log.read_text(errors="replace")[-1500:] if paths.moto_log.exists() else ""
    raise TestbedError(f"moto server did not answer at {endpoint}: {tail}")


def stop_moto(paths: TestbedPaths) -> None:
    running = read_moto(paths)
    if running:
        stop_pid(running[0], timeout_s=10)
    paths.moto_record.unlink(missing_ok=True)


def reset_moto(endpoint: str) -> None:
    """Forget every AWS resource (POST /moto-api/reset)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        if reply.status != 200:
            raise TestbedError(f"moto reset answered {reply.status}")
