"""Start-up, cache, offline, shutdown, crash, health flapping and auth of the emulator."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from .conftest import A10G, FAKE_TOKEN, TINY, VERSIONS, port_open, start_emulator

TINY_SHA = json.loads(
    (Path(__file__).resolve().parents[2] / "scripts/tgi_emulator/hub/hub.json").read_text()
)["repos"][TINY]["sha"]


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_port_is_closed_until_warmup_is_done(tmp_path):
    """Sample the port with the emulator frozen (SIGSTOP), after draining all it had logged.

    While that log has no "Connected" line (logged just before the router binds), the
    port must refuse connections; no sample depends on timing.
    """
    env = {"TGI_EMULATOR_LOAD_SECONDS": "1.0", "TGI_EMULATOR_DOWNLOAD_SECONDS": "0.3"}
    emulator = start_emulator(tmp_path, env=env, read_output=False)
    pid, fd = emulator.proc.pid, emulator.proc.stdout.fileno()
    os.set_blocking(fd, False)
    log = b""
    samples = []  # (phase reached, port refused)
    try:
        while b"Connected" not in log and emulator.proc.poll() is None:
            os.kill(pid, signal.SIGSTOP)
            try:
                while chunk := os.read(fd, 65536):
                    log += chunk
            except BlockingIOError:
                pass
            if b"Connected" not in log:
                phase = max((i for i, m in enumerate(PHASES) if m.encode() in log), default=-1)
                samples.append((phase, refused(emulator.port)))
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
        os.set_blocking(fd, True)
        emulator.wait_ready()
        assert requests.get(emulator.url + "/health", timeout=10).status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
        emulator.proc.send_signal(signal.SIGTERM)
        emulator.proc.communicate(timeout=30)
    assert samples and all(closed for _, closed in samples), samples
    # Loading lasts 0.7 s and sampling takes a few ms, so some samples fall in it.
    assert any(phase >= 1 for phase, _ in samples), samples


PHASES = ("Starting check and download process", "Starting shard", "Warming up model")


@pytest.mark.parametrize(
    ("version", "layout"),
    [
        ("2.0.4", "data/models--tgiops-test--tiny-llama"),  # HUGGINGFACE_HUB_CACHE=/data (<= 2.2)
        ("2.4.1", "data/hub/models--tgiops-test--tiny-llama"),  # HF_HOME=/data (>= 2.3)
        ("3.3.7", "data/hub/models--tgiops-test--tiny-llama"),
    ],
)
def test_cache_layout_and_reuse(emulators, tmp_path, version, layout):
    first = emulators(version=version)
    first.wait_ready()
    assert first.terminate() == 0
    repo = tmp_path / layout
    assert (repo / "refs" / "main").read_text() == TINY_SHA
    snapshot = repo / "snapshots" / TINY_SHA
    assert json.loads((snapshot / "config.json").read_text())["model_type"] == "llama"
    assert (snapshot / "model.safetensors").is_symlink()
    assert (snapshot / "model.safetensors").resolve().parent == (repo / "blobs").resolve()
    assert first.saw("Download file: model.safetensors")

    second = emulators(version=version)
    second.wait_ready()
    assert second.terminate() == 0
    assert not second.saw("Download file")
    assert second.saw("Files are already present on the host. Skipping download.")


def test_huggingface_hub_cache_flag_overrides_hf_home(emulators, tmp_path):
    emulator = emulators(args=["--huggingface-hub-cache", str(tmp_path / "elsewhere")])
    emulator.wait_ready()
    assert (tmp_path / "elsewhere/models--tgiops-test--tiny-llama/refs/main").is_file()
    assert not (tmp_path / "data/hub").exists()


def test_offline_without_cache_fails_with_local_entry_not_found(emulators):
    emulator = emulators(env={"HF_HUB_OFFLINE": "1"})
    assert emulator.wait_exit() == 1
    assert emulator.saw("LocalEntryNotFoundError")
    assert emulator.saw("outgoing traffic has been disabled")
    assert emulator.stderr_text.strip().endswith("Error: DownloadError")


def test_offline_with_cache_starts_without_download(emulators):
    warm = emulators()
    warm.wait_ready()
    assert warm.terminate() == 0
    offline = emulators(env={"HF_HUB_OFFLINE": "1"})
    offline.wait_ready()
    assert not offline.saw("Download file")
    assert offline.saw("Offline mode active using cache defaults")
    info = requests.get(offline.url + "/info", timeout=10).json()
    # Offline the router cannot fetch model info: no sha, no pipeline tag (server.rs run()).
    assert info["model_sha"] is None and info["model_pipeline_tag"] is None


def test_sigterm_while_serving_exits_zero(emulators):
    emulator = emulators()
    emulator.wait_ready()
    emulator.proc.send_signal(signal.SIGTERM)
    assert emulator.wait_exit() == 0
    assert emulator.saw("Terminating webserver")
    assert emulator.saw("shard terminated")
    assert not port_open(emulator.port)


def test_sigterm_while_loading_exits_zero(emulators):
    emulator = emulators(env={"TGI_EMULATOR_LOAD_SECONDS": "60"})
    emulator.wait_for_line("Starting shard")
    emulator.proc.send_signal(signal.SIGTERM)
    assert emulator.wait_exit() == 0
    assert emulator.saw("Shutting down shards")
    assert not emulator.saw("Connected")


def test_crash_after_seconds(emulators):
    emulator = emulators(env={"TGI_EMULATOR_CRASH_AFTER_SECONDS": "0.3"})
    assert emulator.wait_exit() == 1
    assert emulator.saw("Connected")
    assert emulator.saw("Shard 0 crashed")
    assert emulator.stderr_text.strip() == "Error: ShardFailed"


def test_health_flaps_every_n_requests(emulators):
    emulator = emulators(env={"TGI_EMULATOR_HEALTH_FLAP": "2"})
    emulator.wait_ready()
    responses = [requests.get(emulator.url + "/health", timeout=10) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 503, 503, 200, 200]
    assert responses[2].json() == {"error": "unhealthy", "error_type": "healthcheck"}


@pytest.mark.parametrize("version", ["2.4.1", "3.3.7"])
def test_api_key_guards_generation_routes_only(emulators, version):
    secret = "s3cret-key"
    emulator = emulators(version=version, env={"API_KEY": secret})
    emulator.wait_ready()
    body = {"inputs": "a b", "parameters": {"max_new_tokens": 1}}
    for path in ("/generate", "/v1/chat/completions", "/"):
        payload = {"messages": [{"role": "user", "content": "a"}]} if "chat" in path else body
        assert requests.post(emulator.url + path, json=payload, timeout=10).status_code == 401
    wrong = requests.post(
        emulator.url + "/generate", json=body, headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    ok = requests.post(
        emulator.url + "/generate",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert ok.status_code == 200
    for path in ("/health", "/info", "/metrics", "/v1/models"):
        assert requests.get(emulator.url + path, timeout=10).status_code == 200
    assert secret not in emulator.output  # the Args line redacts it


def test_api_key_flag_does_not_exist_in_2_0(emulators):
    emulator = emulators(version="2.0.4", args=["--api-key", "x"])
    assert emulator.wait_exit() == 2
    assert "unexpected argument '--api-key' found" in emulator.stderr_text


def test_token_never_logged(emulators):
    emulator = emulators(
        model_id="meta-llama/Llama-3.1-8B-Instruct", gpus=[A10G], env={"HF_TOKEN": FAKE_TOKEN}
    )
    emulator.wait_ready()
    assert emulator.terminate() == 0
    assert FAKE_TOKEN not in emulator.output + emulator.stderr_text


@pytest.mark.parametrize(
    ("version", "expected_shards"),
    [("2.4.1", 1), ("3.3.7", 4)],  # the NVIDIA_VISIBLE_DEVICES=all bug, fixed in 3.3.7 (§3)
)
def test_num_shard_from_nvidia_visible_devices_all(emulators, version, expected_shards):
    emulator = emulators(version=version, gpus=[A10G] * 4, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    emulator.wait_ready()
    assert sum("Starting shard" in line for line in emulator.lines) == expected_shards
    assert emulator.saw(f"Sharding model on {expected_shards} processes") == (expected_shards > 1)


def test_cuda_visible_devices_counts_shards(emulators):
    emulator = emulators(gpus=[A10G] * 4, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    emulator.wait_ready()
    assert emulator.saw("Sharding model on 2 processes")


def test_env_vars_are_flag_equivalents(emulators):
    emulator = emulators(
        env={"MAX_INPUT_TOKENS": "30", "MAX_TOTAL_TOKENS": "40", "MAX_BATCH_PREFILL_TOKENS": "50"}
    )
    emulator.wait_ready()
    info = requests.get(emulator.url + "/info", timeout=10).json()
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (30, 40)


@pytest.mark.parametrize("version", VERSIONS)
def test_launcher_log_shape(emulators, version):
    emulator = emulators(version=version)
    emulator.wait_ready()
    first = emulator.lines[0]
    # tracing compact format: RFC 3339 timestamp, padded level, target.
    assert (
        first[:4].isdigit()
        and first[10] == "T"
        and "  INFO text_generation_launcher: Args {" in first
    )
    for text in (
        "Starting shard",
        "Shard ready in",
        "Starting Webserver",
        "Warming up model",
        "Setting max batch total tokens to",
        "Connected",
    ):
        assert emulator.saw(text), text
    assert emulator.saw(
        "Starting download process."
        if version == "2.0.4"
        else "Starting check and download process for"
    )


def test_json_output(emulators):
    emulator = emulators(args=["--json-output"])
    emulator.wait_ready()
    records = [json.loads(line) for line in emulator.lines if line.startswith("{")]
    assert records and all({"timestamp", "level", "target"} <= set(r) for r in records)
    assert any(r.get("fields", {}).get("message") == "Starting Webserver" for r in records)
