"""`deploy --dry-run` byte for byte on a testbed host (the other goldens: test_golden_outputs.py).

The dry run probes the host, so what varies per testbed boot (the host's name and address, the
ssh config path, the wall-clock elapsed_s) is replaced by placeholders before comparing.
"""

from __future__ import annotations

import re

import pytest
from cli_run import run_tgiops
from golden import check_golden

pytestmark = pytest.mark.e2e


def normalized(text: str, host) -> str:
    for value, placeholder in ((host.ssh_config, "<ssh-config>"), (host.name, "<host>")):
        text = text.replace(str(value), placeholder)
    return re.sub(r'"elapsed_s": [0-9.]+', '"elapsed_s": "<seconds>"', text)  # wall clock


@pytest.mark.parametrize(
    "case,args",
    [
        ("phi-3-mini_1xA10G", ("phi-3-mini", "--no-token")),
        ("llama-3.1-8b_1xA10G_pinned", (
            "llama-3.1-8b", "--no-token", "--max-total-tokens", "8192", "--port", "8090",
            "--unit", "tgiops-golden",
        )),
    ],
)  # fmt: skip
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_deploy_dry_run_output_is_unchanged(gpu_host, case, args, as_json):
    host = gpu_host("1xA10G", fresh=True)  # no other test's unit moves the port or GPU
    proc = run_tgiops(
        "deploy", *args, "--dry-run", *(["--json"] if as_json else []),
        "--host", host.name, "--ssh-config", str(host.ssh_config),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pinned = f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    check_golden(f"deploy/{case}.{'json' if as_json else 'txt'}", normalized(pinned, host))
