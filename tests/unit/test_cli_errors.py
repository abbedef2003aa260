"""What a new user hits (issue 11): every failure is one line, the documented exit code, and with
--json one error object on stdout. Each case here was a traceback or a misleading line before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bad_input_properties import run

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "127.0.0.1:9"  # discard port: nothing listens on loopback there


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("tgiops: error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def bad_ssh_config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text("Host x\n  HostName\n")  # paramiko: ConfigParseError "Unparsable line"
    return path


@pytest.mark.parametrize(
    "verb",
    [
        ["status"],
        ["deploy", "phi-3-mini", "--no-token"],
        ["logs"],
        ["undeploy", "--yes"],
    ],
)
def test_a_malformed_ssh_config_is_bad_input_naming_it(verb, bad_ssh_config):
    code, out, err = run([*verb, "--host", "x", "--ssh-config", str(bad_ssh_config)])
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"--ssh-config {bad_ssh_config}: not a valid ssh_config" in line


def test_the_ssh_config_from_the_environment_is_named_as_such(bad_ssh_config):
    code, _, err = run(["status", "--host", "x"], env={"TGIOPS_SSH_CONFIG": str(bad_ssh_config)})
    assert code == 2
    assert f"$TGIOPS_SSH_CONFIG ({bad_ssh_config})" in one_error_line(err)
    assert "--ssh-config" not in err


def test_an_ssh_config_directory_is_not_called_missing(tmp_path):
    code, _, err = run(["status", "--host", "x", "--ssh-config", str(tmp_path)])
    assert code == 2
    line = one_error_line(err)
    assert "is a directory" in line and "no such file" not in line


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_an_empty_host_is_bad_input(value, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("")
    code, _, err = run(["status", f"--host={value}", "--ssh-config", str(config)])
    assert code == 2
    assert f"--host {value!r}" in one_error_line(err)


def test_a_model_config_that_is_not_utf8_is_bad_input(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe{}")
    code, out, err = run(["plan", "--model-config", str(path), "--instance-type", "g5.xlarge"])
    assert code == 2 and out == ""
    assert f"cannot read {path}: not UTF-8 text" in one_error_line(err)


@pytest.mark.parametrize("verb", [["bootstrap"], ["watch-interruption", "--once"]])
@pytest.mark.parametrize("value", ["notaurl", "ftp://x", "http://x:99999", "http://"])
def test_a_bad_imds_endpoint_is_bad_input(verb, value):
    code, _, err = run([*verb, "--imds-endpoint", value])
    assert code == 2
    assert f"--imds-endpoint {value!r}" in one_error_line(err)


def test_a_bad_imds_endpoint_from_the_environment_names_the_variable():
    code, _, err = run(
        ["watch-interruption", "--once"], env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": "nope"}
    )
    assert code == 2
    assert "$AWS_EC2_METADATA_SERVICE_ENDPOINT 'nope'" in one_error_line(err)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_stdout_on_a_full_disk_is_one_line_exit_2(json_flag):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "tgiops.cli", "models", *json_flag],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "tgiops: error: cannot write the output: No space left on device\n"


def test_a_closed_pipe_is_quiet():
    proc = subprocess.run(
        # `true` exits before Python has started: every write meets a closed pipe (EPIPE)
        f"{sys.executable} -m tgiops.cli models --json | true; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.stderr == ""  # no traceback, no "Exception ignored", nothing to say
    assert proc.returncode == 2


def test_an_unexpected_exception_is_one_redacted_line(monkeypatch):
    def boom(args):
        raise RuntimeError("kaput hf_abcdefghijklmnopqrstuvwxyz")

    from tgiops.cli import plan as plan_verbs

    monkeypatch.setattr(plan_verbs, "cmd_models", boom)
    code, out, err = run(["models", "--json"])
    assert code == 1
    line = one_error_line(err)
    assert "RuntimeError: kaput" in line and "abcdefghijklmnop" not in err + out
    assert json.loads(out)["error"]["type"] == "InternalError"


def test_a_mistyped_verb_gets_did_you_mean_and_no_doubled_prefix():
    code, out, err = run(["stauts"])
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "did you mean 'status'" in line  # (or 'stacks': a verb as close)
    assert "tgiops: error: tgiops" not in err


def test_a_mistyped_choice_of_an_option_gets_did_you_mean():
    code, _, err = run(["plan", "phi-3-mini", "--instance-type", "g5.xlarge", "--dtype", "bfloat"])
    assert code == 2
    assert "did you mean 'bfloat16'" in one_error_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["stauts", "--json"],
        ["plan", "--json"],
        ["plan", "nope", "--instance-type", "g5.xlarge", "--json"],
        ["models", "--catalog", "/nonexistent.yaml", "--json"],
        ["plan", "phi-3-mini", "--instance-type", "g5.xlarge", "--num-shard", "x", "--jso"],
    ],
)
def test_every_error_with_json_is_one_error_object(argv):
    code, out, err = run(argv)
    assert code == 2
    data = json.loads(out)
    assert data["ok"] is False and data["exit_code"] == 2
    assert set(data["error"]) == {"type", "message"}
    assert one_error_line(err) == "tgiops: error: " + data["error"]["message"]


def test_a_plan_that_does_not_fit_is_refused_by_userdata_with_the_plan_in_json():
    argv = ["userdata", "llama-3.1-70b", "--instance-type", "g4dn.xlarge", "--json"]
    code, out, err = run(argv)
    assert code == 2
    data = json.loads(out)
    assert data["error"]["type"] == "DoesNotFitError"
    assert data["plan"]["fits"] is False and data["plan"]["alternatives"]
    assert "does not fit g4dn.xlarge" in one_error_line(err)


def test_no_verb_is_exit_2():
    code, _, err = run([])
    assert code == 2 and "usage:" in err


def test_an_unknown_option_gets_the_option_it_resembles():
    code, _, err = run(
        ["deploy", "phi-3-mini", "--host", "h", "--ssh-user", "u", "--ssh-identity=k"]
    )
    assert code == 2
    line = one_error_line(err)
    assert "--ssh-user: did you mean --user?" in line
    assert "--ssh-identity: did you mean --identity?" in line
    assert "see `tgiops deploy --help`" in line


def test_a_model_config_without_a_repository_names_model_id(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_hidden_layers": 32,
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "vocab_size": 32000,
                "max_position_embeddings": 4096,
                "intermediate_size": 11008,
            }
        )
    )
    code, _, err = run(["plan", "--model-config", str(path), "--instance-type", "g5.xlarge"])
    assert code == 2
    assert "--model-id ORG/NAME" in one_error_line(err)


def test_reconcile_watch_json_prints_an_error_object_for_a_failed_pass(tmp_path):
    import signal

    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=f"http://{CLOSED}",
        AWS_MAX_ATTEMPTS="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "absent"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "absent"),
        HOME=str(tmp_path),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tgiops.cli", "reconcile", "--asg", "g", "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        import select

        # The first pass fails at once (closed port); never wait on a line that does not come.
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no JSON line for the failed pass within 30 s"
        first = proc.stdout.readline()
        data = json.loads(first)
        assert data["ok"] is False and data["error"]["type"] == "AWSError"
        assert "cannot reach the AWS endpoint" in data["error"]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert proc.returncode == 130  # Ctrl-C before any pass succeeded: interrupted
    last = json.loads(rest.strip().splitlines()[-1])  # JSON lines to the end
    assert last["exit_code"] == 130 and last["error"]["type"] == "Interrupted"


@pytest.mark.parametrize("verb", [["secret", "delete", "--secret-name", "x"], ["secret", "list"]])
def test_a_region_that_is_no_region_name_is_bad_input(verb):
    """Found by test_cli_properties: boto3's InvalidRegionError escaped as 'unexpected'."""
    code, _, err = run([*verb, "--region", "0"])
    assert code == 2, err
    assert "--region '0' is not an AWS region name" in err


def test_a_region_no_partition_has_is_refused_before_anything_runs():
    """`plan --region mars-1` ranked instance types for a region that does not exist; AWS verbs
    failed later on a DNS error. botocore's endpoint data is the list (no network)."""
    code, out, err = run(["plan", "llama-3.1-8b", "--region", "mars-1"])
    assert code == 2 and out == "", err
    assert "--region 'mars-1' is not an AWS region name" in err
    code, out, _ = run(["plan", "llama-3.1-8b", "--region", "us-est-1", "--json"])
    assert code == 2
    error = json.loads(out)["error"]
    assert error["type"] == "InputError" and "did you mean" in error["message"]
    assert "us-east-1" in error["message"].split("did you mean", 1)[1]
    code, out, err = run(["plan", "llama-3.1-8b", "--region", "ap-southeast-2"])
    assert code == 0, err
    assert "instance type(s) fit" in out


def test_an_option_after_the_double_dash_is_a_word_and_the_message_says_so():
    """Found by test_cli_properties: `deploy -- M --json` suggested '--json: did you mean
    --json?'."""
    code, _, err = run(["deploy", "--", "phi-3-mini", "--json"])
    assert code == 2
    assert "did you mean --json" not in err
    assert "--json comes after `--`" in err
