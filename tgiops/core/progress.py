"""What a long deploy shows while it waits: the phase, the elapsed time, the newest log line.

Pure apart from the ``write`` function and the ``clock`` it is given (tests pass fakes).

The phase is read from TGI's own launcher and router lines (launcher/src/main.rs and
backends/v3/src/lib.rs, modelled line by line in scripts/tgi_emulator/launcher.py and
versions.py ``download_start_log`` / ``download_done_log``; tgi-facts.md §5: the port opens
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

import time
from collections.abc import Callable

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
NO_TTY_INTERVAL_S = 30.0
_LINE_CHARS = 100


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


class Printer:
    """Turns progress (step messages and ``Tick``s) into what a person sees.

    ``write(text)`` writes to the terminal (stderr); on a TTY the status line is redrawn with a
    carriage return, elsewhere whole lines are written at most every ``interval_s``.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = NO_TTY_INTERVAL_S,
        prefix: str = "",
    ) -> None:
        self._write = write
        self._tty = tty
        self._clock = clock
        self._interval_s = interval_s
        self._prefix = prefix
        self._open_line = False  # a status line is on screen (TTY): the next write replaces it
        self._last_phase: str | None = None
        self._last_line_at: float | None = None

    def __call__(self, event: object) -> None:
        if isinstance(event, Tick):
            self._tick(event)
        else:
            self._step(str(event))

    def _step(self, message: str) -> None:
        self._end_status_line()
        self._write(f"{self._prefix}  .. {message}\n")
        self._last_phase = None
        self._last_line_at = None

    def _tick(self, tick: Tick) -> None:
        line = " ".join(tick.line.split())
        if len(line) > _LINE_CHARS:
            line = line[: _LINE_CHARS - 3] + "..."
        text = f"{self._prefix}  .. {tick.unit}: {tick.phase}, {_elapsed(tick.elapsed_s)}"
        if line:
            text += f" | {line}"
        if self._tty:
            self._write("\r\x1b[2K" + text)
            self._open_line = True
            return
        now = self._clock()
        changed = tick.phase != self._last_phase
        due = self._last_line_at is None or now - self._last_line_at >= self._interval_s
        if changed or due:
            self._write(text + "\n")
            self._last_phase = tick.phase
            self._last_line_at = now

    def _end_status_line(self) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def close(self) -> None:
        """End a status line left open (before the result is printed)."""
        self._end_status_line()


def _elapsed(seconds: float) -> str:
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


def stderr_printer(*, tty: bool, prefix: str = "") -> Printer:
    """Deploy's progress on stderr (a status line on a terminal, periodic lines elsewhere);
    each message also goes to the log (-v)."""
    import logging
    import sys

    log = logging.getLogger("tgiops.commands.deploy")

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
        if text.endswith("\n") and text.strip():  # not each redraw of a terminal status line
            log.info("%s", text.strip())

    return Printer(write, tty=tty, prefix=prefix)
