"""Test support for the instance-side verbs (bootstrap, watch-interruption) on testbed hosts.

- :class:`ImdsStandIn`: a small instance metadata service (IMDSv2) on 127.0.0.1. It is the
  stand-in issue 6 asks for and follows AWS's documented behaviour, nothing more:

  * ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` between 1 and
    21600, else 400; it answers a token valid for that many seconds ("How Instance Metadata
    Service Version 2 works", AWS EC2 User Guide).
  * Every ``GET`` needs a valid ``X-aws-ec2-metadata-token`` (IMDSv2 required, the launch
    template setting tgiops documents), else 401.
  * ``meta-data/spot/instance-action`` is 404 until an interruption is scheduled, then
    ``{"action": ..., "time": ...}`` ("Spot Instance interruption notices");
    ``meta-data/events/recommendations/rebalance`` is 404 until a recommendation, then
    ``{"noticeTime": ...}`` ("EC2 instance rebalance recommendations").
  * ``meta-data/instance-id``, ``meta-data/placement/region``, ``user-data`` (404 when none),
    ``meta-data/tags/instance[/KEY]`` (404 unless tags in metadata are enabled) and the role
    credentials botocore reads (``meta-data/iam/security-credentials/[ROLE]``), so boto3 on
    the host authenticates like an instance role (moto accepts any key).

- :func:`install_tgiops`: puts tgiops where ``tgiops userdata`` expects it (``/opt/tgiops``,
  as if baked into the AMI): this checkout's source plus the runtime dependencies bootstrap
  needs, copied from this interpreter's site-packages (the hosts have python3 but no network).
- :class:`ReverseTunnels`: ``ssh -R`` so that a host reaches moto and the stand-in on this
  machine's loopback at fixed ports of its own loopback.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import io
import json
import re
import secrets
import subprocess
import tarfile
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TGIOPS_HOME = "/opt/tgiops"
# What `tgiops bootstrap`, `watch-interruption` and `monitor run` import on an instance (no SSH,
# no docker SDK).
# prometheus_client: `monitor run` parses the engines' /metrics (tgiops.core.metrics).
INSTANCE_REQUIREMENTS = ("boto3", "jinja2", "pyyaml", "requests", "tenacity", "prometheus_client")
MAX_TTL_S = 21600


class ImdsStandIn:
    """IMDSv2 on 127.0.0.1:PORT (see the module docstring). Thread-safe; a context manager."""

    def __init__(self, instance_id: str, region: str = "us-east-1") -> None:
        self.instance_id = instance_id
        self.region = region
        self.availability_zone = region + "a"
        self.user_data: str | None = None
        self.tags: dict[str, str] | None = None  # None: tags in metadata not enabled
        self.instance_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.role = "tgiops-instance-role"
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: str = "", kind: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                standin._note(self.command, self.path, status)

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token":
                    return self._reply(404, "Not Found")
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL_S:
                    return self._reply(400, "Bad Request")
                token = secrets.token_urlsafe(24)
                with standin._lock:
                    standin._tokens[token] = time.monotonic() + int(ttl)
                self._reply(200, token)

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with standin._lock:
                    valid = standin._tokens.get(token, 0) > time.monotonic()
                if not valid:
                    return self._reply(401, "Unauthorized")
                status, body, kind = standin._item(self.path)
                self._reply(status, body, kind)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ImdsStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _note(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def count(self, method: str, path: str, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for m, p, s in self.requests
                if m == method and p == path and (status is None or s == status)
            )

    def _item(self, path: str) -> tuple[int, str, str]:
        meta = "/latest/meta-data/"
        creds = meta + "iam/security-credentials/"
        fixed = {
            meta + "instance-id": self.instance_id,
            meta + "placement/region": self.region,
            meta + "placement/availability-zone": self.availability_zone,
            creds: self.role,
        }
        if path in fixed:
            return 200, fixed[path], "text/plain"
        if path == creds + self.role:
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600))
            return 200, json.dumps(_role_credentials(expires)), "application/json"
        documents = {
            meta + "spot/instance-action": self.instance_action,
            meta + "events/recommendations/rebalance": self.rebalance,
        }
        if path in documents:
            document = documents[path]
            if document is None:
                return 404, "Not Found", "text/plain"
            return 200, json.dumps(document), "application/json"
        if path == "/latest/user-data" and self.user_data is not None:
            return 200, self.user_data, "application/octet-stream"
        if self.tags is not None and path.startswith(meta + "tags/instance"):
            key = path[len(meta + "tags/instance") :].lstrip("/")
            if not key:
                return 200, "\n".join(sorted(self.tags)), "text/plain"
            if key in self.tags:
                return 200, self.tags[key], "text/plain"
        return 404, "Not Found", "text/plain"


def _role_credentials(expires: str) -> dict[str, str]:
    # The shape botocore's InstanceMetadataFetcher reads; moto accepts any key.
    return {
        "Code": "Success",
        "LastUpdated": expires,
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIATESTINSTANCEROLE",
        "SecretAccessKey": "testing-instance-role-secret",
        "Token": "testing-instance-role-session",
        "Expiration": expires,
    }


# -- tgiops on a host ------------------------------------------------------------------------


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match:
            names.append(match.group(0))
    return names


def _closure(roots: tuple[str, ...]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another Python (markers)
        seen[key] = dist
        todo += _requirement_names(dist)
    return list(seen.values())


@lru_cache(maxsize=1)
def tgiops_tarball() -> bytes:
    """tgiops' source, catalog and templates, plus its instance-side dependencies (tar.gz)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info

        for name in ("tgiops", "models.yaml", "unit_templates"):
            tar.add(ROOT / name, arcname=name, filter=keep)
        for dist in _closure(INSTANCE_REQUIREMENTS):
            for file in dist.files or []:
                if file.parts[0] == ".." or "__pycache__" in file.parts:
                    continue
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    tar.add(path, arcname=str(file), filter=keep)
    return buffer.getvalue()


WRAPPER = f"""#!/bin/sh
# tgiops as `tgiops userdata` expects it (tests copy the source and its dependencies here).
PYTHONPATH={TGIOPS_HOME}/lib exec /usr/bin/python3 -m tgiops.cli "$@"
"""


def ssh_input(host: Any, command: str, data: bytes, timeout_s: float = 300) -> None:
    """Run ``command`` on the host with ``data`` on its stdin (strict host keys)."""
    proc = subprocess.run(
        host.ssh_argv(command), input=data, capture_output=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"on {host.name}: `{command}` exited {proc.returncode}: {proc.stderr.decode()[-2000:]}"
        )


def install_tgiops(host: Any) -> str:
    """Install tgiops at /opt/tgiops on the host; returns the path of its `tgiops` command."""
    ssh_input(
        host,
        f"mkdir -p {TGIOPS_HOME}/lib {TGIOPS_HOME}/bin && tar -xzf - -C {TGIOPS_HOME}/lib",
        tgiops_tarball(),
    )
    ssh_input(
        host,
        f"cat > {TGIOPS_HOME}/bin/tgiops && chmod 755 {TGIOPS_HOME}/bin/tgiops",
        WRAPPER.encode(),
    )
    host.run(f"{TGIOPS_HOME}/bin/tgiops --version")
    return f"{TGIOPS_HOME}/bin/tgiops"


class ReverseTunnels:
    """``ssh -N -R HOSTPORT:127.0.0.1:LOCALPORT ...`` to a testbed host, until closed."""

    def __init__(self, host: Any, forwards: dict[int, int]) -> None:
        self.host = host
        self.forwards = forwards  # port on the host's loopback -> port on ours
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ReverseTunnels:
        argv = self.host.ssh_argv("true")[:-2]  # ssh -F CFG -o ... (no destination/command)
        argv += ["-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5"]
        for remote, local in self.forwards.items():
            argv += ["-R", f"127.0.0.1:{remote}:127.0.0.1:{local}"]
        argv.append(self.host.name)
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        remote = next(iter(self.forwards))
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise AssertionError(f"ssh -R to {self.host.name} failed: {err}")
            probe = self.host.run(
                f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{remote}' 2>/dev/null", check=False
            )
            if probe.returncode == 0:
                return self
            time.sleep(0.2)
        raise AssertionError(f"the reverse tunnels to {self.host.name} did not come up")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()


def wait_until(condition: Any, timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(interval_s)
