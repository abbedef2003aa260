"""A moto server of one test's own, for tests that must not share the testbed's.

The shared one is reset by every test that uses it, and it cannot enforce IAM policies; a
test that runs for minutes, or needs AccessDenied, starts its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def private_moto(workdir: Path, extra_env: Mapping[str, str] = {}) -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yield its URL; stop it."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = workdir / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=log,
            env={**os.environ, **extra_env},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(url + "/moto-api/data.json", timeout=1)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def point_boto3_at(url: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment boto3 reads, aimed at ``url`` with dummy keys (as conftest's ``aws``)."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    settings = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(workdir / "aws-none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-none"),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
