"""What differs between TGI releases, as data (pure).

The serving engine is a parameter of every plan, not a constant of the code: TGI is in
maintenance mode since 2025-12-11 (docs/tgi.md §7) and its authors point to vLLM and SGLang,
so a second engine must be able to slot in beside this one.

Every rule here cites tgiops/docs/tgi.md (section numbers), which cites TGI's source;
the warmup memory rules are derived in tgiops/docs/tgi-memory-model.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tgiops.core.errors import InputError

if TYPE_CHECKING:
    from tgiops.core.catalog import ModelSpec
    from tgiops.core.hardware import GpuInventory
    from tgiops.core.plan import Overrides, Plan

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference"

# 3.3.7 is TGI's newest release (2025-12-18, docs/tgi.md §0): its CI publishes an image per
# release tag (§6). If a registry lacks it, `--tgi-version 3.3.5` is the tag TGI's own docs
# show; tgiops passes --num-shard explicitly, so 3.3.7's num_shard fix is not relied upon.
DEFAULT_TGI_VERSION = "3.3.7"
OLDEST_SUPPORTED = (2, 0, 0)
NEWEST_SUPPORTED = (3, 3, 99)

Version = tuple[int, int, int]

_QUANTIZE_2_0 = (
    "awq",
    "eetq",
    "gptq",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)


def parse_version(text: str) -> Version:
    """'3.3.5' -> (3, 3, 5). Bad input names the value and the supported range."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise InputError(f"--tgi-version {text!r} is not a version like 3.3.5")
    version = (int(match[1]), int(match[2]), int(match[3] or 0))
    if not OLDEST_SUPPORTED <= version <= NEWEST_SUPPORTED:
        raise InputError(
            f"--tgi-version {text} is outside what tgiops knows (2.0.0 to 3.3.x); "
            f"use e.g. {DEFAULT_TGI_VERSION}"
        )
    return version


# The model types TGI has a model class of its own for: the `type` values of `class ModelType`
# in server/text_generation_server/models/__init__.py, per release (@v2.0.4 ... @v3.3.7; 2.0.0-2.0.3
# compare `model_type` with the same strings in that file, without phi3 and idefics2 before
# 2.0.2). Any other model_type goes to transformers' AutoModel fallback (no sharding, padded
# batching) if transformers knows it, else TGI refuses it.
_MODEL_TYPES_2_0_4 = frozenset(
    [
        "baichuan",
        "bloom",
        "cohere",
        "dbrx",
        "falcon",
        "galactica",
        "gemma",
        "gpt2",
        "gpt_bigcode",
        "gpt_neox",
        "idefics",
        "idefics2",
        "llama",
        "llava_next",
        "mistral",
        "mixtral",
        "mpt",
        "opt",
        "phi",
        "phi3",
        "qwen2",
        "santacoder",
        "ssm",
        "starcoder2",
        "t5",
    ]
)
# Older names TGI maps to a class: falcon's (RefinedWeb*) and phi's (phi-msft), same file.
_MODEL_TYPE_ALIASES = frozenset({"RefinedWeb", "RefinedWebModel", "phi-msft"})
_MODEL_TYPES_CHANGED: tuple[tuple[Version, frozenset[str], frozenset[str]], ...] = (
    # (first release, added, removed), from a diff of ModelType at every tag
    ((2, 1, 0), frozenset({"gemma2"}), frozenset()),
    ((2, 2, 0), frozenset({"deepseek_v2", "paligemma"}), frozenset()),
    ((2, 3, 0), frozenset({"gptj"}), frozenset()),
    ((2, 3, 1), frozenset({"mllama", "phimoe"}), frozenset()),
    ((2, 4, 0), frozenset({"granite"}), frozenset()),
    ((2, 4, 1), frozenset({"mamba", "qwen2_vl"}), frozenset({"ssm"})),
    ((3, 0, 2), frozenset({"idefics3"}), frozenset()),
    ((3, 1, 0), frozenset({"deepseek_v3"}), frozenset()),
    ((3, 1, 1), frozenset({"qwen2_5_vl"}), frozenset()),
    ((3, 2, 0), frozenset({"gemma3", "gemma3_text"}), frozenset()),
    ((3, 2, 3), frozenset({"llama4"}), frozenset()),
)


@dataclass(frozen=True)
class TgiEngine:
    """One TGI release: the flag and environment names it understands."""

    version_text: str
    version: Version

    name = "tgi"

    @classmethod
    def release(cls, version_text: str = DEFAULT_TGI_VERSION) -> TgiEngine:
        return cls(version_text=version_text.lstrip("v"), version=parse_version(version_text))

    @property
    def image(self) -> str:
        return f"{TGI_IMAGE}:{self.version_text}"

    # -- the unit and the endpoint (tgiops.core.engines.Engine) ------------------------------

    unit_template = "tgi.service.j2"
    container_port = 80  # the image sets PORT=80 (docs/tgi.md §1, Dockerfile l.147-149)
    health_path = "/health"  # 200 only after download, load and warmup

    def info_mismatches(
        self,
        info: Mapping[str, Any],
        *,
        expected_model_id: str,
        expected_max_total_tokens: int | None,
        expected_max_input_tokens: int | None,
    ) -> list[str]:
        return verify_info(
            info,
            expected_model_id=expected_model_id,
            expected_max_total_tokens=expected_max_total_tokens,
            expected_max_input_tokens=expected_max_input_tokens,
        )

    def diagnose_journal(self, text: str) -> str | None:
        return diagnose_journal(text)

    @property
    def token_env_var(self) -> str:
        # §1 "Token env vars": <= 2.0.4 reads only HUGGING_FACE_HUB_TOKEN; 2.1+ reads HF_TOKEN
        # (and 2.2+'s launcher config fetch reads only HF_TOKEN).
        return "HF_TOKEN" if self.version >= (2, 1, 0) else "HUGGING_FACE_HUB_TOKEN"

    @property
    def max_input_flag(self) -> str:
        # §1/§5: 2.0.x speaks max_input_length; later releases max_input_tokens (legacy alias kept).
        return "--max-input-tokens" if self.version >= (2, 1, 0) else "--max-input-length"

    @property
    def accepted_quantize(self) -> tuple[str, ...]:
        """The `--quantize` values this release's clap enum accepts (§1 table)."""
        values: tuple[str, ...] = _QUANTIZE_2_0
        if self.version >= (2, 1, 0):
            values += ("exl2", "marlin")
        if self.version >= (2, 4, 1):
            values += ("compressed-tensors",)
        return values

    @property
    def model_types(self) -> frozenset[str]:
        """The config.json model_type values this release has a model class for."""
        known = set(_MODEL_TYPES_2_0_4 | _MODEL_TYPE_ALIASES)
        if self.version < (2, 0, 2):
            known -= {"phi3", "idefics2"}
        for since, added, removed in _MODEL_TYPES_CHANGED:
            if self.version >= since:
                known = (known | added) - removed
        return frozenset(known)

    @property
    def fp8_marlin_on_ampere(self) -> bool:
        # §2 quantization table: fp8 on sm80-88 (FP8-Marlin W8A16) arrived in v2.2.0 (cb150eb2).
        return self.version >= (2, 2, 0)

    @property
    def awq_marlin(self) -> bool:
        # §2: AWQ -> GPTQ-Marlin on sm80+ since v2.2.0; before, the llm-awq GEMM kernel
        # (built for 8.0/8.6/9.0 only). Either way: sm80+.
        return self.version >= (2, 2, 0)

    @property
    def wiggle_room(self) -> float:
        """TGI_WIGGLE_ROOM's default, per release (read at every tag of TGI's source).

        Hard-coded ``free_memory * 0.95`` in flash_causal_lm.py @v2.0.0-v2.2.0; the env var's
        default in models/globals.py: 0.95 @v2.3.x, 0.90 @v2.4.x, 0.95 @v3.0.x, 0.93
        @v3.1.0-v3.2.3, 0.90 from v3.3.0 (docs/tgi.md §2 lists some of these).
        """
        if self.version >= (3, 3, 0):
            return 0.90
        if self.version >= (3, 1, 0):
            return 0.93
        if self.version >= (3, 0, 0):
            return 0.95
        if self.version >= (2, 4, 0):
            return 0.90
        return 0.95

    @property
    def wiggle_on_free_memory(self) -> bool:
        """Where the wiggle room applies when warmup turns free memory into KV blocks.

        Before v3.0.0: ``free = max(0, cuda_free - (1 - fraction) * total)`` and then
        ``num_blocks = (free * wiggle) // block_bytes``, a share of what is free
        (flash_causal_lm.py@v2.4.1 l.1549-1553, @v2.0.4 l.809-813). From v3.0.0 it is folded
        into the fraction: ``get_free_memory(device, MEMORY_FRACTION * TGI_WIGGLE_ROOM)``, a
        share of the total (flash_causal_lm.py@v3.0.0 l.1584, @v3.3.7 l.1556).
        """
        return self.version < (3, 0, 0)

    @property
    def prefill_logits_copies(self) -> int:
        """How many vocabulary-wide tensors per prefill token warmup holds (0: none).

        The router's warmup requests set ``prefill_logprobs: true`` in every release
        (router/client/src/client.rs@v2.0.4 l.148; backends/v3/src/client/grpc_client.rs
        @v3.3.7 l.150-197). With all requests asking for them, ``prefill_head_indices`` is None
        and the LM head runs on every prefill token (flash_causal_lm.py@v2.4.1 l.1159-1160,
        l.1714, custom_modeling/flash_llama_modeling.py l.702-704), then ``generate_token``
        takes ``log_softmax(out, -1)`` over all of them:

        - up to v2.3.1 into a new tensor (2 copies: the logits and their log-softmax,
          flash_causal_lm.py@v2.3.1);
        - from v2.4.0 in place, ``torch.log_softmax(out, -1, out=out)`` (1 copy; 5f32dea1, PR
          #2661; flash_causal_lm.py@v2.4.1 l.2088-2091);
        - from v3.0.0 the server drops ``prefill_logprobs`` unless ``REQUEST_LOGPROBS=1``
          (``--enable-prefill-logprobs``), for text and multimodal batches alike (both go
          through ``FlashCausalLMBatch.from_tokenized``: flash_causal_lm.py@v3.0.0 l.298-299,
          vlm_causal_lm.py l.242), so the head runs on the last token per request only (0).
        """
        if self.version >= (3, 0, 0):
            return 0
        return 1 if self.version >= (2, 4, 0) else 2

    @property
    def gathered_logits_extra_copies(self) -> int:
        """How many more ``[T, V]`` tensors warmup's ``log_softmax`` makes of a *gathered* head.

        A sharded head returns the gathered logits transposed: ``world_out`` is allocated
        ``[V, T]`` and ``forward`` returns ``world_out.T`` (layers/tensor_parallel.py@v2.0.4
        l.61, l.73; @v2.2.0 l.98, l.114; @v2.3.1 l.88, l.104; @v2.4.1 l.88, l.104). PyTorch's
        CUDA softmax first makes its input contiguous, ``auto input = input_.contiguous();``
        (``host_softmax`` in aten/src/ATen/native/cuda/SoftMax.cu), so on that view:

        - up to v2.3.1 ``torch.log_softmax(out, -1)`` (flash_causal_lm.py@v2.0.4 l.1142,
          @v2.2.0 l.1504, @v2.3.1 l.1730) holds the contiguous copy next to the logits and
          their new log-softmax: 1 more;
        - v2.4.x ``torch.log_softmax(out, -1, out=out)`` (@v2.4.0 l.2046, @v2.4.1 l.2090)
          passes a non-contiguous ``out``. PyTorch's ``log_softmax_out``
          (aten/src/ATen/native/SoftMax.cpp, the out variant of pytorch/pytorch#75833, 2022)
          then computes into ``output_temp = at::empty(output_.sizes())``, a contiguous
          ``[T, V]``, and copies it back with ``output_.copy_(output_temp)`` afterwards; the
          kernel it calls still makes the input contiguous: 2 more, next to ``world_out``.
          In place only without tensor parallelism, which is what PR #2661 measured (one L4);
        - from v3.0.0 there are no prefill logits (``prefill_logits_copies`` is 0).
        """
        if not self.prefill_logits_copies:
            return 0
        return 1 if self.prefill_logits_copies == 2 else 2

    def fused_moe_caches(self, model_type: str, quantize: str | None) -> bool:
        """Whether the MoE layer is vLLM's ``fused_moe``, which allocates its caches whole.

        Mixtral's ``BlockSparseMoE`` is used when ``quantize`` is None and calls vLLM's
        ``fused_moe`` (custom_modeling/flash_mixtral_modeling.py@v2.0.4 l.367, l.482; @v2.2.0
        l.369, l.484); server/Makefile-vllm pins Narsil/vllm@b5dfc61d (v2.0.2-v2.1.1) and
        @d243e9dc (v2.2.0), whose ``fused_moe`` allocates ``(M, top_k, 2 I / world)``,
        ``(M * top_k, I / world)`` and ``(M, top_k, hidden)`` before the first kernel
        (vllm/model_executor/layers/fused_moe/fused_moe.py l.424-432 at both commits). v2.3.0
        moved to ``layers/moe`` (``SparseMoELayer``); v2.0.0-v2.0.1 pin another fork, not read.
        """
        return (
            model_type == "mixtral" and quantize is None and (2, 0, 2) <= self.version < (2, 3, 0)
        )

    @staticmethod
    def warmup_requests(prefill_tokens: int, max_input_tokens: int | None) -> tuple[int, ...]:
        """The input lengths of the requests the router's warmup batch holds.

        The router fills ``max_batch_prefill_tokens`` with requests of at most
        ``max_input_tokens`` each: ``truncate = min(max_input, prefill - n_tokens)`` until
        ``n_tokens`` reaches the prefill budget (router/client/src/client.rs@v2.0.4 ``warmup``,
        router/client/src/v3/client.rs@v2.2.0, backends/v3/src/client/grpc_client.rs@v2.4.1
        and @v3.3.7: 2.0-2.2 advance ``n_tokens`` by ``max_input_length`` and later releases
        by ``truncate``, which gives the same lengths). From v2.4.1 ``max_input_tokens`` may be
        unknown (zero config, launcher/src/main.rs@v2.4.1 l.1714-1731): one request of the
        whole budget. See
        tgiops/docs/tgi-memory-model.md, "Warmup batch".
        """
        if prefill_tokens < 1:
            return ()
        if not max_input_tokens:
            return (prefill_tokens,)
        full, rest = divmod(prefill_tokens, max_input_tokens)
        return (max_input_tokens,) * full + ((rest,) if rest else ())

    @staticmethod
    def warmup_reserved_tokens(
        prefill_tokens: int, max_input_tokens: int | None, max_total_tokens: int | None, block: int
    ) -> int:
        """KV-cache slots the warmup batch allocates before its prefill runs.

        Every warmup request asks for ``max_new_tokens = max_total_tokens - truncate``, or 1
        when ``max_total_tokens`` is unknown (same router files as ``warmup_requests``), and
        the server reserves ``ceil((input + max_new_tokens - 1) / BLOCK_SIZE)`` blocks per
        request before the forward pass (``FlashCausalLMBatch.from_pb``/``from_tokenized``,
        flash_causal_lm.py@v2.0.4 l.227-229, @v2.4.1 l.354-358, @v3.3.7 l.346-350; warmup
        calls ``init_kv_cache(batch.num_blocks, ...)`` first). So each request holds the
        whole ``max_total_tokens - 1`` slots, not just its input.
        """
        reserved = 0
        for length in TgiEngine.warmup_requests(prefill_tokens, max_input_tokens):
            slots = (max_total_tokens - 1) if max_total_tokens else length
            reserved += -(-max(slots, 1) // block) * block
        return reserved

    def dense_prefill_attention(self, model_type: str, attention: str) -> str | None:
        """Whether a prefill of ``model_type`` builds dense [batch, 1, S, S] attention masks.

        Gemma 3 is the one flash model class that does (custom_modeling/flash_gemma3_modeling.py):

        - v3.2.0-v3.2.3: when the batch carries an image (the warmup's first request always
          does: backends/v3/src/client/grpc_client.rs ``n_tokens == 0``), ``get_attention_mask``
          builds the mask and the prefill runs padded ``F.scaled_dot_product_attention`` with
          it (@v3.2.1 l.250-307, l.703-753): "sdpa";
        - from v3.3.0: ``VlmCausalLm.forward`` builds the mask for every Gemma 3 prefill
          (vlm_causal_lm.py@v3.3.0 l.1021-1031), and the model uses it through SDPA unless the
          attention is flashinfer (flash_gemma3_modeling.py@v3.3.0 l.252): "mask" with
          flashinfer, else "sdpa".

        None for every other model and release (masks come from the attention kernels).
        """
        if model_type not in ("gemma3",):
            return None
        if (3, 2, 0) <= self.version < (3, 3, 0):
            return "sdpa"
        if self.version >= (3, 3, 0):
            return "mask" if attention == "flashinfer" else "sdpa"
        return None

    def non_flash_env(self) -> dict[str, str]:
        """Environment that keeps this release off the FlashAttention kernels (sm < 8.0).

        `USE_FLASH_ATTENTION=false` makes the attention layer raise ImportError, so TGI takes
        its non-flash model classes (§2 "USE_FLASH_ATTENTION"). From v2.3 the launcher also
        picks an attention backend and prefix caching for the shards; pin them to the paged
        path with prefix caching off, which is what TGI itself falls back to below sm80
        (§2 "Attention selection"; `USE_PREFIX_CACHING` in 2.3.x, `PREFIX_CACHING` from 2.4).
        """
        env = {"USE_FLASH_ATTENTION": "false"}
        if self.version >= (2, 3, 0):
            env["ATTENTION"] = "paged"
            env["PREFIX_CACHING" if self.version >= (2, 4, 0) else "USE_PREFIX_CACHING"] = "0"
        return env

    def launcher_head_dim(self, model_type: str, head_dim: int) -> int | None:
        """The head size TGI's launcher reads from config.json to pick the attention.

        ``Config`` takes ``head_dim``, else ``hidden_size / num_attention_heads``, from the
        top level only (launcher/src/main.rs@v3.2.0 ``impl From<RawConfig>``). The
        multimodal configs of Gemma 3 and Llama 3.2 Vision hold them in ``text_config``:
        from v3.2.1 ``get_head_dim`` reads ``text_config.head_dim`` (095775e0, PR #3116),
        which Gemma 3's configs state and Llama 3.2 Vision's do not; from v3.3.0 Gemma 3 falls
        back to 256 when absent (84ab88d8, PR #3167). None: unknown to the launcher.
        """
        if model_type == "mllama":
            return None
        if model_type == "gemma3":
            return head_dim if self.version >= (3, 2, 1) else None
        return head_dim

    def attention_backend(
        self,
        *,
        flash: bool,
        compute_capability: tuple[int, int],
        head_dim: int | None,
        model_type: str,
    ) -> str:
        """The attention backend TGI's shards will run: flashinfer, flashdecoding or paged.

        From v2.3 the launcher picks it (``resolve_attention``, launcher/src/main.rs@v3.3.7
        l.131-199, the same rule at v2.3.1-v3.3.6): flashinfer by default; the fallback when
        head_dim is not 64/128/256 or the model is falcon/deepseek_v2 (2.3.x: also gemma2) is
        ``paged`` below sm80 (from v2.3.1; v2.3.0 always took flashdecoding) and
        ``flashdecoding`` from sm80. ``head_dim`` is the launcher's (``launcher_head_dim``;
        None falls back). tgiops sets ATTENTION=paged itself on the non-flash path
        (``non_flash_env``). Before v2.3 the flash models use paged attention.
        """
        if not flash or self.version < (2, 3, 0):
            return "paged"
        forced = ("falcon", "deepseek_v2") + (("gemma2",) if self.version < (2, 4, 0) else ())
        if head_dim in (64, 128, 256) and model_type not in forced:
            return "flashinfer"
        if compute_capability < (8, 0) and self.version >= (2, 3, 1):
            return "paged"
        return "flashdecoding"

    @staticmethod
    def attention_block_size(attention: str) -> int:
        """KV-cache block size of an attention backend (models/globals.py@v3.3.7 l.38-46)."""
        return {"flashinfer": 1, "flashdecoding": 256}.get(attention, 16)

    def prefill_chunking(self, *, flash: bool, attention: str, vision: bool) -> bool:
        """Whether TGI splits a long prompt over several prefills (see ``validate_launcher_args``).

        All of these must hold (TGI's source, cited per rule):

        - the release chunks by default: ``PREFILL_CHUNKING`` defaults to "1" from v3.0.0
          (models/globals.py@v3.0.0 l.15); v2.4.x has the switch but defaults it to "0"
          (globals.py@v2.4.1 l.14) and older releases have no chunking at all;
        - the shard runs a flash model class: the non-flash fallback (``CausalLM``) keeps
          ``Model``'s default ``support_chunking=False`` (models/model.py@v3.3.7 l.43);
        - the attention is flashinfer or flashdecoding: ``Model.__init__`` turns chunking off
          for any other backend, i.e. ``paged`` ("Prefill chunking is only supported with
          `flashinfer` or `flashdecoding` ...", models/model.py@v3.3.7 l.82-90);
        - the model is not multimodal: ``VlmCausalLM`` passes ``support_chunking=False``
          (models/vlm_causal_lm.py@v3.0.0 l.295; v3.3.x passes it per model for mllama,
          qwen2-vl, qwen2.5-vl and gemma3 in models/__init__.py). tgiops treats every vision
          model as unchunked, which is the safe side of the rule.
        """
        return (
            self.version >= (3, 0, 0)
            and flash
            and attention in ("flashinfer", "flashdecoding")
            and not vision
        )

    def validate_launcher_args(
        self,
        *,
        max_input_tokens: int,
        max_total_tokens: int,
        max_batch_prefill_tokens: int,
        prefill_chunking: bool,
        max_batch_total_tokens: int | None = None,
        num_shard: int = 1,
        quantize: str | None = None,
    ) -> tuple[str, ...]:
        """TGI's own argument checks on these limits: the messages it would fail with.

        Empty when TGI accepts them. The rules, in TGI's order (launcher first, then the
        router once the shards have warmed up and reported whether they chunk):

        1. ``max_input_tokens < max_total_tokens``: the launcher (launcher/src/main.rs@v3.3.7
           l.2157-2162; v2.0-v2.4.0 with a differently quoted text) and the router
           (backends/v3/src/main.rs@v3.3.7 l.182-186).
        2. ``max_batch_prefill_tokens >= max_input_tokens`` unless the shards chunk prefill:
           a whole prompt must fit one prefill batch. Up to v2.3.x the launcher checks it
           unconditionally (launcher/src/main.rs@v2.3.1 l.1700-1705); from v2.4.0 the v3
           router checks it ``&& !support_chunking`` (backends/v3/src/main.rs@v3.3.7
           l.188-190, @v2.4.1 l.182-184); the text names `max_input_tokens` in every release,
           2.0.x included (router/src/main.rs@v2.0.4 l.130). ``prefill_chunking`` says when
           the shards chunk.
        3. With a known ``max_batch_total_tokens`` (what warmup finds, or the flag):
           ``max_batch_prefill_tokens <= max_batch_total_tokens`` and
           ``max_total_tokens <= max_batch_total_tokens`` (backends/v3/src/main.rs@v3.3.7
           l.190-195; launcher/src/main.rs@v2.0.4 l.1466-1478).
        4. exl2 cannot be sharded (launcher/src/main.rs@v3.3.7 l.2091-2096).
        """
        errors: list[str] = []
        new_texts = self.version >= (2, 4, 1)
        if num_shard > 1 and quantize == "exl2":
            errors.append("Sharding is currently not supported with `exl2` quantization")
        if max_input_tokens >= max_total_tokens:
            errors.append(
                f"`max_input_tokens`({max_input_tokens}) must be < "
                f"`max_total_tokens`({max_total_tokens})"
                if new_texts
                else "`max_input_tokens must be < `max_total_tokens`"
            )
        if max_input_tokens > max_batch_prefill_tokens and not prefill_chunking:
            errors.append(
                "`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: "
                f"{max_batch_prefill_tokens} and {max_input_tokens}"
            )
        if max_batch_total_tokens is not None:
            if max_batch_prefill_tokens > max_batch_total_tokens:
                errors.append(
                    "`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`. Given: "
                    f"{max_batch_prefill_tokens} and {max_batch_total_tokens}"
                )
            if max_total_tokens > max_batch_total_tokens:
                errors.append(
                    "`max_total_tokens` must be <= `max_batch_total_tokens`. Given: "
                    f"{max_total_tokens} and {max_batch_total_tokens}"
                )
        return tuple(errors)

    def cache_dir_in_container(self, repo_id: str) -> str:
        """Where this release's image caches a model (§6: HF_HOME=/data from 2.3)."""
        folder = "models--" + repo_id.replace("/", "--")
        return f"/data/hub/{folder}" if self.version >= (2, 3, 0) else f"/data/{folder}"

    # -- ranking instance types (tgiops.core.recommend through tgiops.core.engines.Engine) -----

    label = "TGI"
    max_total_flag = "--max-total-tokens"  # one request's prompt + answer, TGI's spelling

    def require_servable(self, model: ModelSpec) -> None:
        """PlanInputError naming the engine that can, when no TGI release serves ``model``."""
        from tgiops.core.catalog import require_tgi_servable

        require_tgi_servable(model)

    def default_overrides(self) -> Overrides:
        from tgiops.core.plan import Overrides

        return Overrides()

    @staticmethod
    def max_total_of(overrides: Overrides) -> int | None:
        return overrides.max_total_tokens

    @staticmethod
    def with_max_total(overrides: Overrides, tokens: int) -> Overrides:
        from dataclasses import replace

        return replace(overrides, max_total_tokens=tokens)

    def plan_on(self, model: ModelSpec, inventory: GpuInventory, overrides: Overrides) -> Plan:
        """TGI's plan (tgiops.core.plan.plan); PlanInputError for an override this hardware
        cannot take (--num-shard 8 on 1 GPU)."""
        from tgiops.core.plan import plan

        return plan(model, inventory, self, overrides)


def verify_info(
    info: Mapping[str, Any],
    *,
    expected_model_id: str,
    expected_max_total_tokens: int | None,
    expected_max_input_tokens: int | None,
) -> list[str]:
    """Differences between ``/info`` and the plan, as sentences (empty: all as planned).

    TGI 2.0.x names the input limit ``max_input_length``; later versions ``max_input_tokens``
    (docs/tgi.md §5).
    """
    problems: list[str] = []
    model_id = info.get("model_id")
    if model_id != expected_model_id:
        problems.append(
            f"the endpoint serves model {model_id!r}, the plan says {expected_model_id!r}"
        )
    if expected_max_total_tokens is not None:
        got = info.get("max_total_tokens")
        if got != expected_max_total_tokens:
            problems.append(f"max_total_tokens is {got}, the plan says {expected_max_total_tokens}")
    if expected_max_input_tokens is not None:
        key = "max_input_length" if "max_input_tokens" not in info else "max_input_tokens"
        got = info.get(key)
        if got != expected_max_input_tokens:
            problems.append(f"{key} is {got}, the plan says {expected_max_input_tokens}")
    return problems


# (pattern in the journal, diagnosis). Patterns are TGI's own messages (docs/tgi.md §2-§4).
_DIAGNOSES: tuple[tuple[str, str], ...] = (
    (
        "FlashAttention only supports Ampere",
        "the GPU is older than Ampere (sm80): TGI needs its "
        "non-flash fallback there; plan without forcing flash attention (tgiops plan sets it)",
    ),
    (
        "GPU with CUDA capability",
        "the GPU's compute capability is not supported by this TGI build's kernels: TGI needs "
        "its non-flash fallback there (tgiops plan sets it unless --flash-attention on)",
    ),
    (
        "Found no NVIDIA driver",
        "the container sees no GPU: check the NVIDIA driver and Container Toolkit (`docker run "
        "--gpus all ... nvidia-smi`)",
    ),
    (
        "could not select device driver",
        "docker has no NVIDIA runtime: install the NVIDIA Container Toolkit and restart docker",
    ),
    (
        # The router prints its error's Debug form: `Error: Backend(NotEnoughMemory(N))`.
        "NotEnoughMemory(",
        "the KV cache cannot hold max_total_tokens: lower --max-total-tokens, or quantize",
    ),
    # TGI's ArgumentValidation texts (launcher/src/main.rs and backends/v3/src/main.rs@v3.3.7
    # l.182-195; the same words in 2.0.x, engine.validate_launcher_args): the router prints
    # `Error: ArgumentValidation("...")` and the launcher relays it.
    (
        "must be >= `max_input_tokens`",
        "TGI refused the token limits: max_batch_prefill_tokens is below max_input_tokens, "
        "and TGI cannot chunk prefill here (non-flash path, paged attention, a multimodal model "
        "or TGI < 3.0); re-plan with tgiops (it keeps prefill >= input there) or lower "
        "--max-input-tokens",
    ),
    (
        "must be < `max_total_tokens`",
        "TGI refused the token limits: max_input_tokens must be below max_total_tokens; "
        "drop --max-input-tokens or raise --max-total-tokens",
    ),
    (
        "must be <= `max_batch_total_tokens`",
        "TGI refused the token limits: the KV cache found at warmup holds fewer tokens than "
        "max_total_tokens or max_batch_prefill_tokens; lower them, or quantize",
    ),
    (
        "Not enough memory to handle",
        "the KV cache or prefill does not fit: lower "
        "--max-total-tokens or --max-batch-prefill-tokens, or quantize",
    ),
    (
        "CUDA out of memory",
        "the weights do not fit the GPU memory: use more GPUs, a quantized "
        "model, or a larger instance type (see `tgiops plan`)",
    ),
    (
        "must be divisible by",
        "the shard count does not divide the model's heads: let tgiops choose --num-shard",
    ),
    (
        "requires Flash Attention enabled models",
        "this model runs on TGI's non-flash path here, which cannot shard: use --num-shard 1",
    ),
    (
        "sharded is not supported",
        "this model runs on TGI's non-flash path here, which cannot shard: use --num-shard 1",
    ),
    (
        "401 Client Error",
        "the Hugging Face token was refused or lacks access: accept the model's licence on "
        "huggingface.co and store a token that has access (`tgiops secret set`)",
    ),
    (
        "Cannot access gated repo",
        "the model is gated: the token must belong to an account that accepted its licence",
    ),
    ("Repository Not Found", "the model repository does not exist or is private"),
    (
        "LocalEntryNotFoundError",
        "offline start without the model in the cache: deploy once "
        "with network access to fill /data",
    ),
    ("invalid value", "TGI rejected a launcher argument: check --tgi-version against the flags"),
    ("Only 1 can be set between", "TGI refuses --dtype together with --quantize"),
)


def diagnose_journal(text: str) -> str | None:
    """The likeliest cause of a failed start, in words, from the unit's journal lines."""
    for line in reversed(text.splitlines()):
        for pattern, diagnosis in _DIAGNOSES:
            if pattern in line:
                return diagnosis
    return None
