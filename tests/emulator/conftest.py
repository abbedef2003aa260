"""Run the TGI emulator as a real subprocess on a free loopback port.

The emulator is a test double of TGI (one of the three the project allows); these tests check
that it behaves like the TGI facts it is built from, so tgiops can be tested against it.
"""

from __future__ import annotations

import json
import os
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
SPEC_DIR = Path(__file__).resolve().parent / "openapi"  # TGI's own specs, vendored
READY_TIMEOUT_S = 30.0  # generous: the box is shared; nothing asserts on durations

A10G = {"name": "NVIDIA A10G", "memory_mib": 23028, "compute_capability": "8.6"}
A100_80 = {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "compute_capability": "8.0"}
T4 = {"name": "Tesla T4", "memory_mib": 15360, "compute_capability": "7.5"}
V100 = {"name": "Tesla V100-SXM2-16GB", "memory_mib": 16384, "compute_capability": "7.0"}
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_capability": "9.0"}

VERSIONS = ("2.0.4", "2.4.1", "3.3.7")
TINY = "tgiops-test/tiny-llama"
FAKE_TOKEN = "hf_emulatortesttoken0000000000"  # not a real token: the fake hub accepts hf_*


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
        return "\n".join(self.lines)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def wait_for_line(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.saw(text):
            if self.proc.poll() is not None:
                time.sleep(0.05)  # let the reader drain
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
                raise AssertionError(
                    f"emulator exited {self.proc.returncode}:\n{self.output}\n{self.stderr_text}"
                )
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


def _drain(stream, sink, emulator: Emulator, is_err: bool) -> None:
    for raw in stream:
        line = raw.rstrip("\n")
        if is_err:
            emulator.stderr_text += raw
        else:
            sink.append(line)


def base_env(data_dir: Path, version: str, gpus: list[dict] | None) -> dict[str, str]:
    """A clean environment: nothing from the host's HF / CUDA / hostname settings leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir / "home"),
        "PYTHONPATH": str(SCRIPTS),
        "PYTHONUNBUFFERED": "1",
        "TGI_EMULATOR_VERSION": version,
        "TGI_EMULATOR_LOAD_SECONDS": "0.2",
        "TGI_EMULATOR_DOWNLOAD_SECONDS": "0.05",
    }
    if version == "2.0.4":
        env["HUGGINGFACE_HUB_CACHE"] = str(data_dir / "data")
    else:
        env["HF_HOME"] = str(data_dir / "data")
    if gpus is not None:
        env["TGI_EMULATOR_GPUS"] = json.dumps(gpus)
    return env


def start_emulator(
    data_dir: Path,
    *,
    version: str = "3.3.7",
    gpus: list[dict] | None = None,
    args: list[str] = (),
    env: dict[str, str] | None = None,
    model_id: str = TINY,
    port: int | None = None,
    read_output: bool = True,
) -> Emulator:
    port = port or free_port()
    full_env = base_env(data_dir, version, [A10G] if gpus is None else gpus)
    if gpus == []:
        full_env.pop("TGI_EMULATOR_GPUS")
    full_env.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "tgi_emulator",
        "--model-id",
        model_id,
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if version == "3.3.7":
        cmd += ["--prometheus-port", str(free_port())]
    cmd += list(args)
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
        target=_drain, args=(proc.stdout, emulator.lines, emulator, False), daemon=True
    )
    emulator._err_reader = threading.Thread(
        target=_drain, args=(proc.stderr, None, emulator, True), daemon=True
    )
    if read_output:
        emulator._reader.start()
        emulator._err_reader.start()
    return emulator


@pytest.fixture
def emulators(tmp_path):
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


# ---------------------------------------------------------------------- OpenAPI validation
def _nullable_to_json_schema(node):
    """OpenAPI 3.0 `nullable: true` -> JSON Schema 2020-12.

    utoipa writes `{"allOf": [{"$ref": ...}], "nullable": true}` for Option<Struct> fields; by
    the 3.0 rules `nullable` does not reach into `allOf`, yet TGI does send `null` there (e.g.
    StreamResponse.details). Converting to `anyOf [..., {"type": "null"}]` applies the spec's
    evident intent without loosening anything else.
    """
    if isinstance(node, list):
        return [_nullable_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _nullable_to_json_schema(v)
        for k, v in node.items()
        if k not in ("example", "discriminator")
    }
    if out.pop("nullable", False):
        if "type" in out and "$ref" not in out and "allOf" not in out:
            t = out["type"]
            out["type"] = [t, "null"] if isinstance(t, str) else [*t, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class OpenApi:
    def __init__(self, path: Path) -> None:
        from jsonschema import Draft202012Validator

        self.spec = json.loads(path.read_text())
        self.components = _nullable_to_json_schema(self.spec["components"])
        self._validator_cls = Draft202012Validator

    def errors(self, schema_name: str, instance) -> list[str]:
        root = {"$ref": f"#/components/schemas/{schema_name}", "components": self.components}
        validator = self._validator_cls(root)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]

    def errors_for_response(
        self, path: str, method: str, status: int, content_type: str, instance
    ) -> list[str]:
        """Validate against the schema the spec declares for this route's response."""
        response = self.spec["paths"][path][method]["responses"][str(status)]
        schema = _nullable_to_json_schema(response["content"][content_type]["schema"])
        validator = self._validator_cls({**schema, "components": self.components})
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture(scope="session")
def openapi():
    """Spec per emulated version. 2.0.4 has no spec file: it is checked against 2.4.1."""
    specs = {v: OpenApi(SPEC_DIR / f"openapi-{v}.json") for v in ("2.4.1", "3.3.7")}
    specs["2.0.4"] = specs["2.4.1"]
    return specs
