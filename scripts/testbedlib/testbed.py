"""Booting, listing, aliasing and tearing down testbed GPU hosts.

One host = a network namespace ``tgtb-NAME`` joined to the root namespace by a veth pair
(outer end 10.231.IDX.1, host eth0 10.231.IDX.2), an overlay of the cached root
filesystem, a dockerd in the namespace, and ``systemd-nspawn --boot`` with systemd as
PID 1 in that namespace. ``up`` first clears any stale state of the same name (a crashed
run's processes, mounts, namespace, cgroups); ``down --all`` leaves the machine as found.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbedlib import kernel
from testbedlib.dockerd import DockerDaemon, docker_client
from testbedlib.errors import TestbedError, TestbedInputError
from testbedlib.gpus import build_inventory, normalize_gpu_spec
from testbedlib.hostfs import REAL_DOCKER_IN_HOST, write_host_files
from testbedlib.images import ImageSet, ensure_images
from testbedlib.locking import file_lock
from testbedlib.moto import ensure_moto, read_moto, stop_moto
from testbedlib.paths import TestbedPaths
from testbedlib.processes import (
    find_marked_pids,
    kill_pids,
    marker_env,
    pid_alive,
    read_marker,
    run_command,
    spawn_daemon,
    stop_pid,
)
from testbedlib.rootfs import ensure_rootfs
from testbedlib.sshfiles import SshEntry, ensure_client_key, write_ssh_files

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")  # fullmatch: no trailing \n
ALIAS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DEFAULT_NAME = "testbed"
DEFAULT_GPUS = "1xA10G"
DOCKER_BIP = "192.168.231.1/24"
BOOT_TIMEOUT_S = 90.0
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL

# Paths outside our own directories that dockerd, containerd and nspawn create on first
# use. `down --all` removes those that did not exist before the first `up` (if empty).
BASELINE_PATHS = (
    "/run/netns",
    "/run/docker",
    "/run/docker/plugins",
    "/run/containerd",
    "/run/containerd/s",
    "/run/containerd/runc",
    "/run/systemd/nspawn",
    "/run/systemd/nspawn/locks",
    "/run/systemd/nspawn/propagate",
    "/root/.docker",
    "/run/mount",  # util-linux's utab directory, made by the first mount(8)
)


@dataclass(frozen=True)
class HostInfo:
    """What `up` prints: how to reach a host and the AWS double."""

    name: str
    address: str
    user: str
    ssh_config: str
    known_hosts: str
    identity: str
    aws_endpoint_url: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class HostRecord:
    """What the testbed remembers about one host (hosts/NAME/host.json)."""

    name: str
    index: int
    address: str
    outer_address: str
    gpus: str
    data_dir: str
    data_dir_is_default: bool
    tgi_load_seconds: float | None
    host_key: str
    rootfs: str
    images_tar: str | None
    nspawn_pid: int = 0
    dockerd_pid: int = 0
    aliases: list[str] = field(default_factory=list)
    created_at: float = 0.0
    boot_timings_s: dict[str, float] = field(default_factory=dict)


class Testbed:
    """The testbed on this machine. All public methods are safe to call repeatedly."""

    __test__ = False

    def __init__(self, paths: TestbedPaths | None = None) -> None:
        self.paths = paths or TestbedPaths.from_env()

    # --- public API ---------------------------------------------------------------------

    def up(
        self,
        name: str = DEFAULT_NAME,
        gpus: str | None = None,
        data_dir: str | Path | None = None,
        tgi_load_seconds: float | None = None,
    ) -> HostInfo:
        """Boot host NAME (or return the running one unchanged) and return how to reach it."""
        self._check_name(name)
        spec = normalize_gpu_spec(gpus) if gpus is not None else None
        wanted_data = str(Path(data_dir).resolve()) if data_dir is not None else None
        with self._locked():
            record = self._load_record(name)
            if record is not None and self._is_running(record):
                self._check_same(record, spec, wanted_data, tgi_load_seconds)
                log.info("host %s is already running at %s", name, record.address)
                return self._info(record, ensure_moto(self.paths))
            foreign = self._foreign_owners(kernel.netns_name(name))
            if foreign:
                raise TestbedInputError(
                    f"host name {name!r} is in use by another testbed on this machine (state "
                    f"{', '.join(sorted(foreign))}); pick another --name"
                )
            if record is not None or self._has_leftovers(name):
                log.info("clearing stale state of host %s", name)
                self._clear_host(name, record)
                self._write_ssh_files()
            return self._boot(name, spec or DEFAULT_GPUS, wanted_data, tgi_load_seconds)

    def down(self, name: str) -> bool:
        """End host NAME and remove everything it used. False if there was nothing."""
        self._check_name(name)
        with self._locked():
            record = self._load_record(name)
            if record is None and not self._has_leftovers(name):
                return False
            self._clear_host(name, record)
            self._write_ssh_files()
            return True

    def down_all(self, *, only_if_idle: bool = False) -> bool:
        """End every host and the moto server; leave the machine as it was found.

        With only_if_idle, do nothing (and return False) while any host exists or another
        live process holds a lease (a concurrent test session).
        """
        if not self.paths.state_dir.exists():
            self._sweep_orphans()
            return True
        with self._locked():
            if only_if_idle and (self.list_hosts() or self._live_leases()):
                return False
            baseline = self._read_baseline()
            for record in self.list_hosts():
                self._clear_host(record.name, record)
            self._sweep_orphans()
            stop_moto(self.paths)
            kernel.unmount_tree(self.paths.state_dir)
            shutil.rmtree(self.paths.state_dir, ignore_errors=True)
            if kernel.list_netns():
                log.info("other testbeds still run here; /run directories are left in place")
            else:
                self._restore_baseline(baseline)
        return True

    def add_lease(self, pid: int) -> None:
        """Note that process pid uses this testbed (see down_all(only_if_idle=True))."""
        with self._locked():
            self._leases_dir.mkdir(parents=True, exist_ok=True)
            (self._leases_dir / str(pid)).touch()

    def drop_lease(self, pid: int) -> None:
        with self._locked():
            (self._leases_dir / str(pid)).unlink(missing_ok=True)

    @property
    def _leases_dir(self) -> Path:
        return self.paths.state_dir / "leases"

    def _live_leases(self) -> list[int]:
        if not self._leases_dir.is_dir():
            return []
        return [
            int(p.name)
            for p in self._leases_dir.iterdir()
            if p.name.isdigit() and pid_alive(int(p.name))
        ]

    def alias(self, name: str, alias: str) -> HostInfo:
        """Make ALIAS (e.g. an EC2 instance id) reach host NAME through the ssh_config."""
        if not ALIAS_RE.fullmatch(alias):
            raise TestbedInputError(f"bad alias {alias!r}: letters, digits, '.', '_', '-'")
        with self._locked():
            record = self._load_record(name)
            if record is None:
                raise TestbedInputError(f"no host named {name!r}; run `scripts/testbed up`")
            others = [other for other in self.list_hosts() if other.name != name]
            if any(other.name == alias for other in others):
                raise TestbedInputError(f"{alias!r} is the name of another host")
            for other in others:
                if alias in other.aliases:  # an alias names one host: the latest wins
                    other.aliases.remove(alias)
                    self._save_record(other)
            if alias not in record.aliases and alias != name:
                record.aliases.append(alias)
                self._save_record(record)
            self._write_ssh_files()
            return self._info(record, self.aws_endpoint_url() or "")

    def status(self) -> dict:
        """Hosts (running or stale) and the moto server, as plain data."""
        hosts = []
        for record in self.list_hosts():
            hosts.append(
                {
                    "name": record.name,
                    "address": record.address,
                    "gpus": record.gpus,
                    "data_dir": record.data_dir,
                    "aliases": list(record.aliases),
                    "running": self._is_running(record),
                    "nspawn_pid": record.nspawn_pid,
                    "dockerd_pid": record.dockerd_pid,
                }
            )
        known = {h["name"] for h in hosts}
        stale: list[str] = []
        other: list[str] = []
        for ns in kernel.list_netns():
            host = ns[len(kernel.netns_name("")) :]
            if host not in known:
                (other if self._foreign_owners(ns) else stale).append(host)
        return {
            "hosts": hosts,
            "stale": stale,
            "other_testbeds": other,
            "aws_endpoint_url": self.aws_endpoint_url(),
            "state_dir": str(self.paths.state_dir),
            "cache_dir": str(self.paths.cache_dir),
        }

    def list_hosts(self) -> list[HostRecord]:
        records = []
        if self.paths.hosts_dir.is_dir():
            for directory in sorted(self.paths.hosts_dir.iterdir()):
                record = self._load_record(directory.name)
                if record is not None:
                    records.append(record)
        return records

    def host_info(self, name: str) -> HostInfo:
        record = self._load_record(name)
        if record is None:
            raise TestbedInputError(f"no host named {name!r}")
        return self._info(record, self.aws_endpoint_url() or "")

    def ensure_cache(self) -> tuple[Path, ImageSet]:
        """Build (once) the root filesystem and the emulator images."""
        self._record_baseline()  # the image builder's dockerd touches /run/docker
        rootfs = ensure_rootfs(self.paths)
        return rootfs, ensure_images(self.paths, rootfs)

    def ensure_moto(self) -> str:
        with self._locked():
            self._record_baseline()
            return ensure_moto(self.paths)

    def aws_endpoint_url(self) -> str | None:
        running = read_moto(self.paths)
        return running[1] if running else None

    def ssh_argv(self, name: str, command: str) -> list[str]:
        """argv that runs command on host NAME with strict host-key checking."""
        return [
            "ssh",
            "-F",
            str(self.paths.ssh_config),
            "-o",
            "StrictHostKeyChecking=yes",
            name,
            command,
        ]

    # --- boot ------------------------------------------------------------------------

    def _boot(
        self, name: str, spec: str, data_dir: str | None, tgi_load_seconds: float | None
    ) -> HostInfo:
        timings: dict[str, float] = {}
        started = time.monotonic()
        rootfs, images = self.ensure_cache()
        timings["cache"] = time.monotonic() - started
        mark = time.monotonic()
        endpoint = ensure_moto(self.paths)
        timings["moto"] = time.monotonic() - mark

        host_dir = self.paths.host_dir(name)
        # containerd's socket under the exec root must fit a unix socket address.
        longest = host_dir / "dockerd/exec/containerd/containerd.sock.ttrpc"
        if len(str(longest)) > MAX_SOCKET_PATH:
            raise TestbedInputError(
                f"{longest} is longer than a unix socket path may be ({MAX_SOCKET_PATH}); "
                "use a shorter TGIOPS_TESTBED_STATE or --name"
            )
        index = self._allocate_index()
        loader: subprocess.Popen[bytes] | None = None
        try:
            mark = time.monotonic()
            outer_ip, host_ip = kernel.create_host_network(name, index)
            timings["network"] = time.monotonic() - mark

            mark = time.monotonic()
            root = host_dir / "root"
            kernel.mount_overlay(Path(rootfs), host_dir / "upper", host_dir / "work", root)
            if data_dir is None:
                data_path = host_dir / "data"
                data_path.mkdir(parents=True, exist_ok=True)
            else:
                data_path = Path(data_dir)
                data_path.mkdir(parents=True, exist_ok=True)
            # Bound on the outer side, so paths the docker shim rewrites resolve here too.
            kernel.bind_mount(data_path, root / "var/lib/tgiops/data")
            daemon = self._daemon(name)
            emulator_env = {}
            if tgi_load_seconds is not None:
                emulator_env["TGI_EMULATOR_LOAD_SECONDS"] = _format_seconds(tgi_load_seconds)
            client_key = ensure_client_key(self.paths).with_suffix(".pub")
            host_key = write_host_files(
                root,
                name=name,
                inventory=build_inventory(spec, name),
                emulator_env=emulator_env,
                host_config={
                    "name": name,
                    "address": host_ip,
                    "outer_root": str(root),
                    "outer_docker_socket": str(daemon.socket),
                },
                client_public_key=client_key.read_text(encoding="ascii"),
            )
            record = HostRecord(
                name=name,
                index=index,
                address=host_ip,
                outer_address=outer_ip,
                gpus=spec,
                data_dir=str(data_path),
                data_dir_is_default=data_dir is None,
                tgi_load_seconds=tgi_load_seconds,
                host_key=host_key,
                rootfs=str(rootfs),
                images_tar=str(images.tar_path),
                created_at=time.time(),
            )
            self._save_record(record)
            timings["files"] = time.monotonic() - mark

            mark = time.monotonic()
            env = marker_env(self.paths.state_dir, name)
            record.dockerd_pid = daemon.start(env)
            self._save_record(record)
            daemon.wait_ready(timeout_s=60, pid=record.dockerd_pid)
            timings["dockerd"] = time.monotonic() - mark

            mark = time.monotonic()
            loader = subprocess.Popen(
                [docker_client(), "-H", daemon.url, "load", "-q", "-i", str(images.tar_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            record.nspawn_pid = spawn_daemon(
                self._nspawn_command(name, root, daemon), host_dir / "nspawn.log", env
            )
            self._save_record(record)
            self._write_ssh_files()
            state = self._wait_booted(record)
            timings["boot"] = time.monotonic() - mark
            mark = time.monotonic()
            _, err = loader.communicate(timeout=300)
            if loader.returncode != 0:
                raise TestbedError(f"docker load into {name} failed: {err.decode()[-800:]}")
            timings["images_after_boot"] = time.monotonic() - mark
        except BaseException:
            log.error("host %s failed to boot; logs follow and its state is removed", name)
            for log_name in ("nspawn.log", "dockerd/dockerd.log"):
                path = host_dir / log_name
                if path.exists():
                    log.error("--- %s (tail)\n%s", path, path.read_text(errors="replace")[-2000:])
            if loader is not None and loader.poll() is None:
                loader.kill()
                loader.wait()
            self._clear_host(name, self._load_record(name))
            self._write_ssh_files()
            raise
        timings["total"] = time.monotonic() - started
        record.boot_timings_s = {k: round(v, 2) for k, v in timings.items()}
        self._save_record(record)
        log.info(
            "host %s (%s) up at %s, systemd %s; timings: %s",
            name,
            spec,
            record.address,
            state,
            ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()),
        )
        return self._info(record, endpoint)

    def _nspawn_command(self, name: str, root: Path, daemon: DockerDaemon) -> list[str]:
        # nspawn --keep-unit works below its caller's cgroup; a small sh wrapper moves
        # itself into the host's own cgroup first, then execs nspawn (same PID).
        cgroup_files = [str(p) for p in kernel.nspawn_cgroup_procs(name)]
        wrapper = (
            'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do echo $$ > "$1"; shift; '
            'i=$((i + 1)); done; exec "$@"'
        )
        return [
            "sh",
            "-c",
            wrapper,
            "sh",
            str(len(cgroup_files)),
            *cgroup_files,
            "systemd-nspawn",
            f"--directory={root}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            f"--network-namespace-path={kernel.netns_path(name)}",
            f"--machine={kernel.netns_name(name)}",
            f"--hostname={name}",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            f"--bind={daemon.socket}:/run/docker.sock",
            f"--bind-ro={docker_client()}:{REAL_DOCKER_IN_HOST}",
        ]

    def _wait_booted(self, record: HostRecord) -> str:
        """Wait until sshd answers (strict host key) and systemd finished booting."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if not pid_alive(record.nspawn_pid):
                raise TestbedError(f"systemd-nspawn of {record.name} exited during boot")
            if not _port_open(record.address, 22):
                time.sleep(0.05)
                continue
            result = run_command(
                self.ssh_argv(record.name, "systemctl is-system-running --wait"),
                check=False,
                timeout_s=max(deadline - time.monotonic(), 1),
            )
            state = result.stdout.decode().strip()
            if result.returncode == 255:  # ssh itself failed: sshd not ready yet
                last = result.stderr.decode(errors="replace").strip()
                time.sleep(0.1)
                continue
            if state == "running":
                return state
            failed = (
                run_command(
                    self.ssh_argv(record.name, "systemctl --failed --no-legend --plain"),
                    check=False,
                )
                .stdout.decode()
                .strip()
            )
            log.warning("host %s booted %s; failed units: %s", record.name, state, failed)
            return state
        raise TestbedError(f"host {record.name} did not boot in {BOOT_TIMEOUT_S:.0f} s: {last}")

    # --- teardown ----------------------------------------------------------------------

    def _clear_host(self, name: str, record: HostRecord | None) -> None:
        """Remove every trace of host NAME: processes, mounts, namespace, links, cgroups."""
        host_dir = self.paths.host_dir(name)
        marked = find_marked_pids(self.paths.state_dir, name)
        nspawn = [p for p in marked if _argv0(p) == "systemd-nspawn"]
        if record and record.nspawn_pid and _is_ours(record.nspawn_pid, self.paths, name):
            nspawn.append(record.nspawn_pid)
        for pid in sorted(set(nspawn)):
            # SIGTERM makes nspawn ask the host's systemd for an orderly poweroff.
            stop_pid(pid, timeout_s=20)
        dockerd = [
            p for p in find_marked_pids(self.paths.state_dir, name) if _argv0(p) == "dockerd"
        ]
        for pid in dockerd:
            stop_pid(pid, timeout_s=20)
        ns = kernel.netns_name(name)
        leftovers = set(find_marked_pids(self.paths.state_dir, name))
        if (kernel.NETNS_DIR / ns).exists():
            leftovers |= set(kernel.netns_pids(ns))
        kill_pids(sorted(leftovers))
        if host_dir.exists():
            kernel.unmount_tree(host_dir)
        kernel.delete_netns(ns)
        if record is not None:
            kernel.wait_links_gone(list(kernel.link_names(record.index)))
        kernel.remove_cgroups(
            kernel.find_cgroups({kernel.nspawn_cgroup_name(name), kernel.docker_cgroup_name(name)})
        )
        if host_dir.exists():
            if kernel.mounts_under(host_dir):
                raise TestbedError(f"{host_dir} still has mounts; not removing it")
            shutil.rmtree(host_dir)
        log.info("host %s is down", name)

    def _has_leftovers(self, name: str) -> bool:
        return (
            self.paths.host_dir(name).exists()
            or (kernel.NETNS_DIR / kernel.netns_name(name)).exists()
            or bool(find_marked_pids(self.paths.state_dir, name))
        )

    def _sweep_orphans(self) -> None:
        """Everything of ours without a record: namespaces, links, processes, cgroups.

        A namespace whose processes carry another state directory's marker belongs to
        another testbed on this machine (another TGIOPS_TESTBED_STATE) and is left alone.
        """
        prefix = kernel.netns_name("")
        foreign_hosts = set()
        for ns in kernel.list_netns():
            if self._foreign_owners(ns):
                foreign_hosts.add(ns[len(prefix) :])
                continue
            self._clear_host(ns[len(prefix) :], None)
        if self.paths.hosts_dir.is_dir():
            for directory in self.paths.hosts_dir.iterdir():
                self._clear_host(directory.name, None)
        for pid in find_marked_pids(self.paths.state_dir):
            stop_pid(pid, timeout_s=10)
        links = kernel.list_links()
        for link in links:
            # A peer still in the root namespace means a crash before it moved into its
            # namespace; a peer inside a namespace goes away with that namespace.
            if link.endswith("p") or f"{link}p" in links:
                kernel.delete_link(link)
        foreign_groups = {kernel.nspawn_cgroup_name(h) for h in foreign_hosts}
        foreign_groups |= {kernel.docker_cgroup_name(h) for h in foreign_hosts}
        kernel.remove_cgroups([g for g in kernel.find_cgroups() if g.name not in foreign_groups])

    def _foreign_owners(self, ns: str) -> set[str]:
        """State directories (other than ours) whose processes live in namespace ns."""
        owners = set()
        for pid in kernel.netns_pids(ns):
            marker = read_marker(pid)
            if marker is not None and marker[0] != str(self.paths.state_dir):
                owners.add(marker[0])
        return owners

    def _record_baseline(self) -> None:
        if self.paths.baseline_record.exists():
            return
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        existing = {path: Path(path).exists() for path in BASELINE_PATHS}
        partial = self.paths.baseline_record.with_name("baseline.json.partial")
        partial.write_text(json.dumps(existing, indent=2), encoding="utf-8")
        partial.replace(self.paths.baseline_record)

    def _read_baseline(self) -> dict[str, bool]:
        try:
            return json.loads(self.paths.baseline_record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _restore_baseline(self, baseline: dict[str, bool]) -> None:
        if not baseline:
            return
        for path_text in sorted(baseline, key=len, reverse=True):
            path = Path(path_text)
            if baseline[path_text] or not path.is_dir() or any(path.iterdir()):
                continue
            if path_text == "/run/netns" and kernel.mounts_under(path):
                # `ip netns add` made /run/netns a shared bind mount of itself.
                run_command(["umount", str(path)], check=False)
            with contextlib.suppress(OSError):
                path.rmdir()

    # --- records and checks ------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.paths.lock_file):
            yield

    def _daemon(self, name: str) -> DockerDaemon:
        host_dir = self.paths.host_dir(name)
        return DockerDaemon(
            directory=host_dir / "dockerd",
            socket=host_dir / "docker.sock",
            netns=kernel.netns_path(name),
            bip=DOCKER_BIP,
            cgroup_parent=kernel.docker_cgroup_name(name),
        )

    def _record_path(self, name: str) -> Path:
        return self.paths.host_dir(name) / "host.json"

    def _load_record(self, name: str) -> HostRecord | None:
        try:
            data = json.loads(self._record_path(name).read_text(encoding="utf-8"))
            return HostRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def _save_record(self, record: HostRecord) -> None:
        path = self._record_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
        partial.replace(path)

    def _is_running(self, record: HostRecord) -> bool:
        return (
            _is_ours(record.nspawn_pid, self.paths, record.name)
            and _is_ours(record.dockerd_pid, self.paths, record.name)
            and kernel.netns_path(record.name).exists()
            and bool(kernel.mounts_under(self.paths.host_dir(record.name) / "root"))
            and _port_open(record.address, 22)
        )

    def _check_same(
        self, record: HostRecord, spec: str | None, data_dir: str | None, load_s: float | None
    ) -> None:
        conflicts = []
        if spec is not None and spec != record.gpus:
            conflicts.append(f"--gpus {spec} (running: {record.gpus})")
        if data_dir is not None and data_dir != record.data_dir:
            conflicts.append(f"--data-dir {data_dir} (running: {record.data_dir})")
        if load_s is not None and load_s != record.tgi_load_seconds:
            conflicts.append(f"--tgi-load-seconds {load_s} (running: {record.tgi_load_seconds})")
        if conflicts:
            raise TestbedInputError(
                f"host {record.name} is already running with other settings: "
                f"{'; '.join(conflicts)}. Run `scripts/testbed down --name {record.name}` first."
            )

    def _allocate_index(self) -> int:
        used = {record.index for record in self.list_hosts()}
        for link in kernel.list_links():
            used.add(int(link[len("tgtb") :].rstrip("p")))
        for index in range(1, kernel.MAX_HOST_INDEX + 1):
            if index not in used:
                return index
        raise TestbedError(f"all {kernel.MAX_HOST_INDEX} host slots are in use")

    def _write_ssh_files(self) -> None:
        entries = [
            SshEntry(r.name, tuple(r.aliases), r.address, r.host_key) for r in self.list_hosts()
        ]
        write_ssh_files(self.paths, entries)

    def _info(self, record: HostRecord, endpoint: str) -> HostInfo:
        return HostInfo(
            name=record.name,
            address=record.address,
            user="root",
            ssh_config=str(self.paths.ssh_config),
            known_hosts=str(self.paths.known_hosts),
            identity=str(self.paths.identity),
            aws_endpoint_url=endpoint,
        )

    @staticmethod
    def _check_name(name: str) -> None:
        if not NAME_RE.fullmatch(name or ""):
            raise TestbedInputError(
                f"bad host name {name!r}: 1-24 of a-z, 0-9, '-' (not at either end)"
            )


def _is_ours(pid: int, paths: TestbedPaths, name: str) -> bool:
    marker = read_marker(pid) if pid else None
    return bool(pid) and pid_alive(pid) and marker == (str(paths.state_dir), name)


def _argv0(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return Path(handle.read().split(b"\0")[0].decode(errors="replace")).name
    except OSError:
        return ""


def _port_open(address: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
