"""Run the vLLM emulator as a real subprocess on a free loopback port.

The emulator is a test double of vLLM (scripts/vllm_emulator, beside the TGI one); these tests
check that it behaves like the vLLM facts it is built from, so tgiops can be tested against it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
READY_TIMEOUT_S = 30.0  # generous: the box is shared; nothing asserts on durations

A10G = {"name": "NVIDIA A10G", "memory_mib": 23028, "compute_capability": "8.6"}
T4 = {"name": "Tesla T4", "memory_mib": 15360, "compute_capability": "7.5"}
V100 = {"name": "Tesla V100-SXM2-16GB", "memory_mib": 16384, "compute_capability": "7.0"}
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_capability": "9.0"}
L4 = {"name": "NVIDIA L4", "memory_mib": 23034, "compute_capability": "8.9"}

TINY = "tgiops-test/tiny-llama"
FAKE_TOKEN = "hf_emulatortesttoken0000000000"  # not a real token: the fake hub accepts hf_*

# The parsing regexes of the facts file (tgiops/docs/vllm.md §1.4), used as given.
KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
# vLLM's line format: `(Proc pid=N) LEVEL mm-dd HH:MM:SS [file.py:line] message`.
LINE = re.compile(
    r"^\((?:APIServer|EngineCore_DP0) pid=\d+\) (INFO|WARNING|ERROR|DEBUG) "
    r"\d\d-\d\d \d\d:\d\d:\d\d \[[\w.]+\.py:\d+\] (.*)$"
)


def emulator_module(name: str):
    """A module of scripts/vllm_emulator, imported in-process.

    This test package is itself named `vllm_emulator` (pytest puts tests/ on sys.path), so the
    emulator is loaded under another package name, `vllm_emulator_under_test`.
    """
    package = "vllm_emulator_under_test"
    if package not in sys.modules:
        if str(SCRIPTS) not in sys.path:
            sys.path.append(str(SCRIPTS))  # for its own `tgi_emulator` imports
        spec = importlib.util.spec_from_file_location(
            package,
            SCRIPTS / "vllm_emulator" / "__init__.py",
            submodule_search_locations=[str(SCRIPTS / "vllm_emulator")],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Emulator:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    stderr_text: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines) + "\n" + self.stderr_text

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def messages(self) -> list[str]:
        """The message part of every line in vLLM's format."""
        return [m.group(2) for m in map(LINE.match, list(self.lines)) if m]

    def wait_for_line(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.saw(text):
            if self.proc.poll() is not None:
                time.sleep(0.1)
                if self.saw(text):
                    return
                raise AssertionError(
                    f"exited {self.proc.returncode} before {text!r}:\n{self.output}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.02)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(f"emulator exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"port {self.port} not open:\n{self.output}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float = READY_TIMEOUT_S) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._err_reader.join(timeout=5)
        return rc

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()


def _drain(stream, emulator: Emulator, is_err: bool) -> None:
    for raw in stream:
        if is_err:
            emulator.stderr_text += raw
        else:
            emulator.lines.append(raw.rstrip("\n"))


def start_emulator(
    data_dir: Path,
    *,
    version: str = "0.20.0",
    cuda: str = "12.9",
    gpus: list[dict] | None = None,
    used_mib: list[int] | None = None,
    driver: str = "535.247.01",
    args: list[str] = (),
    env: dict[str, str] | None = None,
    model: str | None = TINY,
    port: int | None = None,
    load_seconds: float = 0.2,
) -> Emulator:
    port = port or free_port()
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir / "home"),
        "PYTHONPATH": str(SCRIPTS),
        "PYTHONUNBUFFERED": "1",
        "VLLM_EMULATOR_VERSION": version,
        "VLLM_EMULATOR_CUDA": cuda,
        "VLLM_EMULATOR_LOAD_SECONDS": str(load_seconds),
        "TGI_EMULATOR_DOWNLOAD_SECONDS": "0.05",
        "HF_HOME": str(data_dir / "hf"),
        "TGI_EMULATOR_GPUS": json.dumps([A10G] if gpus is None else gpus),
        "TESTBED_GPU_DRIVER_VERSION": driver,
    }
    if used_mib is not None:
        full_env["TESTBED_GPU_MEMORY_USED_MIB"] = json.dumps(used_mib)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "vllm_emulator", "serve"]
    if model is not None:
        cmd.append(model)
    cmd += ["--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(data_dir),
    )
    emulator = Emulator(proc=proc, port=port, data_dir=data_dir)
    emulator._reader = threading.Thread(
        target=_drain, args=(proc.stdout, emulator, False), daemon=True
    )
    emulator._err_reader = threading.Thread(
        target=_drain, args=(proc.stderr, emulator, True), daemon=True
    )
    emulator._reader.start()
    emulator._err_reader.start()
    return emulator


@pytest.fixture
def vllm(tmp_path):
    """Factory; every emulator it started is stopped (SIGTERM) at teardown."""
    started: list[Emulator] = []

    def make(**kw) -> Emulator:
        data_dir = kw.pop("data_dir", tmp_path)
        data_dir.mkdir(parents=True, exist_ok=True)
        emulator = start_emulator(data_dir, **kw)
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        if emulator.proc.poll() is None:
            emulator.proc.send_signal(signal.SIGTERM)
            try:
                emulator.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                emulator.proc.kill()
                emulator.proc.wait()


def failed(emulator: Emulator) -> str:
    """Wait for a start-up failure; return everything it printed."""
    rc = emulator.wait_exit()
    assert rc == 1, f"expected exit 1, got {rc}:\n{emulator.output}"
    assert not port_open(emulator.port)
    return emulator.output
