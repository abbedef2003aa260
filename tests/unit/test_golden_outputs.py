"""Golden outputs: what `plan`, `userdata` and `status` print, text and JSON, byte for byte.

They pin behaviour across restructurings (issue 13 moved every module without changing a byte
of these). A change that is meant to change output regenerates them in its own commit:
``TGIOPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden_outputs.py``, and the
diff of tests/data/golden/ shows the reviewer exactly what a user now sees differently.
`deploy --dry-run` needs a probed host; its golden test is tests/e2e/test_golden_dry_run.py.
"""

from __future__ import annotations

import json

import pytest
from cli_run import run_tgiops
from golden import check_golden
from test_status_output import fleet

from tgiops.cli import output

# One case per planner path: Turing fallback, Volta, AWQ sharded, bf16 single GPU, FP8 on
from tgiops.core.status_schema import JSON_SCHEMA

# Hopper, a plan that does not fit, an old release, a pinned override.
PLANS = {
    "llama-3.1-8b_g4dn.xlarge": ("llama-3.1-8b", "--instance-type", "g4dn.xlarge"),
    "qwen2.5-7b_p3.2xlarge": ("qwen2.5-7b", "--instance-type", "p3.2xlarge"),
    "llama-3.1-70b-awq_g5.12xlarge": ("llama-3.1-70b-awq", "--instance-type", "g5.12xlarge"),
    "phi-3-mini_g6.xlarge": ("phi-3-mini", "--instance-type", "g6.xlarge"),
    "llama-3.1-70b_p5.48xlarge": ("llama-3.1-70b", "--instance-type", "p5.48xlarge"),
    "llama-3.1-70b_g5.xlarge": ("llama-3.1-70b", "--instance-type", "g5.xlarge"),
    "qwen2.5-7b_g5.2xlarge_tgi2.0.4": (
        "qwen2.5-7b", "--instance-type", "g5.2xlarge", "--tgi-version", "2.0.4",
    ),
    "llama-3.1-8b_2xA10G_max-total": (
        "llama-3.1-8b", "--gpu", "A10G", "--gpus", "2", "--max-total-tokens", "16384",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PLANS))
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_plan_output_is_unchanged(case, as_json):
    args = ["plan", *PLANS[case], *(["--json"] if as_json else [])]
    proc = run_tgiops(*args)
    assert proc.returncode in (0, 1, 2), proc.stderr  # pinned below with the output
    pinned = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    check_golden(f"plan/{case}.{'json' if as_json else 'txt'}", pinned)


USERDATA = {
    "preinstalled": ("phi-3-mini", "--preinstalled"),
    "asg_eip_efs": (
        "llama-3.1-8b", "--preinstalled", "--asg", "llm", "--eip", "eipalloc-0abc1234",
        "--efs", "fs-01234567", "--region", "us-east-1", "--instance-type", "g5.xlarge",
    ),
    "private_index": (
        "qwen2.5-7b", "--pip-spec", "--index-url https://pypi.internal/simple tgiops==0.1",
        "--data-device", "/dev/nvme1n1", "--no-watch-interruption",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(USERDATA))
@pytest.mark.parametrize("mode", ["text", "json", "iam-policy"])
def test_userdata_output_is_unchanged(case, mode):
    extra = {"text": [], "json": ["--json"], "iam-policy": ["--iam-policy"]}[mode]
    proc = run_tgiops("userdata", *USERDATA[case], *extra)
    assert proc.returncode == 0, proc.stderr
    check_golden(f"userdata/{case}.{mode}", proc.stdout)


@pytest.mark.parametrize("width", [80, 120, None], ids=["80", "120", "unbounded"])
@pytest.mark.parametrize("wide", [False, True], ids=["table", "wide"])
def test_status_text_is_unchanged(width, wide):
    check_golden(
        f"status/text_{width}{'_wide' if wide else ''}.txt",
        output.status_as_text(fleet(), width, wide=wide) + "\n",
    )


def test_status_json_is_unchanged():
    data = output.status_as_dict(fleet())
    check_golden("status/report.json", json.dumps(data, indent=2) + "\n")
    assert JSON_SCHEMA  # the schema the JSON is validated against elsewhere
