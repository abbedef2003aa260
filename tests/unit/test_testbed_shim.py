"""The testbed's docker shim confines bind mounts to the emulated host (issue 12, "the testbed
must not be a way out"): dockerd runs on the test machine and resolves bind sources there.

Pure parts only (argument rewriting); tests/e2e/test_security_attacks.py proves it on a booted host,
symlinks included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parents[2] / "scripts/testbedlib/hostfiles/docker_shim.py"
_spec = importlib.util.spec_from_file_location("docker_shim", SHIM)
assert _spec is not None and _spec.loader is not None
shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shim)

HOST = {"outer_root": "/srv/testbed/h1/root", "outer_docker_socket": "/srv/testbed/h1/d.sock"}
GPUS = [{"index": 0, "name": "NVIDIA A10G", "memory_mib": 23028, "compute_capability": "8.6"}]


def run(*options: str) -> list[str]:
    return shim.rewrite_argv(["run", "--rm", *options, "img:1"], HOST, GPUS)


def sources(argv: list[str]) -> list[str]:
    return [argv[i + 1].split(":")[0] for i, a in enumerate(argv) if a == "-v"]


def test_the_root_of_the_host_is_the_hosts_not_the_machines():
    assert sources(run("-v", "/:/data")) == ["/srv/testbed/h1/root"]
    assert sources(run("-v", "/etc/../:/data")) == ["/srv/testbed/h1/root"]


def test_the_data_dir_maps_under_the_hosts_root():
    argv = run("-v", "/var/lib/tgiops/data/cache:/data", "--gpus", "all")
    assert sources(argv) == ["/srv/testbed/h1/root/var/lib/tgiops/data/cache"]
    assert "--gpus" not in argv


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(("-v", "/tmp/x:/d"), id="tmp"),
        pytest.param(("-v", "/proc/1/root:/d"), id="proc"),
        pytest.param(("-v", "/dev:/d"), id="dev"),
        pytest.param(("-v", "/run/docker.sock:/s"), id="socket"),
        pytest.param(("--volume=/var/run/docker.sock:/s",), id="socket-long"),
        pytest.param(("--mount", "type=bind,source=/tmp,target=/d"), id="mount-tmp"),
        pytest.param(
            ("--mount", "type=volume,src=v,dst=/d,volume-opt=o=bind,volume-opt=device=/"),
            id="volume-opt",
        ),
        pytest.param(("--privileged",), id="privileged"),
        pytest.param(("--cap-add", "SYS_ADMIN"), id="cap-add"),
        pytest.param(("--device=/dev/sda",), id="device"),
        pytest.param(("--pid", "host"), id="pid-host"),
        pytest.param(("--security-opt", "apparmor=unconfined"), id="security-opt"),
    ],
)
def test_ways_out_are_refused(options):
    with pytest.raises(shim.Refused):
        run(*options)


def test_a_mount_of_type_bind_is_rewritten_too():
    argv = run("--mount", "type=bind,source=/,target=/d")
    assert "type=bind,source=/srv/testbed/h1/root,target=/d" in argv


@pytest.mark.parametrize(
    "argv",
    [
        ["volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=/", "v"],
        ["volume", "create", "--opt=device=/", "v"],
        ["exec", "--privileged", "c", "sh"],
    ],
)
def test_other_commands_that_reach_the_machine_are_refused(argv):
    with pytest.raises(shim.Refused):
        shim.check_other_commands(argv)


def test_plain_commands_pass():
    shim.check_other_commands(["volume", "create", "v"])
    shim.check_other_commands(["exec", "c", "sh"])
    assert shim.rewrite_argv(["ps", "-a"], HOST, GPUS) == ["ps", "-a"]


def test_the_vllm_emulator_gets_memory_used_and_the_driver():
    gpus = [dict(GPUS[0], memory_used_mib=4096), dict(GPUS[0], index=1, memory_used_mib=0)]
    argv = shim.rewrite_argv(["run", "--gpus", "device=1", "img:1"], HOST, gpus, "535.247.01")
    env = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert "TESTBED_GPU_MEMORY_USED_MIB=[0]" in env  # the selected GPU's, not GPU 0's
    assert "TESTBED_GPU_DRIVER_VERSION=535.247.01" in env
    everything = shim.rewrite_argv(["run", "--gpus", "all", "img:1"], HOST, gpus)
    assert "TESTBED_GPU_MEMORY_USED_MIB=[4096,0]" in everything
