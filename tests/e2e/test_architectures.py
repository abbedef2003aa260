"""The default plan deploys healthy on every GPU architecture tgiops knows (issue 11, item 1).

One test runs the matrix: the hosts boot one after another, the deploys run side by side. One
single-GPU testbed host per architecture of the hardware table (Turing T4, Volta V100, Ampere
A10G and A100, Ada L4 and L40S, Hopper H100; names from scripts/testbedlib/gpus.py), each
deploying the plan tgiops makes by default, no overrides.

The model is qwen2.5-7b: ungated (no token needed), and its 32768-token context is longer than
TGI's 4096-token default prefill, so a plan that assumes prefill chunking where TGI cannot chunk
(the non-flash path of T4 and V100) is refused by TGI's router ("`max_batch_prefill_tokens`
must be >= `max_input_tokens`", backends/v3/src/main.rs@v3.3.7), which is the bug this guards.
The hosts are the session's shared ones (``gpu_host`` without ``fresh``); each deploy is
undeployed again so the shared host is left as found.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_run import run_tgiops as tgiops

pytestmark = pytest.mark.e2e

MODEL = "qwen2.5-7b"
UNIT = f"tgiops-{MODEL}"
ARCHITECTURES = {
    "1xT4": "Turing sm75",
    "1xV100": "Volta sm70",
    "1xA10G": "Ampere sm86",
    "1xL4": "Ada sm89",
    "1xL40S": "Ada sm89 48 GB",
    "1xA100": "Ampere sm80",
    "1xH100": "Hopper sm90",
}


def deploy_default_plan(host, arch: str) -> str | None:
    """Deploy the default plan, undeploy it again; the failure as a line, or None."""
    target = ("--host", host.name, "--ssh-config", host.ssh_config)
    proc = tgiops("deploy", MODEL, "--no-token", *target, "--json")
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return f"exit {proc.returncode}, no JSON: {proc.stderr[-1500:]}"
    finally:
        # Leave the shared host as found, whatever the deploy did.
        tgiops("undeploy", *target, "--unit", UNIT, "--yes", "--json")
    if proc.returncode != 0 or result.get("healthy") is not True:
        return (
            f"{arch}: exit {proc.returncode}, failure {result.get('failure')!r}, "
            f"diagnosis {result.get('diagnosis')!r}, journal "
            f"{(result.get('journal_tail') or [])[-4:]!r}"
        )
    plan = result["plan"]
    # What was served is what was planned, within the context the model allows.
    if not (plan["fits"] is True and plan["launcher_args"]):
        return f"{arch}: served a plan that does not fit: {plan}"
    if not plan["max_input_tokens"] < plan["max_total_tokens"] <= 32768:
        return f"{arch}: token limits {plan['max_input_tokens']}/{plan['max_total_tokens']}"
    return None


def test_the_default_plan_is_healthy_on_every_gpu_architecture(gpu_host):
    # The hosts boot one after another (the testbed's state is one process's); the deploys,
    # each on its own host, run side by side: most of a deploy is waiting on its engine.
    hosts = {spec: gpu_host(spec) for spec in ARCHITECTURES}
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        outcomes = {
            spec: pool.submit(deploy_default_plan, host, ARCHITECTURES[spec])
            for spec, host in hosts.items()
        }
    failures = {spec: failed for spec, f in outcomes.items() if (failed := f.result())}
    assert not failures, json.dumps(failures, indent=1)
