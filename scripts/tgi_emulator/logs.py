"""Log lines shaped like the launcher's `tracing_subscriber` output.

The real launcher logs to stdout with `tracing_subscriber::fmt().compact()` (or `.json()` with
`--json-output`): `2024-04-12T13:59:53.617506Z  INFO download: text_generation_launcher: msg`,
span fields such as `rank=0` at the end. The router's lines carry `file:line` after the target.
Python-shard messages are re-emitted by the launcher under its own target. Colours are not
emitted. Only the final `Error: ...` line of a failed launcher goes to stderr (Rust's
`Termination` for `Result`).
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone

LAUNCHER = "text_generation_launcher"
_lock = threading.Lock()


class TracingLog:
    """Writes launcher/router-style lines; thread-safe, flushed per line."""

    def __init__(self, json_output: bool = False, stream=None) -> None:
        self.json_output = json_output
        self._stream = stream

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def _timestamp(self) -> str:
        now = datetime.now(timezone.utc)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"

    def emit(
        self,
        level: str,
        message: str,
        *,
        target: str = LAUNCHER,
        span: str | None = None,
        fields: dict[str, object] | None = None,
        location: str | None = None,
    ) -> None:
        ts = self._timestamp()
        if self.json_output:
            record: dict[str, object] = {"timestamp": ts, "level": level}
            if location is not None:
                # The router's JSON layer flattens the event (message at top level).
                record["message"] = message
                record["target"] = target
                file_name, _, line = location.rpartition(":")
                record["filename"] = file_name
                record["line_number"] = int(line) if line.isdigit() else 0
            else:
                record["fields"] = {"message": message}
                record["target"] = target
                if span is not None:
                    span_record = {**(fields or {}), "name": span}
                    record["span"] = span_record
                    record["spans"] = [span_record]
            text = json.dumps(record)
        else:
            prefix = f"{span}: " if span else ""
            where = f" {location}:" if location else ""
            suffix = "".join(f" {k}={v}" for k, v in (fields or {}).items())
            text = f"{ts} {level:>5} {prefix}{target}:{where} {message}{suffix}"
        with _lock:
            stream = self.stream
            stream.write(text + "\n")
            stream.flush()

    def info(self, message: str, **kw) -> None:
        self.emit("INFO", message, **kw)

    def warn(self, message: str, **kw) -> None:
        self.emit("WARN", message, **kw)

    def error(self, message: str, **kw) -> None:
        self.emit("ERROR", message, **kw)


def print_final_error(debug_repr: str) -> None:
    """What `fn main() -> Result<(), LauncherError>` prints on Err: `Error: ShardCannotStart`."""
    with _lock:
        sys.stderr.write(f"Error: {debug_repr}\n")
        sys.stderr.flush()
