"""`tgiops logs`: redaction of journal lines, the unit choice, the journalctl command."""

from __future__ import annotations

import shlex

import pytest

from tgiops.commands import logs
from tgiops.core.errors import InputError
from tgiops.core.request import Redactor

TOKEN = "hf_PLANTEDAbCdEfGhIjKlMnOpQrStUv012345"


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        (f"HF_TOKEN={TOKEN}", TOKEN, "HF_TOKEN=***"),
        ("HUGGING_FACE_HUB_TOKEN=abcdefgh12345678", "abcdefgh12345678", "HUGGING_FACE_HUB_TOKEN="),
        ("API_KEY='s3cr3t-api-key'", "s3cr3t-api-key", "API_KEY='***"),
        ('env: {"API_KEY": "k-123456789"}', "k-123456789", "API_KEY"),
        ("MY_SERVICE_TOKEN = tok12345678", "tok12345678", "MY_SERVICE_TOKEN = ***"),
        (f"loading with token {TOKEN} now", TOKEN, "hf_***"),
        ("Authorization: Bearer abcdef0123456789", "abcdef0123456789", "Bearer ***"),
        (
            'Args { model_id: "m", api_key: Some("the-api-key-1"), hf_token: Some("t0k3n-x") }',
            "the-api-key-1",
            'api_key: Some("***")',
        ),
        ('Args { hf_token: Some("t0k3n-xyz") }', "t0k3n-xyz", 'hf_token: Some("***")'),
    ],
    ids=[
        "hf-token",
        "legacy-name",
        "api-key-quoted",
        "json",
        "any-token-var",
        "bare-hf-token",
        "bearer",
        "tgi-args-api-key",
        "tgi-args-token",
    ],
)
def test_log_redactor_masks_secrets(line, secret, kept):
    out = logs.LogRedactor()(line)
    assert secret not in out
    assert kept in out


@pytest.mark.parametrize(
    "line",
    [
        "2024-05-07T10:00:00Z INFO text_generation_launcher: Starting shard rank=0",
        "max_total_tokens=2048 max_input_tokens=1024",
        "Downloading model.safetensors (89 MB)",
        "api_key: None",
    ],
)
def test_log_redactor_leaves_ordinary_lines(line):
    assert logs.LogRedactor()(line) == line


def test_log_redactor_uses_known_secrets_too():
    known = Redactor()
    known.add("plain-secret-value")
    redactor = logs.LogRedactor(known)
    assert redactor("echo plain-secret-value here") == "echo *** here"
    assert logs.redact_lines(["x plain-secret-value"], redactor) == ["x ***"]


@pytest.mark.parametrize(
    ("requested", "managed", "expected"),
    [
        (None, ["tgiops-a"], "tgiops-a"),
        ("tgiops-b", ["tgiops-a", "tgiops-b"], "tgiops-b"),
        ("tgiops-b.service", ["tgiops-b"], "tgiops-b"),
    ],
    ids=["the-only-one", "asked", "with-suffix"],
)
def test_choose_unit(requested, managed, expected):
    assert logs.choose_unit(requested, managed, "gpu1") == expected


@pytest.mark.parametrize(
    ("requested", "managed", "message"),
    [
        (None, [], "has no tgiops unit"),
        (None, ["a", "b"], "several tgiops units (a, b): pick one with --unit"),
        ("c", ["a", "b"], "no tgiops unit 'c' (tgiops units there: a, b)"),
    ],
    ids=["none", "several", "missing"],
)
def test_choose_unit_refuses(requested, managed, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logs.choose_unit(requested, managed, "gpu1")


@pytest.mark.parametrize(("follow", "has_f"), [(False, False), (True, True)])
def test_journal_command(follow, has_f):
    argv = shlex.split(logs.journal_command("tgiops-a", lines=20, follow=follow))
    assert argv[:5] == ["journalctl", "-u", "tgiops-a.service", "-n", "20"]
    assert ("-f" in argv) is has_f


def test_journal_command_refuses_negative_lines():
    with pytest.raises(InputError):
        logs.journal_command("u", lines=-1, follow=False)


def test_parse_unit_list():
    assert logs.parse_unit_list("tgiops-b\n\ntgiops-a\ntgiops-b\n") == ("tgiops-a", "tgiops-b")
