"""Shell metacharacters in every user-supplied string that can reach a host: nothing executes.

Each payload tries to create a marker file, on the host and on this machine. A value is either
refused before anything is touched (exit 2, the value named, the host unchanged), or it is
carried as one quoted argument (the deploy works and the value shows up verbatim where it
belongs). After every case no marker exists anywhere.

Strings that reach a host: the unit name (--unit, or derived from a catalog alias), the data
directory (--data-dir), the model id (--model-id with --model-config, or a catalog's repo_id),
the token (its value lands in the env file), unit names given to status/logs/undeploy, and the
SSH destination itself. tgiops has no option for extra launcher arguments (the planner owns the
launcher's flags), so there is none to test.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MARKER_DIR = "/tmp/tgiops-pwned"
PAYLOADS = [
    pytest.param("x; touch {m}-semicolon", id="semicolon"),
    pytest.param("$(touch {m}-subst)", id="command-substitution"),
    pytest.param("`touch {m}-backtick`", id="backticks"),
    pytest.param("x' ; touch {m}-squote ; '", id="single-quote"),
    pytest.param('x" ; touch {m}-dquote ; "', id="double-quote"),
    pytest.param("x\ntouch {m}-newline", id="newline"),
    pytest.param("x && touch {m}-and | tee {m}-pipe", id="and-pipe"),
    pytest.param("%n $HOME ${{PATH}}", id="systemd-specifiers"),
]
GOOD_ENTRY = yaml.safe_load((ROOT / "models.yaml").read_text())["models"]["phi-3-mini"]


def tgiops(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def shared_host(testbed):
    """One host for the whole module, serving phi-3-mini (most cases change nothing on it)."""
    host = testbed.up("1xA10G", name=f"meta-{secrets.token_hex(3)}")
    proc = tgiops("deploy", "phi-3-mini", "--no-token", "--host", host.name,
                  "--ssh-config", host.ssh_config)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    yield host
    testbed.down(host.name)


@pytest.fixture
def env(tmp_path):
    import os

    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def fingerprint(host) -> str:
    return host.run(
        "find /etc/systemd/system /etc/tgiops /var/lib/tgiops -maxdepth 2 -type f 2>/dev/null "
        "| sort | xargs -r sha256sum; systemctl list-units --all --no-legend 'tgiops-*'"
    ).stdout


def assert_nothing_ran(host) -> None:
    remote = host.run(f"ls -a {MARKER_DIR}* 2>/dev/null; ls /tmp", check=False).stdout
    assert "pwned" not in remote, f"a payload ran on {host.name}: {remote}"
    local = list(Path("/tmp").glob("tgiops-pwned*"))
    assert not local, f"a payload ran here: {local}"


def payload_of(template: str) -> str:
    return template.format(m=MARKER_DIR)


def assert_refused(proc, value: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert (
        value in proc.stderr or repr(value) in proc.stderr or repr(value)[1:-1] in (proc.stderr)
    ), proc.stderr


@pytest.mark.parametrize("template", PAYLOADS)
def test_values_for_the_unit_are_refused_and_nothing_runs(shared_host, env, template, tmp_path):
    host, value = shared_host, payload_of(template)
    before = fingerprint(host)
    target = ["--host", host.name, "--ssh-config", host.ssh_config]
    config = tmp_path / "config.json"
    config.write_text((ROOT / "scripts/tgi_emulator/hub/microsoft--Phi-3-mini-4k-instruct/"
                       "config.json").read_text())  # fmt: skip
    catalog_alias = tmp_path / "alias.yaml"
    catalog_alias.write_text(yaml.safe_dump({"models": {value: GOOD_ENTRY}}))
    catalog_repo = tmp_path / "repo.yaml"
    catalog_repo.write_text(
        yaml.safe_dump({"models": {"mine": dict(GOOD_ENTRY, repo_id=f"org/{value}")}})
    )
    cases = {
        "--unit": (["deploy", "phi-3-mini", "--no-token", "--unit", value, *target], value),
        "--data-dir": (
            ["deploy", "phi-3-mini", "--no-token", "--data-dir", f"/d/{value}", *target],
            f"/d/{value}",
        ),
        "--model-id": (
            ["deploy", "--model-config", str(config), "--model-id", f"org/{value}",
             "--no-token", *target],
            f"org/{value}",
        ),
        "catalog alias": (
            ["deploy", value, "--catalog", str(catalog_alias), "--no-token", *target], value
        ),
        "catalog repo_id": (
            ["deploy", "mine", "--catalog", str(catalog_repo), "--no-token", *target],
            f"org/{value}",
        ),
        "status --unit": (["status", "--unit", value, *target], value),
        "logs --unit": (["logs", "--unit", value, *target], value),
        "undeploy --unit": (["undeploy", "--yes", "--unit", value, *target], value),
    }  # fmt: skip
    for what, (argv, named) in cases.items():
        proc = tgiops(*argv, env=env)
        assert proc.returncode == 2, (what, proc.returncode, proc.stderr)
        assert_refused(proc, named)
    assert fingerprint(host) == before
    assert_nothing_ran(host)


@pytest.mark.parametrize("template", PAYLOADS[:3])
def test_a_token_with_metacharacters_is_refused_before_the_host(shared_host, aws, env, template):
    """A token stored outside tgiops (tgiops' own `secret set` refuses it already)."""
    host, value = shared_host, "hf_" + payload_of(template)
    refused = tgiops("secret", "set", "--name", "tgiops-test/typed", env=env, stdin=value)
    assert refused.returncode == 2 and value not in refused.stderr, refused.stderr
    name = "tgiops-test/" + secrets.token_hex(6)
    aws.client("secretsmanager").create_secret(Name=name, SecretString=value)
    before = fingerprint(host)
    proc = tgiops("deploy", "phi-3-mini", "--secret-name", name, "--host", host.name,
                  "--ssh-config", host.ssh_config, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "characters an EnvironmentFile cannot carry" in proc.stderr
    assert value not in proc.stderr + proc.stdout  # refused without echoing the secret
    assert fingerprint(host) == before
    assert_nothing_ran(host)


def test_metacharacters_in_the_ssh_destination_are_one_argument(shared_host, env, tmp_path):
    """The destination never meets a shell: an ssh_config maps any name to the host, and a
    name full of metacharacters deploys like any other."""
    host = shared_host
    value = f"h;touch {MARKER_DIR}-dest $(touch {MARKER_DIR}-dest2) `touch {MARKER_DIR}-dest3`"
    config = Path(host.ssh_config).read_text()
    identity = next(
        line.split(None, 1)[1] for line in config.splitlines() if "IdentityFile" in line
    )
    (tmp_path / "ssh_config").write_text(
        f"Host *\n  HostName {host.address}\n  User root\n  IdentityFile {identity}\n"
        f"  UserKnownHostsFile {host.info.known_hosts}\n  StrictHostKeyChecking yes\n"
    )
    proc = tgiops("deploy", "phi-3-mini", "--no-token", "--max-total-tokens", "3000",
                  "--host", value, "--ssh-config", str(tmp_path / "ssh_config"), "--json",
                  env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["host"] == value and result["healthy"]
    assert (
        json.loads(host.run("curl -s http://127.0.0.1:8080/info").stdout)["max_total_tokens"]
        == 3000
    )
    assert_nothing_ran(host)
