"""Throttling retries (tenacity) around AWS calls a deploy cannot do without.

tgiops' own retry policy with botocore's real exception class: what is retried, how long it
waits, when it stops, what it says. End to end (throttling answers injected in front of moto):
tests/e2e/test_faults.py::test_secrets_manager_throttling_is_retried_with_backoff_then_deploys.
"""

from __future__ import annotations

import botocore.exceptions
import pytest

from tgiops.edges.aws.base import THROTTLE_RETRY_ATTEMPTS, retry_when_throttled


def client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "Rate exceeded"}}, "GetSecretValue"
    )


class Operation:
    """Fails with ``codes`` in turn, then answers."""

    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.codes:
            raise client_error(self.codes.pop(0))
        return "value"


def test_throttling_for_a_while_is_retried_with_growing_waits_then_succeeds(caplog):
    waits: list[float] = []
    operation = Operation("ThrottlingException", "Throttling", "TooManyRequestsException")
    with caplog.at_level("WARNING", logger="tgiops.edges.aws"):
        assert retry_when_throttled(operation, what="reading secret 'x'", sleep=waits.append)
    assert operation.calls == 4
    assert waits == [0.5, 1.0, 2.0]
    assert caplog.messages == [
        "reading secret 'x' was throttled by AWS (ThrottlingException); retrying in 0.5 s "
        "(attempt 2 of 5)",
        "reading secret 'x' was throttled by AWS (Throttling); retrying in 1.0 s (attempt 3 of 5)",
        "reading secret 'x' was throttled by AWS (TooManyRequestsException); retrying in 2.0 s "
        "(attempt 4 of 5)",
    ]


def test_throttling_that_does_not_stop_gives_up_after_the_last_attempt():
    waits: list[float] = []
    operation = Operation(*["ThrottlingException"] * 10)
    with pytest.raises(botocore.exceptions.ClientError, match="ThrottlingException"):
        retry_when_throttled(operation, sleep=waits.append)
    assert operation.calls == THROTTLE_RETRY_ATTEMPTS
    assert len(waits) == THROTTLE_RETRY_ATTEMPTS - 1 and max(waits) <= 8


@pytest.mark.parametrize("code", ["AccessDeniedException", "ResourceNotFoundException"])
def test_other_errors_are_not_retried(code):
    waits: list[float] = []
    operation = Operation(code)
    with pytest.raises(botocore.exceptions.ClientError, match=code):
        retry_when_throttled(operation, sleep=waits.append)
    assert operation.calls == 1 and waits == []
