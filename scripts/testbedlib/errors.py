"""Errors of the testbed (a test tool, separate from the tgiops exception tree)."""

from __future__ import annotations


class TestbedError(Exception):
    """Building, booting or tearing down a testbed host failed. CLI exit 1."""

    exit_code = 1
    __test__ = False  # not a pytest test class, despite the name


class TestbedInputError(TestbedError):
    """The request is wrong (bad name, bad GPU spec, conflicting options). CLI exit 2."""

    exit_code = 2
