"""`tgiops logs` and `tgiops undeploy` end to end on a testbed host with two tgiops units."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "scripts" / "tgi_emulator" / "hub" / "tgiops-test--tiny-llama" / "config.json"
TINY = "tgiops-test/tiny-llama"
CACHE = "/var/lib/tgiops/data/cache/hub/models--tgiops-test--tiny-llama"
PLANTED = "hf_PLANTEDtokenDoNotLeak0123456789abcdef"


def tgiops(*args: str, env: dict[str, str], stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
        input=stdin,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def two_units(gpu_host, cli_env):
    """A fresh host serving the tiny model twice: tgiops-a on 8080 and GPU 0, tgiops-b on 8081
    and GPU 1 (two TGI never share a GPU)."""
    host = gpu_host("2xA10G", fresh=True)
    for unit, port, gpu in (("tgiops-a", "8080", "0"), ("tgiops-b", "8081", "1")):
        deployed = tgiops(
            "deploy",
            "--model-config",
            str(TINY_CONFIG),
            "--model-id",
            TINY,
            "--host",
            host.name,
            "--ssh-config",
            host.ssh_config,
            "--no-token",
            "--unit",
            unit,
            "--port",
            port,
            "--gpu-devices",
            gpu,
            env=cli_env,
        )
        assert deployed.returncode == 0, deployed.stderr
    return host


def base(host) -> list[str]:
    return ["--host", host.name, "--ssh-config", host.ssh_config]


def test_logs_prints_the_units_journal_and_follows_new_lines_redacted(two_units, cli_env):
    # One test for both reads, so the two units are deployed once (read-only on the host).
    check_logs_prints_the_units_journal(two_units, cli_env)
    check_logs_follow_shows_a_new_line_redacted(two_units, cli_env)


def check_logs_prints_the_units_journal(host, cli_env) -> None:
    result = tgiops("logs", *base(host), "--unit", "tgiops-a", "-n", "200", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "text_generation_launcher" in result.stdout  # the emulator's launcher lines
    assert "tgiops-b" not in result.stdout

    # Two units and no --unit: the user must choose.
    ambiguous = tgiops("logs", *base(host), env=cli_env)
    assert ambiguous.returncode == 2
    assert "several tgiops units (tgiops-a, tgiops-b)" in ambiguous.stderr


def check_logs_follow_shows_a_new_line_redacted(host, cli_env) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tgiops.cli",
            "logs",
            *base(host),
            "--unit",
            "tgiops-a",
            "-f",
            "-n",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        lines.get(timeout=60)  # the last existing line: the stream is up
        marker = f"tgiops-e2e-marker-{time.time_ns()}"
        # The engine's own stdout (docker forwards it to the unit's journal), after `logs -f`
        # started: a line with a planted token, as a leaky library might print it.
        host.run(f"docker exec tgiops-a sh -c 'echo {marker} HF_TOKEN={PLANTED} > /proc/1/fd/1'")
        deadline = time.monotonic() + 60
        seen = ""
        while marker not in seen and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                seen += lines.get(timeout=1)
        assert marker in seen
        assert PLANTED not in seen
        assert "HF_TOKEN=***" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read()


def unit_files(host, unit: str) -> str:
    return host.run(
        f"ls -1 /etc/systemd/system/{unit}.service* /etc/tgiops/{unit}.env* 2>/dev/null; true"
    ).stdout.strip()


def container_exists(host, name: str) -> bool:
    return host.run(f"docker inspect --type container {name}", check=False).returncode == 0


def test_undeploy_removes_one_unit_and_leaves_the_other(two_units, cli_env):
    host = two_units
    # Without --yes and without a terminal nothing happens.
    refused = tgiops("undeploy", *base(host), "--unit", "tgiops-a", env=cli_env, stdin="y\n")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert unit_files(host, "tgiops-a")

    # Redeploying a keeps a .previous copy; undeploy must remove that too.
    host.run(
        "cp /etc/systemd/system/tgiops-a.service /etc/systemd/system/tgiops-a.service.previous"
    )
    result = tgiops(
        "undeploy",
        *base(host),
        "--unit",
        "tgiops-a",
        "--yes",
        "--purge-cache",
        "--json",
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["unit"], data["removed"], data["leftovers"]) == ("tgiops-a", True, [])
    # b serves the same model from the same cache: --purge-cache keeps it.
    assert data["cache"] == "kept (shared with tgiops-b)"
    assert data["other_units"] == ["tgiops-b"]

    assert unit_files(host, "tgiops-a") == ""
    assert not container_exists(host, "tgiops-a")
    load = host.run("systemctl show tgiops-a.service -p LoadState --value").stdout.strip()
    assert load == "not-found"
    assert host.run(f"test -d {CACHE}", check=False).returncode == 0

    # The other unit is untouched and still serves.
    assert host.run("systemctl is-active tgiops-b.service").stdout.strip() == "active"
    assert unit_files(host, "tgiops-b").splitlines() == [
        "/etc/systemd/system/tgiops-b.service",
        "/etc/tgiops/tgiops-b.env",
    ]
    code = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/health")
    assert code.stdout.strip() == "200"

    status = tgiops("status", *base(host), "--json", env=cli_env)
    units = json.loads(status.stdout)["hosts"][0]["units"]
    assert [(u["unit"], u["verdict"]) for u in units] == [("tgiops-b", "healthy")]

    # The last one, with its cache.
    last = tgiops("undeploy", *base(host), "--yes", "--purge-cache", "--json", env=cli_env)
    assert last.returncode == 0, last.stderr
    assert json.loads(last.stdout)["cache"] == "purged"
    assert host.run(f"test -e {CACHE}", check=False).returncode != 0
    assert unit_files(host, "tgiops-b") == ""
    assert not container_exists(host, "tgiops-b")
    gone = tgiops("status", *base(host), "--json", env=cli_env)
    assert gone.returncode == 1
    assert json.loads(gone.stdout)["hosts"][0]["units"][0]["verdict"] == "not-deployed"
