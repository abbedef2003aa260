"""The shared moto server is replaced when the checkout that started it is gone (a removed
git worktree's virtualenv): it would still answer its health URL and fail every service it had
not imported yet with a 500."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from testbedlib.moto import _installation_present


def test_a_server_whose_files_were_deleted_is_not_reused(tmp_path):
    script = tmp_path / "server.py"
    script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        # Until the child has exec'd, /proc shows pytest's own argv (present either way): under
        # load the unlink below could land first and the test failed (seen on a busy machine).
        deadline = time.monotonic() + 10
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        while str(script).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _installation_present(proc.pid)
        script.unlink()
        assert not _installation_present(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not _installation_present(proc.pid)  # and a process that is gone is not present
