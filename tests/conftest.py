"""Fixtures on the testbed (scripts/testbedlib): fake EC2 GPU hosts and the AWS double.

- ``testbed`` (session): a :class:`TestbedSession`. First use builds the cache (root
  filesystem + TGI emulator images, ~1.5 min cold, nothing when cached). At the end of
  the session it ends every host the session started; if the machine had no testbed
  state before the session, it runs ``down --all`` (machine left as found).
- ``gpu_host`` (function): a factory ``gpu_host("4xA10G", name=None, data_dir=None,
  tgi_load_seconds=None, fresh=False) -> GpuHost``. Without name, data_dir or fresh, the
  host is cached per (spec, tgi_load_seconds) for the whole session and shared by the
  tests asking for it (a test that changes it should clean up, or ask for fresh=True);
  otherwise the host is the test's own and is ended after the test.
- ``aws`` (function): the moto server (shared, started once) with AWS_ENDPOINT_URL,
  dummy keys and AWS_DEFAULT_REGION=us-east-1 in the environment, and no ~/.aws files;
  reset (``POST /moto-api/reset``) before and after each test.

Hosts are reached with ``ssh -F host.ssh_config -o StrictHostKeyChecking=yes NAME``;
``GpuHost.run`` does exactly that.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

from testbedlib.gpus import normalize_gpu_spec  # noqa: E402
from testbedlib.moto import reset_moto  # noqa: E402
from testbedlib.testbed import HostInfo, Testbed  # noqa: E402

AWS_REGION = "us-east-1"


@dataclass(frozen=True)
class GpuHost:
    """A booted testbed host: what `scripts/testbed up` printed, plus helpers."""

    info: HostInfo
    gpus: str
    data_dir: str | None
    testbed: Testbed

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def ssh_config(self) -> str:
        return self.info.ssh_config

    def ssh_argv(self, command: str, *, target: str | None = None) -> list[str]:
        return [
            "ssh",
            "-F",
            self.info.ssh_config,
            "-o",
            "StrictHostKeyChecking=yes",
            target or self.name,
            command,
        ]

    def run(
        self, command: str, *, check: bool = True, timeout_s: float = 120, target: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over ssh (strict host-key checking)."""
        result = subprocess.run(
            self.ssh_argv(command, target=target),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"on {self.name}: `{command}` exited {result.returncode}\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
            )
        return result

    def alias(self, alias: str) -> None:
        """Make ALIAS (e.g. a moto EC2 instance id) reach this host via the ssh_config."""
        self.testbed.alias(self.name, alias)


class TestbedSession:
    """The testbed as one pytest session uses it: tracks and ends what it started."""

    __test__ = False

    def __init__(self, testbed: Testbed) -> None:
        self.testbed = testbed
        status = testbed.status()
        self.hosts_before = {h["name"] for h in status["hosts"] if h["running"]}
        self.moto_before = status["aws_endpoint_url"] is not None
        # Nothing of ours was running (no state, or only a crashed run's leftovers): the
        # session ends with `down --all`, which leaves the machine as found.
        self.pristine = not self.hosts_before and not self.moto_before
        self.started: set[str] = set()
        testbed.add_lease(os.getpid())
        self.cached: dict[tuple[str, float | None], GpuHost] = {}
        self._counter = itertools.count(1)

    @property
    def paths(self):
        return self.testbed.paths

    def ensure_cache(self) -> None:
        self.testbed.ensure_cache()

    def aws_endpoint_url(self) -> str:
        return self.testbed.ensure_moto()

    def up(
        self,
        gpus: str = "1xA10G",
        *,
        name: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        tgi_load_seconds: float | None = None,
    ) -> GpuHost:
        name = name or f"e2e-{os.getpid() % 10000}-{next(self._counter)}"
        info = self.testbed.up(
            name, gpus, None if data_dir is None else str(data_dir), tgi_load_seconds
        )
        if name not in self.hosts_before:
            self.started.add(name)
        return GpuHost(
            info,
            normalize_gpu_spec(gpus),
            None if data_dir is None else str(data_dir),
            self.testbed,
        )

    def cached_host(self, gpus: str, tgi_load_seconds: float | None) -> GpuHost:
        spec = normalize_gpu_spec(gpus)
        key = (spec, tgi_load_seconds)
        if key not in self.cached:
            suffix = "" if tgi_load_seconds is None else f"-l{int(tgi_load_seconds * 1000)}"
            self.cached[key] = self.up(
                spec, name=f"e2e-{spec.lower()}{suffix}", tgi_load_seconds=tgi_load_seconds
            )
        return self.cached[key]

    def down(self, name: str) -> None:
        self.testbed.down(name)
        self.started.discard(name)
        self.cached = {k: v for k, v in self.cached.items() if v.name != name}

    def close(self) -> None:
        for name in sorted(self.started):
            self.testbed.down(name)
        self.testbed.drop_lease(os.getpid())
        if self.pristine:
            # The last user out leaves the machine as found; while another session (a live
            # lease) or anyone's host remains, everything stays up for them.
            self.testbed.down_all(only_if_idle=True)


@pytest.fixture(scope="session")
def _testbed_session() -> Iterator[TestbedSession]:
    session = TestbedSession(Testbed())
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def testbed(_testbed_session: TestbedSession) -> TestbedSession:
    """The session's testbed, with its cache built."""
    _testbed_session.ensure_cache()
    return _testbed_session


@pytest.fixture
def gpu_host(testbed: TestbedSession) -> Iterator[Callable[..., GpuHost]]:
    """Factory: gpu_host("4xA10G", name=None, data_dir=None, tgi_load_seconds=None, fresh=False)."""
    own: list[str] = []

    def make(
        gpus: str = "1xA10G",
        *,
        name: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        tgi_load_seconds: float | None = None,
        fresh: bool = False,
    ) -> GpuHost:
        if name is None and data_dir is None and not fresh:
            return testbed.cached_host(gpus, tgi_load_seconds)
        host = testbed.up(gpus, name=name, data_dir=data_dir, tgi_load_seconds=tgi_load_seconds)
        own.append(host.name)
        return host

    yield make
    for name in own:
        testbed.down(name)


@dataclass(frozen=True)
class AwsDouble:
    """The moto server as the code under test sees it (through the environment)."""

    endpoint_url: str
    region: str = AWS_REGION
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def reset(self) -> None:
        reset_moto(self.endpoint_url)


@pytest.fixture
def aws(
    _testbed_session: TestbedSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[AwsDouble]:
    """moto over HTTP, with the environment boto3 reads pointing at it; reset around tests."""
    double = AwsDouble(_testbed_session.aws_endpoint_url())
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", double.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", double.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", double.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", double.region)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    double.reset()
    yield double
    double.reset()
