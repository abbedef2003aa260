"""`tgiops deploy --engine vllm` end to end on the testbed: real sshd, systemd, dockerd, moto and
the vLLM emulator (scripts/vllm_emulator) under vLLM's image name and tags (issue 15)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from private_moto import point_boto3_at, private_moto
from process_lists import ProcessLists

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT = "tgiops-llama-3.1-70b-awq"


def tgiops(*args: str, stdin: str | None = None, timeout_s: float = 400):
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
    )


def stored_secret(value: str) -> str:
    name = "tgiops-test/" + secrets.token_hex(6)
    out = tgiops("secret", "set", "--name", name, stdin=value + "\n")
    assert out.returncode == 0, out.stderr
    return name


def test_vllm_deploy_70b_awq_on_4xa10g_serves_openai_and_hides_secrets(gpu_host, aws):
    import openai

    host = gpu_host("4xA10G", fresh=True)
    token = "hf_PLANTED" + secrets.token_hex(16)
    api_key = "sk-PLANTED" + secrets.token_hex(16)
    token_name, key_name = stored_secret(token), stored_secret(api_key)
    with ProcessLists(host) as recorder:
        proc = tgiops("-vvv", "deploy", "llama-3.1-70b-awq", "--engine", "vllm",
                      "--host", host.name, "--ssh-config", host.ssh_config,
                      "--secret-name", token_name, "--api-key-secret", key_name,
                      "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["healthy"] and result["changed"]
    plan = result["plan"]
    assert plan["engine"]["name"] == "vllm" and plan["num_shard"] == 4
    # testbed drivers are below 580: the CUDA 12.9 build of the release
    assert plan["image"].endswith("-cu129"), plan["image"]

    unit_text = host.run(f"cat /etc/systemd/system/{UNIT}.service").stdout
    assert "--tensor-parallel-size 4" in unit_text and plan["image"] in unit_text
    assert "-e VLLM_API_KEY" in unit_text and "--api-key" not in unit_text
    journal = host.run(f"journalctl -u {UNIT} --no-pager -o cat").stdout
    assert "GPU KV cache size" in journal
    stat = host.run(f"stat -c '%a %U' /etc/tgiops/{UNIT}.env").stdout.split()
    assert stat == ["600", "root"]
    env_text = host.run(f"cat /etc/tgiops/{UNIT}.env").stdout
    assert f"VLLM_API_KEY={api_key}" in env_text and f"HF_TOKEN={token}" in env_text

    record = json.loads(host.run(f"cat /var/lib/tgiops/data/tgiops/deployments/{UNIT}.json").stdout)
    assert record["spec"]["engine"] == "vllm"
    assert record["deployed"]["image"] == plan["image"]

    places = {
        "unit file": unit_text,
        "journal": host.run("journalctl --no-pager -o cat", check=False).stdout,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "process lists": "\n".join(recorder.snapshots),
    }
    assert recorder.snapshots, "the process list was never sampled"
    for place, text in places.items():
        assert token not in text, f"the token leaked into the {place}"
        assert api_key not in text, f"the API key leaked into the {place}"

    # The official client, through an SSH tunnel to the loopback port.
    with subprocess.Popen(
        ["ssh", "-F", host.ssh_config, "-o", "StrictHostKeyChecking=yes", "-N",
         "-L", "18511:127.0.0.1:8080", host.name],
    ) as tunnel:  # fmt: skip
        try:
            _wait_port(18511)
            client = openai.OpenAI(base_url="http://127.0.0.1:18511/v1", api_key=api_key)
            assert [m.id for m in client.models.list()] == ["llama-3.1-70b-awq"]
            done = client.completions.create(
                model="llama-3.1-70b-awq", prompt="Hello", max_tokens=3
            )
            assert done.choices[0].text
            chat = client.chat.completions.create(
                model="llama-3.1-70b-awq",
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=3,
            )
            assert chat.choices[0].message.content
            anonymous = openai.OpenAI(base_url="http://127.0.0.1:18511/v1", api_key="wrong")
            with pytest.raises(openai.AuthenticationError):
                anonymous.models.list()
        finally:
            tunnel.terminate()

    status = tgiops("status", "--host", host.name, "--ssh-config", host.ssh_config, "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert api_key not in status.stdout and token not in status.stdout
    (unit,) = [u for h in json.loads(status.stdout)["hosts"] for u in h["units"]]
    assert unit["verdict"] == "healthy", unit["reason"]
    assert "vLLM" in unit["reason"]
    assert unit["plan"]["engine"] == {"name": "vllm", "version": plan["engine"]["version"]}
    metrics = unit["tgi"]["metrics"]
    assert metrics["kv_cache_usage"] is not None and metrics["batch_size"] is not None
    assert metrics["generation_tokens"] >= 3  # the client's calls above
    text = tgiops("status", "--host", host.name, "--ssh-config", host.ssh_config)
    assert "healthy" in text.stdout and "vLLM" in text.stdout


def _wait_port(port: int, timeout_s: float = 20.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the SSH tunnel to port {port} never opened")


def _deploy(host, *args: str):
    return tgiops("deploy", "phi-3-mini", "--engine", "vllm", "--no-token", "--host", host.name,
                  "--ssh-config", host.ssh_config, "--json", *args)  # fmt: skip


def test_vllm_failures_roll_back_or_refuse_with_the_reason(gpu_host):
    host = gpu_host("1xA10G", fresh=True)
    unit_path = "/etc/systemd/system/tgiops-phi-3-mini.service"

    # Another process holds GPU memory (the fake nvidia-smi reports it, the emulator sees
    # it): vLLM would refuse to start, so deploy refuses first (exit 2), with the reason and
    # the fix, and installs nothing.
    inventory = host.testbed.paths.host_dir(host.name) / "root/etc/testbed/gpus.json"
    data = json.loads(inventory.read_text())
    data["gpus"][0]["memory_used_mib"] = 6000
    inventory.write_text(json.dumps(data))
    try:
        refused = _deploy(host)
        assert refused.returncode == 2, refused.stderr[-2000:]
        error = json.loads(refused.stdout)["error"]["message"]
        assert "6000 MiB" in error and "--gpu-memory-utilization 0.73" in error, error
        assert host.run(f"test -e {unit_path}", check=False).returncode == 1
        # Asking for less than is free is the fix, and vLLM (the emulator) agrees.
        fits = _deploy(host, "--gpu-memory-utilization", "0.7")
        assert fits.returncode == 0, fits.stderr[-2000:]
    finally:
        data["gpus"][0]["memory_used_mib"] = 0
        inventory.write_text(json.dumps(data))

    good = _deploy(host)
    assert good.returncode == 0, good.stderr[-2000:]
    good_unit = host.run(f"cat {unit_path}").stdout

    # A max model length the planner accepts but the engine's KV cache cannot hold (the
    # planner does not predict vLLM's CUDA-graph charge): vLLM refuses, tgiops rolls back and
    # says which length fits, from vLLM's own message.
    bad = _deploy(host, "--gpu-memory-utilization", "0.41", "--max-model-len", "4096")
    assert bad.returncode == 1, bad.stderr[-2000:]
    result = json.loads(bad.stdout)
    assert result["rolled_back"] is True and result["healthy"] is False
    assert "--max-model-len" in (result["diagnosis"] or ""), result
    assert host.run(f"cat {unit_path}").stdout == good_unit
    assert "healthy again" in result["restored"]


@pytest.fixture
def private_aws(tmp_path, monkeypatch):
    """A moto server of this test's own: the sweep runs for a minute and the shared one is
    reset by every other test (tests/e2e/private_moto.py)."""
    with private_moto(tmp_path) as url:
        point_boto3_at(url, tmp_path, monkeypatch)
        yield url


def test_vllm_sweep_a_planted_token_and_api_key_appear_nowhere(gpu_host, private_aws, tmp_path):
    """Every verb that touches a vLLM deployment, at -vvv, text and --json, success and
    failure: neither the token nor the API key shows anywhere but the 0600 env file."""
    host = gpu_host("1xA10G", fresh=True)
    token = "hf_PLANTED" + secrets.token_hex(16)
    api_key = "sk-PLANTED" + secrets.token_hex(16)
    token_name, key_name = stored_secret(token), stored_secret(api_key)
    target = ["--host", host.name, "--ssh-config", host.ssh_config]
    deploy_args = ["phi-3-mini", "--engine", "vllm", "--secret-name", token_name,
                   "--api-key-secret", key_name]  # fmt: skip
    texts: dict[str, str] = {}

    def run(label: str, *args: str, expect: tuple[int, ...]):
        proc = tgiops("-vvv", *args)
        texts[f"{label}: stdout"], texts[f"{label}: stderr"] = proc.stdout, proc.stderr
        assert proc.returncode in expect, (label, proc.returncode, proc.stderr[-3000:])
        return proc

    with ProcessLists(host) as recorder:
        for flags in ([], ["--json"]):
            dry = run(f"dry run {flags}", "deploy", *deploy_args, "--dry-run", *flags, *target,
                      expect=(0,))  # fmt: skip
            assert "VLLM_API_KEY=***" in dry.stdout
        public = run("deploy public", "deploy", *deploy_args, "--public", "--json", *target,
                     expect=(0,))  # fmt: skip
        assert json.loads(public.stdout)["warnings"] == []  # an API key: no exposure warning
        run("deploy unchanged", "deploy", *deploy_args, "--public", *target, expect=(0,))
        crashed = run("deploy crashing", "deploy", *deploy_args, "--public",
                      "--gpu-memory-utilization", "0.41", "--max-model-len", "4096", "--json",
                      *target, expect=(1,))  # fmt: skip
        assert json.loads(crashed.stdout)["rolled_back"] is True
        run("status", "status", *target, "--json", expect=(0, 1))
        run("status text", "status", *target, expect=(0, 1))
        run("logs", "logs", *target, "-n", "1000", expect=(0,))
        for flags in ([], ["--json"]):
            run(f"userdata {flags}", "userdata", *deploy_args, "--preinstalled", *flags,
                expect=(0,))  # fmt: skip
        open_one = run("deploy without key", "deploy", "phi-3-mini", "--engine", "vllm",
                       "--secret-name", token_name, "--public", "--unit", "tgiops-open",
                       "--port", "8090", "--gpu-memory-utilization", "0.1", "--json", *target,
                       expect=(0, 1, 2))  # fmt: skip
        if open_one.returncode == 0:
            assert any("API key" in w for w in json.loads(open_one.stdout)["warnings"])
        run("undeploy", "undeploy", "--yes", "--json", *target, expect=(0,))

    texts["unit files"] = host.run(
        "cat /etc/systemd/system/tgiops*.service* 2>/dev/null", check=False
    ).stdout
    texts["journal"] = host.run("journalctl -o verbose --no-pager", check=False).stdout
    texts["process lists"] = "\n".join(recorder.snapshots)
    assert recorder.snapshots and "GPU KV cache size" in texts["journal"]
    for secret in (token, api_key):
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"a secret leaked into: {leaks}"
    upper = host.testbed.paths.host_dir(host.name) / "upper"
    for path in upper.rglob("*"):
        if path.is_file() and (token.encode() in path.read_bytes()
                               or api_key.encode() in path.read_bytes()):  # fmt: skip
            where = "/" + str(path.relative_to(upper))
            assert where.startswith("/etc/tgiops/") and ".env" in where, where
            assert path.stat().st_mode & 0o777 == 0o600, where
