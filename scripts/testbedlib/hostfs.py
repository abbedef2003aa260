"""Per-host files, written into the host's overlay before it boots.

What a host gets on top of the shared root filesystem:

- identity: /etc/hostname, /etc/hosts, /etc/machine-id, its own ed25519 host key, and
  /root/.ssh/authorized_keys with the testbed's client key;
- the doubles: /usr/bin/nvidia-smi (fake, reads /etc/testbed/gpus.json) and
  /usr/bin/docker (the --gpus shim in front of the real client, which nspawn binds
  read-only at /usr/libexec/testbed/docker);
- /etc/testbed/: gpus.json (inventory), emulator.env (TGI_EMULATOR_* for every container),
  host.json (where this host's files are on the outer machine, for the shim), README;
- docker.service: a stand-in, since dockerd runs outside the host (see DOCKER_UNIT).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from testbedlib.rootfs import LOGIN_UID, LOGIN_USER
from testbedlib.sshfiles import generate_host_key

HOSTFILES = Path(__file__).resolve().parent / "hostfiles"
REAL_DOCKER_IN_HOST = "/usr/libexec/testbed/docker"

DOCKER_UNIT = """\
[Unit]
Description=Docker Application Container Engine (tgiops testbed stand-in)
Documentation=file:/etc/testbed/README
# This host's real dockerd runs on the outer machine, inside this host's network
# namespace; its API socket is bound here at /run/docker.sock. This unit only waits
# until that socket answers, so units with Requires=/After=docker.service start after
# docker is usable, as on a real GPU host.

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/libexec/testbed/docker-ready

[Install]
WantedBy=multi-user.target
"""

DOCKER_READY = """\
#!/bin/sh
# Wait (up to 30 s) until the outer dockerd answers on /run/docker.sock.
i=0
while [ "$i" -lt 300 ]; do
    if /usr/libexec/testbed/docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        exit 0
    fi
    i=$((i + 1))
    sleep 0.1
done
echo "dockerd does not answer on /run/docker.sock" >&2
exit 1
"""

README = """\
tgiops testbed host
===================

This is not a GPU machine. It is a Debian bookworm root filesystem booted with systemd
under systemd-nspawn on a test machine, made to look like an EC2 GPU instance. The only
test doubles are:

- /usr/bin/nvidia-smi: prints the inventory in /etc/testbed/gpus.json in nvidia-smi's
  formats (summary table, --query-gpu ... --format=csv, -L).
- /usr/bin/docker: a shim in front of the real client (/usr/libexec/testbed/docker).
  For `docker run` / `docker create` only, it drops --gpus, adds
  -e TGI_EMULATOR_GPUS=<the GPUs --gpus selects, as json> and
  --env-file /etc/testbed/emulator.env, and confines absolute -v/--mount bind sources to
  this host's files as the outer machine sees them (dockerd runs there; symlinks are
  resolved in this host, / is this host's root), refusing /tmp, /run, /dev, /proc, /sys,
  the docker socket, --privileged, --cap-add, --device and host namespaces. Everything
  else passes through unchanged.
- ghcr.io/huggingface/text-generation-inference:* images: the TGI emulator.

Real parts: systemd, sshd, dockerd (20.10, on the outer machine in this host's network
namespace; its socket is /run/docker.sock; `docker info` lists an "nvidia" runtime that
is plain runc), and docker.service here is a oneshot stand-in that waits for that socket.
"""


def write_host_files(
    root: Path,
    *,
    name: str,
    inventory: dict,
    emulator_env: dict[str, str],
    host_config: dict,
    client_public_key: str,
) -> str:
    """Write the per-host files under root (the overlay); return the ssh host key."""
    etc = root / "etc"
    (etc / "hostname").write_text(name + "\n", encoding="ascii")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\t\tlocalhost ip6-localhost\n",
        encoding="ascii",
    )
    (etc / "machine-id").write_text(secrets.token_hex(16) + "\n", encoding="ascii")
    host_key = generate_host_key(etc / "ssh", f"root@{name}")

    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(client_public_key.strip() + "\n", encoding="ascii")
    os.chmod(authorized, 0o600)
    # The EC2-like login user (rootfs.LOGIN_USER, passwordless sudo) takes the same key.
    home = root / "home" / LOGIN_USER
    if home.is_dir():
        user_ssh = home / ".ssh"
        user_ssh.mkdir(mode=0o700, exist_ok=True)
        (user_ssh / "authorized_keys").write_text(client_public_key.strip() + "\n", "ascii")
        for path in (user_ssh, user_ssh / "authorized_keys"):
            os.chown(path, LOGIN_UID, LOGIN_UID)
        os.chmod(user_ssh / "authorized_keys", 0o600)

    testbed_etc = etc / "testbed"
    testbed_etc.mkdir(parents=True, exist_ok=True)
    (testbed_etc / "gpus.json").write_text(json.dumps(inventory, indent=2) + "\n", encoding="utf-8")
    env_lines = ["# Written by scripts/testbed up; the docker shim passes it to every container."]
    env_lines += [f"{key}={value}" for key, value in sorted(emulator_env.items())]
    (testbed_etc / "emulator.env").write_text("\n".join(env_lines) + "\n", encoding="utf-8")
    (testbed_etc / "host.json").write_text(
        json.dumps(host_config, indent=2) + "\n", encoding="utf-8"
    )
    (testbed_etc / "README").write_text(README, encoding="utf-8")

    _install_executable(HOSTFILES / "nvidia_smi.py", root / "usr/bin/nvidia-smi")
    # The shim replaces /usr/bin/docker; the real client is bound at REAL_DOCKER_IN_HOST.
    _install_executable(HOSTFILES / "docker_shim.py", root / "usr/bin/docker")
    libexec = root / REAL_DOCKER_IN_HOST.lstrip("/")
    libexec.parent.mkdir(parents=True, exist_ok=True)
    libexec.touch()  # bind-mount target
    ready = libexec.parent / "docker-ready"
    ready.write_text(DOCKER_READY, encoding="utf-8")
    os.chmod(ready, 0o755)

    units = etc / "systemd" / "system"
    (units / "docker.service").write_text(DOCKER_UNIT, encoding="utf-8")
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "docker.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/docker.service")
    (root / "var/lib/tgiops/data").mkdir(parents=True, exist_ok=True)
    return host_key


def _install_executable(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, 0o755)
