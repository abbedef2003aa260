"""Progress on stderr while a deploy waits: a status line on a terminal, periodic lines
elsewhere (tgiops.core.progress reads the phase; this module writes it)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from tgiops.core.progress import Tick, elapsed_text

NO_TTY_INTERVAL_S = 30.0


_LINE_CHARS = 100


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
        text = f"{self._prefix}  .. {tick.unit}: {tick.phase}, {elapsed_text(tick.elapsed_s)}"
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


def stderr_printer(*, tty: bool, prefix: str = "") -> Printer:
    """Deploy's progress on stderr (a status line on a terminal, periodic lines elsewhere);
    each message also goes to the log (-v)."""
    log = logging.getLogger("tgiops.commands.deploy")

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()
        if text.endswith("\n") and text.strip():  # not each redraw of a terminal status line
            log.info("%s", text.strip())

    return Printer(write, tty=tty, prefix=prefix)
