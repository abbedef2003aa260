"""What every verb needs from a host, whichever way it is reached: over SSH
(tgiops.edges.ssh.RemoteHost) or this machine itself at boot (tgiops.edges.localhost.LocalHost)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from tgiops.edges.ssh import CommandResult, FileUpload


class Host(Protocol):
    """A host tgiops acts on. Both implementations count their round trips (status, bench)."""

    round_trips: int

    @property
    def name(self) -> str: ...

    def close(self) -> None: ...

    def run(
        self,
        command: str | list[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult: ...

    def run_script(
        self,
        script: str,
        *,
        check: bool = True,
        timeout_s: float | None = None,
    ) -> CommandResult: ...

    def install_files(
        self,
        files: Sequence[FileUpload],
        *,
        guard: str = "",
        before: str = "",
        after: str = "",
        on_uploaded: Callable[[], None] | None = None,
    ) -> CommandResult: ...

    def put_file_atomic(
        self, path: str, data: bytes | str, *, mode: int = 0o644, owner: str | None = None
    ) -> None: ...

    def read_file(self, path: str) -> bytes | None: ...

    def hold_lock(
        self,
        path: str,
        *,
        timeout_s: float,
        holder: str | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> AbstractContextManager[None]: ...

    def forward_local_port(
        self, remote_port: int, remote_host: str = "127.0.0.1"
    ) -> AbstractContextManager[int]: ...
