"""The vLLM emulator image on a testbed host: every host has `vllm/vllm-openai:TAG` (built by
scripts/testbedlib/images.py beside the TGI images) and it serves the OpenAI API under
`docker run`, through the --gpus shim, the way the real image does (entrypoint `vllm serve`).
"""

from __future__ import annotations

import json
import shlex

import pytest
from instance_support import wait_until

pytestmark = pytest.mark.e2e

IMAGE = "vllm/vllm-openai"
TINY_MODEL = "tgiops-test/tiny-llama"


def test_host_has_the_vllm_images_and_one_serves_with_docker_run(gpu_host) -> None:
    host = gpu_host("4xA10G")
    tags = set(host.run(f"docker image ls {IMAGE} --format '{{{{.Tag}}}}'").stdout.split())
    assert {"v0.20.0", "v0.20.0-cu129", "v0.11.0", "v0.27.1", "v0.27.1-cu129"} <= tags

    # The testbed's driver is 535: a CUDA 13 (plain) tag refuses, in torch-in-vLLM's words.
    plain = host.run(
        f"docker run --rm --gpus all {IMAGE}:v0.20.0 --model {TINY_MODEL}", check=False
    )
    assert plain.returncode == 1
    assert "The NVIDIA driver on your system is too old" in plain.stdout + plain.stderr

    run = (
        f"docker run -d --name vllm-e2e --gpus all --shm-size 1g -p 127.0.0.1:8000:8000 "
        f"-v /var/lib/tgiops/data/hf:/root/.cache/huggingface {IMAGE}:v0.20.0-cu129 "
        f"--model {TINY_MODEL} --served-model-name tiny --tensor-parallel-size 4 "
        "--max-model-len 1024"
    )
    host.run("docker rm -f vllm-e2e >/dev/null 2>&1; " + run)
    try:

        def healthy() -> bool:
            probe = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health"
            return host.run(probe, check=False).stdout.strip() == "200"

        wait_until(healthy, 180, "the vLLM emulator answering /health inside the host")
        models = json.loads(host.run("curl -sf http://127.0.0.1:8000/v1/models").stdout)
        assert [m["id"] for m in models["data"]] == ["tiny"]
        body = shlex.quote(json.dumps({"model": "tiny", "prompt": "hello world", "max_tokens": 4}))
        completion = json.loads(
            host.run(
                "curl -sf -H 'Content-Type: application/json' "
                f"-d {body} http://127.0.0.1:8000/v1/completions"
            ).stdout
        )
        assert completion["choices"][0]["text"] == "hello world"
        logs = host.run("docker logs vllm-e2e 2>&1").stdout
        # The shim handed it the host's four A10Gs, and the weights went to the mounted cache.
        assert "rank 3 in world size 4" in logs
        assert "GPU KV cache size: " in logs
        cached = host.run("ls /var/lib/tgiops/data/hf/hub").stdout
        assert "models--tgiops-test--tiny-llama" in cached
    finally:
        host.run("docker rm -f vllm-e2e; rm -rf /var/lib/tgiops/data/hf", check=False)
