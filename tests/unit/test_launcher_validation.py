"""Every default plan that fits passes TGI's argument validation (issue 11, item 1).

The checker is not the planner: it is the TGI emulator's own code (scripts/tgi_emulator, the
test double the end-to-end tests deploy to), which decides independently from the plan's
flags, environment and GPUs whether the shards run flash, which attention backend they take,
whether they chunk prefill, and which of TGI's ArgumentValidation errors the launcher and the
router raise. Matrix: every model of models.yaml x every instance type of the hardware table x
every release the emulator emulates.

``Engine.validate_launcher_args`` (the planner's copy of those rules) is tested against TGI's
texts here too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine, diagnose_journal
from tgiops.core.errors import PlanInputError
from tgiops.core.plan import Overrides, Plan, plan

ROOT = Path(__file__).resolve().parents[2]

from tgi_emulator import engine as emulator  # noqa: E402
from tgi_emulator import hub, versions  # noqa: E402
from tgi_emulator.gpus import EmulatedGpu  # noqa: E402

CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
EMULATED = ("2.0.4", "2.4.1", "3.3.7")


def launch_request(p: Plan, version: str) -> emulator.LaunchRequest:
    """What the emulator's launcher would be asked to start for plan ``p``."""
    profile = versions.get_profile(version)
    # The Hub matches repository ids case-insensitively (the catalog and the emulator's hub
    # spell TheBloke/Llama-2-70B-chat-GPTQ differently).
    repo_id = next((r for r in hub.list_repos() if r.casefold() == p.model.repo_id.casefold()), "")
    repo = hub.load_repo(repo_id)
    assert repo is not None, f"{p.model.repo_id} is missing from the emulator's hub"
    arch = emulator.arch_from_config(repo.config, repo.weight_bytes)
    return emulator.LaunchRequest(
        profile=profile,
        gpus=tuple(
            EmulatedGpu(g.name, g.memory_mib, g.compute_capability) for g in p.inventory.gpus
        ),
        num_shard=p.num_shard,
        arch=arch,
        launcher_arch=arch,
        quantize_arg=p.quantize,
        dtype_arg=None if p.quantize else p.dtype,
        cuda_memory_fraction=p.cuda_memory_fraction,
        use_flash_attention_env=p.env.get("USE_FLASH_ATTENTION"),
        attention_env=p.env.get("ATTENTION") if profile.resolves_attention else None,
        prefix_caching_env=p.env.get("PREFIX_CACHING"),
        max_input_tokens=p.max_input_tokens,
        max_total_tokens=p.max_total_tokens,
        max_batch_prefill_tokens=p.max_batch_prefill_tokens,
    )


def emulator_verdict(p: Plan, version: str) -> str | None:
    """TGI's ArgumentValidation error for starting ``p``, by the emulator's code; None: accepted.

    The launcher's checks run as the emulator's launcher runs them; the shards' load decides
    flash, attention and chunking. The router's checks then run on the KV capacity the plan
    expects: the emulator's memory constants are its own (scripts/tgi_emulator/engine.py), and
    memory is not what this test is about. A plan whose shards fail to load for another reason
    (a model type or rope scaling that 2.0.4 predates) is no validation verdict (None).
    """
    request = launch_request(p, version)
    profile = request.profile
    defaults = emulator.compute_token_defaults(request)
    if isinstance(defaults, emulator.Failure):
        return defaults.router_error
    shards = emulator.load_shards(request)
    if isinstance(shards, emulator.Failure):
        return None
    total, prefill = p.max_total_tokens, p.max_batch_prefill_tokens
    warmed = emulator.WarmupResult(
        # Flash: what warmup finds; non-flash: the router's max(16000, total, prefill).
        max_batch_total_tokens=(
            p.memory.kv_cache_tokens if shards.flash else max(16000, total, prefill)
        ),
        max_input_tokens=p.max_input_tokens,
        max_total_tokens=total,
        max_batch_prefill_tokens=prefill,
        supports_auto_total=shards.flash,
    )
    # 2.0.x routers check prefill >= input unconditionally before connecting (the emulator's
    # warmup() does it first); its post-warmup checks apply that rule when not chunking.
    checks = emulator._router_checks(
        replace(request, profile=replace(profile, resolves_attention=True)), shards, warmed
    )
    return checks.router_error if isinstance(checks, emulator.Failure) else None


@pytest.mark.parametrize("version", EMULATED)
def test_every_fitting_default_plan_starts_in_the_emulator(version):
    """The whole start, memory included, for each emulated release: what an e2e deploy of it
    would see. Before 3.0 the warmup computes logits over every prefill token (plan.py's
    prefill-logits term), which the planner must leave room for (issue 14, item A)."""
    failed: list[str] = []
    checked = 0
    tgi = TgiEngine.release(version)
    for alias, spec in sorted(CATALOG.items()):
        for itype in hardware.all_instance_types():
            try:
                result = plan(spec, hardware.inventory_for_instance_type(itype.name), tgi)
            except PlanInputError:
                continue  # refused up front (e.g. a checkpoint this release cannot load)
            if not result.fits:
                continue
            request = launch_request(result, version)
            defaults = emulator.compute_token_defaults(request)
            assert not isinstance(defaults, emulator.Failure), (alias, itype.name, defaults)
            shards = emulator.load_shards(request)
            if isinstance(shards, emulator.Failure):
                # A model type or rope scaling the release predates: the plan warns about it
                # (model_types); that is no memory verdict.
                assert spec.model_type not in tgi.model_types or version == "2.0.4", (
                    alias,
                    itype.name,
                    shards.exception,
                )
                continue
            checked += 1
            started = emulator.warmup(request, shards, defaults)
            if isinstance(started, emulator.Failure):
                failed.append(
                    f"{alias} on {itype.name}: {started.exception or started.router_error} "
                    f"(prefill {result.max_batch_prefill_tokens}, total {result.max_total_tokens})"
                )
    assert checked > 200
    assert not failed, "\n".join(failed)


def test_every_fitting_default_plan_starts_under_the_emulators_validation():
    checked: set[tuple[str, str]] = set()
    refused: list[str] = []
    for version in EMULATED:
        tgi = TgiEngine.release(version)
        for alias, spec in sorted(CATALOG.items()):
            for itype in hardware.all_instance_types():
                inventory = hardware.inventory_for_instance_type(itype.name)
                try:
                    result = plan(spec, inventory, tgi)
                except PlanInputError:
                    continue  # refused up front (e.g. a checkpoint this release cannot load)
                if not result.fits:
                    continue
                verdict = emulator_verdict(result, version)
                checked.add((version, result.inventory.compute_capability.__repr__()))
                if verdict is not None:
                    refused.append(
                        f"{version} {alias} on {itype.name}: {verdict} (plan: input "
                        f"{result.max_input_tokens}, total {result.max_total_tokens}, prefill "
                        f"{result.max_batch_prefill_tokens}, attention {result.attention}, "
                        f"chunking {result.prefill_chunking})"
                    )
    # Every release was checked on pre-Ampere and Ampere-or-later GPUs alike.
    for version in EMULATED:
        assert {cc for v, cc in checked if v == version} >= {"(7, 5)", "(8, 6)", "(9, 0)"}
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize(
    ("instance_type", "flash_attention"),
    [("g4dn.xlarge", None), ("p3.2xlarge", None), ("g5.xlarge", False)],
)
def test_without_chunking_the_default_prefill_covers_the_input(instance_type, flash_attention):
    """The issue's cases: no prefill chunking on TGI's non-flash path, so prefill >= input."""
    result = plan(
        CATALOG["llama-3.1-8b"],
        hardware.inventory_for_instance_type(instance_type),
        TgiEngine.release("3.3.7"),
        Overrides(flash_attention=flash_attention),
    )
    assert result.fits and not result.prefill_chunking
    assert result.max_batch_prefill_tokens >= result.max_input_tokens > 4096
    assert emulator_verdict(result, "3.3.7") is None


def test_a_forced_prefill_below_the_input_without_chunking_does_not_fit():
    result = plan(
        CATALOG["llama-3.1-8b"],
        hardware.inventory_for_instance_type("g5.xlarge"),
        TgiEngine.release("3.3.7"),
        Overrides(max_batch_prefill_tokens=2048, max_input_tokens=6000, flash_attention=False),
    )
    assert not result.fits
    assert "`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: 2048 and 6000" in (
        result.problem or ""
    )
    assert result.launcher_args == ()
    # The emulator refuses the same limits with TGI's text, and a journal holding it is diagnosed.
    verdict = emulator_verdict(result, "3.3.7")
    assert verdict is not None and "Given: 2048 and 6000" in verdict
    assert "token limits" in (diagnose_journal(f"Error: {verdict}\nError: WebserverFailed") or "")


def test_chunking_follows_the_attention_backend_not_the_release_alone():
    tgi = TgiEngine.release("3.3.7")
    phi = CATALOG["phi-3-mini"]  # head_dim 96: not a flashinfer size
    on_t4 = tgi.attention_backend(
        flash=True, compute_capability=(7, 5), head_dim=phi.head_dim, model_type=phi.model_type
    )
    on_a10g = tgi.attention_backend(
        flash=True, compute_capability=(8, 6), head_dim=phi.head_dim, model_type=phi.model_type
    )
    assert (on_t4, on_a10g) == ("paged", "flashdecoding")
    assert not tgi.prefill_chunking(flash=True, attention=on_t4, vision=False)
    assert tgi.prefill_chunking(flash=True, attention=on_a10g, vision=False)
    assert tgi.attention_block_size(on_a10g) == 256
    assert not TgiEngine.release("2.4.1").prefill_chunking(
        flash=True, attention="flashinfer", vision=False
    )
    assert not tgi.prefill_chunking(flash=False, attention="flashinfer", vision=False)
    assert not tgi.prefill_chunking(flash=True, attention="flashinfer", vision=True)


def test_the_planner_picks_the_attention_the_launcher_can_see_for_multimodal_configs():
    """TGI's launcher reads head_dim from config.json's top level, and from v3.2.1 from
    text_config too (PR #3116): Gemma 3 runs flashinfer from 3.2.1 but flashdecoding at 3.2.0
    on sm80+; Llama 3.2 Vision states no head_dim, so it falls back in every release."""
    gemma3 = CATALOG["gemma-3-27b"]
    picked = {
        version: TgiEngine.release(version).attention_backend(
            flash=True,
            compute_capability=(8, 0),
            head_dim=TgiEngine.release(version).launcher_head_dim("gemma3", gemma3.head_dim),
            model_type="gemma3",
        )
        for version in ("3.2.0", "3.2.1", "3.3.7")
    }
    assert picked == {"3.2.0": "flashdecoding", "3.2.1": "flashinfer", "3.3.7": "flashinfer"}
    assert TgiEngine.release("3.3.7").launcher_head_dim("mllama", 128) is None
    assert TgiEngine.release("3.3.7").launcher_head_dim("llama", 128) == 128


def test_validate_launcher_args_speaks_tgis_texts():
    new, old = TgiEngine.release("3.3.7"), TgiEngine.release("2.0.4")
    ok = dict(max_input_tokens=100, max_total_tokens=200, max_batch_prefill_tokens=100)
    assert new.validate_launcher_args(**ok, prefill_chunking=False) == ()
    assert new.validate_launcher_args(
        max_input_tokens=200, max_total_tokens=200, max_batch_prefill_tokens=4096,
        prefill_chunking=True,
    ) == ("`max_input_tokens`(200) must be < `max_total_tokens`(200)",)  # fmt: skip
    assert old.validate_launcher_args(
        max_input_tokens=200, max_total_tokens=200, max_batch_prefill_tokens=4096,
        prefill_chunking=False,
    ) == ("`max_input_tokens must be < `max_total_tokens`",)  # fmt: skip
    short = dict(max_input_tokens=7923, max_total_tokens=7924, max_batch_prefill_tokens=4096)
    assert new.validate_launcher_args(**short, prefill_chunking=True) == ()
    assert new.validate_launcher_args(**short, prefill_chunking=False) == (
        "`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: 4096 and 7923",
    )
    assert new.validate_launcher_args(**ok, prefill_chunking=True, max_batch_total_tokens=150) == (
        "`max_total_tokens` must be <= `max_batch_total_tokens`. Given: 200 and 150",
    )
    assert new.validate_launcher_args(
        **ok, prefill_chunking=True, num_shard=2, quantize="exl2"
    ) == ("Sharding is currently not supported with `exl2` quantization",)


@pytest.mark.parametrize(
    "line",
    [
        # What TGI 3.3.7's router prints (backends/v3/src/main.rs l.188-190), as the emulator does.
        'Error: ArgumentValidation("`max_batch_prefill_tokens` must be >= `max_input_tokens`. '
        'Given: 4096 and 7923")',
        'Error: ArgumentValidation("`max_input_tokens`(100) must be < `max_total_tokens`(100)")',
        'Error: ArgumentValidation("`max_input_tokens must be < `max_total_tokens`")',
        'Error: ArgumentValidation("`max_batch_prefill_tokens` must be <= '
        '`max_batch_total_tokens`. Given: 9000 and 8000")',
    ],
)
def test_a_journal_with_tgis_argument_validation_error_is_diagnosed(line):
    diagnosis = diagnose_journal(f"INFO text_generation_launcher: Starting Webserver\n{line}\n")
    assert diagnosis is not None and "token limits" in diagnosis


def test_the_emulator_like_tgi_does_not_chunk_mllama():
    """models/__init__.py@v3.3.7 builds MllamaCausalLM with support_chunking=False."""
    repo = hub.load_repo("meta-llama/Llama-3.2-90B-Vision-Instruct")
    assert repo is not None
    arch = emulator.arch_from_config(repo.config, repo.weight_bytes)
    h100 = EmulatedGpu("NVIDIA H100 80GB HBM3", 81559, (9, 0))
    request = emulator.LaunchRequest(
        profile=versions.get_profile("3.3.7"),
        gpus=(h100,) * 8,
        num_shard=8,
        arch=arch,
        launcher_arch=arch,
    )
    shards = emulator.load_shards(request)
    assert isinstance(shards, emulator.ShardPlan), shards
    assert shards.flash and not shards.chunking
