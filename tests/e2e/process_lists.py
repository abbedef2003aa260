"""Snapshots of `ps -eo args` on a testbed host and here while a command runs: a token must
never appear in any argv (secrets travel by file or stdin only)."""

from __future__ import annotations

import subprocess
import threading


class ProcessLists:
    def __init__(self, host, interval_s: float = 0.2) -> None:
        self.host = host
        self.interval_s = interval_s
        self.snapshots: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.snapshots.append(self.host.run("ps -eo args", check=False).stdout)
            self.snapshots.append(
                subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            )
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ProcessLists:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
