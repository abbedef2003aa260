"""`tgiops logs`: the journal of a tgiops unit, redacted, once or followed (``-f``).

Everything shown passes through ``LogRedactor``: the values of secret-looking variables
(``HF_TOKEN=...``, ``API_KEY=...``), Hugging Face tokens (``hf_...``), bearer tokens and
TGI's own ``Args { api_key: Some("...") }`` line, plus any exact secret the caller knows
(``tgiops.commands.Redactor``). Locally tgiops holds no secret (the state file never stores
one), so the patterns are what protects the output.

Following streams over one SSH channel: lines are shown as the journal writes them, until
the user interrupts or the remote ``journalctl`` ends.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tgiops.core.errors import InputError
from tgiops.core.layout import MANAGED_MARKER, UNIT_DIR, UNIT_PREFIX
from tgiops.core.request import Redactor
from tgiops.edges.host import Host
from tgiops.edges.ssh import RemoteHost

log = logging.getLogger(__name__)

DEFAULT_LINES = 50
_MASK = "***"

# NAME=value for names that carry secrets (env-file lines, `docker run -e`, shell traces).
_SECRET_ASSIGNMENT = re.compile(
    r"""\b((?:HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HUGGINGFACE_HUB_TOKEN|API_KEY|[A-Z0-9_]*_TOKEN
        |[A-Z0-9_]*_API_KEY|[A-Z0-9_]*SECRET[A-Z0-9_]*|[A-Z0-9_]*PASSWORD))
        (["']?\s*[=:]\s*)(["']?)([^\s"',;}]+)""",
    re.VERBOSE,
)
# Hugging Face user access tokens start with "hf_" (huggingface.co/docs/hub/security-tokens).
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
HF_TOKEN_RE = _HF_TOKEN  # `tgiops secret set` warns when a token does not match
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
# The launcher prints its parsed arguments with Rust's Debug format: `api_key: Some("...")`.
_DEBUG_SECRET = re.compile(r'(\b\w*(?:token|api_key|secret)\w*:\s*Some\(")([^"]*)("\))', re.I)


class LogRedactor:
    """Masks secrets in text shown to people: known values first, then the patterns."""

    def __init__(self, known: Redactor | None = None) -> None:
        self._known = known or Redactor()

    def add(self, secret: str) -> None:
        self._known.add(secret)

    def __call__(self, text: str) -> str:
        text = self._known(text)
        text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m[1]}{m[2]}{m[3]}{_MASK}", text)
        text = _HF_TOKEN.sub("hf_" + _MASK, text)
        text = _BEARER.sub(lambda m: m[1] + _MASK, text)
        return _DEBUG_SECRET.sub(lambda m: m[1] + _MASK + m[3], text)


def redact_lines(lines: Iterable[str], redactor: LogRedactor | None = None) -> list[str]:
    redact = redactor or LogRedactor()
    return [redact(line) for line in lines]


# --- pure: commands and the unit choice --------------------------------------------------------


def list_units_command(unit_dir: str = UNIT_DIR) -> str:
    """Prints the name of every unit file carrying tgiops' marker, one a line."""
    return (
        f"grep -l '^{MANAGED_MARKER}' {shlex.quote(unit_dir)}/{UNIT_PREFIX}*.service 2>/dev/null "
        "| sed 's#.*/##; s#\\.service$##' || true"
    )


def parse_unit_list(text: str) -> tuple[str, ...]:
    return tuple(sorted({line.strip() for line in text.splitlines() if line.strip()}))


def choose_unit(requested: str | None, managed: Iterable[str], host: str) -> str:
    """The unit to act on: the requested one, or the only one on the host."""
    units = tuple(managed)
    if requested:
        name = requested.removesuffix(".service")
        if name not in units:
            listed = ", ".join(units) if units else "none"
            raise InputError(
                f"{host} has no tgiops unit {name!r} (tgiops units there: {listed}). "
                "Check --unit, or run `tgiops status` on that host."
            )
        return name
    if not units:
        raise InputError(
            f"{host} has no tgiops unit (no unit file with the {MANAGED_MARKER!r} marker in "
            f"{UNIT_DIR}); deploy one with `tgiops deploy`"
        )
    if len(units) > 1:
        raise InputError(
            f"{host} has several tgiops units ({', '.join(units)}): pick one with --unit"
        )
    return units[0]


# journalctl --since takes systemd.time(7) timestamps: "2026-12-04 10:00:00", "yesterday",
# "-1h", "10 min ago", "@1733306400". Only those characters pass; the value travels as one
# shell-quoted `--since=VALUE` word, so it can never become an option or a command.
_SINCE_RE = re.compile(r"[A-Za-z0-9 :@.+-]{1,64}")


def check_since(since: str) -> str:
    if not _SINCE_RE.fullmatch(since) or not since.strip():
        raise InputError(
            f"--since {since!r}: give a time as journalctl takes it, e.g. '2026-12-04 10:00', "
            "'-1h', '10 min ago', 'today'"
        )
    return since


def journal_command(unit: str, *, lines: int, follow: bool, since: str | None = None) -> str:
    if lines < 0:
        raise InputError(f"-n {lines}: give a number of lines >= 0")
    argv = [
        "journalctl",
        "-u",
        unit + ".service",
        "-n",
        str(lines),
        "-o",
        "short-iso",
        "--no-pager",
        "--no-hostname",
    ]
    if since is not None:
        argv.append("--since=" + check_since(since))
    if follow:
        argv.append("-f")
    return shlex.join(argv)


# --- the edge ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogsRequest:
    unit: str | None = None
    lines: int = DEFAULT_LINES
    follow: bool = False
    since: str | None = None  # journalctl's --since syntax


def resolve_unit(host: Host, requested: str | None) -> str:
    """One round trip: the managed units of the host, then ``choose_unit``."""
    result = host.run(list_units_command(), check=False)
    return choose_unit(requested, parse_unit_list(result.stdout), host.name)


def show_logs(
    host: RemoteHost,  # follows the journal over SSH (stream)
    request: LogsRequest,
    on_line: Callable[[str], None],
    *,
    redactor: LogRedactor | None = None,
    stop: threading.Event | None = None,
    on_unit: Callable[[str], None] | None = None,
) -> str:
    """Send the unit's journal lines, redacted, to ``on_line``; returns the unit's name
    (also given to ``on_unit`` before the first line).

    With ``follow`` this streams until ``stop`` is set, the remote command ends, or the
    connection drops.
    """
    redact = redactor or LogRedactor()
    command = journal_command("unit", lines=request.lines, follow=False, since=request.since)
    unit = resolve_unit(host, request.unit)  # the arguments were checked before this trip
    if on_unit is not None:
        on_unit(unit)
    command = journal_command(unit, lines=request.lines, follow=request.follow, since=request.since)
    if not request.follow:
        result = host.run(command, check=False)
        if result.exit_code != 0:
            _journal_failed(host.name, command, result, request.since)
        for line in result.stdout.splitlines():
            on_line(redact(line))
        return unit
    host.stream(command, lambda line: on_line(redact(line)), stop=stop)
    return unit


def _journal_failed(host_name: str, command: str, result: Any, since: str | None) -> None:
    """journalctl refused: a --since it cannot parse is bad input (nothing ran); else the
    command's failure with its output."""
    from tgiops.core.errors import RemoteCommandError

    text = LogRedactor()((result.stderr or result.stdout or "").strip())
    if since is not None and "timestamp" in text.lower():
        raise InputError(f"--since {since!r}: journalctl on {host_name} does not take it: {text}")
    raise RemoteCommandError(host_name, command, result.exit_code, text[-2000:])
