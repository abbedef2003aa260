"""Start-up order and log format: the port stays closed until the engine is up."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

from .conftest import CONCURRENCY, KV_TOKENS, LINE, emulator_module, port_open

versions = emulator_module("versions")


def test_port_closed_until_warm_then_serving_and_sigterm_exits_zero(vllm) -> None:
    emulator = vllm(load_seconds=3.0)
    emulator.wait_for_line("Starting to load model")
    assert not port_open(emulator.port)  # loading: connection refused, as vLLM (facts §1.3)
    emulator.wait_for_line("Available KV cache memory")
    assert not port_open(emulator.port)
    emulator.wait_ready()
    ready_at = emulator.lines.index(
        next(line for line in emulator.lines if "Starting vLLM API server 0 on" in line)
    )
    kv_at = emulator.lines.index(next(line for line in emulator.lines if "GPU KV cache" in line))
    assert kv_at < ready_at
    emulator.proc.send_signal(signal.SIGTERM)
    assert emulator.wait_exit() == 0
    assert emulator.saw("Application shutdown complete.")


def test_sigterm_during_loading_exits_zero(vllm) -> None:
    emulator = vllm(load_seconds=20.0)
    emulator.wait_for_line("Starting to load model")
    time.sleep(0.2)
    assert emulator.terminate() == 0
    assert not emulator.saw("Starting vLLM API server")


def test_log_lines_parse_with_the_facts_regexes(vllm) -> None:
    emulator = vllm(args=["--max-model-len", "1536"])
    emulator.wait_ready()
    for line in emulator.lines:
        assert LINE.match(line) or " INFO:     " in line, line
    messages = emulator.messages()
    (tokens,) = [int(m.group(1).replace(",", "")) for m in map(KV_TOKENS.search, messages) if m]
    (concurrency,) = [m for m in map(CONCURRENCY.search, messages) if m]
    assert concurrency.group(1) == "1,536"
    assert float(concurrency.group(2)) == round(tokens / 1536, 2)
    assert tokens % 16 == 0  # whole blocks of vLLM's default block size
    assert any(m.startswith("Available KV cache memory: ") for m in messages)
    assert any(
        m == f"Starting vLLM API server 0 on http://127.0.0.1:{emulator.port}" for m in messages
    )
    assert any(m == "vLLM API server version 0.20.0" for m in messages)


def test_cached_weights_serve_offline(vllm, tmp_path) -> None:
    first = vllm(data_dir=tmp_path)
    first.wait_ready()
    assert first.saw("Download file: model.safetensors")
    assert first.terminate() == 0
    again = vllm(data_dir=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    again.wait_ready()
    assert not again.saw("Download file")


def test_images_of_every_version_and_cuda_flavour() -> None:
    tags = {t.reference: t.cuda for t in versions.image_tags()}
    assert tags["vllm/vllm-openai:v0.20.0"] == "13.0"
    assert tags["vllm/vllm-openai:v0.20.0-cu129"] == "12.9"
    assert tags["vllm/vllm-openai:v0.11.0"] == "12.8"
    assert "vllm/vllm-openai:v0.11.0-cu129" not in tags  # the variant scheme starts at 0.20
    assert versions.DEFAULT_VERSION in versions.SUPPORTED_VERSIONS


def test_engine_death_after_serving_exits_one(vllm) -> None:
    # The testbed's host-wide fault option, under its TGI name, works for vLLM too.
    emulator = vllm(env={"TGI_EMULATOR_CRASH_AFTER_SECONDS": "1"})
    emulator.wait_ready()
    assert emulator.wait_exit() == 1
    assert emulator.saw("Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.")


def test_health_flaps_when_asked(vllm) -> None:
    emulator = vllm(env={"VLLM_EMULATOR_HEALTH_FLAP": "2"})
    emulator.wait_ready()
    codes = []
    for _ in range(6):
        try:
            with urllib.request.urlopen(emulator.url + "/health", timeout=5) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    assert codes == [200, 200, 503, 503, 200, 200]


def test_a_local_snapshot_directory_is_a_model(vllm, tmp_path) -> None:
    first = vllm(data_dir=tmp_path)
    first.wait_ready()
    first.terminate()
    (snapshot,) = (tmp_path / "hf/hub/models--tgiops-test--tiny-llama/snapshots").iterdir()
    local = vllm(data_dir=tmp_path, model=str(snapshot), args=["--served-model-name", "tiny"])
    local.wait_ready()
    assert local.saw("Using max model len 2048")  # read from the directory's config.json
    assert not local.saw("Download file")
