"""This machine behind the ``RemoteHost`` interface, for the verbs that run on the instance itself.

``tgiops bootstrap`` and ``tgiops watch-interruption`` run on the GPU instance (a systemd unit
started at boot), where there is nothing to SSH to: the same deploy code drives this host
through local processes instead. The contract is RemoteHost's (tgiops.edges.ssh): ``run`` and
``run_script`` return ``CommandResult`` and raise ``RemoteCommandError`` on a non-zero exit
with ``check``; ``install_files`` (and ``put_file_atomic``) never show a
partial file; ``hold_lock`` is an exclusive ``flock``; ``forward_local_port`` needs no tunnel
and yields the port itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from tgiops.core.errors import InputError, RemoteCommandError, TgiopsError
from tgiops.edges.ssh import REFUSED_EXIT, CommandResult, FileUpload, lock_holder_identity

log = logging.getLogger(__name__)

# How long a waiter waits for the holder to write its name (lock_script waits as long).
_HOLDER_NAME_WAIT_S = 1.0


class LocalHost:
    """This machine, with RemoteHost's methods. A context manager (nothing to close)."""

    def __init__(self, name: str | None = None) -> None:
        self._name = name or socket.gethostname()
        self.round_trips = 0

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"LocalHost({self.name!r})"

    def __enter__(self) -> LocalHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to close; here for the RemoteHost interface."""

    # -- commands --------------------------------------------------------------------------

    def run(
        self,
        command: str | list[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        """A list runs as argv (no shell); a string runs under ``bash -c``."""
        if isinstance(command, str):
            return self._exec(["bash", "-c", command], command, stdin, check, timeout_s)
        return self._exec(list(command), shlex.join(command), stdin, check, timeout_s)

    def run_script(
        self, script: str, *, check: bool = True, timeout_s: float | None = None
    ) -> CommandResult:
        lines = script.count("\n") + (0 if script.endswith("\n") else 1)
        shown = f"bash -s  # a {lines}-line script"
        return self._exec(["bash", "-s"], shown, script, check, timeout_s)

    def _exec(
        self,
        argv: list[str],
        shown: str,
        stdin: str | None,
        check: bool,
        timeout_s: float | None,
    ) -> CommandResult:
        self.round_trips += 1
        log.debug("%s: run %s", self.name, shown)
        try:
            proc = subprocess.run(
                argv,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TgiopsError(
                f"on {self.name}: `{shown}` did not finish within {timeout_s:g} s (stopped it)"
            ) from exc
        except OSError as exc:
            raise TgiopsError(f"on {self.name}: cannot run `{shown}`: {exc}") from exc
        result = CommandResult(shown, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise RemoteCommandError(self.name, shown, proc.returncode, result.output_tail())
        return result

    # -- files -----------------------------------------------------------------------------

    def install_files(
        self,
        files: Sequence[FileUpload],
        *,
        guard: str = "",
        before: str = "",
        after: str = "",
        on_uploaded: Callable[[], None] | None = None,
    ) -> CommandResult:
        """RemoteHost.install_files' contract: ``guard`` (exit 4: refused, InputError), each
        file in a temporary file beside its path (mode and owner before any content,
        fsync'ed), ``before``, the renames, ``after``."""
        for upload in files:
            if not os.path.isabs(upload.path):
                raise TgiopsError(f"uploads need an absolute path, got {upload.path!r}")
        if guard:
            checked = self.run_script(guard, check=False)
            if checked.exit_code == REFUSED_EXIT:
                reason = checked.output_tail().strip().splitlines()
                raise InputError(
                    f"{self.name}: {reason[-1] if reason else 'refused'}; nothing was changed"
                )
            if checked.exit_code != 0:
                raise RemoteCommandError(
                    self.name, checked.command, checked.exit_code, checked.output_tail()
                )
        temps: list[str] = []
        try:
            for upload in files:
                temps.append(self._write_temporary(upload))
            if on_uploaded is not None:
                on_uploaded()
            if before:
                self.run_script(before)
            for upload, tmp in zip(files, temps, strict=True):
                os.replace(tmp, upload.path)
                log.debug("%s: installed %s (%d bytes)", self.name, upload.path, len(upload.data))
        except BaseException as exc:
            for tmp in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise TgiopsError(f"cannot install {exc.filename}: {exc}") from exc
            raise
        return self.run_script(after) if after else CommandResult("true", 0, "", "")

    def _write_temporary(self, upload: FileUpload) -> str:
        directory, base = os.path.split(upload.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=base + ".tgiops-tmp-", dir=directory)
        except OSError as exc:
            raise TgiopsError(f"cannot write {upload.path}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), upload.mode)
                if upload.owner:
                    user, _, group = upload.owner.partition(":")
                    shutil.chown(tmp, user=user, group=group or None)
                handle.write(upload.data)
                handle.flush()
                os.fsync(handle.fileno())
        except (OSError, LookupError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TgiopsError(f"cannot write {upload.path}: {exc}; it was left unchanged") from exc
        return tmp

    def put_file_atomic(
        self, path: str, data: bytes | str, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        payload = data.encode() if isinstance(data, str) else data
        self.install_files([FileUpload(path, payload, mode, owner)])

    def read_file(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TgiopsError(f"cannot read {path}: {exc}") from exc

    # -- lock and "tunnel" -----------------------------------------------------------------

    @contextlib.contextmanager
    def hold_lock(
        self,
        path: str,
        *,
        timeout_s: float,
        holder: str | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """An exclusive ``flock`` on ``path``: the same lock, file content and removal on
        release as a remote deploy's (``tgiops.edges.ssh.lock_script``)."""
        directory = os.path.dirname(path) or "/"
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # root's alone (tgiops.core.layout.LOCK_DIR): no one else may lock
        os.chmod(directory, 0o700)
        started = time.monotonic()
        deadline = started + timeout_s
        told = False
        while True:
            handle = open(path, "a+")  # noqa: SIM115 - closed below, or kept while held
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told and on_wait is not None:
                    handle.seek(0)
                    who = handle.read(200).strip()
                    # the holder writes its name just after its flock: wait up to 1 s for it
                    if who or time.monotonic() - started >= _HOLDER_NAME_WAIT_S:
                        on_wait(who or "another tgiops run")
                        told = True
                handle.close()
                if time.monotonic() >= deadline:
                    raise TgiopsError(
                        f"{self.name} is locked by another tgiops run ({path}); waited "
                        f"{timeout_s:g} s. Retry when it has finished."
                    ) from None
                time.sleep(0.2)
                continue
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(handle.fileno())
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                break
            handle.close()  # we locked a file its holder removed on release: again
        try:
            handle.seek(0)
            handle.truncate()
            handle.write((holder or lock_holder_identity()) + "\n")
            handle.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            handle.close()

    @contextlib.contextmanager
    def forward_local_port(self, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """No tunnel on the host itself: the port is reachable as it is."""
        if remote_host not in ("127.0.0.1", "localhost"):
            raise TgiopsError(f"LocalHost reaches only 127.0.0.1, not {remote_host}")
        yield remote_port


def seconds_since_boot(host: object) -> float | None:
    """How long ago the host's PID 1 started (its boot; in a container: the container's).

    ``/proc/uptime`` minus PID 1's start time (``/proc/1/stat`` field 22, in clock ticks), read
    in one round trip; None when the host does not say.
    """
    script = (
        "read up _ < /proc/uptime; "
        "st=$(sed 's/^.*) //' /proc/1/stat | cut -d' ' -f20); "
        'echo "$up $st $(getconf CLK_TCK)"\n'
    )
    try:
        out = host.run_script(script, check=False).stdout.split()  # type: ignore[attr-defined]
        uptime_s, start_ticks, hertz = float(out[0]), float(out[1]), float(out[2])
    except (IndexError, ValueError, TgiopsError):
        return None
    return max(0.0, uptime_s - start_ticks / hertz)
