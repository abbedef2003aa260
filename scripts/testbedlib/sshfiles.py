"""SSH material of the testbed: one client key, per-host host keys, ssh_config, known_hosts.

The ssh_config maps each host name and its aliases (e.g. an EC2 instance id from moto)
to the host's address, as root, with the testbed's identity and a strict known_hosts, so
``ssh -F SSH_CONFIG -o StrictHostKeyChecking=yes NAME true`` works and nothing is learned
or trusted on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from testbedlib.paths import TestbedPaths
from testbedlib.processes import run_command


@dataclass(frozen=True)
class SshEntry:
    name: str
    aliases: tuple[str, ...]
    address: str
    host_key: str  # "ssh-ed25519 AAAA..."


def ensure_client_key(paths: TestbedPaths) -> Path:
    paths.ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.ssh_dir, 0o700)
    if not paths.identity.exists():
        run_command(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "tgiops-testbed",
                "-f",
                str(paths.identity),
            ]
        )
    return paths.identity


def generate_host_key(ssh_etc: Path, comment: str) -> str:
    """Write /etc/ssh/ssh_host_ed25519_key{,.pub} under ssh_etc; return "type key"."""
    ssh_etc.mkdir(parents=True, exist_ok=True)
    key = ssh_etc / "ssh_host_ed25519_key"
    for path in (key, key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    key_type, key_data = key.with_suffix(".pub").read_text(encoding="ascii").split()[:2]
    return f"{key_type} {key_data}"


def render_ssh_config(paths: TestbedPaths, entries: Iterable[SshEntry]) -> str:
    lines = ["# Written by scripts/testbed; regenerated on every up/down/alias."]
    for entry in sorted(entries, key=lambda e: e.name):
        lines += [
            "",
            "Host " + " ".join((entry.name, *entry.aliases)),
            f"    HostName {entry.address}",
            "    User root",
            "    Port 22",
            f"    IdentityFile {paths.identity}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {paths.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    CheckHostIP no",
            "    BatchMode yes",
            "    ConnectTimeout 10",
            "    LogLevel ERROR",
        ]
    return "\n".join(lines) + "\n"


def render_known_hosts(entries: Iterable[SshEntry]) -> str:
    # One line per host, keyed by its address: ssh (and paramiko, given the ssh_config's
    # HostName) checks the key of the address it connects to, whatever name was typed.
    lines = [f"{entry.address} {entry.host_key}" for entry in sorted(entries, key=lambda e: e.name)]
    return "".join(line + "\n" for line in lines)


def write_ssh_files(paths: TestbedPaths, entries: list[SshEntry]) -> None:
    ensure_client_key(paths)
    _write_atomically(paths.ssh_config, render_ssh_config(paths, entries))
    _write_atomically(paths.known_hosts, render_known_hosts(entries))


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.chmod(partial, 0o600)
    partial.replace(path)
