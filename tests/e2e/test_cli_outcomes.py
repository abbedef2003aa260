"""What a new user meets, end to end on the testbed (issue 11): a deploy that does not fit is
refused (exit 2, one JSON error object, nothing changed), a second undeploy has nothing to undo
(exit 0), and status fits an 80-column terminal."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TINY = "tgiops-test/tiny-llama"
TINY_CONFIG = REPO / "scripts" / "tgi_emulator" / "hub" / "tgiops-test--tiny-llama" / "config.json"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path / "home")  # no ~/.ssh/config of the machine leaks in
    env["PYTHONPATH"] = str(REPO)
    return env


def tgiops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
        check=False,
    )


def host_files(host) -> str:
    return host.run(
        "find /etc/systemd/system /etc/tgiops /var/lib/tgiops -maxdepth 2 -type f 2>/dev/null "
        "| sort | xargs -r sha256sum; systemctl list-units --all --no-legend 'tgiops-*'",
        check=False,
    ).stdout


def test_outcomes_a_new_user_meets(gpu_host, cli_env):
    host = gpu_host("1xA10G", fresh=True)
    target = ["--host", host.name, "--ssh-config", host.ssh_config]

    # A 70B model in 16 bits on one A10G: refused after the probe, before any change.
    before = host_files(host)
    big = tgiops("deploy", "llama-3.1-70b", "--no-token", "--quantize", "none", *target,
                 "--json", env=cli_env)  # fmt: skip
    assert big.returncode == 2, big.stderr
    data = json.loads(big.stdout)
    assert data["ok"] is False and data["error"]["type"] == "DoesNotFitError"
    assert "Nothing was changed" in data["error"]["message"]
    assert host_files(host) == before

    deployed = tgiops("deploy", "--model-config", str(TINY_CONFIG), "--model-id", TINY,
                      "--no-token", "--unit", "tgiops-tiny", *target, env=cli_env)  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr

    # status on a pipe: 80 columns, nothing cut, the reason on its own line
    status = tgiops("status", *target, env={**cli_env, "COLUMNS": "80"})
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split()[:3] == ["host", "unit", "verdict"]
    assert lines[1].split()[:3] == [host.name, "tgiops-tiny", "healthy"]
    assert lines[2].startswith("    serving ")

    # logs -f --json: JSON lines, one object per journal line, until Ctrl-C (exit 0)
    follow = subprocess.Popen(
        [sys.executable, "-m", "tgiops.cli", "logs", *target, "-f", "--json", "-n", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
        cwd=REPO,
    )
    try:
        ready, _, _ = select.select([follow.stdout], [], [], 60)
        assert ready, "no journal line within 60 s"
        line = json.loads(follow.stdout.readline())
        assert set(line) == {"host", "unit", "line"}
        assert (line["host"], line["unit"]) == (host.name, "tgiops-tiny")
    finally:
        follow.send_signal(signal.SIGINT)
        rest, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert all(set(json.loads(x)) == {"host", "unit", "line"} for x in rest.splitlines() if x)

    first = tgiops("undeploy", *target, "--unit", "tgiops-tiny", "--yes", env=cli_env)
    assert first.returncode == 0, first.stderr
    again = tgiops("undeploy", *target, "--unit", "tgiops-tiny", "--yes", "--json", env=cli_env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_absent"] is True
    # a unit file tgiops did not write is still refused, even under a tgiops- name
    unit_file = "/etc/systemd/system/tgiops-other.service"
    host.run(f"printf '[Service]\\nExecStart=/bin/true\\n' > {unit_file}")
    other = tgiops("undeploy", *target, "--unit", "tgiops-other", "--yes", env=cli_env)
    assert other.returncode == 2 and "tgiops did not write it" in other.stderr
    assert host.run(f"test -f {unit_file}", check=False).returncode == 0
    host.run(f"rm -f {unit_file}")
