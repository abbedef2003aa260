"""`tgiops plan MODEL` without hardware: every instance type of the table, cheapest fit first
(issue 14 §4). The ranking is pure (tgiops/core/recommend.py); spot prices come from moto's
DescribeSpotPriceHistory through the `aws` fixture, never real AWS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core import recommend as rc
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import InputError
from tgiops.core.plan import plan
from tgiops.edges.aws.base import AwsSettings
from tgiops.edges.aws.client import Aws
from tgiops.edges.aws.spot import lowest_spot_by_type

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TYPES = hardware.all_instance_types()
CANDIDATE_KEYS = {
    "instance_type",
    "gpu",
    "gpus",
    "fits",
    "num_shard",
    "quantize",
    "max_total_tokens",
    "kv_cache_tokens",
    "concurrent_requests",
    "on_demand_usd_per_hour",
    "spot_usd_per_hour",
    "spot_zone",
    "reasons",
}


def recommend(alias: str, filters: rc.Filters | None = None, spot=rc.NO_SPOT_PRICES):
    return rc.recommend(CATALOG[alias], TgiEngine.release(), TYPES, filters or rc.Filters(), spot)


def tgiops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=env,
        check=False,
    )


def no_credentials_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no IMDS probe off loopback
    env["AWS_CONFIG_FILE"] = str(tmp_path / "absent-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "absent-credentials")
    return env


@pytest.mark.parametrize("alias", ["llama-3.1-8b", "llama-3.3-70b", "mixtral-8x7b"])
def test_each_type_fits_exactly_when_plan_instance_type_says_so(alias):
    rec = recommend(alias)
    fit = {c.instance_type.name for c in rec.candidates}
    assert fit.isdisjoint(r.instance_type for r in rec.rejected)
    assert len(fit) + len(rec.rejected) == len(TYPES)
    for it in TYPES:
        alone = plan(
            CATALOG[alias], hardware.inventory_for_instance_type(it.name), TgiEngine.release()
        )
        assert (it.name in fit) == alone.fits, it.name
        if alone.fits:
            (c,) = [c for c in rec.candidates if c.instance_type.name == it.name]
            assert (c.plan.num_shard, c.plan.quantize) == (alone.num_shard, alone.quantize)
            assert c.plan.memory.kv_cache_tokens == alone.memory.kv_cache_tokens


def test_candidates_are_cheapest_on_demand_first_unknown_prices_last():
    rec = recommend("llama-3.1-8b")
    prices = [c.on_demand_usd_per_hour for c in rec.candidates]
    known = [p for p in prices if p is not None]
    assert known == sorted(known) and prices[: len(known)] == known
    assert rec.candidates[0].instance_type.name == "g4dn.xlarge"
    assert rec.candidates[-1].instance_type.name == "p5e.48xlarge"  # no us-east-1 price
    for c in rec.candidates:
        assert c.concurrent_requests == c.plan.memory.kv_cache_tokens // c.plan.max_total_tokens
        assert c.concurrent_requests >= 1


def test_a_70b_model_is_rejected_where_it_cannot_fit_with_the_planners_reason():
    rec = recommend("llama-3.3-70b")
    why = {r.instance_type: r.why for r in rec.rejected}
    assert "g4dn.xlarge" in why and "GiB" in why["g4dn.xlarge"]
    assert "p4de.24xlarge" in {c.instance_type.name for c in rec.candidates}


def test_price_cap_keeps_only_types_at_or_below_it():
    rec = recommend("llama-3.1-8b", rc.Filters(max_usd_per_hour=1.0))
    assert [c.instance_type.name for c in rec.candidates] == [
        "g4dn.xlarge",
        "g4dn.2xlarge",
        "g6.xlarge",
        "g6.2xlarge",
    ]
    capped = {r.instance_type: r.why for r in rec.rejected}
    assert capped["g5.xlarge"].startswith("--max-usd-per-hour 1:")
    assert capped["p5e.48xlarge"] == "--max-usd-per-hour 1: no on-demand price known in us-east-1"


def test_spot_ranks_by_the_spot_price_and_drops_types_without_one():
    spot = rc.SpotPrices(
        {
            "g5.xlarge": rc.SpotPrice(0.30, "us-east-1c"),
            "g6.xlarge": rc.SpotPrice(0.45, "us-east-1a"),
            "g6e.xlarge": rc.SpotPrice(0.40, "us-east-1d"),
        }
    )
    rec = recommend("llama-3.1-8b", rc.Filters(spot=True), spot)
    assert [c.instance_type.name for c in rec.candidates] == [
        "g5.xlarge",
        "g6e.xlarge",
        "g6.xlarge",
    ]
    assert rec.candidates[0].spot == rc.SpotPrice(0.30, "us-east-1c")
    assert all(r.why.startswith("--spot") for r in rec.rejected)
    capped = recommend("llama-3.1-8b", rc.Filters(spot=True, max_usd_per_hour=0.42), spot)
    assert [c.instance_type.name for c in capped.candidates] == ["g5.xlarge", "g6e.xlarge"]


def test_without_spot_prices_they_are_marked_unavailable_never_guessed():
    rec = recommend("llama-3.1-8b", spot=rc.SpotPrices({}, "spot prices unavailable: test"))
    data = rc.as_dict(rec)
    assert all(
        c["spot_usd_per_hour"] is None and c["spot_zone"] is None for c in data["candidates"]
    )
    assert all("spot prices unavailable: test" in c["reasons"] for c in data["candidates"])
    assert "spot prices unavailable: test" in rc.as_text(rec)


def test_min_context_plans_that_context_and_excludes_types_that_cannot_hold_it():
    rec = recommend("llama-3.1-8b", rc.Filters(min_context=65536))
    assert rec.candidates
    assert all(c.plan.max_total_tokens >= 65536 for c in rec.candidates)
    names = {c.instance_type.name for c in rec.candidates}
    assert "g6e.xlarge" in names  # 197k KV tokens on one L40S
    assert "g4dn.xlarge" not in names  # T4: no flash path, prompts capped unchunked
    (g5,) = [c for c in rec.candidates if c.instance_type.name == "g5.xlarge"]
    assert g5.plan.quantize == "fp8"  # 16-bit leaves ~32k KV tokens on one A10G, fp8 ~85k
    with pytest.raises(InputError, match=r"--min-context 200000: llama-3.1-8b handles at most"):
        recommend("llama-3.1-8b", rc.Filters(min_context=200000))


def test_a_region_without_a_built_in_table_gets_no_on_demand_price():
    rec = recommend("llama-3.1-8b", rc.Filters(region="eu-west-1"))
    assert rec.price_date is None
    assert all(c.on_demand_usd_per_hour is None for c in rec.candidates)
    assert rc.as_dict(rec)["region"] == "eu-west-1"
    # Nothing to rank by price: smallest first (GPUs, GPU memory, vCPUs), and the header
    # says so instead of claiming "cheapest first".
    sizes = [
        (c.instance_type.gpu_count, c.instance_type.gpu_memory_mib, c.instance_type.vcpus)
        for c in rec.candidates
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) > 3
    header = rc.as_text(rec).splitlines()[0]
    assert "smallest first (no on-demand prices)" in header and "cheapest" not in header
    assert "cheapest on-demand first" in rc.as_text(recommend("llama-3.1-8b")).splitlines()[0]


def test_json_shape_is_exactly_the_documented_one():
    data = rc.as_dict(recommend("llama-3.3-70b"))
    assert set(data) == {"model", "region", "price_date", "candidates", "rejected"}
    assert (data["model"], data["region"], data["price_date"]) == (
        "llama-3.3-70b",
        hardware.PRICE_REGION,
        hardware.PRICE_DATE,
    )
    assert data["candidates"] and all(set(c) == CANDIDATE_KEYS for c in data["candidates"])
    assert all(c["fits"] is True for c in data["candidates"])
    assert data["rejected"] and all(set(r) == {"instance_type", "why"} for r in data["rejected"])
    json.dumps(data)


@pytest.mark.parametrize(
    "filters",
    [
        rc.Filters(max_usd_per_hour=0),
        rc.Filters(max_usd_per_hour=float("nan")),
        rc.Filters(min_context=1),
    ],
)
def test_bad_filter_values_are_refused(filters):
    with pytest.raises(InputError, match=r"--(max-usd-per-hour|min-context)"):
        recommend("llama-3.1-8b", filters)


def test_lowest_spot_price_per_type_is_the_cheapest_zone_at_its_latest_price():
    from datetime import datetime, timezone

    def at(hour: int) -> datetime:
        return datetime(2026, 7, 1, hour, tzinfo=timezone.utc)

    history = [
        {
            "InstanceType": "g5.xlarge",
            "AvailabilityZone": "us-east-1a",
            "SpotPrice": "0.50",
            "Timestamp": at(1),
        },
        {
            "InstanceType": "g5.xlarge",
            "AvailabilityZone": "us-east-1a",
            "SpotPrice": "0.20",
            "Timestamp": at(0),
        },  # older: no longer in force
        {
            "InstanceType": "g5.xlarge",
            "AvailabilityZone": "us-east-1b",
            "SpotPrice": "0.35",
            "Timestamp": at(0),
        },
        {
            "InstanceType": "m5.large",
            "AvailabilityZone": "us-east-1a",
            "SpotPrice": "0.01",
            "Timestamp": at(0),
        },
    ]
    assert lowest_spot_by_type(history, {"g5.xlarge", "g6.xlarge"}) == {
        "g5.xlarge": (0.35, "us-east-1b")
    }


# -- CLI and AWS ---------------------------------------------------------------------------------


def test_cli_without_credentials_lists_fits_and_marks_spot_unavailable(tmp_path):
    done = tgiops("plan", "llama-3.1-8b", "--json", env=no_credentials_env(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["candidates"][0]["instance_type"] == "g4dn.xlarge"
    assert data["candidates"][0]["spot_usd_per_hour"] is None
    assert any("no AWS credentials" in r for r in data["candidates"][0]["reasons"])
    text = tgiops("plan", "llama-3.1-8b", env=no_credentials_env(tmp_path))
    assert text.returncode == 0 and "g4dn.xlarge" in text.stdout and "unavailable" in text.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--spot"], "drop --spot, or configure AWS credentials"),
        (["--max-usd-per-hour", "0.1"], "raise --max-usd-per-hour (now 0.1)"),
        (["--max-usd-per-hour", "-3"], "--max-usd-per-hour -3.0"),
        (["--min-context", "999999"], "--min-context 999999"),
        (["--region", "eu-west-1", "--max-usd-per-hour", "100"], "--region us-east-1"),
    ],
)
def test_cli_filters_that_exclude_everything_exit_2_naming_the_fix(tmp_path, args, named):
    env = no_credentials_env(tmp_path)
    done = tgiops("plan", "llama-3.1-8b", *args, "--json", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)
    assert error["exit_code"] == 2 and named in error["error"]["message"]
    assert "Traceback" not in done.stderr


def test_cli_recovery_flags_need_an_instance_type(tmp_path):
    done = tgiops(
        "plan", "llama-3.1-8b", "--recovery-target-s", "60", env=no_credentials_env(tmp_path)
    )
    assert done.returncode == 2 and "--recovery-target-s goes with --instance-type" in done.stderr


def test_spot_prices_come_from_describe_spot_price_history(aws):
    found = Aws(AwsSettings(region="us-east-1")).lowest_spot_prices(["g5.xlarge", "g4dn.xlarge"])
    assert set(found) == {"g5.xlarge", "g4dn.xlarge"}
    price, zone = found["g5.xlarge"]
    assert price > 0 and zone.startswith("us-east-1")
    # The same answer, through EC2's own API: the zone we name has that price.
    history = aws.client("ec2").describe_spot_price_history(
        InstanceTypes=["g5.xlarge"], AvailabilityZone=zone
    )["SpotPriceHistory"]
    assert {float(h["SpotPrice"]) for h in history} == {price}


def test_cli_with_credentials_shows_the_spot_price_and_zone(aws):
    done = tgiops("plan", "llama-3.1-8b", "--spot", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["candidates"]
    for c in data["candidates"]:
        assert c["spot_usd_per_hour"] is not None and c["spot_zone"].startswith("us-east-1")
    spots = [c["spot_usd_per_hour"] for c in data["candidates"]]
    assert spots == sorted(spots)


@pytest.mark.parametrize(
    "flags",
    [["--spot"], ["--max-usd-per-hour", "3"], ["--min-context", "8192"], ["--region", "eu-west-1"]],
)
def test_ranking_filters_with_hardware_flags_are_refused_not_ignored(tmp_path, flags):
    done = tgiops(
        "plan",
        "llama-3.1-8b",
        "--instance-type",
        "g5.xlarge",
        *flags,
        env=no_credentials_env(tmp_path),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert flags[0] in done.stderr and "without --instance-type/--gpu" in done.stderr


# -- vLLM: the same ranking through the Engine seam (Engine.plan_on) ----------------------------


def recommend_vllm(alias: str, filters: rc.Filters | None = None, overrides=None):
    from tgiops.core.engines.vllm import VllmEngine

    return rc.recommend(
        CATALOG[alias], VllmEngine.release(), TYPES, filters or rc.Filters(), overrides=overrides
    )


def test_vllm_ranks_with_its_own_planner_and_rejects_v100_types_with_its_reason():
    from tgiops.core.engines.vllm import VllmPlan, plan_vllm

    tgi = recommend("llama-3.1-8b")
    rec = recommend_vllm("llama-3.1-8b")
    # TGI serves the 8B on four V100s; vLLM refuses every V100 type (compute capability 7.0).
    assert "p3.8xlarge" in {c.instance_type.name for c in tgi.candidates}
    v100 = {r.instance_type: r.why for r in rec.rejected if r.instance_type.startswith("p3.")}
    assert set(v100) == {t.name for t in TYPES if t.name.startswith("p3.")}
    assert all("compute capability 7.0: vLLM needs 7.5" in why for why in v100.values())
    assert rec.candidates and all(isinstance(c.plan, VllmPlan) for c in rec.candidates)
    (g5,) = [c for c in rec.candidates if c.instance_type.name == "g5.xlarge"]
    direct = plan_vllm(CATALOG["llama-3.1-8b"], hardware.inventory_for_instance_type("g5.xlarge"))
    assert g5.plan.max_model_len == direct.max_model_len  # what `plan --instance-type` says
    assert g5.plan.inventory.instance_type == "g5.xlarge"
    assert rc.as_text(rec).startswith("llama-3.1-8b on vLLM 0.27.1: ")
    data = rc.as_dict(rec)
    assert all(set(c) == CANDIDATE_KEYS for c in data["candidates"])
    assert data["candidates"][0]["max_total_tokens"] == rec.candidates[0].plan.max_model_len


def test_vllm_min_context_forces_max_model_len_and_names_vllms_flag():
    from tgiops.core.engines.vllm import VllmOverrides

    rec = recommend_vllm("llama-3.1-8b", rc.Filters(min_context=65536))
    assert rec.candidates
    assert all(c.plan.max_model_len == 65536 for c in rec.candidates)
    names = {c.instance_type.name for c in rec.candidates}
    assert "g6e.xlarge" in names and "g5.xlarge" not in names  # ~38k KV tokens on one A10G
    with pytest.raises(InputError, match=r"--max-model-len 4096 is below --min-context 8192"):
        recommend_vllm(
            "llama-3.1-8b", rc.Filters(min_context=8192), VllmOverrides(max_model_len=4096)
        )


def test_plan_without_hardware_ranks_vllm(tmp_path):
    proc = tgiops("plan", "llama-3.1-8b", "--engine", "vllm", "--json",
                  env=no_credentials_env(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rejected = {r["instance_type"]: r["why"] for r in data["rejected"]}
    assert "vLLM needs 7.5" in rejected["p3.2xlarge"]
    assert data["candidates"][0]["instance_type"] == "g6.xlarge"
