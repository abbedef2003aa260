"""The shared moto server is replaced when the checkout that started it is gone (a removed
git worktree's virtualenv): it would still answer its health URL and fail every service it had
not imported yet with a 500."""

from __future__ import annotations

import subprocess
import sys

from testbedlib.moto import _installation_present


def test_a_server_whose_files_were_deleted_is_not_reused(tmp_path):
    script = tmp_path / "server.py"
    script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        assert _installation_present(proc.pid)
        script.unlink()
        assert not _installation_present(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not _installation_present(proc.pid)  # and a process that is gone is not present
