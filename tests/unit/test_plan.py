"""The planner, table-driven over real models and instance types (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core.catalog import ModelSpec, find_model
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import PlanInputError
from tgiops.core.plan import Overrides, plan
from tgiops.core.warmup import kv_bytes_per_token_per_gpu

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TGI = TgiEngine.release("3.3.5")


def model(alias: str) -> ModelSpec:
    return find_model(CATALOG, alias)


def plan_on(alias: str, instance_type: str, engine: TgiEngine = TGI, **overrides):
    return plan(
        model(alias),
        hardware.inventory_for_instance_type(instance_type),
        engine,
        Overrides(**overrides),
        instance_types=hardware.all_instance_types(),
    )


# alias, instance type, expected fits, num_shard, quantize, dtype, flash
FITTING = [
    pytest.param(
        "llama-3.1-70b-awq",
        "g5.12xlarge",
        4,
        "awq",
        "float16",
        True,
        id="70b-awq-on-g5.12xlarge-4-shards",
    ),
    pytest.param(
        "llama-3.1-70b-awq",
        "g6e.xlarge",
        1,
        "awq",
        "float16",
        True,
        id="70b-awq-on-g6e.xlarge-one-L40S",
    ),
    pytest.param(
        "llama-3.1-70b",
        "g5.48xlarge",
        8,
        None,
        "bfloat16",
        True,
        id="70b-bf16-on-g5.48xlarge-8-shards",
    ),
    pytest.param(
        "llama-3.1-70b", "p4de.24xlarge", 8, None, "bfloat16", True, id="70b-bf16-on-p4de"
    ),
    pytest.param(
        "llama-3.1-8b",
        "g4dn.xlarge",
        1,
        "bitsandbytes",
        "float16",
        False,
        id="8b-on-g4dn.xlarge-turing-fallback",
    ),
    pytest.param("llama-3.1-8b", "g5.xlarge", 1, None, "bfloat16", True, id="8b-bf16-on-g5.xlarge"),
    pytest.param(
        "llama-3.2-90b-vision",
        "g5.48xlarge",
        8,
        "fp8",
        "bfloat16",
        True,
        id="90b-vision-on-g5.48xlarge-fp8-on-the-fly",
    ),
    pytest.param(
        "mixtral-8x7b", "g5.48xlarge", 8, None, "bfloat16", True, id="mixtral-on-g5.48xlarge"
    ),
    pytest.param(
        "llama-3.1-70b-fp8",
        "p5.48xlarge",
        8,
        "compressed-tensors",
        "bfloat16",
        True,
        id="70b-fp8-checkpoint-on-h100",
    ),
    # fp8: Gemma 2's tied head is loaded a second time (test_a_tied_head_is_loaded_twice):
    # 16-bit leaves an L4 ~1600 tokens of KV cache.
    pytest.param("gemma-2-9b", "g6.xlarge", 1, "fp8", "bfloat16", True, id="gemma-2-on-L4"),
    pytest.param("phi-3-mini", "g4dn.xlarge", 1, None, "float16", False, id="phi-3-on-T4"),
]


@pytest.mark.parametrize("alias,itype,shards,quantize,dtype,flash", FITTING)
def test_plans_that_fit(alias, itype, shards, quantize, dtype, flash):
    result = plan_on(alias, itype)
    assert result.fits, result.problem
    assert (result.num_shard, result.quantize, result.dtype) == (shards, quantize, dtype)
    assert result.flash_attention is flash
    # Token limits honour TGI's invariants and the predicted KV cache.
    assert result.max_input_tokens < result.max_total_tokens <= result.memory.kv_cache_tokens
    assert result.max_total_tokens <= result.model.max_position_embeddings
    assert result.max_batch_prefill_tokens <= result.memory.kv_cache_tokens
    args = result.launcher_args
    assert args[args.index("--num-shard") + 1] == str(shards), "num_shard is always explicit"
    assert ("--dtype" in args) is (quantize is None), "TGI refuses --dtype with --quantize"
    assert result.reasons and all(isinstance(r, str) and r for r in result.reasons)


def test_turing_fallback_sets_non_flash_env_and_one_shard():
    result = plan_on("llama-3.1-8b", "g4dn.12xlarge")  # 4x T4
    assert result.env == {
        "USE_FLASH_ATTENTION": "false",
        "ATTENTION": "paged",
        "PREFIX_CACHING": "0",
    }
    assert result.num_shard == 1
    assert any("non-flash" in r for r in result.reasons)
    assert any("bitsandbytes on the fly" in r and "does not fit" in r for r in result.reasons)


@pytest.mark.parametrize(
    "version,env",
    [
        pytest.param("2.0.4", {"USE_FLASH_ATTENTION": "false"}, id="2.0-only-the-switch"),
        pytest.param(
            "2.3.1",
            {"USE_FLASH_ATTENTION": "false", "ATTENTION": "paged", "USE_PREFIX_CACHING": "0"},
            id="2.3-old-prefix-name",
        ),
        pytest.param(
            "3.3.5",
            {"USE_FLASH_ATTENTION": "false", "ATTENTION": "paged", "PREFIX_CACHING": "0"},
            id="3.3",
        ),
    ],
)
def test_fallback_env_names_follow_the_version(version, env):
    result = plan_on("phi-3-mini", "g4dn.xlarge", engine=TgiEngine.release(version))
    assert result.env == env


def test_70b_awq_on_g4dn_does_not_fit_and_suggests_hardware():
    result = plan_on("llama-3.1-70b-awq", "g4dn.xlarge")
    assert not result.fits
    assert "awq" in result.problem and "sm75" in result.problem
    suggested = [a.instance_type for a in result.alternatives if a.instance_type]
    assert suggested, result.alternatives
    for name in suggested:  # each suggestion really fits, and has a price
        again = plan_on("llama-3.1-70b-awq", name)
        assert again.fits, (name, again.problem)
        assert hardware.find_instance_type(name).on_demand_usd_per_hour


def test_70b_awq_on_volta_is_refused_with_the_reason():
    result = plan_on("llama-3.1-70b-awq", "p3.8xlarge")
    assert not result.fits
    assert "sm70" in result.problem and "awq" in result.problem
    assert result.alternatives


def test_16bit_70b_on_volta_cannot_shard_so_it_does_not_fit():
    result = plan_on("llama-3.1-70b", "p3.16xlarge")  # 8x V100: 128 GiB, but one shard only
    assert not result.fits
    assert result.num_shard == 1
    assert result.env["USE_FLASH_ATTENTION"] == "false"


def test_gemma2_uses_its_explicit_head_dim():
    gemma = model("gemma-2-9b")
    assert gemma.head_dim == 256 != gemma.hidden_size // gemma.num_attention_heads
    assert kv_bytes_per_token_per_gpu(gemma, 1) == 2 * 42 * 8 * 256 * 2  # 336 KiB
    result = plan_on("gemma-2-9b", "g6.xlarge")
    assert result.memory.kv_bytes_per_token_per_gpu == 344064


def test_kv_bytes_shrink_with_shards_but_never_below_one_kv_head():
    llama70 = model("llama-3.1-70b")
    assert kv_bytes_per_token_per_gpu(llama70, 1) == 320 * 1024
    assert kv_bytes_per_token_per_gpu(llama70, 4) == 80 * 1024
    assert kv_bytes_per_token_per_gpu(llama70, 8) == 40 * 1024


def test_tgi_caches_every_text_layer_of_llama_vision():
    # flash_causal_lm.py sizes the paged cache with text_config.num_hidden_layers: the 20
    # cross-attention layers of the 90B get blocks too, though only 80 layers use them.
    vision = model("llama-3.2-90b-vision")
    assert vision.kv_cache_layers == 80 and vision.num_layers == 100
    assert kv_bytes_per_token_per_gpu(vision, 1) == 2 * 100 * 8 * 128 * 2  # 400 KiB


def test_more_memory_never_means_fewer_tokens():
    small = plan_on("llama-3.1-8b", "g5.xlarge")  # A10G 24 GB
    large = plan_on("llama-3.1-8b", "g6e.xlarge")  # L40S 48 GB
    assert large.memory.kv_cache_tokens > small.memory.kv_cache_tokens


def test_cuda_memory_fraction_shrinks_the_kv_cache():
    full = plan_on("llama-3.1-8b", "g6e.xlarge")
    part = plan_on("llama-3.1-8b", "g6e.xlarge", cuda_memory_fraction=0.8)
    assert part.quantize is None and full.quantize is None
    assert part.memory.kv_cache_tokens < full.memory.kv_cache_tokens
    assert "--cuda-memory-fraction" in part.launcher_args
    assert "--cuda-memory-fraction" not in full.launcher_args


def test_too_many_prefill_tokens_cannot_warm_up():
    result = plan_on("llama-3.1-70b-awq", "g6e.xlarge", max_batch_prefill_tokens=60000)
    assert not result.fits
    assert "prefill" in result.problem
    assert any("--max-batch-prefill-tokens" in a.flags for a in result.alternatives)


def test_max_total_tokens_above_the_kv_cache_does_not_fit():
    result = plan_on("llama-3.1-70b-awq", "g6e.xlarge", max_total_tokens=100000)
    assert not result.fits
    # The warmup batch reserves max_total_tokens - 1 KV slots before its prefill, so TGI
    # already fails there ("Not enough memory to handle 4096 prefill tokens"), and says so.
    assert "--max-total-tokens" in result.problem
    shorter = [a for a in result.alternatives if "--max-total-tokens" in a.flags]
    assert shorter
    total = int(shorter[0].flags[1])
    assert plan_on("llama-3.1-70b-awq", "g6e.xlarge", max_total_tokens=total).fits


def test_a_tiny_kv_cache_is_reason_enough_to_quantize():
    # 16-bit 8B weights fit 80% of an A10G, but would leave almost no KV cache.
    result = plan_on("llama-3.1-8b", "g5.xlarge", cuda_memory_fraction=0.8)
    assert result.fits and result.quantize == "fp8"


def test_quantize_none_forbids_on_the_fly_quantization():
    result = plan_on("llama-3.1-70b", "g5.12xlarge", quantize="none")
    assert not result.fits and result.quantize is None
    assert any(a.flags[:1] == ("--quantize",) for a in result.alternatives)
    assert plan_on("llama-3.1-70b", "g5.12xlarge").quantize == "fp8"


def test_legacy_versions_use_their_own_flag_and_cover_input_with_prefill():
    result = plan_on("llama-3.1-8b", "g5.2xlarge", engine=TgiEngine.release("2.0.4"))
    assert "--max-input-length" in result.launcher_args
    assert "--max-input-tokens" not in result.launcher_args
    assert result.max_batch_prefill_tokens >= result.max_input_tokens
    assert result.max_input_tokens <= 8192
    assert TgiEngine.release("2.0.4").token_env_var == "HUGGING_FACE_HUB_TOKEN"
    assert TgiEngine.release("3.3.5").token_env_var == "HF_TOKEN"


BAD_OVERRIDES = [
    pytest.param(
        "llama-3.1-70b",
        "g5.48xlarge",
        {"num_shard": 3},
        "does not divide",
        id="shards-not-dividing-heads",
    ),
    pytest.param(
        "llama-3.1-70b", "g5.12xlarge", {"num_shard": 8}, "only 4 GPU", id="more-shards-than-gpus"
    ),
    pytest.param(
        "llama-3.1-8b", "g4dn.12xlarge", {"num_shard": 2}, "cannot shard", id="sharding-on-turing"
    ),
    pytest.param(
        "llama-3.1-8b", "g4dn.xlarge", {"dtype": "bfloat16"}, "no bfloat16", id="bf16-on-turing"
    ),
    pytest.param(
        "llama-3.1-8b",
        "g5.xlarge",
        {"quantize": "awq"},
        "needs a checkpoint",
        id="awq-on-16bit-checkpoint",
    ),
    pytest.param(
        "llama-3.1-8b", "g5.xlarge", {"quantize": "int3"}, "not accepted", id="unknown-quantize"
    ),
    pytest.param("llama-3.1-8b", "g4dn.xlarge", {"quantize": "fp8"}, "sm89", id="fp8-on-turing"),
    pytest.param(
        "llama-3.1-70b-awq",
        "g5.12xlarge",
        {"quantize": "none"},
        "cannot be served",
        id="unquantize-awq",
    ),
    pytest.param(
        "llama-3.1-8b",
        "g5.xlarge",
        {"max_input_tokens": 9000, "max_total_tokens": 4000},
        "must be below",
        id="input-above-total",
    ),
    pytest.param(
        "llama-3.1-8b",
        "g5.xlarge",
        {"cuda_memory_fraction": 1.5},
        "(0, 1]",
        id="fraction-above-one",
    ),
]


@pytest.mark.parametrize("alias,itype,overrides,message", BAD_OVERRIDES)
def test_impossible_overrides_are_bad_input(alias, itype, overrides, message):
    with pytest.raises(PlanInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_on(alias, itype, **overrides)


def test_quantize_on_the_fly_for_engine_without_fp8_marlin():
    # TGI 2.1 has no FP8-Marlin for sm8x: on A10G it must fall to eetq instead.
    result = plan_on("llama-3.1-70b", "g5.12xlarge", engine=TgiEngine.release("2.1.0"))
    assert result.fits and result.quantize == "eetq"


# --- Issue 14, item A: warmup logits over every prefill token before TGI 3.0 ---------------


@pytest.mark.parametrize(
    ("version", "copies"), [("2.0.4", 2), ("2.3.1", 2), ("2.4.0", 1), ("2.4.1", 1), ("3.0.0", 0)]
)
def test_prefill_logits_are_their_own_memory_term_per_release(version, copies):
    """flash_causal_lm.py: log_softmax into a new tensor up to 2.3.1, in place from 2.4.0
    (PR #2661), no prefill logprobs at all from 3.0.0 (REQUEST_LOGPROBS, PR #2797)."""
    result = plan_on("llama-3.1-8b", "g5.xlarge", engine=TgiEngine.release(version))
    assert result.fits
    vocab = model("llama-3.1-8b").vocab_size
    expected = result.max_batch_prefill_tokens * copies * vocab * 2 / 2**20
    assert result.memory.prefill_logits_mib == pytest.approx(expected, abs=0.1)
    if copies:
        assert any("prefill logits" in r for r in result.reasons)


def test_sharded_prefill_logits_gather_the_whole_vocabulary_on_each_shard():
    """TensorParallelHead.forward (layers/tensor_parallel.py@v2.4.1): a local V/world slice,
    then an all-gather of the full V on every shard, returned transposed; 2.4.x's
    ``log_softmax(out, -1, out=out)`` on that view adds a contiguous temporary and a
    contiguous copy of its input (TgiEngine.gathered_logits_extra_copies): 3 x V per token."""
    result = plan_on("llama-3.1-8b", "g5.12xlarge", engine=TgiEngine.release("2.4.1"), num_shard=4)
    vocab = model("llama-3.1-8b").vocab_size
    per_token = (3 * vocab + vocab // 4) * 2
    assert result.memory.prefill_logits_mib == pytest.approx(
        result.max_batch_prefill_tokens * per_token / 2**20, abs=0.1
    )


def test_before_3_0_the_wiggle_room_is_a_share_of_free_memory():
    """free * TGI_WIGGLE_ROOM (flash_causal_lm.py@v2.4.1 l.1549-1553), 0.90 at 2.4.x."""
    result = plan_on("llama-3.1-8b", "g5.xlarge", engine=TgiEngine.release("2.4.1"))
    mem = result.memory
    assert mem.kv_share == 0.90
    assert mem.usable_mib == pytest.approx(mem.gpu_memory_mib, abs=0.1)
    assert mem.kv_budget_mib == pytest.approx(0.90 * (mem.usable_mib - mem.used_mib))
    # TGI adds the warmup batch's blocks back after taking the share of what is left free;
    # the batch holds max_total_tokens - 1 slots per request (TgiEngine.warmup_reserved_tokens).
    warm = TgiEngine.warmup_reserved_tokens(
        result.max_batch_prefill_tokens,
        result.max_input_tokens,
        result.max_total_tokens,
        TgiEngine.attention_block_size(result.attention),
    )
    assert mem.warmup_kv_mib == pytest.approx(
        warm * mem.kv_bytes_per_token_per_gpu / 2**20, abs=0.1
    )
    free = (mem.usable_mib - mem.used_mib) * 2**20 - warm * mem.kv_bytes_per_token_per_gpu
    expected = int(0.90 * free // mem.kv_bytes_per_token_per_gpu) + warm
    assert abs(mem.kv_cache_tokens - expected) <= 2  # the estimate's fields are rounded


@pytest.mark.parametrize(
    ("version", "wiggle"),
    [
        ("2.2.0", 0.95),
        ("2.3.1", 0.95),
        ("2.4.1", 0.90),
        ("3.0.2", 0.95),
        ("3.2.3", 0.93),
        ("3.3.0", 0.90),
        ("3.3.7", 0.90),
    ],
)
def test_wiggle_room_default_per_release(version, wiggle):
    """TGI_WIGGLE_ROOM's default in models/globals.py at each tag (0.95 hard-coded <= 2.2)."""
    assert TgiEngine.release(version).wiggle_room == wiggle


def test_without_chunking_a_big_logits_term_shortens_the_input_rather_than_misfit():
    """2.1.0 on 4x A10G: eetq 70B fits with a shorter input; the prefill logits of 8192
    tokens would not (the planner settles on the longest input that fits)."""
    result = plan_on(
        "llama-3.1-70b", "g5.12xlarge", engine=TgiEngine.release("2.1.0"), quantize="eetq"
    )
    assert result.fits
    assert 1024 <= result.max_input_tokens < 8192
    assert result.max_batch_prefill_tokens == result.max_input_tokens
    assert result.memory.kv_cache_tokens // 4 >= result.max_total_tokens


def test_plan_output_shows_the_prefill_logits_term():
    from tgiops.cli.output import plan_as_text
    from tgiops.core.plan import plan_as_dict

    result = plan_on("llama-3.1-8b", "g5.xlarge", engine=TgiEngine.release("2.4.1"))
    memory = plan_as_dict(result)["memory"]
    assert memory["prefill_logits_gib"] == round(result.memory.prefill_logits_mib / 1024, 2) > 1
    assert f"prefill logits {result.memory.prefill_logits_mib / 1024:.2f}" in plan_as_text(result)


def test_prefill_activations_hold_the_mlp_at_its_peak():
    """`down_proj(act(gate_up[:, 0]) * gate_up[:, 1])` keeps gate_up (2 x I), the activation
    (I) and the product (I) alive at once (flash_llama_modeling.py LlamaMLP.forward)."""
    from tgiops.core.warmup import activation_bytes

    m = model("llama-3.1-8b")
    attention = (m.num_attention_heads * 2 + 2 * m.num_key_value_heads) * m.head_dim
    per_token = 4 * m.hidden_size + attention + 4 * m.intermediate_size
    assert activation_bytes(m, 1000, 1) == 1000 * per_token * 2


# --- Issue 14 section 1: the warmup batch, the LM head, Gemma 3's dense masks -------------


@pytest.mark.parametrize(
    ("prefill", "max_input", "expected"),
    [
        (4096, 4095, (4095, 1)),
        (32768, 8000, (8000, 8000, 8000, 8000, 768)),  # issue #1831's flags
        (131122, 131072, (131072, 50)),  # issue #2301's
        (4096, None, (4096,)),  # 3.x zero config: one request of the whole budget
    ],
)
def test_the_warmup_batch_splits_the_prefill_budget_into_requests(prefill, max_input, expected):
    """router/client/src/client.rs@v2.0.4 warmup; backends/v3/src/client/grpc_client.rs."""
    assert TgiEngine.warmup_requests(prefill, max_input) == expected


def test_each_warmup_request_reserves_kv_for_max_total_tokens():
    """max_new_tokens = max_total - truncate, and the server reserves
    ceil((input + max_new_tokens - 1) / BLOCK_SIZE) blocks per request (from_pb)."""
    assert TgiEngine.warmup_reserved_tokens(131122, 131072, 139264, 16) == 2 * 139264
    assert TgiEngine.warmup_reserved_tokens(4096, None, None, 1) == 4096
    assert TgiEngine.warmup_reserved_tokens(35000, 35000, 36864, 16) == 36864


def test_the_warmup_reservation_counts_for_the_prefill_peak():
    """A long max_total_tokens makes the warmup batch reserve its KV before the prefill: on one
    L40S the 70B AWQ has ~11 GiB left, so 100k tokens (31 GiB of KV) cannot warm up."""
    result = plan_on("llama-3.1-70b-awq", "g6e.xlarge", max_total_tokens=100000)
    assert not result.fits
    assert result.memory.warmup_kv_mib > 30 * 1024
    assert not result.memory.prefill_fits
    assert "KV blocks the warmup batch reserves" in result.problem


def test_a_tied_head_is_loaded_twice():
    """flash_*_modeling.py: ``SpeculativeHead.load(prefix="...embed_tokens")`` loads the tied
    embedding again as the LM head, a second 16-bit copy (V x H x 2 bytes)."""
    from tgiops.core.warmup import weight_bytes, weights_per_gpu_bytes

    m = model("gemma-2-9b")
    assert m.tie_word_embeddings
    head = m.vocab_size * m.hidden_size * 2
    assert weights_per_gpu_bytes(m, None, 1) == pytest.approx(weight_bytes(m, None) + head)
    untied = model("llama-3.1-8b")
    assert weights_per_gpu_bytes(untied, None, 1) == pytest.approx(weight_bytes(untied, None))


def test_a_head_whose_vocabulary_does_not_divide_is_whole_on_every_shard():
    """TensorParallelHead.load: get_sharded(dim=0) raises AssertionError when the vocabulary
    does not divide, and the whole head is loaded on each shard."""
    from dataclasses import replace as dc_replace

    from tgiops.core.warmup import lm_head_bytes_per_gpu

    m = model("llama-3.1-8b")
    head = m.vocab_size * m.hidden_size * 2
    assert lm_head_bytes_per_gpu(m, 2) == head / 2
    odd = dc_replace(m, vocab_size=m.vocab_size + 1)
    assert lm_head_bytes_per_gpu(odd, 2) == (m.vocab_size + 1) * m.hidden_size * 2


@pytest.mark.parametrize(
    ("version", "attention", "kind"),
    [
        ("3.1.1", "flashinfer", None),
        ("3.2.0", "flashinfer", "sdpa"),
        ("3.2.3", "flashinfer", "sdpa"),
        ("3.3.0", "flashinfer", "mask"),
        ("3.3.7", "flashdecoding", "sdpa"),
    ],
)
def test_gemma3_dense_prefill_attention_per_release(version, attention, kind):
    """flash_gemma3_modeling.py@v3.2.x: SDPA with a dense mask when the batch has an image;
    @v3.3.0 the mask for every prefill, SDPA only off flashinfer."""
    assert TgiEngine.release(version).dense_prefill_attention("gemma3", attention) == kind
    assert TgiEngine.release(version).dense_prefill_attention("llama", attention) is None


def test_gemma3_dense_masks_grow_with_the_square_of_the_input():
    from dataclasses import replace as dc_replace

    from tgiops.core.warmup import dense_attention_bytes

    gemma3 = dc_replace(
        model("gemma-2-9b"), model_type="gemma3", num_attention_heads=32, vision=True
    )
    engine = TgiEngine.release("3.2.1")
    one = dense_attention_bytes(gemma3, engine, "flashinfer", (10000,), 4)
    two = dense_attention_bytes(gemma3, engine, "flashinfer", (20000,), 4)
    assert two == pytest.approx(4 * one)
    # float32 masks, window mask and its ones_like (4 + 4 + 1 + 1 bytes per cell), and per
    # head, math SDPA's float32 scores and softmax and _safe_softmax's boolean test (4 + 4 + 1)
    assert one == pytest.approx(10000**2 * (10 + 8 * 9))
    assert dense_attention_bytes(gemma3, TgiEngine.release("3.3.7"), "flashinfer", (10000,), 4) == (
        pytest.approx(10000**2 * 10)
    )


def test_plan_output_shows_every_memory_term():
    from tgiops.cli.output import plan_as_text
    from tgiops.core.plan import plan_as_dict

    result = plan_on("llama-3.1-8b", "g5.xlarge", engine=TgiEngine.release("2.4.1"))
    memory = plan_as_dict(result)["memory"]
    assert set(memory["terms_gib"]) == set(result.memory.terms())
    assert memory["warmup_kv_gib"] == round(result.memory.warmup_kv_mib / 1024, 2) > 0
    text = plan_as_text(result)
    for name in result.memory.terms():
        assert name in text
