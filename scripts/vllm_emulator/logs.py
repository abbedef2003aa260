"""Log lines in vLLM's own format.

vLLM's formatter (vllm/logging_utils/formatter.py, configured in vllm/logger.py) prints
`%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s` with datefmt
`%m-%d %H:%M:%S` to stdout, and repeats that prefix on every line of a multi-line message
(a logged traceback). Since the V1 engine runs the API server and the engine core in separate
processes, each line starts with the process tag, e.g. `(APIServer pid=1) INFO 10-08 20:33:48
[api_server.py:1839] vLLM API server version 0.11.0` and `(EngineCore_DP0 pid=123) INFO ...
[gpu_worker.py:298] Available KV cache memory: 51.38 GiB` (startup logs quoted in facts §1.4
and public issues). Line numbers are the emulator's (they differ per release anyway).
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime

_lock = threading.Lock()


class VllmLog:
    def __init__(self, api_pid: int, engine_pid: int, stream=None) -> None:
        self.api_tag = f"(APIServer pid={api_pid})"
        self.engine_tag = f"(EngineCore_DP0 pid={engine_pid})"
        self._stream = stream

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def _write(self, text: str) -> None:
        with _lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def emit(self, level: str, where: str, message: str, *, engine: bool = False) -> None:
        tag = self.engine_tag if engine else self.api_tag
        stamp = datetime.now().strftime("%m-%d %H:%M:%S")
        prefix = f"{tag} {level} {stamp} [{where}]"
        self._write("\n".join(f"{prefix} {line}" for line in message.split("\n")))

    def api(self, where: str, message: str, level: str = "INFO") -> None:
        self.emit(level, where, message)

    def engine(self, where: str, message: str, level: str = "INFO") -> None:
        self.emit(level, where, message, engine=True)

    def raw(self, text: str, engine: bool = False) -> None:
        """uvicorn's own lines (`INFO:     Started server process [1]`) and tracebacks."""
        tag = self.engine_tag if engine else self.api_tag
        self._write("\n".join(f"{tag} {line}" for line in text.split("\n")))


def gib(num_bytes: float) -> str:
    """vLLM's `format_gib` / `round(b / GiB_bytes, 2)`: 1.5, 51.38."""
    return str(round(num_bytes / (1024**3), 2))
