"""The host lock: who holds it is written into it and shown to a waiter, and it leaves no file.

Real flock(1) and bash against LocalHost's fcntl lock: the same protocol as on a remote host
(tgiops.edges.ssh.lock_script), on a temporary path.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tgiops.core.errors import TgiopsError
from tgiops.edges.localhost import LocalHost
from tgiops.edges.ssh import LOCK_BUSY_EXIT, lock_holder_identity, lock_release_script, lock_script


def shell_lock(path: Path, *, wait_s: float, holder: str, then: str = "") -> subprocess.Popen:
    script = lock_script(str(path), wait_s=wait_s, holder=holder) + then
    script += lock_release_script(str(path))
    return subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)


def test_a_waiter_sees_the_holder_and_no_lock_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "run" / "tgiops.lock"
    seen: list[str] = []
    with LocalHost("h").hold_lock(str(path), timeout_s=5, holder="alice@laptop pid 7 since T"):
        assert path.read_text() == "alice@laptop pid 7 since T\n"
        waiter = shell_lock(path, wait_s=10, holder="bob@ci pid 9 since U", then='cat "$p"\n')
        time.sleep(0.5)
    out, _ = waiter.communicate(timeout=10)
    assert waiter.returncode == 0
    assert out.splitlines() == [
        "@@tgiops-lock-wait alice@laptop pid 7 since T",
        "@@tgiops-lock-held",
        "bob@ci pid 9 since U",
    ]
    assert not path.exists()

    # And the other way round: LocalHost waits for the shell holder and is told who it is.
    holder = shell_lock(path, wait_s=5, holder="carol@box pid 3 since V", then="sleep 1\n")
    time.sleep(0.3)
    with LocalHost("h").hold_lock(str(path), timeout_s=10, on_wait=seen.append):
        assert f" pid {os.getpid()} since " in path.read_text()  # lock_holder_identity()
    assert seen == ["carol@box pid 3 since V"]
    holder.communicate(timeout=10)
    assert not path.exists()


def test_a_busy_lock_times_out_with_its_own_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "tgiops.lock"
    with LocalHost("h").hold_lock(str(path), timeout_s=5):
        waiter = shell_lock(path, wait_s=1, holder="bob")
        waiter.communicate(timeout=10)
        assert waiter.returncode == LOCK_BUSY_EXIT
        with (
            pytest.raises(TgiopsError, match="locked by another tgiops run"),
            LocalHost("h").hold_lock(str(path), timeout_s=0.5),
        ):
            pass


def test_many_holders_in_turn_never_overlap(tmp_path: Path) -> None:
    """The lock file is removed on release: a holder that locked the removed file must retry
    (the inode check), or two would hold it at once."""
    path = tmp_path / "tgiops.lock"
    marks = tmp_path / "marks"
    step = 'echo in >> "$M"; sleep 0.05; echo out >> "$M"\n'
    procs = [
        subprocess.Popen(
            ["bash", "-c", lock_script(str(path), wait_s=30, holder=f"p{i}") + step
             + lock_release_script(str(path))],
            env={"M": str(marks), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
        )
        for i in range(12)
    ]  # fmt: skip

    def local_holder() -> None:
        for _ in range(5):
            with LocalHost("h").hold_lock(str(path), timeout_s=30):
                with marks.open("a") as f:
                    f.write("in\n")
                time.sleep(0.05)
                with marks.open("a") as f:
                    f.write("out\n")

    thread = threading.Thread(target=local_holder)
    thread.start()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    thread.join(timeout=60)
    lines = marks.read_text().split()
    assert lines == ["in", "out"] * (len(procs) + 5)
    assert not path.exists()


def test_the_identity_names_user_machine_pid_and_time() -> None:
    who = lock_holder_identity(now=0)
    assert "@" in who and " pid " in who and who.endswith("since 1970-01-01 00:00:00Z")


def test_a_waiter_that_comes_before_the_holder_wrote_its_name_still_learns_it(
    tmp_path: Path,
) -> None:
    """The holder writes its name just after its flock; a waiter that reads the file in between
    reads it again (CI once showed 'held by another tgiops run' here instead of the holder)."""
    path = tmp_path / "tgiops.lock"
    # A holder that locks the file and writes its name only 0.4 s later.
    late_holder = subprocess.Popen(
        ["bash", "-c", f'exec 9>>{path}; flock 9; echo locked; sleep 0.4; '
         f'echo "dave@box pid 5 since W" > {path}; sleep 1.5; rm -f {path}'],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert late_holder.stdout is not None and late_holder.stdout.readline() == "locked\n"
    waiter = shell_lock(path, wait_s=10, holder="erin")
    seen: list[str] = []
    with LocalHost("h").hold_lock(str(path), timeout_s=10, on_wait=seen.append):
        pass
    out, _ = waiter.communicate(timeout=10)
    late_holder.communicate(timeout=10)
    assert out.splitlines()[0] == "@@tgiops-lock-wait dave@box pid 5 since W"
    assert seen and seen[0] in ("dave@box pid 5 since W", "erin")
