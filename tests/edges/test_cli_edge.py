"""The CLI against real parts (sshd on loopback, moto over HTTP): exit codes and --json shapes
of the outcomes a new user meets (issue 11)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tgiops import cli


def run(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
    finally:
        sys.stdin = saved
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


# -- undeploy: a second undeploy has nothing to undo ----------------------------------------


def test_undeploy_of_an_absent_unit_is_done_already(ssh_env, state_home):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["undeploy", *target, "--unit", "tgiops-never-here", "--yes"])
    assert code == 0, err
    assert out.strip() == "testhost: tgiops-never-here already absent; nothing to undo"
    code, out, err = run(["undeploy", *target, "--unit", "tgiops-never-here", "--yes", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert (data["unit"], data["removed"], data["already_absent"]) == (
        "tgiops-never-here",
        True,
        True,
    )


def test_undeploy_without_a_unit_on_a_host_without_any_is_done_already(ssh_env, state_home):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["undeploy", *target, "--yes"])
    assert code == 0, err
    assert "no tgiops unit already absent; nothing to undo" in out


def test_undeploy_refuses_a_unit_file_tgiops_did_not_write(ssh_env, state_home):
    name = f"tgiops-edge-unmanaged-{os.getpid()}"
    path = Path("/etc/systemd/system") / f"{name}.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")  # no managed marker
    try:
        target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
        code, out, err = run(["undeploy", *target, "--unit", name, "--yes", "--json"])
        assert code == 2
        assert "tgiops did not write it" in err
        assert json.loads(out)["error"]["type"] == "InputError"
        assert path.exists()
    finally:
        path.unlink()
