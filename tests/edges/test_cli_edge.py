"""The CLI against real parts (sshd on loopback, moto over HTTP): exit codes and --json shapes
of the outcomes a new user meets (issue 11)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tgiops.cli import main as cli


def run(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
    finally:
        sys.stdin = saved
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


# -- undeploy: a second undeploy has nothing to undo ----------------------------------------


def test_undeploy_of_an_absent_unit_is_done_already(ssh_env, state_home):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["undeploy", *target, "--unit", "tgiops-never-here", "--yes"])
    assert code == 0, err
    assert out.strip() == "testhost: tgiops-never-here already absent; nothing to undo"
    code, out, err = run(["undeploy", *target, "--unit", "tgiops-never-here", "--yes", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert (data["unit"], data["removed"], data["already_absent"]) == (
        "tgiops-never-here",
        True,
        True,
    )


def test_undeploy_without_a_unit_on_a_host_without_any_is_done_already(ssh_env, state_home):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["undeploy", *target, "--yes"])
    assert code == 0, err
    assert "no tgiops unit already absent; nothing to undo" in out


def test_undeploy_refuses_a_unit_file_tgiops_did_not_write(ssh_env, state_home):
    name = f"tgiops-edge-unmanaged-{os.getpid()}"
    path = Path("/etc/systemd/system") / f"{name}.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")  # no managed marker
    try:
        target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
        code, out, err = run(["undeploy", *target, "--unit", name, "--yes", "--json"])
        assert code == 2
        assert "tgiops did not write it" in err
        assert json.loads(out)["error"]["type"] == "InputError"
        assert path.exists()
    finally:
        path.unlink()


# -- secret set / list / delete (moto over HTTP) ---------------------------------------------

TOKEN = "hf_" + "Abcdefghijklmnopqrstuvwxyz01234567"


def sm():
    import boto3

    return boto3.client("secretsmanager")


def test_secret_set_tags_it_and_list_shows_names_never_values(moto):
    code, out, err = run(["secret", "set", "--secret-name", "team/hf", "--json"], stdin=TOKEN)
    assert code == 0, err
    assert json.loads(out) == {"name": "team/hf", "result": "created", "managed": True,
                               "warnings": []}  # fmt: skip
    tags = sm().describe_secret(SecretId="team/hf")["Tags"]
    assert {"Key": "tgiops:managed", "Value": "true"} in tags
    sm().create_secret(Name="someone-elses", SecretString="hf_notours0123456789abcdef")
    sm().create_secret(
        Name="prefix-only",
        SecretString="x",
        Tags=[{"Key": "tgiops:managed-not", "Value": "true"}],
    )

    code, out, err = run(["secret", "list", "--json"])
    assert code == 0, err
    listed = json.loads(out)["secrets"]
    assert [s["name"] for s in listed] == ["team/hf"]
    assert listed[0]["created"] and listed[0]["deletion_date"] is None
    code, text, _ = run(["secret", "list"])
    assert code == 0 and "team/hf" in text and "someone-elses" not in text
    assert TOKEN not in out + text and "notours" not in out + text


def test_secret_set_warns_on_a_token_of_the_wrong_shape_and_stores_it(moto):
    code, out, err = run(["secret", "set", "--secret-name", "odd"], stdin="not-a-token\n")
    assert code == 0
    assert "does not look like a Hugging Face user access token" in err
    assert "not-a-token" not in err + out
    assert sm().get_secret_value(SecretId="odd")["SecretString"] == "not-a-token"


def test_secret_set_on_a_secret_tgiops_did_not_create_says_it_stays_unmanaged(moto):
    sm().create_secret(Name="console-made", SecretString="hf_old0123456789abcdefgh")
    code, out, err = run(["secret", "set", "--secret-name", "console-made"], stdin=TOKEN)
    assert code == 0 and out.strip() == "console-made: updated"
    assert "was not created by tgiops" in err
    tags = sm().describe_secret(SecretId="console-made").get("Tags", [])
    assert not [t for t in tags if t["Key"].startswith("tgiops")]  # still not ours


def test_secret_delete_refuses_a_secret_without_the_tag(moto):
    sm().create_secret(Name="precious", SecretString="hf_precious0123456789abcd")
    code, out, err = run(["secret", "delete", "--secret-name", "precious", "--yes", "--json"])
    assert code == 2
    assert "not created by tgiops" in err
    assert json.loads(out)["error"]["type"] == "InputError"
    assert "DeletedDate" not in sm().describe_secret(SecretId="precious")


def test_secret_delete_schedules_deletion_then_says_already(moto):
    assert run(["secret", "set", "--secret-name", "mine"], stdin=TOKEN)[0] == 0
    code, out, err = run(["secret", "delete", "--secret-name", "mine"])  # stdin: no terminal
    assert code == 2 and "--yes" in err
    assert "DeletedDate" not in sm().describe_secret(SecretId="mine")

    code, out, err = run(["secret", "delete", "--secret-name", "mine", "--yes", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["result"] == "scheduled" and data["deletion_date"]
    assert "DeletedDate" in sm().describe_secret(SecretId="mine")  # recoverable, not gone

    code, out, _ = run(["secret", "delete", "--secret-name", "mine", "--yes"])
    assert code == 0 and "already scheduled for deletion" in out
    code, out, _ = run(["secret", "delete", "--secret-name", "never-was", "--yes"])
    assert code == 0 and out.strip() == "never-was: already absent; nothing to delete"


@pytest.mark.parametrize("name", ["", "has space", "a" * 513, "semi;colon", "ünï"])
def test_secret_names_are_checked_before_aws(name, monkeypatch):
    # AWS points at a closed loopback port: an accepted name would end in "cannot reach".
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for verb in (["set"], ["check"], ["delete", "--yes"]):
        code, _out, err = run(["secret", *verb, f"--secret-name={name}"], stdin=TOKEN)
        assert code == 2, err
        assert "cannot reach" not in err and TOKEN not in err
        assert ("not a Secrets Manager name" if name else "which secret?") in err


def test_secret_delete_needs_a_name():
    code, _, err = run(["secret", "delete", "--yes"])
    assert code == 2 and "--secret-name" in err


# -- logs: --json and --since ----------------------------------------------------------------


@pytest.fixture
def managed_unit_here():
    """A unit file with tgiops' marker on this machine (the sshd's "remote" host), briefly."""
    name = f"tgiops-edge-logs-{os.getpid()}"
    path = Path("/etc/systemd/system") / f"{name}.service"
    path.write_text("# Managed by tgiops (edge test)\n[Service]\nExecStart=/bin/true\n")
    try:
        yield name
    finally:
        path.unlink()


def test_logs_json_is_one_object_with_the_lines(ssh_env, state_home, managed_unit_here):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["logs", *target, "--unit", managed_unit_here, "--json", "--since=-1h"])
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"host", "unit", "lines"}
    assert (data["host"], data["unit"]) == ("testhost", managed_unit_here)
    assert isinstance(data["lines"], list)


def test_logs_since_that_journalctl_refuses_is_bad_input(ssh_env, state_home, managed_unit_here):
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, out, err = run(["logs", *target, "--since", "bogus time", "--json"])
    assert code == 2, err
    assert "--since 'bogus time': journalctl on testhost does not take it" in err
    assert json.loads(out)["exit_code"] == 2


@pytest.mark.parametrize("since", ["$(id)", "-1h; reboot", "`x`", "a\nb", "", "--until=now"])
def test_logs_since_is_checked_before_connecting(since):
    # The ssh_config does not exist: a value wrongly accepted would end in "no such file".
    argv = ["logs", "--host", "h", "--ssh-config", "/nonexistent/ssh_config", f"--since={since}"]
    code, _, err = run(argv)
    assert code == 2
    assert f"--since {since!r}: give a time as journalctl takes it" in err
    assert "no such file" not in err


# -- SSH error texts (issue 11, item 9) ------------------------------------------------------


def test_an_unknown_host_key_names_the_real_keyscan_command(ssh_env, state_home):
    ssh_env.known_hosts.write_text("")
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, _, err = run(["logs", *target])
    assert code == 1
    assert f"ssh-keyscan -p {ssh_env.sshd.port} 127.0.0.1 >> {ssh_env.known_hosts}" in err
    assert "PORT HOST" not in err


def test_a_refused_key_names_the_options_that_exist(ssh_env, state_home, tmp_path):
    other = tmp_path / "other_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, _, err = run(["logs", *target, "--identity", str(other)])
    assert code == 1
    assert "--user, --identity" in err and "--ssh-user" not in err and "--ssh-identity" not in err


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_missing_identity_file_is_named_before_connecting(kind, ssh_env, state_home, tmp_path):
    path = tmp_path / "no_key" if kind == "missing" else tmp_path
    target = ["--host", "testhost", "--ssh-config", str(ssh_env.ssh_config)]
    code, _, err = run(["status", *target, "--identity", str(path)])
    assert code == 2
    expected = "no such file" if kind == "missing" else "is a directory"
    assert f"--identity {path}: {expected}" in err
    assert "authentication" not in err
