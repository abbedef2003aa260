"""Keeps Secrets Manager values out of log lines.

botocore logs request and response bodies at DEBUG (``botocore.endpoint`` "Making request ...
with params", ``botocore.parsers`` "Response body"); a filter on those loggers redacts any
record that carries a Secrets Manager value, so ``tgiops -v`` cannot leak the token. The
session installs it (tgiops.edges.aws.base); the secrets calls remember each value they
handle (tgiops.edges.aws.secrets).
"""

from __future__ import annotations

import logging
import threading

_REDACTED = "[tgiops: log record redacted: it carried a Secrets Manager value]"
# Loggers that may print request or response bodies at DEBUG.
_BODY_LOGGERS = (
    "botocore.endpoint",
    "botocore.parsers",
    "botocore.auth",
    "botocore.hooks",
    "botocore.httpsession",
    "botocore.retryhandler",
    "botocore.retries.standard",
    "urllib3.connectionpool",
)


class _SecretRedactor(logging.Filter):
    """Blank out log records that carry a Secrets Manager value (or any value we handled)."""

    _MARKERS = ("SecretString", "SecretBinary")

    def __init__(self) -> None:
        super().__init__("tgiops-secret-redactor")
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, value: str) -> None:
        if value:
            with self._lock:
                self._values.add(value)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        with self._lock:
            values = tuple(self._values)
        if any(marker in text for marker in self._MARKERS) or any(v in text for v in values):
            record.msg = _REDACTED
            record.args = ()
        return True


_redactor = _SecretRedactor()


def install_redactor() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if _redactor not in logger.filters:
            logger.addFilter(_redactor)


def remember_secret(value: str) -> None:
    """Redact every later log record that carries ``value``."""
    _redactor.remember(value)
