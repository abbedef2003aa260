"""Deploy on a host it shares: with units it does not own, with its own other units, and the
traces a refused or failed deploy must not leave (issue 11, items 1, 2, 4, 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "scripts" / "tgi_emulator" / "hub" / "tgiops-test--tiny-llama" / "config.json"
TINY = ("--model-config", str(TINY_CONFIG), "--model-id", "tgiops-test/tiny-llama")


def tgiops(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tgiops.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout_s, check=False)  # fmt: skip


def on(host) -> tuple[str, ...]:
    return ("--host", host.name, "--ssh-config", host.ssh_config)


def traces(host) -> str:
    """Everything a deploy or undeploy may leave outside the model cache."""
    return host.run(
        "cd /etc/systemd/system && sha256sum *.service* 2>/dev/null; "
        "ls multi-user.target.wants; ls -a /etc/tgiops 2>&1; ls -a /run/lock; "
        "sha256sum /lib/systemd/system/docker.service; "
        "docker ps -a --format '{{.Names}}'; systemctl is-active docker ssh; "
        "systemctl list-units --all --no-legend 'tgiops-*'",
        check=False,
    ).stdout


FOREIGN = "[Unit]\nDescription=not tgiops\n[Service]\nExecStart=/bin/sleep infinity\n"
# What an older tgiops wrote for `--unit myapp`: marked, but not named tgiops-*.
OLD_MARKED = "# Managed by tgiops 0.0.1: phi-3-mini (o/m) on 1x T4.\n" + FOREIGN


def test_units_tgiops_does_not_own_are_never_touched_and_a_failed_first_deploy_leaves_nothing(
    gpu_host,
):
    host = gpu_host("1xT4", fresh=True)
    host.run(f"printf %s '{FOREIGN}' > /etc/systemd/system/tgiops-foreign.service")
    host.run(f"printf %s '{OLD_MARKED}' > /etc/systemd/system/myapp.service")
    host.run("systemctl daemon-reload")
    before = traces(host)
    assert "tgiops-foreign.service" in before and "active\nactive" in before

    for unit, needle in (
        ("docker", "not a tgiops unit name"),
        ("sshd.service", "not a tgiops unit name"),
        ("tgiops-foreign", "not written by tgiops"),
    ):
        proc = tgiops("deploy", "phi-3-mini", "--no-token", "--unit", unit, *on(host))
        assert proc.returncode == 2, (unit, proc.stderr[-2000:])
        assert needle in proc.stderr, (unit, proc.stderr[-2000:])
        assert traces(host) == before, unit  # no unit, no /etc/tgiops, no lock file left
    for unit, needle in (
        ("docker", "not a tgiops unit name"),
        ("myapp", "not a tgiops unit name"),
        ("tgiops-foreign", "tgiops did not write it"),
    ):
        proc = tgiops("undeploy", "--unit", unit, "--yes", *on(host))
        assert proc.returncode == 2, (unit, proc.stderr[-2000:])
        assert needle in proc.stderr, (unit, proc.stderr[-2000:])
        assert traces(host) == before, unit

    # A first deploy that crashes (flash attention on a T4), named with a .service suffix:
    # the unit is tgiops-x, and after the rollback nothing of it is left.
    bad = tgiops("deploy", "phi-3-mini", "--no-token", "--unit", "tgiops-x.service",
                 "--flash-attention", "on", "--json", *on(host))  # fmt: skip
    assert bad.returncode == 1, bad.stderr[-2000:]
    result = json.loads(bad.stdout)
    assert result["unit"] == "tgiops-x" and result["rolled_back"] is True
    assert "removed" in result["restored"]
    assert traces(host) == before
    load = host.run("systemctl show -p LoadState --value tgiops-x.service").stdout.strip()
    assert load == "not-found"
    status = tgiops("status", "--json", *on(host))
    units = json.loads(status.stdout)["hosts"][0]["units"]
    assert "tgiops-x" not in [u["unit"] for u in units]  # nothing left to `systemctl start`
    assert "myapp" not in [u["unit"] for u in units]  # marked, but not a tgiops-NAME unit
    logs = tgiops("logs", "--unit", "myapp", *on(host))
    assert logs.returncode == 2, logs.stderr[-2000:]


def test_units_on_one_host_get_their_own_port_and_gpu_and_bad_input_is_refused_on_dry_run(
    gpu_host, aws
):
    host = gpu_host("2xA10G", fresh=True)
    first = tgiops("deploy", *TINY, "--no-token", "--unit", "tgiops-a", "--gpu-devices", "0",
                   "--json", *on(host))  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    placed = json.loads(first.stdout)
    assert (placed["port"], placed["gpu_devices"]) == (8080, [0])
    # No --port, no --gpu-devices: the free port and the free GPU.
    second = tgiops("deploy", *TINY, "--no-token", "--unit", "tgiops-b", "--json", *on(host))
    assert second.returncode == 0, second.stderr[-2000:]
    result = json.loads(second.stdout)
    assert (result["port"], result["gpu_devices"]) == (8081, [1])
    assert result["endpoint"] == "http://127.0.0.1:8081"
    unit_b = host.run("cat /etc/systemd/system/tgiops-b.service").stdout
    assert "127.0.0.1:8081:80" in unit_b and "device=1" in unit_b
    status = json.loads(tgiops("status", "--json", *on(host)).stdout)["hosts"][0]["units"]
    assert [(u["unit"], u["verdict"]) for u in status] == [
        ("tgiops-a", "healthy"),
        ("tgiops-b", "healthy"),
    ]
    # Deploying to several hosts: concurrently, one JSON object with a summary (the same host
    # twice: serialised by its lock, nothing to change).
    fleet = tgiops("deploy", *TINY, "--no-token", "--unit", "tgiops-b", "--json", *on(host),
                   "--host", host.name, "--parallel", "2")  # fmt: skip
    assert fleet.returncode == 0, fleet.stderr[-2000:]
    both = json.loads(fleet.stdout)
    assert both["summary"] == {"hosts": 2, "healthy": 2, "failed": 0, "refused": 0, "errors": 0}
    assert [(h["target"], h["changed"], h["port"]) for h in both["hosts"]] == [
        (host.name, False, 8081),
        (host.name, False, 8081),
    ]
    before = traces(host)

    refusals = [
        (("--unit", "tgiops-c"), "every GPU of"),
        (("--unit", "tgiops-c", "--gpu-devices", "5"), "has no GPU 5"),
        (("--unit", "tgiops-c", "--gpu-devices", "1"), "used by tgiops unit tgiops-b"),
        (("--unit", "tgiops-c", "--port", "8080"), "tgiops unit tgiops-a"),
        (("--unit", "tgiops-a", "--port", "22", "--dry-run"), "--port 22: something"),
        (("--unit", "tgiops-c", "--gpu-devices", "5", "--dry-run"), "has no GPU 5"),
        (("--unit", "tgiops-a", "--timeout", "0", "--dry-run"), "--timeout 0"),
        (("--unit", "tgiops-a", "--connect-timeout", "0", "--dry-run"), "--connect-timeout 0"),
        (("--unit", "tgiops-a", "--data-dir", "/", "--dry-run"), "'/' is not a place for"),
    ]
    for args, needle in refusals:
        proc = tgiops("deploy", *TINY, "--no-token", *args, *on(host))
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert needle in proc.stderr, (args, proc.stderr[-2000:])
    missing = tgiops("deploy", *TINY, "--unit", "tgiops-a", "--secret-name", "tgiops/absent",
                     "--dry-run", *on(host))  # fmt: skip
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "--secret-name tgiops/absent" in missing.stderr and "secret set" in missing.stderr
    assert traces(host) == before


def test_progress_reads_the_newest_journal_line(gpu_host):
    """systemd 252 (the testbed's Debian 12): ``--since @T -n 1`` gives the first line after T;
    deploy's query must give the newest."""
    from tgiops.commands.deploy_scripts import newest_journal_line_command

    host = gpu_host("1xA10G")
    since = int(host.run("date +%s").stdout) - 1
    unit = "tgiops-progress-probe"
    host.run(f"systemd-run --unit {unit} -q sh -c "
             "'for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done; sleep 600'")  # fmt: skip
    try:
        host.run("sleep 3")
        newest = host.run(newest_journal_line_command(unit, since)).stdout.strip()
        assert newest == "line-5"
    finally:
        host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}", check=False)
