"""The SSH edge: one reused connection per host, commands, atomic uploads, tunnels.

Modelled on fabric/invoke (a lazy ``Connection``, ``Result`` objects, a failure that carries the
command and the tail of its output). Fabric resolves the ssh_config (HostName, User, Port,
IdentityFile, ProxyJump, ConnectTimeout); commands run on raw paramiko channels, because
invoke's runner feeds a non-terminal stdin one byte per 10 ms (``invoke/runners.py``
``handle_stdin`` + ``terminals.bytes_to_read``), which would make ``run_script`` crawl.

Host keys are checked strictly, like OpenSSH's ``StrictHostKeyChecking yes``: fabric's default
is paramiko's ``AutoAddPolicy`` with no known_hosts loaded (docs/testbed.md, "SSH"), so we load
the known_hosts file ourselves and install a policy that refuses unknown keys unless the caller
opted into ``accept-new`` semantics. A changed key is always refused.

paramiko and fabric are imported on first use so that ``tgiops --help`` stays fast.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import posixpath
import queue
import re
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tgiops.core.errors import (
    HostKeyError,
    InputError,
    RemoteCommandError,
    SSHConnectError,
    SSHError,
)

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

OUTPUT_TAIL_LINES = 20
_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
_TMP_MARKER = ".tgiops-tmp-"
# Where uploads wait (``install_files``): private directories of the login user.
STAGE_DIR_PREFIX = "/tmp/tgiops-stage."
STAGE_DIR_GLOB = STAGE_DIR_PREFIX + "*"
# A staging directory this old was left by a cut connection (uploads take seconds): removed,
# since it may hold a token. `tgiops undeploy` removes them all.
_STALE_STAGE_MIN = 60
# A cut link must become an error, not a hang: unacknowledged data older than this aborts the
# socket (TCP_USER_TIMEOUT, RFC 5482; Linux), waking every channel and SFTP call waiting on it.
_DEAD_LINK_S = 30
# The remote lock holder gives up after this long without a heartbeat from us, so a client
# that vanished behind a cut link (sshd never hears of it) cannot lock a host for hours.
_LOCK_LEASE_S = 90
_LOCK_HEARTBEAT_S = 15
_EOF_GRACE_S = 2.0  # after the exit status, how long to wait for the output's end
# Exit status of an install script that failed before touching any final path.
_NOTHING_CHANGED_EXIT = 3
# Exit status of an install ``guard`` that refused (a path is not tgiops'): nothing changed,
# and the caller reports it as bad input (exit 2) with the guard's stderr.
REFUSED_EXIT = 4
# Install scripts end by removing the staging directory; on failure also the temporary files
# made so far; a failure while ``staging`` is 1 changed nothing, and exit 3 says so (exit 4
# from the guard keeps its own status).
_CLEAN_UP = (
    'trap \'rc=$?; rm -rf -- "$stage"; if [ "$rc" != 0 ]; then '
    'rm -f -- "${made[@]}"; [ "$staging" != 1 ] || [ "$rc" = 4 ] || exit 3; fi\' EXIT'
)
# unpack TMP OFFSET SIZE SHA256 PATH: copy PATH's bytes out of the bundle into TMP, and check
# them (paramiko drops the status of pipelined SFTP writes, ``SFTPFile._write`` files them under
# ``type(None)``: a full disk would otherwise go unnoticed).
_UNPACK_FUNCTION = """unpack() {
  dd if="$stage/bundle" of="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" \\
    conv=notrunc status=none
  sum=$(sha256sum -- "$1" 2>&1) || sum="unreadable: $sum"
  if [ "${sum%% *}" != "$4" ]; then
    size=$(stat -c %s -- "$1" 2>/dev/null || echo "?")
    echo "the upload of $5 arrived incomplete ($size of $3 bytes)" >&2
    df -h -- /tmp "$(dirname -- "$5")" >&2 || true
    exit 1
  fi
}"""


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect. ``destination`` is a host, an ssh_config alias or user@host."""

    destination: str
    ssh_config_path: str | None = None
    user: str | None = None
    identity: str | None = None
    port: int | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class FileUpload:
    """One file to install on a host: its final path, content, mode and owner."""

    path: str
    data: bytes = field(repr=False)  # may hold a secret: kept out of reprs and tracebacks
    mode: int = 0o644
    owner: str | None = None


class ScriptGate:
    """The go-ahead a gated ``run_script`` waits for: ``open()`` runs the script, ``close()``
    (or nothing within ``WAIT_S``: the caller vanished behind a cut link) drops it."""

    WAIT_S = 600

    def __init__(self) -> None:
        self._word: queue.Queue[bytes] = queue.Queue()

    def open(self) -> None:
        self._word.put(b"go\n")

    def close(self) -> None:
        self._word.put(b"")  # end of input: `read` fails and the script does not run

    def stdin(self, script: str) -> Iterator[bytes]:
        """What the command reads: the script now, the word when the caller says it."""
        yield script.encode()
        word = self._word.get()  # the first word counts; open after close changes nothing
        if word:
            yield word


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one remote command (like invoke's ``Result``)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def output_tail(self, lines: int = OUTPUT_TAIL_LINES) -> str:
        """The last ``lines`` lines of stdout then stderr (stderr last: errors live there)."""
        combined = [*self.stdout.splitlines(), *self.stderr.splitlines()]
        return "\n".join(combined[-lines:])


def fingerprint_key(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint (``ssh-keygen -l``): unpadded base64 of sha256(key blob)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH and paramiko file a host key under."""
    return host if port == 22 else f"[{host}]:{port}"


def _make_host_key_policy(known_hosts_path: str, accept_new: bool) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class _StrictPolicy(paramiko.MissingHostKeyPolicy):
        """Refuse unknown keys with an actionable message, or record them (accept-new)."""

        def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
            fingerprint = fingerprint_key(key)
            if not accept_new:
                raise HostKeyError(
                    f"host key of {hostname} is not in {known_hosts_path} "
                    f"({key.get_name()} {fingerprint}). Check that fingerprint out of band, then "
                    "rerun with --accept-new-host-key, or add it with `ssh-keyscan -p "
                    f"{hostname.rpartition(']:')[2] if hostname.startswith('[') else 22} "
                    f"{hostname.strip('[').partition(']')[0]} >> {known_hosts_path}`."
                )
            client.get_host_keys().add(hostname, key.get_name(), key)
            _append_known_host(known_hosts_path, hostname, key)
            log.warning(
                "recorded new host key for %s (%s %s) in %s",
                hostname,
                key.get_name(),
                fingerprint,
                known_hosts_path,
            )

    return _StrictPolicy()


def _append_known_host(path: str, hostname: str, key: paramiko.PKey) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as handle:
        handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class RemoteHost:
    """One SSH connection to one host, opened on first use and reused; a context manager."""

    def __init__(self, target: SSHTarget) -> None:
        self._target = target
        self._conn: Any = None  # fabric.Connection, built lazily
        self._sftp: Any = None  # paramiko.SFTPClient bound to the current transport
        self._sftp_transport: Any = None
        self._lock = threading.RLock()
        self.round_trips = 0
        self._locked_transport: Any = None  # the transport a remote lock lives on

    # -- identity --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._target.destination

    def __repr__(self) -> str:
        return f"RemoteHost({self.name!r})"

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------

    def _connection(self) -> Any:
        """The fabric Connection with ssh_config applied (not yet connected)."""
        if self._conn is None:
            from fabric import Config, Connection

            target = self._target
            config = Config(runtime_ssh_path=target.ssh_config_path)
            connect_kwargs: dict[str, Any] = {}
            try:
                conn = Connection(
                    target.destination,
                    user=target.user,
                    port=target.port,
                    config=config,
                    connect_timeout=max(1, int(target.connect_timeout_s)),
                    connect_kwargs=connect_kwargs,
                )
            except (OSError, ValueError) as exc:  # unreadable ssh_config, bad shorthand
                raise SSHConnectError(
                    f"cannot set up SSH to {target.destination!r}: {exc}. Check the destination "
                    f"and the ssh_config ({target.ssh_config_path or '~/.ssh/config'})."
                ) from exc
            if target.identity:
                # An explicit identity replaces the ssh_config's IdentityFile (fabric merges
                # both lists; OpenSSH's -i would try both, but the caller asked for this key).
                conn.connect_kwargs["key_filename"] = [os.path.expanduser(target.identity)]
            self._conn = conn
        return self._conn

    def _known_hosts_path(self, conn: Any) -> str:
        configured = conn.ssh_config.get("userknownhostsfile")
        if configured:
            # OpenSSH allows several files; the first is the one it writes new keys to.
            return os.path.expanduser(configured.split()[0])
        return os.path.expanduser("~/.ssh/known_hosts")

    def _where(self, conn: Any) -> str:
        return f"{conn.user}@{conn.host}:{conn.port}"

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting (again) when there is none."""
        with self._lock:
            conn = self._connection()
            transport = conn.client.get_transport()
            if transport is not None and transport.is_active():
                return transport
            if self._locked_transport is not None:
                # The lock died with the old connection: going on would run unlocked.
                raise SSHConnectError(
                    f"lost the SSH connection to {self.name}, and with it the host lock; "
                    "stopped there. Check the host (is sshd up, is it reachable?) and rerun: "
                    "tgiops picks up from what is installed."
                )
            self._open(conn)
            transport = conn.client.get_transport()
            assert transport is not None
            return transport

    def _strict_client(self, known_hosts: str) -> paramiko.SSHClient:
        """A client that knows the known_hosts keys and refuses unknown ones (or records
        them with accept-new); a changed key is always refused (paramiko BadHostKeyException)."""
        import paramiko

        client = paramiko.SSHClient()
        for path in (_GLOBAL_KNOWN_HOSTS, known_hosts):
            if os.path.isfile(path):
                try:
                    client.get_host_keys().load(path)
                except OSError as exc:
                    raise SSHConnectError(
                        f"cannot read known_hosts file {path}: {exc}. Fix its permissions."
                    ) from exc
        client.set_missing_host_key_policy(
            _make_host_key_policy(known_hosts, self._target.accept_new_host_key)
        )
        return client

    def _hops(self, conn: Any) -> list[Any]:
        """``conn`` and its ProxyJump gateways (fabric Connections), nearest hop last."""
        from fabric import Connection

        hops = [conn]
        while isinstance(hops[-1].gateway, Connection):
            hops.append(hops[-1].gateway)
        return hops

    def _open(self, conn: Any) -> None:
        import paramiko

        known_hosts = self._known_hosts_path(conn)
        # Every hop is checked like the target: fabric builds a ProxyJump gateway with
        # paramiko's AutoAddPolicy and no known_hosts (fabric/connection.py, Connection
        # __init__ and get_gateway), i.e. it would trust any bastion (issue 12).
        hops = self._hops(conn)
        for hop in hops:
            with contextlib.suppress(Exception):
                hop.client.close()
            hop.client = self._strict_client(self._known_hosts_path(hop))
        client = conn.client
        where = self._where(conn)
        log.debug("connecting to %s (%s)", where, self.name)
        try:
            conn.open()
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            hop = next((h for h in reversed(hops) if h.host == exc.hostname), conn)
            name = _known_hosts_name(hop.host, hop.port)
            known_hosts = self._known_hosts_path(hop)
            raise HostKeyError(
                f"host key of {name} CHANGED: {known_hosts} has {exc.expected_key.get_name()} "
                f"{fingerprint_key(exc.expected_key)}, the server offered {exc.key.get_name()} "
                f"{fingerprint_key(exc.key)}. This is a man-in-the-middle or a replaced instance "
                "(a spot relaunch gets new host keys). Refusing to connect. If the change is "
                f"expected: `ssh-keygen -R '{name}' -f {known_hosts}`, then reconnect with "
                "--accept-new-host-key."
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHConnectError(
                f"SSH authentication to {where} ({self.name}) failed: {exc}. Check the user and "
                "the key (--user, --identity, or User/IdentityFile in the ssh_config)."
            ) from exc
        except socket.gaierror as exc:
            client.close()
            raise SSHConnectError(
                f"cannot resolve host {conn.host!r} ({self.name}): {exc}. Check the name, or map "
                "it with a HostName line in the ssh_config."
            ) from exc
        except TimeoutError as exc:
            client.close()
            raise SSHConnectError(
                f"SSH connection to {where} ({self.name}) timed out after "
                f"{self._target.connect_timeout_s:g} s. Check that the instance is running and "
                "that its security group allows port "
                f"{conn.port} from here."
            ) from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            # Refused or unreachable on every address (its own text says "[Errno None]").
            client.close()
            reasons = sorted(
                {os.strerror(e.errno) if e.errno else str(e) for e in exc.errors.values()}
            )
            raise SSHConnectError(
                f"cannot connect to {where} ({self.name}): {'; '.join(reasons)}. Check that the "
                f"instance is running, that sshd listens on port {conn.port} and that its "
                "security group allows it from here."
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SSHConnectError(
                f"cannot connect to {where} ({self.name}): {str(exc) or type(exc).__name__}. Check "
                "that sshd is running there and the port is right."
            ) from exc
        transport = client.get_transport()
        if transport is not None:
            # Long health waits keep the connection idle; keepalives stop NAT/firewall drops.
            transport.set_keepalive(15)
            _set_user_timeout(transport.sock, _DEAD_LINK_S)

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):
                    self._sftp.close()
                self._sftp = None
                self._sftp_transport = None
            if self._conn is not None:
                for hop in self._hops(self._conn):  # fabric closes no gateway of its own
                    with contextlib.suppress(Exception):
                        hop.close()

    # -- commands --------------------------------------------------------------------------

    def run(
        self,
        command: str | list[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        """Run one command; a list is quoted argument by argument (``shlex.join``).

        Pass data (never secrets via argv) on ``stdin``. ``check`` raises RemoteCommandError
        with the tail of the output when the command exits non-zero.
        """
        text = command if isinstance(command, str) else shlex.join(command)
        return self._exec(
            self._as_root(text), shown=text, stdin=stdin, check=check, timeout_s=timeout_s
        )

    def run_script(
        self,
        script: str,
        *,
        check: bool = True,
        timeout_s: float | None = None,
        gate: ScriptGate | None = None,
    ) -> CommandResult:
        """Run a whole bash script in one round trip (sent on stdin to ``bash -s``).

        With a ``gate``, the script travels at once but runs only when the caller opens the
        gate; closed (or the connection gone, or ``ScriptGate.WAIT_S`` without word), the
        script does not run and the command exits 3. The caller overlaps the script's round
        trip with other work (``install_files`` with its upload).
        """
        # The script is not echoed into messages: callers may build it from values they would
        # rather not see in a log. Its size is enough to recognise it.
        lines = script.count("\n") + (0 if script.endswith("\n") else 1)
        shown = f"bash -s  # a {lines}-line script"
        command = "sudo -n bash -s" if self._needs_sudo() else "bash -s"
        # bash reads a script from stdin as it runs it: a command in it that reads stdin would
        # swallow the lines after it. One brace group is parsed whole before it runs, and its
        # commands get /dev/null as stdin.
        wrapped = "{\n" + script.rstrip("\n") + "\n} </dev/null\n"
        if gate is None:
            return self._exec(command, shown=shown, stdin=wrapped, check=check, timeout_s=timeout_s)
        # bash reads stdin one byte at a time (it is not seekable), so the `read` on the last
        # line gets the line the caller sends after the script, and nothing else.
        gated = (
            "tgiops_gated() {\n" + wrapped + "}\n"
            f'if IFS= read -r -t {ScriptGate.WAIT_S} go && [ "$go" = go ]; then tgiops_gated; '
            f"else exit {_NOTHING_CHANGED_EXIT}; fi\n"
        )
        return self._exec(
            command, shown=shown, stdin=gate.stdin(gated), check=check, timeout_s=timeout_s
        )

    def stream(
        self,
        command: str,
        on_line: Callable[[str], None],
        *,
        stop: threading.Event | None = None,
        poll_s: float = 0.2,
    ) -> int | None:
        """Run ``command`` (as root) and hand each stdout line to ``on_line`` as it arrives.

        Returns the exit status, or None when ``stop`` was set first: closing the channel then
        ends the remote command (sshd hangs up its pipe; it exits on its next write). stderr
        lines are logged as warnings.
        """
        import paramiko

        transport = self._transport()
        self.round_trips += 1
        stop = stop or threading.Event()
        try:
            channel = transport.open_session(timeout=self._target.connect_timeout_s)
            try:
                channel.exec_command(self._as_root(command))
                channel.shutdown_write()
                pending = b""
                while not stop.is_set():
                    select.select([channel], [], [], poll_s)
                    while channel.recv_ready():
                        pending += channel.recv(65536)
                        *complete, pending = pending.split(b"\n")
                        for raw in complete:
                            on_line(raw.decode("utf-8", "replace"))
                    while channel.recv_stderr_ready():
                        err = channel.recv_stderr(65536).decode("utf-8", "replace").strip()
                        if err:
                            log.warning("%s: %s", self.name, err)
                    if channel.exit_status_ready() and not channel.recv_ready():
                        break
                if pending:
                    on_line(pending.decode("utf-8", "replace"))
                return None if stop.is_set() else channel.recv_exit_status()
            finally:
                channel.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHConnectError(
                f"lost the SSH connection to {self.name} while running `{command}`: "
                f"{str(exc) or type(exc).__name__}"
            ) from exc

    # -- privilege -------------------------------------------------------------------------

    def _needs_sudo(self) -> bool:
        """Whether commands go through ``sudo -n``: the login user is not root.

        EC2 images log in as ``ubuntu`` or ``ec2-user`` with passwordless sudo; everything
        tgiops does on a host (systemctl, journalctl, docker, /etc) needs root.
        """
        return (self._connection().user or "root") != "root"

    def _as_root(self, command: str) -> str:
        if not self._needs_sudo():
            return command
        return "sudo -n sh -c " + shlex.quote(command)

    def _exec(
        self,
        command: str,
        *,
        shown: str,
        stdin: str | bytes | Iterable[bytes] | None,
        check: bool,
        timeout_s: float | None,
    ) -> CommandResult:
        import paramiko

        transport = self._transport()
        self.round_trips += 1
        log.debug("%s: run %s", self.name, shown)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stdout = bytearray()
        stderr = bytearray()
        sender: threading.Thread | None = None
        send_error: list[BaseException] = []
        try:
            channel = transport.open_session(timeout=self._target.connect_timeout_s)
            try:
                channel.exec_command(command)
                if stdin is None:
                    channel.shutdown_write()
                else:
                    chunks = [stdin.encode()] if isinstance(stdin, str) else stdin
                    # A thread feeds stdin so a command that writes a lot before reading all
                    # of its input cannot deadlock against us.
                    sender = threading.Thread(
                        target=_send_all, args=(channel, chunks, send_error), daemon=True
                    )
                    sender.start()
                exited_at: float | None = None
                while True:
                    while channel.recv_ready():
                        stdout += channel.recv(65536)
                    while channel.recv_stderr_ready():
                        stderr += channel.recv_stderr(65536)
                    if channel.exit_status_ready() and not (
                        channel.recv_ready() or channel.recv_stderr_ready()
                    ):
                        # sshd may send the exit status before the last output (RFC 4254
                        # 6.10): the output is complete at end-of-file. A background child
                        # holding stdout open would delay that forever, hence the grace.
                        if channel.eof_received or channel.closed:
                            break
                        exited_at = exited_at or time.monotonic()
                        if time.monotonic() - exited_at > _EOF_GRACE_S:
                            break
                    if channel.closed and channel.eof_received and not channel.recv_ready():
                        break
                    wait_s = 0.5 if exited_at is None else 0.05
                    if deadline is not None:
                        wait_s = min(wait_s, deadline - time.monotonic())
                        if wait_s <= 0:
                            raise SSHError(
                                f"on {self.name}: `{shown}` did not finish within "
                                f"{timeout_s:g} s (stopped waiting). Output so far:\n"
                                + _tail(stdout, stderr)
                            )
                    select.select([channel], [], [], wait_s)
                exit_code = channel.recv_exit_status()
            finally:
                channel.close()
                if sender is not None:
                    sender.join(timeout=5)
        except SSHError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHConnectError(
                f"lost the SSH connection to {self.name} while running `{shown}`: "
                f"{str(exc) or type(exc).__name__}. Check the host and retry."
            ) from exc
        result = CommandResult(
            command=shown,
            exit_code=exit_code,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
        )
        if exit_code == -1 and not self._transport_alive():  # the channel closed with it
            raise SSHConnectError(
                f"lost the SSH connection to {self.name} while running `{shown}`. Check the "
                "host and retry. Output so far:\n" + result.output_tail()
            )
        if exit_code == -1:  # paramiko: the channel closed without an exit status
            raise SSHConnectError(
                f"on {self.name}: `{shown}` ended without an exit status (the connection or the "
                "remote shell died). Output so far:\n" + result.output_tail()
            )
        if exit_code != 0 and "sudo: a password is required" in result.stderr:
            raise SSHError(
                f"on {self.name}: {self._connection().user} needs passwordless sudo (tgiops runs "
                "systemctl, docker and writes /etc as root): add a NOPASSWD sudoers rule, or "
                "connect as root"
            )
        if check and exit_code != 0:
            raise RemoteCommandError(self.name, shown, exit_code, result.output_tail())
        return result

    # -- files -----------------------------------------------------------------------------

    def _sftp_client(self) -> Any:
        transport = self._transport()
        with self._lock:
            if self._sftp is not None and self._sftp_transport is transport:
                return self._sftp
        import paramiko

        # Opened outside the lock: it takes three round trips (channel, subsystem, version),
        # which commands on other channels may overlap (``_sftp_soon``).
        sftp = paramiko.SFTPClient.from_transport(transport)
        with self._lock:
            if self._sftp is not None and self._sftp_transport is transport:
                sftp.close()  # another thread won the race; use its session
            else:
                self._sftp, self._sftp_transport = sftp, transport
            return self._sftp

    def _sftp_soon(self) -> Callable[[], Any]:
        """Start opening the SFTP session on another thread; the returned function waits for it.

        The caller runs a command meanwhile: the session's three round trips then cost nothing.
        """
        self._transport()  # connect here, so that connection errors surface in this thread
        box: dict[str, Any] = {}

        def open_session() -> None:
            try:
                box["sftp"] = self._sftp_client()
            except BaseException as exc:  # handed to the waiting thread, which raises it
                box["error"] = exc

        opener = threading.Thread(target=open_session, name="tgiops-sftp-open", daemon=True)
        opener.start()

        def wait() -> Any:
            opener.join()
            if "error" in box:
                raise box["error"]
            return box["sftp"]

        return wait

    def install_files(
        self,
        files: Sequence[FileUpload],
        *,
        guard: str = "",
        before: str = "",
        after: str = "",
        on_uploaded: Callable[[], None] | None = None,
    ) -> CommandResult:
        """Put ``files`` in place atomically, then run ``after`` (both as root).

        ``guard`` runs first, before any temporary file exists: it checks that the paths are
        ours to replace and makes their directories. ``exit 4`` there (``REFUSED_EXIT``, with
        the reason on stderr) raises InputError; nothing was changed.

        Three round trips however many files. ``mktemp -d`` makes a private staging
        directory (0700, as the login user, who may not write root's directories) while the
        SFTP session opens. Then one pipelined SFTP write puts all contents there as one
        bundle, while the install script travels and waits for the go-ahead (``ScriptGate``),
        given once the write is acknowledged (after ``on_uploaded``).

        The script, for each file: ``mktemp`` creates ``PATH.tgiops-tmp-XXXXXXXXXX`` beside it
        (same directory: the rename is atomic) with mode and owner set *before* any content,
        so a 0600 secret is never readable by others, not even through a descriptor opened
        early; its bytes are copied in, checked against their sha256 and fsync'ed. Then
        ``before`` runs, every file is renamed over its path (rename(2)), and ``after`` runs.
        A failure before the renames leaves every path as it was (SSHError "left unchanged").
        """
        import paramiko

        for upload in files:
            if not posixpath.isabs(upload.path):
                raise SSHError(f"uploads need an absolute remote path, got {upload.path!r}.")
        sftp_ready = self._sftp_soon()
        stage = self._make_stage_dir()
        gate = ScriptGate()
        script = _install_script(stage, files, before, after, guard)
        outcome: dict[str, Any] = {}

        def install() -> None:
            try:
                outcome["result"] = self.run_script(script, gate=gate)
            except BaseException as exc:  # handed to the caller's thread, which raises it
                outcome["error"] = exc

        installer = threading.Thread(target=install, name="tgiops-install", daemon=True)
        installer.start()
        go = False
        try:
            try:
                self._sftp_write(sftp_ready(), f"{stage}/bundle", b"".join(u.data for u in files))
            except (OSError, EOFError, paramiko.SSHException) as exc:
                gate.close()
                installer.join()
                raise self._upload_failed(files, stage, exc) from exc
            if on_uploaded is not None:
                on_uploaded()
            go = True
        finally:
            if go:
                gate.open()
            else:
                gate.close()
        installer.join()
        if "error" in outcome:
            error = outcome["error"]
            if isinstance(error, RemoteCommandError) and error.remote_exit_code == REFUSED_EXIT:
                reason = error.output_tail.strip().splitlines()
                raise InputError(
                    f"{self.name}: {reason[-1] if reason else 'refused'}; nothing was changed"
                ) from error
            if (
                isinstance(error, RemoteCommandError)
                and error.remote_exit_code == _NOTHING_CHANGED_EXIT
            ):
                sizes = ", ".join(f"{u.path} ({len(u.data)} bytes)" for u in files)
                raise SSHError(
                    f"installing {sizes} on {self.name} failed; it was all left unchanged. "
                    f"Check free space and permissions there.\n{error.output_tail}"
                ) from error
            raise error
        for upload in files:
            log.debug(
                "%s: installed %s (%d bytes, mode %o)",
                self.name,
                upload.path,
                len(upload.data),
                upload.mode,
            )
        result: CommandResult = outcome["result"]
        return result

    def _make_stage_dir(self) -> str:
        """A new private directory for a bundle; stale ones of ours (cut uploads) go first."""
        prefix = STAGE_DIR_PREFIX
        stage = self._exec(
            f"find /tmp -maxdepth 1 -user \"$(id -u)\" -name '{posixpath.basename(prefix)}*' "
            f"-mmin +{_STALE_STAGE_MIN} -exec rm -rf -- {{}} + 2>/dev/null; "
            f"umask 077 && mktemp -d {prefix}XXXXXXXXXX",
            shown="mktemp -d",
            stdin=None,
            check=True,
            timeout_s=None,
        ).stdout.strip()
        if not stage.startswith(prefix):
            raise SSHError(f"on {self.name}: mktemp -d returned {stage!r}; nothing written.")
        return stage

    def _upload_failed(
        self, files: Sequence[FileUpload], stage: str, exc: BaseException
    ) -> SSHError:
        paths = ", ".join(upload.path for upload in files)
        if not self._transport_alive():
            return SSHConnectError(
                f"lost the SSH connection to {self.name} while uploading {paths} "
                f"({str(exc) or type(exc).__name__}); nothing was changed. Check the host "
                "(is sshd up, is it reachable?) and rerun."
            )
        self._exec(f"rm -rf -- {shlex.quote(stage)}", shown="rm", stdin=None, check=False,
                   timeout_s=None)  # fmt: skip
        return SSHError(
            f"uploading {paths} to {self.name} failed: {str(exc) or type(exc).__name__}. "
            "Nothing was changed; check free space in /tmp there."
        )

    def _sftp_write(self, sftp: Any, path: str, payload: bytes) -> None:
        self.round_trips += 1
        with sftp.open(path, "wb") as handle:  # created inside a 0700 directory
            handle.set_pipelined(True)
            handle.write(payload)

    def _transport_alive(self) -> bool:
        transport = self._conn.client.get_transport() if self._conn is not None else None
        return transport is not None and transport.is_active()

    def put_file_atomic(
        self, path: str, data: bytes | str, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        """Replace ``path`` with ``data`` so that no reader ever sees a partial file
        (``install_files``: three round trips)."""
        payload = data.encode() if isinstance(data, str) else data
        self.install_files([FileUpload(path, payload, mode, owner)])

    def read_file(self, path: str) -> bytes | None:
        """The content of a remote file, or None when it does not exist."""
        import paramiko

        if self._needs_sudo():  # SFTP runs as the login user, who may not read root's files
            q = shlex.quote
            result = self.run(
                f"if [ -e {q(path)} ]; then base64 -w0 -- {q(path)}; else echo -n -; fi"
            )
            return None if result.stdout == "-" else base64.b64decode(result.stdout)
        sftp = self._sftp_client()
        self.round_trips += 1
        try:
            with sftp.open(path, "rb") as handle:
                handle.prefetch()
                return handle.read()
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SSHError(
                f"cannot read {self.name}:{path}: {str(exc) or type(exc).__name__}. Check "
                "permissions (tgiops reads system files as the SSH user)."
            ) from exc

    # -- tunnels ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold_lock(
        self,
        path: str,
        *,
        timeout_s: float,
        holder: str | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``path`` (``LOCK_PATH``) on the host while the block
        runs. Its directory is tgiops' own: made 0700 first (``lock_script``).

        A remote ``flock`` reads this channel's stdin while it holds the lock: when the block
        ends we close the channel, and if tgiops dies or the connection drops, sshd closes it
        for us; either way the reader sees end-of-file and the lock is released, so a crashed
        deploy never leaves a host locked. A cut link hides our end from sshd, so we also send
        a heartbeat line every ``_LOCK_HEARTBEAT_S`` and the holder gives up after
        ``_LOCK_LEASE_S`` without one. While the lock is held, a lost connection is not
        silently reopened (that would go on unlocked). Waiting longer than ``timeout_s`` for
        another holder raises SSHError.

        The holder writes who it is (``holder``, default ``lock_holder_identity()``) into the
        lock file; a waiter hands that to ``on_wait``. The file is removed on release, so a
        host keeps no trace of a deploy that was refused (``lock_script``: the inode check).
        """
        import paramiko

        script = (
            lock_script(path, wait_s=timeout_s, holder=holder or lock_holder_identity())
            + f"while read -r -t {_LOCK_LEASE_S} _; do :; done\n"
            + lock_release_script(path)
        )
        command = self._as_root("bash -c " + shlex.quote(script))
        transport = self._transport()
        self.round_trips += 1
        try:
            channel = transport.open_session(timeout=self._target.connect_timeout_s)
            channel.exec_command(command)
            pending, held = b"", False
            while not held:
                if channel.exit_status_ready() and not channel.recv_ready():
                    code = channel.recv_exit_status()
                    channel.close()
                    if code == LOCK_BUSY_EXIT:
                        raise SSHError(
                            f"{self.name} is locked by another tgiops run ({path}); waited "
                            f"{timeout_s:g} s. Retry when it has finished."
                        )
                    raise SSHError(f"cannot lock {path} on {self.name} (exit {code})")
                select.select([channel], [], [], 0.5)
                while channel.recv_ready():
                    pending += channel.recv(1024)
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").strip()
                    if line.startswith(_LOCK_WAIT.strip()) and on_wait is not None:
                        on_wait(line[len(_LOCK_WAIT) :].strip() or "another tgiops run")
                    held = held or line == _LOCK_HELD
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHConnectError(
                f"lost the SSH connection to {self.name} while locking {path}: {exc}"
            ) from exc
        log.debug("%s: holding %s", self.name, path)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(channel, stop), daemon=True)
        beat.start()
        self._locked_transport = transport
        try:
            yield
        finally:
            self._locked_transport = None
            stop.set()
            with contextlib.suppress(Exception):
                channel.shutdown_write()
                channel.close()

    @contextlib.contextmanager
    def forward_local_port(self, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Tunnel a free local port on 127.0.0.1 to ``remote_host:remote_port`` seen from the
        remote (paramiko ``direct-tcpip``); yields the local port."""
        transport = self._transport()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        local_port = listener.getsockname()[1]
        stop = threading.Event()
        workers: list[threading.Thread] = []

        def accept_loop() -> None:
            while not stop.is_set():
                ready, _, _ = select.select([listener], [], [], 0.2)
                if not ready:
                    continue
                try:
                    client, peer = listener.accept()
                except OSError:
                    return
                worker = threading.Thread(
                    target=self._pump,
                    args=(transport, client, peer, remote_host, remote_port, stop),
                    daemon=True,
                )
                worker.start()
                workers.append(worker)

        acceptor = threading.Thread(target=accept_loop, daemon=True)
        acceptor.start()
        log.debug(
            "%s: forwarding 127.0.0.1:%d -> %s:%d", self.name, local_port, remote_host, remote_port
        )
        try:
            yield local_port
        finally:
            stop.set()
            acceptor.join(timeout=2)
            listener.close()
            for worker in workers:
                worker.join(timeout=2)

    def _pump(
        self,
        transport: paramiko.Transport,
        client: socket.socket,
        peer: tuple[str, int],
        remote_host: str,
        remote_port: int,
        stop: threading.Event,
    ) -> None:
        try:
            channel = transport.open_channel(
                "direct-tcpip", (remote_host, remote_port), peer, timeout=10
            )
        except Exception as exc:  # the remote port is closed: the local client sees a reset
            log.debug("%s: tunnel to %s:%d refused: %s", self.name, remote_host, remote_port, exc)
            client.close()
            return
        try:
            while not stop.is_set():
                ready, _, _ = select.select([client, channel], [], [], 0.2)
                if client in ready:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    channel.sendall(chunk)
                if channel in ready:
                    chunk = channel.recv(65536)
                    if not chunk:
                        break
                    client.sendall(chunk)
        except OSError as exc:
            log.debug("%s: tunnel connection ended: %s", self.name, exc)
        finally:
            channel.close()
            client.close()


_LOCK_WAIT = "@@tgiops-lock-wait "
_LOCK_HELD = "@@tgiops-lock-held"
LOCK_BUSY_EXIT = 75  # EX_TEMPFAIL: another holder kept the lock past the wait
_HOLDER_SAFE = re.compile(r"[^A-Za-z0-9@._:+ -]")


def lock_holder_identity(now: float | None = None) -> str:
    """Who takes a host lock, for whoever waits on it: user@machine, pid, since (UTC)."""
    import getpass
    from datetime import datetime, timezone

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    since = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc)
    text = f"{user}@{socket.gethostname()} pid {os.getpid()} since {since:%Y-%m-%d %H:%M:%S}Z"
    return _HOLDER_SAFE.sub("?", text)[:200]


def lock_script(path: str, *, wait_s: float, holder: str, fd: int = 9) -> str:
    """Bash that takes the host lock on ``fd``: says who holds it while waiting
    (``@@tgiops-lock-wait WHO``), exits 75 after ``wait_s``, then writes ``holder`` into the
    file and prints ``@@tgiops-lock-held``.

    The file is removed on release (``lock_release_script``), so a holder checks, after
    ``flock``, that the path still names the file it locked (same device and inode); else it
    locked a removed file and tries again. deploy (``hold_lock``), undeploy and LocalHost
    all take it this way.
    """
    q = shlex.quote
    who = _HOLDER_SAFE.sub("?", holder)[:200]
    wait = max(1, int(wait_s))
    return f"""p={q(path)}
# made (or put back to) 0700 first: install(1) -d sets the mode of an existing one too
install -d -m 0700 -- "$(dirname -- "$p")" || exit 1
while :; do
  exec {fd}>>"$p" || exit 1
  if ! flock -n {fd}; then
    # the holder writes its name just after its flock: an empty file is read again, up to 1 s
    n=0; w=
    while :; do
      w=$(head -c 200 -- "$p" 2>/dev/null | tr -cd '[:print:]')
      [ -n "$w" ] || [ $n -ge 10 ] && break
      n=$((n + 1)); sleep 0.1
    done
    echo "{_LOCK_WAIT}$w"
    flock -w {wait} {fd} || exit {LOCK_BUSY_EXIT}
  fi
  [ "$(stat -c %d:%i -- "$p" 2>/dev/null)" = "$(stat -L -c %d:%i /proc/self/fd/{fd})" ] && break
  exec {fd}>&-
done
printf '%s\\n' {q(who)} > "$p"
echo {_LOCK_HELD}
"""


def lock_release_script(path: str) -> str:
    """Remove the lock file while still holding it (see ``lock_script``)."""
    return f"rm -f -- {shlex.quote(path)}\n"


def _set_user_timeout(sock: Any, seconds: float) -> None:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only; elsewhere keepalives only
    if option is None or not isinstance(sock, socket.socket):  # ProxyCommand/ProxyJump: no TCP
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))


def _heartbeat(channel: Any, stop: threading.Event) -> None:
    """Feed the remote lock holder a line now and then (see ``_LOCK_LEASE_S``)."""
    while not stop.wait(_LOCK_HEARTBEAT_S):
        try:
            channel.sendall(b"\n")
        except Exception:  # the connection is gone; the holder's lease runs out on its own
            return


def _install_script(
    stage: str, files: Sequence[FileUpload], before: str, after: str, guard: str = ""
) -> str:
    """``install_files``' root script: see its docstring."""
    q = shlex.quote
    lines = ["set -e", f"stage={q(stage)}", "made=()", "staging=1", _CLEAN_UP]
    lines += [guard.rstrip("\n"), _UNPACK_FUNCTION, "umask 077"]
    offset = 0
    for index, upload in enumerate(files):
        size, expected = len(upload.data), hashlib.sha256(upload.data).hexdigest()
        lines += [
            f"t{index}=$(mktemp -- {q(upload.path + _TMP_MARKER)}XXXXXXXXXX)",
            f'made+=("$t{index}")',
            f'chmod {upload.mode:o} -- "$t{index}"',
            *([f'chown {q(upload.owner)} -- "$t{index}"'] if upload.owner else []),
            f'unpack "$t{index}" {offset} {size} {expected} {q(upload.path)}',
        ]
        offset += size
    lines.append('sync -- "${made[@]}" 2>/dev/null || true  # durable before visible')
    lines += ["staging=0", before.rstrip("\n")]
    lines += [f'mv -f -- "$t{i}" {q(u.path)}' for i, u in enumerate(files)]
    lines.append(after.rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def _send_all(channel: Any, chunks: bytes | Iterable[bytes], errors: list[BaseException]) -> None:
    try:
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            channel.sendall(chunk)
        channel.shutdown_write()
    except Exception as exc:  # the command may exit before reading all of its input
        errors.append(exc)


def _tail(stdout: bytes | bytearray, stderr: bytes | bytearray) -> str:
    lines = [
        *bytes(stdout).decode("utf-8", "replace").splitlines(),
        *bytes(stderr).decode("utf-8", "replace").splitlines(),
    ]
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])
