"""The HTTP edge against the TGI emulator (a subprocess on loopback) and real sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tgiops.core.engines.tgi import verify_info
from tgiops.core.errors import HealthError
from tgiops.core.metrics import parse_metrics
from tgiops.edges.health import (
    Probe,
    get_info,
    get_metrics,
    probe_health,
    smoke_generate,
    wait_until_healthy,
)

if TYPE_CHECKING:  # fixtures come from tests/edges/conftest.py
    from collections.abc import Callable

    from conftest import Emulator, SshEnv

MODEL_ID = "tgiops-test/tiny-llama"


def ready(emulator: Emulator, timeout_s: float = 60.0) -> Emulator:
    wait_until_healthy(
        emulator.base_url,
        timeout_s=timeout_s,
        interval_s=0.1,
        consecutive_successes=1,
        is_alive=emulator.alive,
    )
    return emulator


# -- probes without an engine -----------------------------------------------------------------


def test_refused_connection_is_loading(free_port: Callable[[], int]) -> None:
    probe = probe_health(f"http://127.0.0.1:{free_port()}")
    assert probe.state == "loading" and probe.status_code is None
    assert "connection refused" in probe.detail


def test_accept_then_drop_is_loading_too(ssh_env: SshEnv, free_port: Callable[[], int]) -> None:
    # Like docker-proxy before the router listens: an SSH tunnel to a closed remote port
    # accepts the TCP connection, then drops it without a byte.
    host = ssh_env.host()
    with host.forward_local_port(free_port()) as local_port:
        probe = probe_health(f"http://127.0.0.1:{local_port}", timeout_s=5)
    assert probe.state == "loading" and probe.status_code is None
    assert "empty reply" in probe.detail or "reset" in probe.detail


def test_invalid_url_is_an_error_not_loading() -> None:
    with pytest.raises(HealthError, match="invalid endpoint URL"):
        probe_health("127.0.0.1:8080")


# -- against the emulator ---------------------------------------------------------------------


def test_loading_then_ready(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(load_seconds=3)
    seen: list[Probe] = []
    wait_until_healthy(
        emulator.base_url,
        timeout_s=60,
        interval_s=0.1,
        consecutive_successes=2,
        is_alive=emulator.alive,
        on_progress=lambda probe, elapsed_s: seen.append(probe),
    )
    assert seen[0].state == "loading"  # probed at once; the port opens after 3 s of "loading"
    assert [p.state for p in seen[-2:]] == ["ready", "ready"]
    assert all(p.state in ("loading", "ready") for p in seen)
    assert probe_health(emulator.base_url) == Probe(
        "ready", f"GET {emulator.base_url}/health: 200", 200
    )


def test_crash_while_loading_fails_fast(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(load_seconds=600)
    emulator.proc.kill()
    emulator.proc.wait()
    with pytest.raises(HealthError, match="the engine crashed") as info:
        wait_until_healthy(
            emulator.base_url, timeout_s=600, interval_s=0.1, is_alive=emulator.alive
        )
    assert "connection refused" in str(info.value)


def test_flapping_health_needs_consecutive_successes(
    start_emulator: Callable[..., Emulator],
) -> None:
    # TGI_EMULATOR_HEALTH_FLAP=1: /health alternates 200, 503, 200, 503 ... once ready.
    emulator = start_emulator(TGI_EMULATOR_HEALTH_FLAP="1")
    wait_until_healthy(emulator.base_url, timeout_s=60, interval_s=0.1, consecutive_successes=1)
    seen: list[Probe] = []
    with pytest.raises(HealthError, match="only intermittently") as info:
        wait_until_healthy(
            emulator.base_url,
            timeout_s=2,
            interval_s=0.1,
            consecutive_successes=2,
            is_alive=emulator.alive,
            on_progress=lambda probe, elapsed_s: seen.append(probe),
        )
    states = {p.state for p in seen}
    assert states == {"ready", "unhealthy"}
    assert all(p.status_code == 503 for p in seen if p.state == "unhealthy")
    assert "did not become healthy within 2 s" in str(info.value)


def test_timeout_reports_the_last_probe(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(load_seconds=600)
    with pytest.raises(HealthError) as info:
        wait_until_healthy(emulator.base_url, timeout_s=1, interval_s=0.2, is_alive=emulator.alive)
    text = str(info.value)
    assert "did not become healthy within 1 s" in text
    assert "connection refused" in text and "still closed" in text


def test_get_info_and_verify_info(start_emulator: Callable[..., Emulator]) -> None:
    emulator = ready(
        start_emulator(extra_args=("--max-input-tokens", "1024", "--max-total-tokens", "2048"))
    )
    info = get_info(emulator.base_url)
    assert info["model_id"] == MODEL_ID
    assert (
        verify_info(
            info,
            expected_model_id=MODEL_ID,
            expected_max_total_tokens=2048,
            expected_max_input_tokens=1024,
        )
        == []
    )
    problems = verify_info(
        info,
        expected_model_id="other/model",
        expected_max_total_tokens=4096,
        expected_max_input_tokens=1024,
    )
    assert problems == [
        f"the endpoint serves model {MODEL_ID!r}, the plan says 'other/model'",
        "max_total_tokens is 2048, the plan says 4096",
    ]


def test_verify_info_reads_tgi_2_0_max_input_length() -> None:
    info_2_0 = {"model_id": "m", "max_input_length": 4000, "max_total_tokens": 8000}
    assert (
        verify_info(
            info_2_0,
            expected_model_id="m",
            expected_max_total_tokens=8000,
            expected_max_input_tokens=4000,
        )
        == []
    )
    assert verify_info(
        info_2_0,
        expected_model_id="m",
        expected_max_total_tokens=None,
        expected_max_input_tokens=10,
    ) == ["max_input_length is 4000, the plan says 10"]


def test_smoke_generate_and_metrics(start_emulator: Callable[..., Emulator]) -> None:
    emulator = ready(start_emulator())
    before = get_metrics(emulator.base_url)
    text = smoke_generate(emulator.base_url)
    assert isinstance(text, str)
    after = get_metrics(emulator.base_url)
    assert after["tgi_request_count"] == before.get("tgi_request_count", 0.0) + 1
    assert after["tgi_request_success"] >= 1
    assert "tgi_queue_size" in after and "tgi_batch_current_size" in after
    mean = after["tgi_request_mean_time_per_token_duration_mean"]
    assert mean == pytest.approx(
        after["tgi_request_mean_time_per_token_duration_sum"]
        / after["tgi_request_mean_time_per_token_duration_count"]
    )


def test_parse_metrics_sums_labels_and_skips_buckets() -> None:
    text = (
        "# TYPE tgi_request_failure counter\n"
        'tgi_request_failure{err="validation"} 2\n'
        'tgi_request_failure{err="overloaded"} 3\n'
        "# TYPE tgi_queue_size gauge\n"
        "tgi_queue_size 4\n"
        "# TYPE tgi_request_duration histogram\n"
        'tgi_request_duration_bucket{le="0.5"} 1\n'
        'tgi_request_duration_bucket{le="+Inf"} 4\n'
        "tgi_request_duration_sum 6.0\n"
        "tgi_request_duration_count 4\n"
        "# TYPE tgi_batch_forward_duration summary\n"
        'tgi_batch_forward_duration{quantile="0.5"} NaN\n'
        "tgi_batch_forward_duration_sum 0\n"
        "tgi_batch_forward_duration_count 0\n"
    )
    assert parse_metrics(text) == {
        "tgi_request_failure": 5.0,
        "tgi_queue_size": 4.0,
        "tgi_request_duration_sum": 6.0,
        "tgi_request_duration_count": 4.0,
        "tgi_request_duration_mean": 1.5,
        "tgi_batch_forward_duration_sum": 0.0,
        "tgi_batch_forward_duration_count": 0.0,
    }


def test_parse_metrics_rejects_garbage() -> None:
    with pytest.raises(HealthError, match="cannot parse"):
        parse_metrics("this is { not prometheus\n")


def test_get_info_from_a_closed_port_is_a_health_error(free_port: Callable[[], int]) -> None:
    with pytest.raises(HealthError, match="connection refused"):
        get_info(f"http://127.0.0.1:{free_port()}")


def test_smoke_generate_with_an_api_key(start_emulator: Callable[..., Emulator]) -> None:
    key = "tgiops-test-api-key-0123456789"
    emulator = ready(start_emulator(API_KEY=key))  # launcher flags also come from env (clap)
    with pytest.raises(HealthError, match="wants an API key") as missing:
        smoke_generate(emulator.base_url)
    wrong = "tgiops-wrong-key-9876543210"
    with pytest.raises(HealthError, match="refused the one given") as refused:
        smoke_generate(emulator.base_url, api_key=wrong)
    assert wrong not in str(refused.value) and key not in str(missing.value)
    assert isinstance(smoke_generate(emulator.base_url, api_key=key), str)
