"""vLLM's start-up failures, from the GPU inventory the emulator is given: exit 1, vLLM's text,
and the port never opened."""

from __future__ import annotations

import re

import pytest

from .conftest import A10G, FAKE_TOKEN, H100, T4, TINY, V100, failed

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"  # gated: needs the (fake) token
QWEN_7B = "Qwen/Qwen2.5-7B-Instruct"  # 28 attention heads, bf16
AWQ_8B = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
TOKEN = {"HF_TOKEN": FAKE_TOKEN}
ENGINE_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)


def engine_failure(output: str) -> None:
    assert "EngineCore failed to start." in output
    assert output.rstrip().endswith(ENGINE_FAILED)


def test_free_memory_below_utilization_of_total(vllm) -> None:
    out = failed(vllm(used_mib=[4000]))  # another process holds 4000 MiB of the A10G
    engine_failure(out)
    match = re.search(
        r"ValueError: Free memory on device cuda:0 \(([\d.]+)/([\d.]+) GiB\) on startup is less "
        r"than desired GPU memory utilization \(0\.92, ([\d.]+) GiB\)\. Decrease GPU memory "
        r"utilization or reduce GPU memory used by other processes\.",
        out,
    )
    assert match, out
    free, total, requested = map(float, match.groups())
    assert total == round(23028 / 1024, 2)
    assert requested == round(23028 / 1024 * 0.92, 2)  # a fraction of the TOTAL memory
    assert free < requested


def test_the_same_gpu_serves_at_a_utilization_that_fits(vllm) -> None:
    emulator = vllm(used_mib=[4000], args=["--gpu-memory-utilization", "0.7"])
    emulator.wait_ready()


def test_the_011_line_words_it_without_the_device(vllm) -> None:
    out = failed(vllm(version="0.11.0", used_mib=[8000]))
    assert "ValueError: Free memory on device (" in out
    assert "(0.9, " in out  # that line's default utilization


def test_max_model_len_above_kv_capacity_suggests_the_length_that_fits(vllm, tmp_path) -> None:
    out = failed(vllm(model=LLAMA_8B, env=TOKEN, data_dir=tmp_path / "a"))
    engine_failure(out)
    match = re.search(
        r"ValueError: To serve at least one request with the model's max seq len \(131072\), "
        r"\(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory "
        r"\(([\d.]+) GiB\)\. Based on the available memory, the estimated maximum model length "
        r"is (\d+)\. Try increasing `gpu_memory_utilization` or decreasing `max_model_len`",
        out,
    )
    assert match, out
    needed, available, suggested = float(match[1]), float(match[2]), int(match[3])
    assert needed == 16.0  # 131072 tokens x 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes
    assert available < needed
    # The suggestion is vLLM's binary-search answer: it fits, one more block does not.
    fits = vllm(
        model=LLAMA_8B, env=TOKEN, args=["--max-model-len", str(suggested)], data_dir=tmp_path / "b"
    )
    fits.wait_ready()
    (tokens,) = [m for m in fits.messages() if m.startswith("GPU KV cache size")]
    assert int(tokens.split()[4].replace(",", "")) >= suggested
    fits.terminate()
    over = vllm(
        model=LLAMA_8B,
        env=TOKEN,
        args=["--max-model-len", str(suggested + 16)],
        data_dir=tmp_path / "c",
    )
    assert "the estimated maximum model length is" in failed(over)


def test_cuda_oom_in_the_profile_run(vllm) -> None:
    out = failed(
        vllm(
            model=LLAMA_8B,
            env=TOKEN,
            args=["--max-num-batched-tokens", "32768", "--max-num-seqs", "2048"],
        )
    )
    engine_failure(out)
    assert "Model loading took" in out  # the weights fit; the dummy forward pass does not
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate" in out
    assert "Available KV cache memory" not in out


def test_cuda_oom_loading_weights_too_big_for_the_gpu(vllm) -> None:
    out = failed(vllm(model="Qwen/Qwen2.5-72B-Instruct-AWQ"))
    engine_failure(out)
    assert "torch.OutOfMemoryError: CUDA out of memory." in out
    assert "Model loading took" not in out


def test_no_memory_left_for_kv_blocks(vllm) -> None:
    out = failed(vllm(model=LLAMA_8B, env=TOKEN, args=["--gpu-memory-utilization", "0.72"]))
    engine_failure(out)
    assert "ValueError: No available memory for the cache blocks." in out


def test_tensor_parallel_size_must_divide_the_attention_heads(vllm) -> None:
    out = failed(vllm(model=QWEN_7B, gpus=[A10G] * 4, args=["--tensor-parallel-size", "3"]))
    assert "ValueError: Total number of attention heads (28) must be divisible by tensor " in out
    assert "parallel size (3)." in out
    assert "EngineCore failed to start." not in out  # refused while building the config


def test_more_ranks_than_gpus(vllm) -> None:
    out = failed(vllm(args=["--tensor-parallel-size", "2"]))
    engine_failure(out)
    assert "please set tensor_parallel_size (2) to less than max local gpu count (1)" in out


def test_v100_is_below_the_floor_of_current_releases(vllm) -> None:
    out = failed(vllm(gpus=[V100], args=["--dtype", "half"]))
    assert "The minimum cuda capability supported by this library is 7.5." in out
    assert "CUDA error: no kernel image is available for execution on the device" in out


def test_the_011_line_still_runs_a_v100_in_float16(vllm) -> None:
    vllm(version="0.11.0", gpus=[V100], args=["--dtype", "half"]).wait_ready()


def test_explicit_bfloat16_below_sm80(vllm) -> None:
    out = failed(vllm(gpus=[T4], args=["--dtype", "bfloat16"]))
    engine_failure(out)
    assert (
        "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
        "Your Tesla T4 GPU has compute capability 7.5. You can use float16 instead by "
        "explicitly setting the `dtype` flag in CLI, for example: --dtype=half."
    ) in out


def test_auto_dtype_falls_back_to_float16_on_a_t4(vllm) -> None:
    emulator = vllm(model="microsoft/Phi-3-mini-4k-instruct", gpus=[T4])
    emulator.wait_ready()
    assert emulator.saw("doesn't support torch.bfloat16. Falling back to torch.float16")
    assert emulator.saw("dtype=torch.float16")


@pytest.mark.parametrize(
    ("gpu", "args", "text"),
    [
        pytest.param(T4, [], None, id="awq-kernel-on-T4"),
        pytest.param(
            T4,
            ["--quantization", "awq_marlin"],
            "The quantization method awq_marlin is not supported for the current GPU. "
            "Minimum capability: 80. Current capability: 75.",
            id="marlin-needs-sm80",
        ),
        pytest.param(
            V100,
            [],
            "The quantization method awq is not supported for the current GPU. "
            "Minimum capability: 75. Current capability: 70.",
            id="awq-not-on-volta",
        ),
    ],
)
def test_awq_kernels_by_compute_capability(vllm, gpu, args, text) -> None:
    emulator = vllm(
        model=AWQ_8B, gpus=[gpu], version="0.11.0", args=["--max-model-len", "4096", *args]
    )
    if text is None:
        emulator.wait_ready()
        assert emulator.saw("quantization=awq,")  # the non-Marlin kernel, float16
        assert emulator.saw("dtype=torch.float16")
    else:
        assert text in failed(emulator)


def test_awq_runs_as_awq_marlin_on_ampere(vllm) -> None:
    emulator = vllm(model=AWQ_8B, args=["--max-model-len", "4096"])
    emulator.wait_ready()
    assert emulator.saw("The model is convertible to awq_marlin during runtime.")


def test_fp8_checkpoint_needs_ampere(vllm) -> None:
    out = failed(
        vllm(
            model="neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8",
            gpus=[T4] * 4,
            args=["--tensor-parallel-size", "4"],
        )
    )
    assert "Minimum capability: 80. Current capability: 75." in out


@pytest.mark.parametrize(
    ("cuda", "driver", "env", "starts"),
    [
        ("13.0", "535.247.01", {}, False),
        ("13.0", "580.105.08", {}, True),
        ("12.9", "535.247.01", {}, True),
        ("13.0", "535.247.01", {"VLLM_ENABLE_CUDA_COMPATIBILITY": "1"}, True),
    ],
)
def test_cuda13_build_needs_driver_580(vllm, cuda, driver, env, starts) -> None:
    emulator = vllm(cuda=cuda, driver=driver, env=env)
    if starts:
        emulator.wait_ready()
    else:
        out = failed(emulator)
        assert (
            "RuntimeError: The NVIDIA driver on your system is too old (found version 12020)" in out
        )


def test_no_gpu_visible(vllm) -> None:
    assert "RuntimeError: Failed to infer device type" in failed(vllm(gpus=[]))


def test_max_model_len_above_the_models_positions(vllm) -> None:
    out = failed(vllm(args=["--max-model-len", "4096"]))
    assert "ValueError: User-specified max_model_len (4096) is greater than the derived " in out
    assert "max_model_len (max_position_embeddings=2048 " in out
    vllm(args=["--max-model-len", "4096"], env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}).wait_ready()


def test_gated_model_without_token(vllm) -> None:
    out = failed(vllm(model=LLAMA_8B))
    assert "GatedRepoError" in out


def test_offline_without_cached_weights(vllm) -> None:
    assert "LocalEntryNotFoundError" in failed(vllm(env={"HF_HUB_OFFLINE": "1"}))


def test_h100_kv_is_bigger_than_on_an_a10g_for_the_same_model(vllm, tmp_path) -> None:
    # Sanity of the account across GPUs: 80 GB leaves far more KV than 24 GB.
    def kv(gpu, where) -> int:
        emulator = vllm(gpus=[gpu], model=TINY, data_dir=tmp_path / where)
        emulator.wait_ready()
        (line,) = [m for m in emulator.messages() if m.startswith("GPU KV cache size")]
        emulator.terminate()
        return int(line.split()[4].replace(",", ""))

    assert kv(H100, "h") > 3 * kv(A10G, "a")


def test_cuda_graph_capture_oom_before_021_but_not_after(vllm, tmp_path) -> None:
    # Almost all of an H100 asked for, and a tiny profile run: before v0.21 the graphs are
    # captured after the KV cache took its share, in what the profile run left (~0.1 GiB), and
    # they need more; from v0.21 their estimate comes out of the KV budget instead.
    args = [
        "--gpu-memory-utilization",
        "0.993",
        "--max-num-batched-tokens",
        "256",
        "--max-num-seqs",
        "8",
        "--max-model-len",
        "8192",
    ]
    out = failed(vllm(model=LLAMA_8B, env=TOKEN, gpus=[H100], args=args, data_dir=tmp_path / "a"))
    engine_failure(out)
    assert "GPU KV cache size" in out  # the KV cache was sized; the capture ran out
    assert "torch.OutOfMemoryError: CUDA out of memory." in out
    newer = vllm(
        model=LLAMA_8B, env=TOKEN, gpus=[H100], args=args, version="0.27.1", data_dir=tmp_path / "b"
    )
    newer.wait_ready()
    assert newer.saw("Estimated CUDA graph memory: ")


def test_unknown_model(vllm) -> None:
    assert "RepositoryNotFoundError" in failed(vllm(model="nobody/no-such-model"))


def test_llama_vision_is_not_a_registered_architecture(vllm) -> None:
    # Every emulated release is V1-only: PR #24907 took mllama with the V0 engine (facts §1.6).
    out = failed(vllm(model="meta-llama/Llama-3.2-90B-Vision-Instruct", gpus=[H100], env=TOKEN))
    assert "1 validation error for ModelConfig" in out
    assert (
        "Model architectures ['MllamaForConditionalGeneration'] are not supported for now." in out
    )
