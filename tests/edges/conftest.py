"""Real parts for the edge tests: an OpenSSH sshd on loopback, a moto server, the TGI emulator.

- sshd: per-session ed25519 host and client keys, config per docs/testbed.md ("SSH: a private
  sshd"); each test gets an isolated HOME, an ssh_config (alias ``testhost``) and a known_hosts.
- moto: ``moto_server -H 127.0.0.1 -p PORT`` once per session, reset before each test
  (``POST /moto-api/reset``); boto3 reaches it through AWS_ENDPOINT_URL, with dummy keys.
- TGI emulator (scripts/tgi_emulator): the one allowed double of the engine, started per test.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tgiops.edges.ssh import SSHTarget

REPO = Path(__file__).resolve().parents[2]
SSH_ALIAS = "testhost"


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 30.0) -> None:
    """Wait until something accepts on 127.0.0.1:port (fail with the log if the process died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s} s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def free_port() -> Callable[[], int]:
    return find_free_port


# -- sshd -------------------------------------------------------------------------------------


def _ensure_openssh() -> str:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not (os.path.exists(sshd) and shutil.which("ssh-keygen")):
        # .ci/run installs these; a bare developer machine gets them here (Debian).
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"],
            check=True,
            env=env,
        )
    return shutil.which("sshd") or "/usr/sbin/sshd"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tgiops-test", "-f", str(path)],
        check=True,
    )


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    directory: Path
    host_key_line: str  # "ssh-ed25519 AAAA..."
    host_fingerprint: str  # "SHA256:..."
    client_key: Path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    binary = _ensure_openssh()
    directory = tmp_path_factory.mktemp("sshd")
    host_key = directory / "ssh_host_ed25519_key"
    client_key = directory / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = directory / "authorized_keys"
    shutil.copy(client_key.with_suffix(".pub"), authorized)
    os.makedirs("/run/sshd", exist_ok=True)  # privilege-separation directory sshd insists on
    port = find_free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "AllowTcpForwarding yes\n"
        "Subsystem sftp internal-sftp\n"
    )
    subprocess.run([binary, "-t", "-f", str(config)], check=True)
    log_path = directory / "sshd.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, proc, "sshd")
        pub = host_key.with_suffix(".pub").read_text().split()
        yield Sshd(
            port=port,
            user=getpass.getuser(),
            directory=directory,
            host_key_line=f"{pub[0]} {pub[1]}",
            host_fingerprint=_fingerprint(host_key.with_suffix(".pub")),
            client_key=client_key,
        )
    finally:
        stop_process(proc)


@dataclass
class SshEnv:
    """An isolated HOME with an ssh_config (alias ``testhost``) and a known_hosts file."""

    sshd: Sshd
    home: Path
    ssh_config: Path
    known_hosts: Path
    work: Path  # a scratch directory: the "remote" host is this machine
    hosts: list = field(default_factory=list)

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.sshd.port}"

    def target(self, **overrides: object) -> SSHTarget:
        values: dict = {"destination": SSH_ALIAS, "ssh_config_path": str(self.ssh_config)}
        values.update(overrides)
        return SSHTarget(**values)

    def host(self, **overrides: object):
        from tgiops.edges.ssh import RemoteHost

        host = RemoteHost(self.target(**overrides))
        self.hosts.append(host)
        return host


@pytest.fixture
def ssh_env(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshEnv]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent: only the test key
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host {SSH_ALIAS}\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd.port}\n"
        f"    User {sshd.user}\n"
        f"    IdentityFile {sshd.client_key}\n"
        f"    UserKnownHostsFile {known_hosts}\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    env = SshEnv(sshd=sshd, home=home, ssh_config=ssh_config, known_hosts=known_hosts, work=work)
    yield env
    for host in env.hosts:
        host.close()


# -- moto -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moto:
    endpoint_url: str
    region: str = "us-east-1"

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    binary = shutil.which("moto_server")
    if binary is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "moto[server]"], check=True)
        binary = shutil.which("moto_server")
    assert binary, "moto_server not found after pip install 'moto[server]'"
    port = find_free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, "moto_server")
        yield Moto(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)


@pytest.fixture
def moto(moto_server: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """A freshly reset moto, reached by boto3's standard chain (env vars only)."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_server.region)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


# -- TGI emulator -----------------------------------------------------------------------------

EMULATOR_MODEL_ID = "tgiops-test/tiny-llama"
EMULATOR_GPUS = '[{"name":"NVIDIA A10G","memory_mib":23028,"compute_capability":"8.6"}]'


@dataclass
class Emulator:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def emulator_available() -> bool:
    return (REPO / "scripts" / "tgi_emulator" / "__main__.py").is_file()


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Start the TGI emulator on a free port: start_emulator(load_seconds=0.5, **env)."""
    started: list[Emulator] = []

    def start(*, load_seconds: float = 0.5, extra_args: tuple[str, ...] = (), **env: str):
        assert emulator_available(), "scripts/tgi_emulator is missing"
        port = find_free_port()
        hf_home = tmp_path / f"hf-{len(started)}"
        hf_home.mkdir()
        environ = dict(
            os.environ,
            PYTHONPATH=str(REPO / "scripts"),
            TGI_EMULATOR_GPUS=EMULATOR_GPUS,
            TGI_EMULATOR_LOAD_SECONDS=str(load_seconds),
            TGI_EMULATOR_VERSION="3.3.7",
            HF_HOME=str(hf_home),
            **env,
        )
        log_path = tmp_path / f"emulator-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tgi_emulator",
                    "--model-id",
                    EMULATOR_MODEL_ID,
                    "--port",
                    str(port),
                    "--hostname",
                    "127.0.0.1",
                    *extra_args,
                ],
                env=environ,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        emulator = Emulator(port=port, proc=proc, log_path=log_path)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        stop_process(emulator.proc)


def read_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
