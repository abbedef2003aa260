"""Recovery time in the plan (issue 14, item D): the weights' size and the time to read them
at gp3's baseline, at a provisioned throughput and from local NVMe, and the throughput that
meets a recovery target (docs/aws.md §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_tgiops as tgiops

from tgiops.core import hardware, recovery
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.errors import PlanInputError

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
MIB = 1024 * 1024


def test_read_times_at_baseline_provisioned_and_nvme():
    model = CATALOG["llama-3.1-70b-awq"]
    rec = recovery.estimate(model, hardware.find_instance_type("g5.12xlarge"), throughput_mib_s=500)
    assert rec.weight_bytes == model.weight_bytes
    assert rec.gp3_baseline_s == pytest.approx(model.weight_bytes / (125 * MIB), abs=0.1)
    assert rec.provisioned_s == pytest.approx(model.weight_bytes / (500 * MIB), abs=0.1)
    assert rec.local_nvme_gb == 3800
    assert rec.local_nvme_s == pytest.approx(model.weight_bytes / 4e9, abs=0.1)


def test_the_checkpoint_is_what_is_read_even_when_quantized_on_the_fly():
    """fp8/eetq/bitsandbytes quantize at load: the volume holds the 16-bit files."""
    model = CATALOG["llama-3.1-70b"]
    rec = recovery.estimate(model, None)
    assert rec.weight_bytes == model.weight_bytes and rec.local_nvme_gb is None


def test_ebs_only_instance_types_have_no_nvme_time():
    assert hardware.find_instance_type("p3.2xlarge").local_nvme_gb is None
    rec = recovery.estimate(CATALOG["llama-3.1-8b"], hardware.find_instance_type("p3.2xlarge"))
    assert rec.local_nvme_s is None


@pytest.mark.parametrize("target", [30.0, 60.0, 300.0, 1000.0])
def test_the_recommended_throughput_meets_the_target(target):
    model = CATALOG["llama-3.1-70b-awq"]
    rec = recovery.estimate(model, None, target_s=target)
    assert rec.recommended_mib_s is not None
    assert 125 <= rec.recommended_mib_s <= 2000
    assert model.weight_bytes / (rec.recommended_mib_s * MIB) <= target
    # and not more than a rounding step above what is needed
    assert (rec.recommended_mib_s - 25) * MIB * target < model.weight_bytes or (
        rec.recommended_mib_s == 125
    )


def test_a_target_no_gp3_volume_meets_says_so_and_names_nvme():
    rec = recovery.estimate(
        CATALOG["llama-3.1-405b-fp8"], hardware.find_instance_type("p5.48xlarge"), target_s=60
    )
    assert rec.recommended_mib_s is None
    assert "no gp3 volume" in rec.advice and "NVMe" in rec.advice


@pytest.mark.parametrize(
    ("throughput", "target"), [(100, None), (2001, None), (None, 0.0), (None, -5.0)]
)
def test_bad_recovery_input_is_refused(throughput, target):
    with pytest.raises(PlanInputError):
        recovery.estimate(
            CATALOG["llama-3.1-8b"], None, throughput_mib_s=throughput, target_s=target
        )


def test_plan_shows_recovery_in_text_and_json():
    args = ("plan", "llama-3.1-8b", "--instance-type", "g6.xlarge", "--recovery-target-s", "30")
    text = tgiops(*args)
    assert text.returncode == 0, text.stderr
    assert "Recovery" in text.stdout and "125 MiB/s" in text.stdout and "NVMe" in text.stdout
    done = tgiops(*args, "--data-volume-throughput", "250", "--json")
    payload = json.loads(done.stdout)["recovery"]
    assert payload["weight_gb"] == 16.06
    assert payload["data_volume_throughput_mib_s"] == 250
    assert payload["local_nvme_gb"] == 250
    assert payload["recommended_throughput_mib_s"] >= 16.06e9 / MIB / 30


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--data-volume-throughput", "50"),
        ("--recovery-target-s", "0"),
        ("--recovery-target-s", "nan"),
    ],
)
def test_bad_recovery_flags_exit_2_naming_the_value(flag, value):
    done = tgiops("plan", "llama-3.1-8b", "--instance-type", "g6.xlarge", flag, value)
    assert done.returncode == 2, done.stdout + done.stderr
    assert flag in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
