"""The replicas hint of a plan is a recipe that works (issue 11, item 16).

On a 2xT4 host a model that fits on one GPU runs unsharded (TGI's non-flash path cannot
shard), so one unit leaves a GPU idle. The plan warns and spells out one deploy per GPU
(``--gpu-devices N --unit NAME --port P``); running exactly those commands gives two healthy
units, each planned for and given its own GPU.
"""

from __future__ import annotations

import json
import re

import pytest
from cli_run import run_tgiops as tgiops

pytestmark = pytest.mark.e2e

MODEL = "phi-3-mini"  # ungated, fits one T4


def test_the_replicas_the_plan_suggests_deploy_healthy_one_per_gpu(gpu_host):
    planned = tgiops("plan", MODEL, "--gpu", "T4", "--gpus", "2", "--json")
    assert planned.returncode == 0, planned.stderr
    (hint,) = [w for w in json.loads(planned.stdout)["warnings"] if "replicas" in w]
    replicas = re.findall(r"--gpu-devices (\S+) --unit (\S+) --port (\d+)`", hint)
    assert [r[0] for r in replicas] == ["0", "1"], hint

    host = gpu_host("2xT4")
    target = ("--host", host.name, "--ssh-config", host.ssh_config)
    try:
        for devices, unit, port in replicas:
            proc = tgiops("deploy", MODEL, "--no-token", *target, "--gpu-devices", devices,
                          "--unit", unit, "--port", port, "--json")  # fmt: skip
            result = json.loads(proc.stdout)
            assert proc.returncode == 0 and result["healthy"], (unit, proc.stdout[-3000:])
            # Planned for the one GPU it gets: no idle-GPU warning, one shard.
            assert result["plan"]["num_shard"] == 1
            assert not [w for w in result["plan"]["warnings"] if "idle" in w]
        for _, unit, port in replicas:
            info = json.loads(host.run(f"curl -s http://127.0.0.1:{port}/info").stdout)
            assert info["model_id"] == "microsoft/Phi-3-mini-4k-instruct"
            # The container sees one GPU (the --gpus shim narrows TGI_EMULATOR_GPUS to it).
            env = host.run(f"docker inspect -f '{{{{json .Config.Env}}}}' {unit}").stdout
            (gpus,) = [e for e in json.loads(env) if e.startswith("TGI_EMULATOR_GPUS=")]
            assert len(json.loads(gpus.split("=", 1)[1])) == 1, (unit, gpus)
    finally:
        for _, unit, _ in replicas:
            tgiops("undeploy", *target, "--unit", unit, "--yes", "--json")
