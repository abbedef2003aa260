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
   and, for the vLLM emulator (which refuses to start when other processes hold the memory
   it asks for, or a CUDA 13 build meets an older driver), ``-e
   TESTBED_GPU_MEMORY_USED_MIB=<json list>`` (memory.used of those GPUs, as the fake
   nvidia-smi reports it) and ``-e TESTBED_GPU_DRIVER_VERSION=<driver_version>``;
3. adds ``--env-file /etc/testbed/emulator.env`` (TGI_EMULATOR_LOAD_SECONDS etc., from
   ``scripts/testbed up --tgi-load-seconds``); the caller's own ``-e`` still wins;
4. confines every bind mount to the host: dockerd runs on the outer machine and resolves
   bind sources there, so an unconfined ``-v /:/data`` would be the machine's own root
   (issue 12, "the testbed must not be a way out"). Each absolute source
   (``-v /SRC:/DST[:opts]``, ``--volume``, ``--mount type=bind,source=/SRC,...``) is first
   resolved *inside the host* (``os.path.realpath``: the shim runs in the host, so a
   symlink to ``/`` means the host's root), then rewritten to the host's filesystem as
   the outer machine sees it (``<outer_root>/SRC``, outer_root from
   /etc/testbed/host.json); ``/`` becomes outer_root. /var/lib/tgiops/data is
   bind-mounted at that outer path too, so ``-v /var/lib/tgiops/data/cache:/data`` reaches
   the host's data directory. Refused (exit 125, like docker's own usage errors): sources
   that resolve under /run, /var/run, /tmp, /dev, /proc or /sys (private mounts of the
   host: the same path outside is the machine's), the docker socket (the outer dockerd is
   root on the machine), ``--mount type=volume`` with ``volume-opt`` (the local driver's
   bind), and the options that hand a container the machine: ``--privileged``,
   ``--cap-add``, ``--device``, ``--security-opt``, ``--pid``/``--ipc``/``--uts``/
   ``--userns``/``--cgroupns`` ``host``, ``--volumes-from`` is allowed (those volumes were
   confined when made). ``docker volume create`` with driver options and
   ``docker exec --privileged`` are refused too. Named volumes and relative paths stay.

Every other argument and every other command passes through unchanged, and the real
client is exec'd (same PID, same exit status, same output).

Not covered (the testbed's known limit): root on a testbed host can run the real client
(/usr/libexec/testbed/docker) against /run/docker.sock directly, bypassing this shim. The
shim confines what tgiops and the tests run through ``docker``; confining a deliberately
hostile root would need an authorization plugin on the outer dockerd.
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
PRIVATE_PREFIXES = ("/run/", "/var/run/", "/tmp/", "/dev/", "/proc/", "/sys/")
SOCKET_PATHS = ("/run/docker.sock", "/var/run/docker.sock")
# Options of `docker run`/`create` that give a container the outer machine.
REFUSED_OPTIONS = {
    "--privileged",
    "--cap-add",
    "--device",
    "--security-opt",
    "--device-cgroup-rule",
}
HOST_NAMESPACE_OPTIONS = {"--pid", "--ipc", "--uts", "--userns", "--cgroupns"}


class Refused(Exception):
    """A docker argument the testbed will not pass to the outer dockerd."""


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


def rewrite_volume(spec: str, outer_root: str) -> str:
    source, sep, rest = spec.partition(":")
    if not sep or not source.startswith("/"):
        return spec
    return rewrite_path(source, outer_root) + sep + rest


def rewrite_mount(spec: str, outer_root: str) -> str:
    fields = next(csv.reader([spec]), [])
    keys = {f.partition("=")[0].strip() for f in fields}
    if any(k.startswith("volume-opt") or k == "volume-driver" for k in keys):
        raise Refused(f"--mount {spec!r}: volume driver options (a bind in disguise)")
    kinds = {f.strip() for f in fields if f.strip().startswith("type=")}
    if kinds and kinds != {"type=bind"}:
        return spec  # volume (no options), tmpfs, npipe
    out = []
    for field in fields:
        key, sep, value = field.partition("=")
        if key.strip() in ("source", "src"):
            if not value.startswith("/"):
                raise Refused(f"--mount {spec!r}: a bind source must be an absolute path")
            field = key + sep + rewrite_path(value, outer_root)
        out.append(field)
    return ",".join(out)


def rewrite_path(source: str, outer_root: str) -> str:
    """``source`` as the outer machine must see it to mean the host's ``source``."""
    paths = [os.path.normpath(source)]
    if not (paths[0] + "/").startswith(PRIVATE_PREFIXES):
        try:
            paths.append(os.path.realpath(source, strict=False))  # in the host: its symlinks
        except OSError as exc:
            raise Refused(f"bind source {source}: cannot resolve it in the host ({exc})") from exc
    resolved = paths[-1]
    for path in paths:
        if path in SOCKET_PATHS:
            raise Refused(f"bind source {source}: the docker socket is the outer machine's")
        if (path + "/").startswith(PRIVATE_PREFIXES):
            raise Refused(
                f"bind source {source} ({path}) is a private mount of the host; the same path "
                "outside is the test machine's own"
            )
    return outer_root.rstrip("/") + (resolved if resolved != "/" else "")


def check_option(name: str, value: str) -> None:
    if name in REFUSED_OPTIONS:
        raise Refused(f"{name}: it would hand the container the test machine")
    if name in HOST_NAMESPACE_OPTIONS and value.strip().lower() == "host":
        raise Refused(f"{name}=host: the outer machine's namespace")


def rewrite_run(
    options: list[str], host: dict, gpus: list[dict], driver: str | None = None
) -> list[str]:
    """Rewrite the option part of `docker run` (everything up to the image)."""
    outer_root = host["outer_root"]
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
                if name == "--privileged" and value.lower() != "false":
                    raise Refused("--privileged: it would hand the container the test machine")
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
            check_option(name, value)
            if name == "--volume":
                value = rewrite_volume(value, outer_root)
            elif name == "--mount":
                value = rewrite_mount(value, outer_root)
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
            value = rewrite_volume(value, outer_root)
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
    used = [int(g.get("memory_used_mib", 0)) for g in visible]
    added += ["-e", "TESTBED_GPU_MEMORY_USED_MIB=" + json.dumps(used, separators=(",", ":"))]
    if driver:
        added += ["-e", f"TESTBED_GPU_DRIVER_VERSION={driver}"]
    if os.path.exists(EMULATOR_ENV):
        added += ["--env-file", EMULATOR_ENV]
    return added + out


def rewrite_argv(
    argv: list[str], host: dict, gpus: list[dict], driver: str | None = None
) -> list[str]:
    start = find_command(argv)
    if start is None:
        return list(argv)
    return argv[:start] + rewrite_run(argv[start:], host, gpus, driver)


def check_other_commands(argv: list[str]) -> None:
    """`docker volume create -o ...` (a local-driver bind) and `docker exec --privileged`."""
    words = [a for a in argv if not a.startswith("-")]
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("-")]
    if words[:2] == ["volume", "create"] and ({"-o", "--opt", "-d", "--driver"} & set(flags)):
        raise Refused("docker volume create with driver options (a bind in disguise)")
    if words[:1] in (["exec"], ["container"]) and "--privileged" in flags:
        raise Refused("docker exec --privileged: it would hand the container the test machine")


def main(argv: list[str]) -> None:
    args = list(argv)
    try:
        check_other_commands(args)
        if find_command(args) is not None:
            host = load_json(HOST_CONFIG)
            inventory = load_json(GPUS_JSON)
            args = rewrite_argv(args, host, inventory["gpus"], inventory.get("driver_version"))
    except Refused as exc:
        print(f"docker (testbed shim): refused: {exc}", file=sys.stderr)
        sys.exit(125)
    os.execv(REAL_DOCKER, [REAL_DOCKER, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
