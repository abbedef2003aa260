"""What a long deploy shows while it waits: the phase, the elapsed time, the newest log line.

Pure: the phase of a log line and the progress tick; tgiops.cli.progress writes them.

The phase is read from TGI's own launcher and router lines (launcher/src/main.rs and
backends/v3/src/lib.rs, modelled line by line in scripts/tgi_emulator/launcher.py and
versions.py ``download_start_log`` / ``download_done_log``; docs/tgi.md §5: the port opens
only after download, load and warmup):

* "Starting download process." (TGI 2.0) / "Starting check and download process for M" (2.3+),
  "Download file: ..." -> downloading;
* "Successfully downloaded weights", "Files are already present on the host", "Starting shard",
  "Shard ready" -> loading;
* "Starting Webserver", "Warming up model" -> warming up;
* "Connected" -> serving soon (the router binds its port next).

On a terminal one status line is rewritten in place; otherwise (a pipe, CI, a log file) a line
is written when the phase changes and every ``interval_s`` (30 s) at most, so a 20-minute
download prints a few dozen lines, not one per second.
"""

from __future__ import annotations

# (substring of a TGI log line, phase); the last matching line of a poll decides.
_PHASES: tuple[tuple[str, str], ...] = (
    ("Starting download process", "downloading"),
    ("Starting check and download process", "downloading"),
    ("Download file:", "downloading"),
    ("Successfully downloaded weights", "loading"),
    ("Files are already present on the host", "loading"),
    ("Starting shard", "loading"),
    ("Shard ready", "loading"),
    ("Starting Webserver", "warming up"),
    ("Warming up model", "warming up"),
    ("Connected", "serving soon"),
)


def phase_of(line: str) -> str | None:
    """The deploy phase a TGI log line announces, or None when it says nothing about it."""
    for needle, phase in _PHASES:
        if needle in line:
            return phase
    return None


class Tick(str):
    """One look at a unit that is starting (deploy's health wait sends one per poll).

    A ``str`` (``"loading after 12s: <newest journal line>"``) for callers that handle
    progress as plain messages; ``Printer`` reads its fields.
    """

    unit: str
    elapsed_s: float
    state: str  # the /health probe's state: loading / unhealthy / ready
    line: str  # the unit's newest journal line
    phase: str

    def __new__(
        cls, unit: str, elapsed_s: float, state: str, line: str = "", phase: str = "starting"
    ) -> Tick:
        tail = f": {line[:120]}" if line else ""
        self = super().__new__(cls, f"{state} after {elapsed_s:.0f}s{tail}")
        self.unit, self.elapsed_s, self.state, self.line, self.phase = (
            unit,
            elapsed_s,
            state,
            line,
            phase,
        )
        return self


def elapsed_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PhaseTracker:
    """The current phase from the journal lines seen so far (a poll sees the newest only)."""

    def __init__(self) -> None:
        self.phase = "starting"

    def see(self, line: str) -> str:
        found = phase_of(line)
        if found is not None:
            self.phase = found
        return self.phase
