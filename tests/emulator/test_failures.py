"""Each TGI failure mode: a launcher-like error line, the final `Error: ...`, a non-zero exit.

Rows cite docs/tgi.md sections; the port must never have opened for a failed start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from .conftest import A10G, A100_80, FAKE_TOKEN, H100, T4, TINY, V100, port_open

L31_8B = "meta-llama/Llama-3.1-8B-Instruct"
TOKEN = {"HF_TOKEN": FAKE_TOKEN}
FAST = {"TGI_EMULATOR_LOAD_SECONDS": "0.05", "TGI_EMULATOR_DOWNLOAD_SECONDS": "0.01"}


@dataclass(frozen=True)
class Case:
    id: str
    version: str
    gpus: list
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    model: str = TINY
    rc: int = 1
    output: tuple = ()  # substrings of stdout (the launcher's log)
    stderr: str = ""  # substring of stderr


CASES = [
    Case(
        "no-gpu",
        "3.3.7",
        [],
        output=("Found no NVIDIA driver on your system",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "flash-sm75-fallback-model-3x",  # §2: Phi-3 head_dim 96 forces paged attention
        "3.3.7",
        [T4],
        model="microsoft/Phi-3-mini-4k-instruct",
        output=(
            "Forcing attention to 'paged'",
            "ImportError: FlashAttention only supports Ampere GPUs or newer.",
        ),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "flash-sm70-2.4",
        "2.4.1",
        [V100],
        output=(
            "FlashAttention only supports Ampere GPUs or newer.",
            "ImportError: GPU with CUDA capability 7 0 is not supported",
        ),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "flash-sm70-2.0",
        "2.0.4",
        [V100],
        output=("ImportError: GPU with CUDA capability 7 0 is not supported",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "sharded-non-flash",  # §2 Volta: no flash, no sharding
        "3.3.7",
        [V100, V100],
        args=["--num-shard", "2"],
        env={"USE_FLASH_ATTENTION": "False"},
        output=(
            "`USE_FLASH_ATTENTION` is false",
            # models/__init__.py@v3.3.7 l.1017: .format(f"Sharded {model_type}")
            "NotImplementedError: Sharded llama requires Flash Attention enabled models.",
        ),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "heads-divisibility",  # §3
        "3.3.7",
        [A100_80] * 4,
        model="meta-llama/Llama-3.1-70B-Instruct",
        args=["--num-shard", "3"],
        env=TOKEN,
        output=(
            "ValueError: `num_heads` must be divisible by `num_shards` "
            "(got `num_heads`: 64 and `num_shards`: 3",
        ),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "kv-heads-divisibility",
        "3.3.7",
        [A10G] * 16,
        model=L31_8B,
        args=["--num-shard", "16"],
        env=TOKEN,
        output=(
            "`num_key_value_heads` must be divisible by `num_shards` "
            "(got `num_key_value_heads`: 8 and `num_shards`: 16",
        ),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "more-shards-than-gpus",
        "3.3.7",
        [A10G],
        args=["--num-shard", "2"],
        output=("CUDA error: invalid device ordinal", "Shard 1 failed to start"),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "oom-weights-3x",  # 16 GB of bf16 weights on a 15 GiB T4
        "3.3.7",
        [T4],
        model=L31_8B,
        env=TOKEN,
        output=("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "oom-weights-2.4",
        "2.4.1",
        [T4],
        model="hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
        output=("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "prefill-oom",  # §4 step 1
        "2.4.1",
        [A10G],
        model=L31_8B,
        env=TOKEN,
        args=[
            "--max-batch-prefill-tokens",
            "32000",
            "--max-input-tokens",
            "4000",
            "--max-total-tokens",
            "8000",
        ],
        output=(
            "Method Warmup encountered an error.",
            "Not enough memory to handle 32000 prefill tokens. "
            "You need to decrease `--max-batch-prefill-tokens`",
            'Error: Backend(Warmup(Generation("Not enough memory to handle 32000 prefill tokens.',
            "Webserver Crashed",
        ),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "max-total-too-big-3x",  # backends/v3 NotEnoughMemory, printed with Debug by main()
        "3.3.7",
        [A10G],
        model=L31_8B,
        env=TOKEN,
        # One warmup request whose 47999-slot reservation still fits the A10G, while the KV
        # cache TGI then sizes (0.90 of the memory) holds fewer than 48000 tokens.
        args=[
            "--max-total-tokens",
            "48000",
            "--max-input-tokens",
            "4000",
            "--max-batch-prefill-tokens",
            "4000",
        ],
        output=("Error: Backend(NotEnoughMemory(48000))",),
        stderr="Error: WebserverFailed",
    ),
    Case(
        # 131072 total tokens: each warmup request reserves 131071 KV slots before the prefill
        # (memory.py steps 1-2), 32 GiB on a 24 GiB A10G, so TGI fails in warmup's try block.
        "max-total-reservation-fails-warmup-3x",
        "3.3.7",
        [A10G],
        model=L31_8B,
        env=TOKEN,
        args=["--max-total-tokens", "131072", "--max-input-tokens", "4000"],
        output=("Not enough memory to handle", "prefill tokens"),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "max-total-too-big-2.0",
        "2.0.4",
        [A10G],
        model="mistralai/Mistral-7B-Instruct-v0.3",
        env={"HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN},
        # Before 3.0 the warmup batch's blocks always join the cache, so only block rounding
        # leaves it below max_total_tokens: 8000 reserved slots, nothing free at fraction 0.67.
        args=[
            "--max-total-tokens",
            "8001",
            "--max-input-length",
            "1000",
            "--max-batch-prefill-tokens",
            "1000",
            "--cuda-memory-fraction",
            "0.67",
        ],
        output=(
            'Error: ArgumentValidation("`max_total_tokens` must be <= '
            "`max_batch_total_tokens`. Given: 8001 and 8000",
        ),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "gated-without-token",  # §1 tokens
        "3.3.7",
        [A10G],
        model=L31_8B,
        output=(
            "Download encountered an error",
            "GatedRepoError: 401 Client Error.",
            "Cannot access gated repo for url",
        ),
        stderr="Error: DownloadError",
    ),
    Case(
        "gated-2.0-reads-only-hugging-face-hub-token",
        "2.0.4",
        [A10G],
        model="meta-llama/Llama-2-7b-hf",
        env=TOKEN,
        output=("huggingface_hub.utils._errors.GatedRepoError: 401 Client Error.",),
        stderr="Error: DownloadError",
    ),
    Case(
        "invalid-token",
        "3.3.7",
        [A10G],
        env={"HF_TOKEN": "not-a-token"},
        output=("401 Client Error: Unauthorized", "Invalid credentials in Authorization header"),
        stderr="Error: DownloadError",
    ),
    Case(
        "unknown-repo",
        "3.3.7",
        [A10G],
        model="nobody/nothing",
        output=("RepositoryNotFoundError", "Repository Not Found for url"),
        stderr="Error: DownloadError",
    ),
    Case(
        "unknown-quantize-3x",
        "3.3.7",
        [A10G],
        args=["--quantize", "foo"],
        rc=2,
        stderr="error: invalid value 'foo' for '--quantize <QUANTIZE>'\n  [possible values: awq, "
        "compressed-tensors, eetq, exl2, gptq, marlin, bitsandbytes, bitsandbytes-nf4, "
        "bitsandbytes-fp4, fp8]",
    ),
    Case(
        "marlin-unknown-in-2.0",
        "2.0.4",
        [A10G],
        args=["--quantize", "marlin"],
        rc=2,
        stderr="[possible values: awq, eetq, gptq, bitsandbytes, bitsandbytes-nf4, "
        "bitsandbytes-fp4, fp8]",
    ),
    Case(
        "compressed-tensors-unknown-in-2.0",
        "2.0.4",
        [A10G],
        args=["--quantize", "compressed-tensors"],
        rc=2,
        stderr="invalid value 'compressed-tensors'",
    ),
    Case(
        "exl2-accepted-by-2.4-needs-exl2-weights",
        "2.4.1",
        [A10G],
        args=["--quantize", "exl2"],
        output=("RuntimeError: weight model.layers.0.self_attn.q_proj.qweight does not exist",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "bf16-on-sm75",
        "3.3.7",
        [T4],
        args=["--dtype", "bfloat16"],
        output=("Bfloat16 is only supported on GPUs with compute capability of at least 8.0",),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "both-max-input-flags",
        "3.3.7",
        [A10G],
        args=["--max-input-tokens", "100", "--max-input-length", "100"],
        stderr='Error: ArgumentValidation("Both `max_input_tokens` (100) and '
        "`max_input_length` (100) are set.",
    ),
    Case(
        "unknown-flag",
        "3.3.7",
        [A10G],
        args=["--foo", "1"],
        rc=2,
        stderr="error: unexpected argument '--foo' found",
    ),
    Case(
        "max-input-tokens-absent-in-2.0",
        "2.0.4",
        [A10G],
        args=["--max-input-tokens", "10"],
        rc=2,
        stderr="error: unexpected argument '--max-input-tokens' found",
    ),
    Case(
        "bad-port",
        "3.3.7",
        [A10G],
        args=["--port", "http"],
        rc=2,
        stderr="error: invalid value 'http' for '--port <PORT>': invalid digit found in string",
    ),
    Case(
        "awq-on-sm75",  # §2: llm-awq kernels are built for 8.0+ only
        "3.3.7",
        [T4],
        model="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        output=("no kernel image is available for execution on the device",),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "awq-on-sm75-without-flash",
        "3.3.7",
        [T4],
        model="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        env={"USE_FLASH_ATTENTION": "false"},
        output=("no kernel image is available for execution on the device",),
        stderr="Error: WebserverFailed",
    ),
    Case(
        "marlin-on-sm75",
        "3.3.7",
        [T4],
        args=["--quantize", "marlin"],
        output=("requires a GPU with CUDA capability 8.0 or later",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "fp8-on-sm75",
        "3.3.7",
        [T4],
        args=["--quantize", "fp8"],
        output=("torch._scaled_mm is only supported",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "fp8-on-a100-in-2.0",
        "2.0.4",
        [A100_80],
        args=["--quantize", "fp8"],
        output=("torch._scaled_mm is only supported",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "llama31-rope-in-2.0",  # Llama 3.1 postdates 2.0.4's transformers
        "2.0.4",
        [A100_80],
        model="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        output=("`rope_scaling` must be a dictionary with two fields, `type` and `factor`",),
        stderr="Error: ShardCannotStart",
    ),
    Case(
        "sharded-true-one-shard",
        "3.3.7",
        [A10G],
        args=["--sharded", "true", "--num-shard", "1"],
        stderr='Error: ArgumentValidation("`sharded` is true but `num_shard` <= 1")',
    ),
    Case(
        "exl2-sharded",
        "3.3.7",
        [A10G, A10G],
        args=["--quantize", "exl2", "--num-shard", "2"],
        stderr="Sharding is currently not supported with `exl2` quantization",
    ),
    Case(
        "input-not-below-total",
        "3.3.7",
        [A10G],
        args=["--max-input-tokens", "100", "--max-total-tokens", "100"],
        # launcher/src/main.rs@v3.3.7 l.2160
        stderr="`max_input_tokens`(100) must be < `max_total_tokens`(100)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure_mode(emulators, case):
    emulator = emulators(
        version=case.version,
        gpus=case.gpus,
        args=case.args,
        env={**FAST, **case.env},
        model_id=case.model,
    )
    rc = emulator.wait_exit()
    assert rc == case.rc, emulator.output + emulator.stderr_text
    for text in case.output:
        assert text in emulator.output, f"{text!r} not in:\n{emulator.output}"
    assert case.stderr in emulator.stderr_text, emulator.stderr_text
    if rc == 1:
        assert emulator.stderr_text.strip().splitlines()[-1].startswith("Error: ")
    assert not emulator.saw("Connected")
    assert not port_open(emulator.port)


@dataclass(frozen=True)
class Works:
    id: str
    version: str
    gpus: list
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    model: str = TINY
    output: tuple = ()


STARTS = [
    Works("t4-flashinfer-3x", "3.3.7", [T4], output=("Using Attention = flashinfer",)),  # §2 Turing
    Works("t4-flash-v1-2.0", "2.0.4", [T4], output=("Unable to use Flash Attention V2",)),  # #2037
    Works(
        "v100-without-flash-single-gpu",
        "2.4.1",
        [V100],
        env={"USE_FLASH_ATTENTION": "FALSE"},
        output=(
            "Model does not support automatic max batch total tokens",
            "Setting max batch total tokens to 16000",
        ),
    ),
    Works("fp8-marlin-on-a100-2.4", "2.4.1", [A100_80], args=["--quantize", "fp8"]),
    Works(
        "70b-awq-on-4-a10g",  # the unit in docs/design.md, done right
        "3.3.7",
        [A10G] * 4,
        model="hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
        args=["--num-shard", "4", "--max-input-tokens", "4768", "--max-total-tokens", "10960"],
        output=("Sharding model on 4 processes",),
    ),
    Works(
        "8b-on-h100-gated-with-token",
        "3.3.7",
        [H100],
        model=L31_8B,
        env=TOKEN,
        output=("Download file: model-00001-of-00004.safetensors",),
    ),
    Works(
        "2.0-hugging-face-hub-token",
        "2.0.4",
        [A10G],
        model="meta-llama/Llama-2-7b-hf",
        env={"HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN},
    ),
    Works(
        "hf-api-token-is-mapped",
        "3.3.7",
        [A10G],
        model="meta-llama/Llama-2-7b-hf",
        env={"HF_API_TOKEN": FAKE_TOKEN},
    ),
]


@pytest.mark.parametrize("case", STARTS, ids=[c.id for c in STARTS])
def test_starts(emulators, case):
    emulator = emulators(
        version=case.version,
        gpus=case.gpus,
        args=case.args,
        env={**FAST, **case.env},
        model_id=case.model,
    )
    emulator.wait_ready()
    for text in case.output:
        assert emulator.saw(text), f"{text!r} not in:\n{emulator.output}"
    assert emulator.terminate() == 0
