"""`tgiops deploy` end to end on the testbed: real sshd, systemd, dockerd, moto; the emulator.

Each test boots its own host (about 5 s once the testbed cache is built), so state never
leaks between tests.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from process_lists import ProcessLists

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT = "tgiops-llama-3.1-70b-awq"


def planted_token() -> str:
    return "hf_PLANTED" + secrets.token_hex(16)


def tgiops(*args: str, stdin: str | None = None, timeout_s: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
    )


def deploy(host, *args: str):
    return tgiops("deploy", *args, "--host", host.name, "--ssh-config", host.ssh_config)


def unit_state(host, unit: str = UNIT) -> dict[str, str]:
    out = host.run(f"systemctl show -p ActiveState -p NRestarts -p UnitFileState {unit}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def container_started_at(host, name: str = UNIT) -> str:
    return host.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {name}").stdout.strip()


def host_files(host) -> str:
    """A fingerprint of everything deploy may touch on a host."""
    return host.run(
        "find /etc/systemd/system /etc/tgiops /var/lib/tgiops -maxdepth 2 -type f 2>/dev/null "
        "| sort | xargs -r sha256sum; systemctl list-units --all --no-legend 'tgiops-*'",
        check=False,
    ).stdout


def secret_name() -> str:
    """A secret of this test's own (moto is shared by every test of the session)."""
    return "tgiops-test/" + secrets.token_hex(6)


def test_deploy_70b_awq_on_4xa10g_is_healthy_and_never_shows_the_token(gpu_host, aws):
    host = gpu_host("4xA10G", fresh=True)
    token, name = planted_token(), secret_name()
    stored = tgiops("secret", "set", "--name", name, stdin=token + "\n")
    assert stored.returncode == 0, stored.stderr
    with ProcessLists(host) as recorder:
        proc = tgiops("-vvv", "deploy", "llama-3.1-70b-awq", "--host", host.name,
                      "--ssh-config", host.ssh_config, "--secret-name", name, "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["healthy"] and result["changed"]
    assert result["plan"]["num_shard"] == 4 and result["plan"]["quantize"] == "awq"

    journal = host.run(f"journalctl -u {UNIT} --no-pager -o cat").stdout
    assert "Sharding model on 4 processes" in journal  # the emulator saw --num-shard 4
    assert "--num-shard 4" in host.run(f"cat /etc/systemd/system/{UNIT}.service").stdout

    # The env file is root-only and holds the token; nothing else does.
    stat = host.run(f"stat -c '%a %U' /etc/tgiops/{UNIT}.env").stdout.split()
    assert stat == ["600", "root"]
    assert host.run(f"grep -c {token} /etc/tgiops/{UNIT}.env").stdout.strip() == "1"
    places = {
        "unit file": host.run(f"cat /etc/systemd/system/{UNIT}.service").stdout,
        "journal": journal + host.run("journalctl --no-pager -o cat", check=False).stdout,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "process lists": "\n".join(recorder.snapshots),
    }
    assert recorder.snapshots, "the process list was never sampled"
    for place, text in places.items():
        assert token not in text, f"the token leaked into the {place}"

    status = host.run("curl -s http://127.0.0.1:8080/info").stdout
    assert json.loads(status)["model_id"] == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"


def test_same_deploy_restarts_nothing_and_a_changed_flag_restarts_once(gpu_host):
    host = gpu_host("1xA10G", fresh=True)
    first = deploy(host, "phi-3-mini", "--no-token", "--json")
    assert first.returncode == 0, first.stderr
    started = container_started_at(host, "tgiops-phi-3-mini")
    restarts = unit_state(host, "tgiops-phi-3-mini")

    again = deploy(host, "phi-3-mini", "--no-token", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False
    assert container_started_at(host, "tgiops-phi-3-mini") == started
    assert unit_state(host, "tgiops-phi-3-mini") == restarts

    changed = deploy(host, "phi-3-mini", "--no-token", "--max-total-tokens", "2048", "--json")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["changed"] is True
    assert container_started_at(host, "tgiops-phi-3-mini") != started
    info = json.loads(host.run("curl -s http://127.0.0.1:8080/info").stdout)
    assert info["max_total_tokens"] == 2048
    journal = host.run("journalctl -u tgiops-phi-3-mini --no-pager -o cat").stdout
    assert journal.count("Starting Webserver") == 2  # one start, one restart: nothing more


def test_a_crashing_deploy_rolls_back_to_the_previous_healthy_unit(gpu_host):
    host = gpu_host("1xT4", fresh=True)
    good = deploy(host, "phi-3-mini", "--no-token", "--json")
    assert good.returncode == 0, good.stderr
    good_total = json.loads(good.stdout)["plan"]["max_total_tokens"]

    bad = deploy(host, "phi-3-mini", "--no-token", "--flash-attention", "on", "--json")
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    assert result["healthy"] is False and result["rolled_back"] is True
    assert "healthy again" in result["restored"]
    assert "Ampere" in result["diagnosis"]
    assert any("FlashAttention only supports Ampere" in line for line in result["journal_tail"])
    # The previous plan serves again, under the previous unit.
    info = json.loads(host.run("curl -s http://127.0.0.1:8080/info").stdout)
    assert info["max_total_tokens"] == good_total
    unit = host.run("cat /etc/systemd/system/tgiops-phi-3-mini.service").stdout
    assert "USE_FLASH_ATTENTION=false" in unit


def test_concurrent_deploys_to_one_host_are_serialised(gpu_host):
    host = gpu_host("1xA10G", fresh=True)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(total: str) -> None:
        results[total] = deploy(host, "phi-3-mini", "--no-token", "--max-total-tokens", total,
                                "--json")  # fmt: skip

    threads = [threading.Thread(target=run, args=(t,)) for t in ("2048", "3000")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each deploy verified /info against its own plan while holding the lock; interleaved
    # restarts would have made one of them see the other's max_total_tokens and fail.
    for total, proc in results.items():
        assert proc.returncode == 0, (total, proc.stderr[-2000:])
        assert json.loads(proc.stdout)["healthy"] is True
    final = json.loads(host.run("curl -s http://127.0.0.1:8080/info").stdout)["max_total_tokens"]
    assert str(final) in results
    # The second one says whom it replaced, and while it waited, who held the lock.
    first_proc = next(p for total, p in results.items() if total != str(final))
    second_proc = results[str(final)]  # it ran last: its plan serves
    first, second = json.loads(first_proc.stdout), json.loads(second_proc.stdout)
    assert first["replaced"] is None and first["warnings"] == []
    assert second["replaced"]["model"] == "phi-3-mini"
    assert 0 <= second["replaced"]["age_s"] < 300
    assert "this replaced the deploy of phi-3-mini" in second_proc.stderr
    assert "waiting for the lock on" in second_proc.stderr and " pid " in second_proc.stderr


def test_a_changed_host_key_is_refused_and_nothing_changes(gpu_host, tmp_path):
    host = gpu_host("1xA10G", fresh=True)
    before = host_files(host)
    # Point a copy of the ssh_config at a known_hosts that holds another key for this host.
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
                   check=True)  # fmt: skip
    key_type, key = other_key.with_suffix(".pub").read_text().split()[:2]
    (tmp_path / "known_hosts").write_text(f"{host.address} {key_type} {key}\n")
    config = Path(host.ssh_config).read_text()
    assert host.info.known_hosts in config
    (tmp_path / "ssh_config").write_text(
        config.replace(host.info.known_hosts, str(tmp_path / "known_hosts"))
    )
    proc = tgiops("deploy", "phi-3-mini", "--no-token", "--host", host.name,
                  "--ssh-config", str(tmp_path / "ssh_config"))  # fmt: skip
    assert proc.returncode == 1
    assert "CHANGED" in proc.stderr and "SHA256:" in proc.stderr
    assert host_files(host) == before


def test_a_missing_secret_is_a_clear_error_and_changes_nothing(gpu_host, aws):
    host = gpu_host("1xA10G", fresh=True)
    before = host_files(host)
    proc = deploy(host, "phi-3-mini", "--secret-name", "tgiops/absent")
    assert proc.returncode == 2  # refused before anything changed
    assert "--secret-name tgiops/absent" in proc.stderr and "tgiops secret set" in proc.stderr
    assert host_files(host) == before


def test_dry_run_changes_nothing_and_masks_the_token(gpu_host, aws):
    host = gpu_host("1xA10G", fresh=True)
    token, name = planted_token(), secret_name()
    assert tgiops("secret", "set", "--name", name, stdin=token).returncode == 0
    before = host_files(host)
    proc = deploy(host, "phi-3-mini", "--dry-run", "--secret-name", name)
    assert proc.returncode == 0, proc.stderr
    assert "HF_TOKEN=***" in proc.stdout and "ExecStart=/usr/bin/docker run" in proc.stdout
    assert "systemctl restart tgiops-phi-3-mini.service" in proc.stdout
    assert token not in proc.stdout + proc.stderr
    assert host_files(host) == before


@pytest.mark.parametrize(
    "args,needle",
    [
        pytest.param(["--unit", "x; touch /tmp/pwned"], "unit name", id="unit-metacharacters"),
        pytest.param(["--data-dir", "/d/$(id)"], "--data-dir", id="data-dir-metacharacters"),
        pytest.param(["--num-shard", "3"], "only 1 GPU", id="impossible-shards"),
        pytest.param(["--gpu-devices", "a,b"], "--gpu-devices", id="bad-gpu-devices"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(gpu_host, args, needle):
    host = gpu_host("1xA10G")
    before = host_files(host)
    proc = deploy(host, "phi-3-mini", "--no-token", *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert host_files(host) == before
    assert host.run("test -e /tmp/pwned", check=False).returncode != 0


def test_deploy_as_an_ec2_style_login_user_with_passwordless_sudo(gpu_host, aws):
    """EC2 images log in as `ubuntu`: SFTP stages as that user, root work goes through sudo."""
    host = gpu_host("1xA10G", fresh=True)
    token, name = planted_token(), secret_name()
    assert tgiops("secret", "set", "--name", name, stdin=token).returncode == 0
    with ProcessLists(host) as recorder:
        proc = deploy(host, "phi-3-mini", "--user", "ubuntu", "--secret-name", name, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["healthy"] is True
    stat = host.run("stat -c '%a %U' /etc/tgiops/tgiops-phi-3-mini.env").stdout.split()
    assert stat == ["600", "root"]
    assert host.run("ls /tmp | grep -c tgiops-stage", check=False).stdout.strip() == "0"
    assert token not in "\n".join(recorder.snapshots) + proc.stdout + proc.stderr
    again = deploy(host, "phi-3-mini", "--user", "ubuntu", "--secret-name", name, "--json")
    assert json.loads(again.stdout)["changed"] is False  # the env file compares through sudo
