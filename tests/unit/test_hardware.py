"""GPU models, the EC2 instance table and GPU inventories."""

from __future__ import annotations

import pytest

from tgiops.core.errors import PlanInputError, UnknownHardwareError
from tgiops.core.hardware import (
    GPU_MODELS,
    INSTANCE_TYPES,
    PRICE_DATE,
    PRICE_REGION,
    PRICE_SOURCE,
    Gpu,
    GpuInventory,
    all_instance_types,
    find_gpu_model,
    find_instance_type,
    instance_types_with_gpu,
    inventory_for_instance_type,
    inventory_from_spec,
)


@pytest.mark.parametrize(
    ("name", "short"),
    [
        pytest.param("A10G", "A10G", id="short"),
        pytest.param("a10g", "A10G", id="short-lowercase"),
        pytest.param("NVIDIA A10G", "A10G", id="smi-name"),
        pytest.param("NVIDIA A10", "A10", id="a10-is-not-the-a10g"),
        pytest.param("  nvidia   a10g ", "A10G", id="smi-name-odd-spacing"),
        pytest.param("Tesla T4", "T4", id="tesla-prefix"),
        pytest.param("t4", "T4", id="t4"),
        pytest.param("NVIDIA L4", "L4", id="l4"),
        pytest.param("NVIDIA L40S", "L40S", id="l40s"),
        pytest.param("Tesla V100-SXM2-16GB", "V100", id="v100-16"),
        pytest.param("Tesla V100-SXM2-32GB", "V100-32GB", id="v100-32"),
        pytest.param("NVIDIA A100-SXM4-40GB", "A100-40GB", id="a100-40"),
        pytest.param("a100-80gb", "A100-80GB", id="a100-80-short"),
        pytest.param("NVIDIA H100 80GB HBM3", "H100", id="h100-sxm"),
        pytest.param("NVIDIA H100 PCIe", "H100", id="h100-pcie"),
        pytest.param("NVIDIA H200", "H200", id="h200"),
    ],
)
def test_find_gpu_model(name: str, short: str) -> None:
    assert find_gpu_model(name).name == short


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        pytest.param("A100", "A100-40GB", id="ambiguous-a100"),
        pytest.param("L40T", "L40", id="l40t-not-known"),
    ],
)
def test_unknown_gpu_suggests_closest(name: str, closest: str) -> None:
    with pytest.raises(UnknownHardwareError) as caught:
        find_gpu_model(name)
    assert repr(name) in str(caught.value)
    assert closest in str(caught.value)
    assert caught.value.exit_code == 2


# nvidia-smi memory.total from public logs of real hosts (see hardware.py).
@pytest.mark.parametrize(
    ("short", "memory_mib", "cc", "flash", "bf16", "marlin", "fp8"),
    [
        pytest.param("T4", 15360, (7, 5), False, False, False, False, id="t4-turing"),
        pytest.param("V100", 16384, (7, 0), False, False, False, False, id="v100-volta"),
        pytest.param("A10G", 23028, (8, 6), True, True, True, False, id="a10g-ampere"),
        pytest.param("A100-80GB", 81920, (8, 0), True, True, True, False, id="a100-ampere"),
        pytest.param("L4", 23034, (8, 9), True, True, True, True, id="l4-ada"),
        pytest.param("L40S", 46068, (8, 9), True, True, True, True, id="l40s-ada"),
        pytest.param("H100", 81559, (9, 0), True, True, True, True, id="h100-hopper"),
        pytest.param("H200", 143771, (9, 0), True, True, True, True, id="h200-hopper"),
    ],
)
def test_gpu_capabilities(
    short: str,
    memory_mib: int,
    cc: tuple[int, int],
    flash: bool,
    bf16: bool,
    marlin: bool,
    fp8: bool,
) -> None:
    gpu = find_gpu_model(short)
    assert (gpu.memory_mib, gpu.compute_capability) == (memory_mib, cc)
    assert (gpu.has_flash_attention, gpu.has_bf16, gpu.has_marlin, gpu.has_fp8_native) == (
        flash,
        bf16,
        marlin,
        fp8,
    )


def test_gpu_names_are_unique() -> None:
    names = [m.name.casefold() for m in GPU_MODELS]
    smi = [s.casefold() for m in GPU_MODELS for s in m.smi_names]
    assert len(names) == len(set(names))
    assert len(smi) == len(set(smi))


# --------------------------------------------------------------------------------------------
# instance types
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gpu", "count", "ec2_mib", "vcpus", "price"),
    [
        pytest.param("g4dn.xlarge", "T4", 1, 16384, 4, 0.526, id="g4dn.xlarge"),
        pytest.param("g4dn.12xlarge", "T4", 4, 16384, 48, 3.912, id="g4dn.12xlarge"),
        pytest.param("g5.12xlarge", "A10G", 4, 22888, 48, 5.672, id="g5.12xlarge"),
        pytest.param("G5.48XLARGE", "A10G", 8, 22888, 192, 16.288, id="g5.48xlarge-uppercase"),
        pytest.param("g6.xlarge", "L4", 1, 22888, 4, 0.8048, id="g6.xlarge"),
        pytest.param("g6e.12xlarge", "L40S", 4, 45776, 48, 10.49264, id="g6e.12xlarge"),
        pytest.param("p3.8xlarge", "V100", 4, 16384, 32, 12.24, id="p3.8xlarge"),
        pytest.param("p3dn.24xlarge", "V100-32GB", 8, 32768, 96, 31.212, id="p3dn"),
        pytest.param("p4d.24xlarge", "A100-40GB", 8, 40960, 96, 21.957642, id="p4d"),
        pytest.param("p4de.24xlarge", "A100-80GB", 8, 81920, 96, 27.44705, id="p4de"),
        pytest.param("p5.48xlarge", "H100", 8, 81920, 192, 55.04, id="p5"),
        pytest.param("p5e.48xlarge", "H200", 8, 144384, 192, None, id="p5e-no-price"),
        pytest.param("p5en.48xlarge", "H200", 8, 144384, 192, 63.296, id="p5en"),
    ],
)
def test_instance_table_matches_the_reference_csv(
    name: str, gpu: str, count: int, ec2_mib: int, vcpus: int, price: float | None
) -> None:
    it = find_instance_type(name)
    assert (it.gpu, it.gpu_count, it.gpu_memory_mib, it.vcpus, it.on_demand_usd_per_hour) == (
        gpu,
        count,
        ec2_mib,
        vcpus,
        price,
    )
    assert it.name.startswith(it.family + ".")


@pytest.mark.parametrize(
    ("name", "interconnect"),
    [
        pytest.param("g5.xlarge", "none", id="single-gpu"),
        pytest.param("g5.12xlarge", "PCIe", id="g5-pcie"),
        pytest.param("p3.16xlarge", "NVLink", id="p3-nvlink"),
        pytest.param("p4d.24xlarge", "NVSwitch", id="p4d-nvswitch"),
        pytest.param("p4de.24xlarge", "unverified", id="p4de-no-source"),
        pytest.param("g6.12xlarge", "unverified", id="g6-no-source"),
    ],
)
def test_interconnect_only_where_a_source_says_so(name: str, interconnect: str) -> None:
    assert find_instance_type(name).interconnect == interconnect


def test_every_instance_type_has_a_known_gpu_and_consistent_interconnect() -> None:
    for it in INSTANCE_TYPES:
        assert it.gpu_model.name == it.gpu
        assert it.gpu_count >= 1
        assert (it.interconnect == "none") == (it.gpu_count == 1), it.name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        pytest.param("g5.13xlarge", "g5.12xlarge", id="typo-suggests-closest"),
        pytest.param("g5g.xlarge", "g4dn, g5", id="graviton-not-in-table"),
        pytest.param("m5.large", "--gpu NAME --gpus N", id="cpu-instance"),
    ],
)
def test_unknown_instance_type(name: str, fragment: str) -> None:
    with pytest.raises(UnknownHardwareError) as caught:
        find_instance_type(name)
    assert repr(name) in str(caught.value)
    assert fragment in str(caught.value)


def test_prices_are_dated_and_sorted() -> None:
    assert (PRICE_REGION, PRICE_DATE) == ("us-east-1", "2026-07-20")
    assert "K26" in PRICE_SOURCE
    ordered = all_instance_types()
    prices = [it.on_demand_usd_per_hour for it in ordered]
    known = [p for p in prices if p is not None]
    assert known == sorted(known)
    assert prices[-1] is None and ordered[-1].name == "p5e.48xlarge"
    assert len(ordered) == len(INSTANCE_TYPES)


def test_instance_types_with_gpu_filters_and_sorts_by_price() -> None:
    names = [it.name for it in instance_types_with_gpu("a10g", min_gpus=4)]
    assert names == ["g5.12xlarge", "g5.24xlarge", "g5.48xlarge"]
    assert all(it.gpu_count >= 8 for it in instance_types_with_gpu(min_gpus=8))
    assert instance_types_with_gpu(None)[0].name == "g4dn.xlarge"


def test_instance_describe_for_messages() -> None:
    assert find_instance_type("g5.12xlarge").describe() == "g5.12xlarge (4x A10G, $5.67/h)"
    assert find_instance_type("p5e.48xlarge").describe() == "p5e.48xlarge (8x H200, price unknown)"


# --------------------------------------------------------------------------------------------
# inventories
# --------------------------------------------------------------------------------------------


def test_inventory_for_g5_12xlarge_uses_nvidia_smi_memory() -> None:
    inv = inventory_for_instance_type("g5.12xlarge")
    assert inv.count == 4
    assert inv.memory_mib == 23028  # nvidia-smi, not EC2's 22888
    assert inv.compute_capability == (8, 6)
    assert inv.model is not None and inv.model.name == "A10G"
    assert inv.homogeneous
    assert inv.instance_type == "g5.12xlarge"
    assert [g.index for g in inv.gpus] == [0, 1, 2, 3]
    assert inv.describe() == "4x NVIDIA A10G (22.5 GiB each, sm86)"


@pytest.mark.parametrize(
    ("gpu", "count", "memory_gib", "memory_mib", "describe"),
    [
        pytest.param("l4", 2, None, 23034, "2x NVIDIA L4 (22.5 GiB each, sm89)", id="table-memory"),
        pytest.param(
            "T4", 1, 15.0, 15360, "1x Tesla T4 (15.0 GiB each, sm75)", id="explicit-memory"
        ),
        pytest.param(
            "h100", 8, 79.5, 81408, "8x NVIDIA H100 80GB HBM3 (79.5 GiB each, sm90)", id="h100"
        ),
    ],
)
def test_inventory_from_spec(
    gpu: str, count: int, memory_gib: float | None, memory_mib: int, describe: str
) -> None:
    inv = inventory_from_spec(gpu, count, memory_gib)
    assert (inv.count, inv.memory_mib, inv.instance_type) == (count, memory_mib, None)
    assert inv.describe() == describe


@pytest.mark.parametrize(
    ("gpu", "count", "memory_gib", "error", "fragment"),
    [
        pytest.param("a10g", 0, None, PlanInputError, "--gpus must be", id="zero-gpus"),
        pytest.param("a10g", -2, None, PlanInputError, "--gpus must be", id="negative-gpus"),
        pytest.param("a10g", 1, 0, PlanInputError, "--gpu-memory-gib", id="zero-memory"),
        pytest.param("a10g", 1, -24.0, PlanInputError, "--gpu-memory-gib", id="negative-memory"),
        pytest.param("rtx-4090", 1, 24.0, UnknownHardwareError, "unknown GPU", id="unknown-gpu"),
    ],
)
def test_inventory_from_bad_spec(
    gpu: str, count: int, memory_gib: float | None, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment) as caught:
        inventory_from_spec(gpu, count, memory_gib)
    assert caught.value.exit_code == 2  # type: ignore[attr-defined]


def test_mixed_inventory_uses_the_weakest_card() -> None:
    inv = GpuInventory(
        gpus=(
            Gpu(0, "NVIDIA A10G", 23028, (8, 6)),
            Gpu(1, "Tesla T4", 15360, (7, 5)),
            Gpu(2, "NVIDIA A10G", 23028, (8, 6)),
        )
    )
    assert not inv.homogeneous
    assert (inv.memory_mib, inv.compute_capability, inv.total_memory_mib) == (
        15360,
        (7, 5),
        61416,
    )
    assert inv.describe() == (
        "2x NVIDIA A10G (22.5 GiB each, sm86) + 1x Tesla T4 (15.0 GiB each, sm75)"
    )


def test_unknown_card_inventory_has_no_model() -> None:
    inv = GpuInventory(gpus=(Gpu(0, "NVIDIA RTX 6000 Ada Generation", 49140, (8, 9)),))
    assert inv.model is None
    assert inv.describe() == "1x NVIDIA RTX 6000 Ada Generation (48.0 GiB each, sm89)"


def test_empty_inventory() -> None:
    inv = GpuInventory(gpus=())
    assert (inv.count, inv.memory_mib, inv.compute_capability, inv.model) == (0, 0, (0, 0), None)
    assert inv.describe() == "no GPUs"
