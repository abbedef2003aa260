"""vLLM's CLI: its flags are accepted, unknown ones refused as its argparse refuses them."""

from __future__ import annotations

import pytest

from .conftest import TINY


def refused(emulator) -> str:
    rc = emulator.wait_exit()
    assert rc == 2, emulator.output
    return emulator.stderr_text


def test_unknown_flag_is_refused_like_argparse(vllm) -> None:
    err = refused(vllm(args=["--max-batch-prefill-tokens", "4096"]))
    assert err.splitlines()[-1] == (
        "vllm: error: unrecognized arguments: --max-batch-prefill-tokens 4096"
    )
    assert err.startswith("usage: vllm serve [model_tag] [options]")


def test_bad_choice_is_refused(vllm) -> None:
    err = refused(vllm(args=["--dtype", "bf16"]))
    assert "argument --dtype: invalid choice: 'bf16'" in err


@pytest.mark.parametrize(
    ("version", "accepted"), [("0.11.0", True), ("0.20.0", False), ("0.27.1", False)]
)
def test_disable_log_requests_by_version(vllm, version, accepted) -> None:
    emulator = vllm(version=version, args=["--disable-log-requests"])
    if accepted:
        emulator.wait_ready()
    else:
        assert "unrecognized arguments: --disable-log-requests" in refused(emulator)


def test_the_flags_tgiops_uses_are_accepted(vllm) -> None:
    emulator = vllm(
        model=None,
        gpus=[{"name": "NVIDIA A10G", "memory_mib": 23028, "compute_capability": "8.6"}] * 2,
        args=[
            "--model",
            TINY,
            "--served-model-name",
            "tiny",
            "--tensor-parallel-size",
            "2",
            "--gpu-memory-utilization",
            "0.85",
            "--max_model_len",
            "1K",
            "--max-num-seqs",
            "32",
            "--max-num-batched-tokens",
            "1024",
            "--dtype",
            "half",
            "--kv-cache-dtype",
            "fp8",
            "--enforce-eager",
            "--download-dir",
            "dl",
            "--api-key",
            "k",
            "--trust-remote-code",
            "--no-enable-log-requests",
        ],
    )
    emulator.wait_ready()
    assert emulator.saw("Using max model len 1024")  # "1K" = 1024 (binary K), underscore spelling
    assert emulator.saw("Chunked prefill is enabled with max_num_batched_tokens=1024.")
    assert emulator.saw("kv_cache_dtype=fp8")
    assert (emulator.data_dir / "dl" / "models--tgiops-test--tiny-llama").is_dir()


def test_help_lists_the_flags_and_exits_zero(vllm) -> None:
    emulator = vllm(args=["--help"])
    assert emulator.wait_exit() == 0
    assert "--gpu-memory-utilization" in emulator.output
    assert not emulator.saw("vLLM API server version")
