#!/usr/bin/python3
"""``docker`` shim of the tgiops testbed (one of its three test doubles).

Installed in each testbed host as /usr/bin/docker, in front of the real docker client
(bound read-only at /usr/libexec/testbed/docker). The host's dockerd runs outside the
host (in the host's network namespace, on the outer machine) and has no GPUs, so for
``docker run`` and ``docker create`` (also ``docker container run|create``) and ONLY
for those, before the image argument, it:

1. drops ``--gpus X`` / ``--gpus=X`` (a GPU-less dockerd refuses it with
   ``could not select device driver "" with capabilities: [[gpu]]``);
2. adds ``-e TGI_EMULATOR_GPUS=<json>``: the GPUs the container would see, a list of
   ``{"name", "memory_mib", "compute_capability"}`` taken from /etc/testbed/gpus.json and
   narrowed as ``--gpus`` asks (``all``, a count ``N``/``count=N``, ``device=0,2``); "[]"
   when no ``--gpus`` was given (a container started without it sees no GPU);
3. adds ``--env-file /etc/testbed/emulator.env`` (TGI_EMULATOR_LOAD_SECONDS etc., from
   ``scripts/testbed up --tgi-load-seconds``); the caller's own ``-e`` still wins;
4. rewrites absolute bind sources (``-v /SRC:/DST[:opts]``, ``--volume``, ``--mount
   type=bind,source=/SRC,...``) to the host's filesystem as seen from the outer machine
   (``<outer_root>/SRC``, outer_root from /etc/testbed/host.json), because dockerd resolves
   them there. /var/lib/tgiops/data is bind-mounted at that outer path too, so
   ``-v /var/lib/tgiops/data:/data`` reaches the host's data directory. The docker socket
   (/run/docker.sock, /var/run/docker.sock) maps to the outer socket. Sources under /run,
   /tmp, /dev, /proc and /sys stay unchanged (they are private mounts of the host, not
   visible outside). Named volumes and relative paths stay unchanged.

Every other argument and every other command passes through unchanged, and the real
client is exec'd (same PID, same exit status, same output).
"""

from __future__ import annotations

import csv
import json
import os
import sys

REAL_DOCKER = "/usr/libexec/testbed/docker"
HOST_CONFIG = os.environ.get("TESTBED_HOST_JSON", "/etc/testbed/host.json")
GPUS_JSON = os.environ.get("TESTBED_GPUS_JSON", "/etc/testbed/gpus.json")
EMULATOR_ENV = "/etc/testbed/emulator.env"

# Global options of the docker CLI (20.10) that take a value.
GLOBAL_VALUE_OPTIONS = {
    "--config",
    "-c",
    "--context",
    "-H",
    "--host",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
}
# Boolean options of `docker run` / `docker create` (20.10); every other option takes a value.
RUN_BOOL_LONG = {
    "--detach",
    "--disable-content-trust",
    "--help",
    "--init",
    "--interactive",
    "--no-healthcheck",
    "--oom-kill-disable",
    "--privileged",
    "--publish-all",
    "--quiet",
    "--read-only",
    "--rm",
    "--sig-proxy",
    "--tty",
}
RUN_BOOL_SHORT = set("diPqt")
UNCHANGED_PREFIXES = ("/run/", "/var/run/", "/tmp/", "/dev/", "/proc/", "/sys/")
SOCKET_PATHS = ("/run/docker.sock", "/var/run/docker.sock")


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def find_command(argv: list[str]) -> int | None:
    """Index of the first token after `run`/`create` (or `container run|create`), if any."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return None
        if arg.startswith("-"):
            if arg in GLOBAL_VALUE_OPTIONS:
                index += 1
            index += 1
            continue
        if arg in ("run", "create"):
            return index + 1
        if arg == "container" and index + 1 < len(argv) and argv[index + 1] in ("run", "create"):
            return index + 2
        return None
    return None


def select_gpus(request: str, gpus: list[dict]) -> list[dict]:
    """The GPUs `--gpus REQUEST` would hand to the container (docker's csv syntax)."""
    selected = list(gpus)
    for field in next(csv.reader([request.strip()]), []):
        field = field.strip().strip('"').strip("'")
        key, _, value = field.partition("=")
        if field == "all" or (key == "count" and value == "all"):
            selected = list(gpus)
        elif field.isdigit():
            selected = gpus[: int(field)]
        elif key == "count" and value.isdigit():
            selected = gpus[: int(value)]
        elif key == "device":
            wanted = [token.strip() for token in value.split(",")]
            selected = [g for g in gpus if str(g["index"]) in wanted or g.get("uuid") in wanted]
    return selected


def rewrite_volume(spec: str, outer_root: str, outer_socket: str) -> str:
    source, sep, rest = spec.partition(":")
    if not sep or not source.startswith("/"):
        return spec
    return rewrite_path(source, outer_root, outer_socket) + sep + rest


def rewrite_mount(spec: str, outer_root: str, outer_socket: str) -> str:
    fields = next(csv.reader([spec]), [])
    if not any(f.strip() in ("type=bind",) for f in fields):
        return spec
    out = []
    for field in fields:
        key, sep, value = field.partition("=")
        if key.strip() in ("source", "src") and value.startswith("/"):
            field = key + sep + rewrite_path(value, outer_root, outer_socket)
        out.append(field)
    return ",".join(out)


def rewrite_path(source: str, outer_root: str, outer_socket: str) -> str:
    normalized = os.path.normpath(source)
    if normalized in SOCKET_PATHS:
        return outer_socket
    if (normalized + "/").startswith(UNCHANGED_PREFIXES) or normalized == "/":
        return source
    return outer_root.rstrip("/") + normalized


def rewrite_run(options: list[str], host: dict, gpus: list[dict]) -> list[str]:
    """Rewrite the option part of `docker run` (everything up to the image)."""
    outer_root = host["outer_root"]
    outer_socket = host["outer_docker_socket"]
    out: list[str] = []
    gpu_request: str | None = None
    index = 0
    while index < len(options):
        arg = options[index]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.extend(options[index:])  # the image, its command and arguments: untouched
            break
        name, has_value, value = arg.partition("=")
        if arg.startswith("--"):
            if name in RUN_BOOL_LONG:
                out.append(arg)
                index += 1
                continue
            if not has_value:
                value = options[index + 1] if index + 1 < len(options) else ""
                index += 1
            index += 1
            if name == "--gpus":
                gpu_request = value
                continue
            if name == "--volume":
                value = rewrite_volume(value, outer_root, outer_socket)
            elif name == "--mount":
                value = rewrite_mount(value, outer_root, outer_socket)
            out.extend([name, value] if not has_value else [f"{name}={value}"])
            continue
        # Short options: a cluster of booleans (-it, -dit) or one option with a value
        # either attached (-p8080:80) or in the next argument.
        letters = arg[1:]
        position = 0
        while position < len(letters) and letters[position] in RUN_BOOL_SHORT:
            position += 1
        if position == len(letters):
            out.append(arg)
            index += 1
            continue
        letter = letters[position]
        attached = letters[position + 1 :]
        if attached.startswith("="):
            attached = attached[1:]
        if attached:
            value = attached
            index += 1
        else:
            value = options[index + 1] if index + 1 < len(options) else ""
            index += 2
        if letter == "v":
            value = rewrite_volume(value, outer_root, outer_socket)
        prefix = "-" + letters[:position] if position else ""
        if prefix:
            out.append(prefix)
        out.extend([f"-{letter}", value])
    visible = select_gpus(gpu_request, gpus) if gpu_request is not None else []
    inventory = [
        {
            "name": g["name"],
            "memory_mib": g["memory_mib"],
            "compute_capability": g["compute_capability"],
        }
        for g in visible
    ]
    added = ["-e", "TGI_EMULATOR_GPUS=" + json.dumps(inventory, separators=(",", ":"))]
    if os.path.exists(EMULATOR_ENV):
        added += ["--env-file", EMULATOR_ENV]
    return added + out


def rewrite_argv(argv: list[str], host: dict, gpus: list[dict]) -> list[str]:
    start = find_command(argv)
    if start is None:
        return list(argv)
    return argv[:start] + rewrite_run(argv[start:], host, gpus)


def main(argv: list[str]) -> None:
    args = list(argv)
    if find_command(args) is not None:
        host = load_json(HOST_CONFIG)
        gpus = load_json(GPUS_JSON)["gpus"]
        args = rewrite_argv(args, host, gpus)
    os.execv(REAL_DOCKER, [REAL_DOCKER, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
