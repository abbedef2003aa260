"""Plan any card (issue 14, item C): family names resolve by memory, suggestions rank the
family first, cards off EC2 are in the table, an unknown card plans from its compute
capability and memory (given, or probed with nvidia-smi), and bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_tgiops as tgiops

from tgiops.core import hardware
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import PlanInputError, UnknownHardwareError
from tgiops.core.plan import plan
from tgiops.core.probe import parse_nvidia_smi_csv

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")


@pytest.mark.parametrize(("memory", "variant"), [(80, "A100-80GB"), (40, "A100-40GB")])
def test_a_family_name_resolves_to_the_variant_with_that_memory(memory, variant):
    inventory = hardware.inventory_from_spec("A100", 2, memory)
    assert hardware.lookup_gpu_model(inventory.gpus[0].name).name == variant
    assert inventory.memory_mib == memory * 1024


def test_a_family_name_without_memory_names_the_variants():
    with pytest.raises(UnknownHardwareError) as caught:
        hardware.inventory_from_spec("A100", 1)
    assert "A100-40GB" in str(caught.value) and "A100-80GB" in str(caught.value)
    assert "--gpu-memory-gib" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("A100 SXM", ["A100-40GB", "A100-80GB"]),  # no variant of "A100 SXM": suggestions
        ("H10", ["H100"]),
        ("L40T", ["L40"]),
        ("rtx 309", ["RTX 3090"]),
    ],
)
def test_suggestions_rank_the_family_first(name, first):
    with pytest.raises(UnknownHardwareError) as caught:
        hardware.find_gpu_model(name)
    suggested = str(caught.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert suggested[: len(first)] == first or set(first) <= set(suggested[: len(first) + 1])


@pytest.mark.parametrize(
    ("name", "cc", "mib"),
    [
        ("A10", (8, 6), 23028),  # not the A10G (EC2's variant): its own nvidia-smi name
        ("NVIDIA A10", (8, 6), 23028),
        ("A30", (8, 0), 24576),
        ("A40", (8, 6), 46068),
        ("RTX A6000", (8, 6), 49140),
        ("RTX 3090", (8, 6), 24576),
        ("NVIDIA GeForce RTX 3090", (8, 6), 24576),
        ("L40", (8, 9), 46068),
        ("RTX 4090", (8, 9), 24564),
        ("H20", (9, 0), 97871),
        ("GH200", (9, 0), 97871),
        ("B200", (10, 0), 183359),
    ],
)
def test_cards_off_ec2_are_known(name, cc, mib):
    model = hardware.find_gpu_model(name)
    assert (model.compute_capability, model.memory_mib) == (cc, mib)
    result = plan(
        CATALOG["llama-3.1-8b"], hardware.inventory_from_spec(name, 1), TgiEngine.release()
    )
    assert result.fits


def test_an_unknown_card_plans_from_its_compute_capability_and_memory():
    inventory = hardware.inventory_from_spec("RTX 6000 Ada", 2, 48, (8, 9))
    assert inventory.compute_capability == (8, 9) and inventory.memory_mib == 48 * 1024
    result = plan(CATALOG["llama-3.1-70b-fp8"], inventory, TgiEngine.release())
    assert result.fits and result.num_shard == 2


def test_a_probed_unknown_card_plans_from_what_nvidia_smi_reports():
    inventory = parse_nvidia_smi_csv(
        "0, NVIDIA RTX 6000 Ada Generation, 49140, 0, 0, 8.9, 550.90.07\n"
        "1, NVIDIA RTX 6000 Ada Generation, 49140, 0, 0, 8.9, 550.90.07\n"
    )
    assert inventory.model is None
    result = plan(CATALOG["llama-3.1-8b"], inventory, TgiEngine.release())
    assert result.fits and result.inventory.compute_capability == (8, 9)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--gpu", "RTX 6000 Ada"], "--compute-capability"),
        (["--gpu", "RTX 6000 Ada", "--compute-capability", "8.9"], "--gpu-memory-gib"),
        (["--gpu", "X", "--compute-capability", "13.0", "--gpu-memory-gib", "48"], "'13.0'"),
        (["--gpu", "X", "--compute-capability", "2.1", "--gpu-memory-gib", "48"], "'2.1'"),
        (["--gpu", "X", "--compute-capability", "eight", "--gpu-memory-gib", "48"], "'eight'"),
        (["--gpu", "X", "--compute-capability", "8.9", "--gpu-memory-gib", "0"], "above 0"),
        (["--gpu", "A10G", "--compute-capability", "8.0"], "A10G has 8.6"),
        (["--gpu", "A100"], "A100-80GB"),
        (["--gpu", "A100", "--gpu-memory-gib", "60"], "none has 60 GiB"),
        (["--instance-type", "g5.xlarge", "--compute-capability", "8.6"], "--instance-type"),
    ],
)
def test_bad_card_input_exits_2_naming_the_value_and_the_fix(args, named):
    done = tgiops("plan", "llama-3.1-8b", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_plan_json_for_an_unknown_card():
    done = tgiops(
        "plan",
        "llama-3.1-8b",
        "--gpu",
        "RTX 6000 Ada",
        "--compute-capability",
        "8.9",
        "--gpu-memory-gib",
        "48",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["fits"] is True and "sm89" in json.dumps(payload)


def test_parse_compute_capability():
    assert hardware.parse_compute_capability("8.6") == (8, 6)
    assert hardware.parse_compute_capability("10.0") == (10, 0)
    with pytest.raises(PlanInputError):
        hardware.parse_compute_capability("8")


@pytest.mark.parametrize(("card", "warned"), [("B200", True), ("H200", False), ("GH200", False)])
def test_blackwell_plans_warn_that_tgis_kernels_do_not_target_it(card, warned):
    result = plan(
        CATALOG["llama-3.1-8b"], hardware.inventory_from_spec(card, 1), TgiEngine.release()
    )
    assert any("TORCH_CUDA_ARCH_LIST" in w for w in result.warnings) == warned


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("A1000", ["A100-40GB", "A100-80GB"]),  # was V100 / H100 / A10G by spelling alone
        ("a100x", ["A100-40GB", "A100-80GB"]),
        ("RTX 409", ["RTX 4090"]),  # the family's prefix, not RTX 3090 first
        ("RTX4090", ["RTX 4090"]),
        ("RTX A600", ["RTX A6000"]),
        ("4090", ["RTX 4090"]),
        ("A6000", ["RTX A6000"]),
        ("GH-200", ["GH200"]),
        ("B20", ["B200"]),
        ("H10", ["H100"]),
    ],
)
def test_suggestions_put_prefix_and_family_matches_first_one_per_card(name, first):
    with pytest.raises(UnknownHardwareError) as caught:
        hardware.find_gpu_model(name)
    suggested = str(caught.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert suggested[: len(first)] == first
    assert len(suggested) == len(set(suggested)) and all(
        hardware.lookup_gpu_model(s) is not None and "NVIDIA" not in s for s in suggested
    )


def test_a_vendor_spelled_family_name_resolves_by_memory():
    inventory = hardware.inventory_from_spec("NVIDIA A100", 1, 80)
    assert inventory.gpus[0].name == "NVIDIA A100-SXM4-80GB"


def test_probe_of_a_card_not_in_the_table_plans_from_nvidia_smis_own_answer(tmp_path):
    """The testbed's nvidia-smi double answers deploy's exact query for a card tgiops does not
    know (an RTX 6000 Ada: 8.9, 49140 MiB): the plan uses those numbers, not a table row."""
    import os
    import subprocess
    import sys

    from tgiops.core.probe import nvidia_smi_query_command

    gpus = [
        {
            "index": i,
            "name": "NVIDIA RTX 6000 Ada Generation",
            "memory_mib": 49140,
            "compute_capability": "8.9",
            "uuid": f"GPU-00000000-0000-0000-0000-00000000000{i}",
            "bus_id": f"00000000:0{i}:00.0",
        }
        for i in range(2)
    ]
    inventory_file = tmp_path / "gpus.json"
    inventory_file.write_text(json.dumps({"driver_version": "550.127.08", "gpus": gpus}))
    smi = ROOT / "scripts" / "testbedlib" / "hostfiles" / "nvidia_smi.py"
    done = subprocess.run(
        [sys.executable, str(smi), *nvidia_smi_query_command()[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, "TESTBED_GPUS_JSON": str(inventory_file)},
        check=True,
        timeout=30,
    )
    inventory = parse_nvidia_smi_csv(done.stdout)
    assert inventory.model is None and inventory.count == 2
    assert (inventory.compute_capability, inventory.memory_mib) == ((8, 9), 49140)
    result = plan(CATALOG["llama-3.1-70b-fp8"], inventory, TgiEngine.release())
    assert result.fits and result.num_shard == 2 and result.memory.gpu_memory_mib == 49140
