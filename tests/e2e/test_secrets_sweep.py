"""A planted token, every verb at -vvv (failing paths too), and nowhere a trace of it.

One test plants a fresh token in Secrets Manager (moto) and drives every verb `tgiops --help`
lists, at ``-vvv``, with ``--json`` and ``--dry-run`` where a verb has them, through successful
and failing paths: a deploy, an unchanged re-deploy, a deploy whose engine crashes and is
rolled back, a missing secret, a plan that does not fit, status with and without a target,
logs, userdata, reconcile, bootstrap and watch-interruption (their failing paths: this machine
is no instance), undeploy; plus in-process failures whose exception texts and tracebacks are
kept. Meanwhile the process lists of the host and of this machine are sampled.

Then it searches: every stdout and stderr, every exception text and traceback, every file
under the isolated HOME and XDG_STATE_HOME, the unit files, the host's whole journal
(``-o verbose``: every field, command lines included) and process-list snapshots. Zero
occurrences. On the host the token may live in one kind of place only: root-only (0600) env
files under /etc/tgiops (the live one and the kept ``.previous``); every file the host wrote
(its overlay's upper layer, journal files included) is checked for that.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from host_faults import kill_sshd
from private_moto import point_boto3_at, private_moto
from process_lists import ProcessLists

from tgiops.commands import deploy
from tgiops.core.engines.tgi import DEFAULT_TGI_VERSION, TgiEngine
from tgiops.core.errors import TgiopsError
from tgiops.core.plan import Overrides
from tgiops.core.request import DeployRequest
from tgiops.edges import resources
from tgiops.edges.aws.base import AwsSettings
from tgiops.edges.aws.client import Aws
from tgiops.edges.ssh import RemoteHost, SSHTarget

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT = "tgiops-phi-3-mini"
# Every verb of `tgiops --help` this sweep drives; a new verb fails the test until added here.
SWEPT_VERBS = {
    "plan",
    "deploy",
    "status",
    "logs",
    "undeploy",
    "userdata",
    "bootstrap",
    "reconcile",
    "watch-interruption",
    "secret",
    "models",
    "cost",
    "monitor",
    "up",
    "down",
    "stacks",
    "alarms",
    "attach-cache-volume",
}


def listed_verbs() -> set[str]:
    from tgiops.cli import main as cli

    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_every_verb_is_swept():
    assert listed_verbs() == SWEPT_VERBS, "add the new verb to the sweep below"


@pytest.fixture
def private_aws(tmp_path, monkeypatch):
    """A moto server of this test's own (this sweep runs for minutes), with the environment
    boto3 reads."""
    import boto3

    with private_moto(tmp_path, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}) as url:
        point_boto3_at(url, tmp_path, monkeypatch)
        yield lambda service: boto3.client(service)


def test_a_planted_token_appears_nowhere(gpu_host, private_aws, tmp_path):
    host = gpu_host("1xT4", fresh=True)  # a T4: --flash-attention on crashes there (rollback)
    token = "hf_PLANTED" + secrets.token_hex(16)
    name = "tgiops-sweep/" + secrets.token_hex(6)
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(state)}
    target = ["--host", host.name, "--ssh-config", host.ssh_config]
    texts: dict[str, str] = {}

    def tgiops(label: str, *args: str, stdin: str | None = None, expect: tuple[int, ...]):
        proc = subprocess.run(
            [sys.executable, "-m", "tgiops.cli", "-vvv", *args],
            input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
        )  # fmt: skip
        texts[f"{label}: stdout"] = proc.stdout
        texts[f"{label}: stderr"] = proc.stderr
        assert proc.returncode in expect, (label, proc.returncode, proc.stderr[-3000:])
        return proc

    # An EC2 instance (moto) that reaches this host, for reconcile.
    ec2 = private_aws("ec2")
    image = "ami-12c6146b"  # moto accepts any id (MOTO_EC2_LOAD_DEFAULT_AMIS=false: none listed)
    instance_id = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": name.replace("/", "-")}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    host.alias(instance_id)

    with ProcessLists(host) as process_lists:
        tgiops("secret set", "secret", "set", "--name", name, stdin=token + "\n", expect=(0,))
        tgiops("secret set again", "secret", "set", "--name", name, "--json", stdin=token,
               expect=(0,))  # fmt: skip
        tgiops("secret check", "secret", "check", "--name", name, "--json", expect=(0,))
        tgiops("secret check absent", "secret", "check", "--name", name + "-absent",
               expect=(1,))  # fmt: skip
        tgiops("plan", "plan", "phi-3-mini", "--instance-type", "g4dn.xlarge", "--json",
               expect=(0,))  # fmt: skip
        tgiops("models", "models", expect=(0,))
        for flags in ([], ["--json"]):
            dry = tgiops(f"deploy --dry-run {flags}", "deploy", "phi-3-mini", "--secret-name",
                         name, "--dry-run", *flags, *target, expect=(0,))  # fmt: skip
            assert "HF_TOKEN" in dry.stdout  # the env file is shown, masked
        tgiops("deploy", "deploy", "phi-3-mini", "--secret-name", name, "--json", *target,
               expect=(0,))  # fmt: skip
        # The search below can find the token: the env file on the host's disk holds it.
        env_file = host.testbed.paths.host_dir(host.name) / f"upper/etc/tgiops/{UNIT}.env"
        assert token in env_file.read_text()
        tgiops("deploy unchanged", "deploy", "phi-3-mini", "--secret-name", name, *target,
               expect=(0,))  # fmt: skip
        crashed = tgiops("deploy crashing", "deploy", "phi-3-mini", "--secret-name", name,
                         "--flash-attention", "on", "--json", *target, expect=(1,))  # fmt: skip
        assert json.loads(crashed.stdout)["rolled_back"] is True
        tgiops(
            "deploy missing secret",
            "deploy",
            "phi-3-mini",
            "--secret-name",
            name + "-x",
            *target,
            expect=(2,),
        )  # fmt: skip  (refused before the host is touched)
        tgiops("deploy too big", "deploy", "llama-3.1-70b", "--secret-name", name, *target,
               expect=(1, 2))  # fmt: skip
        tgiops("status", "status", *target, "--json", expect=(0, 1))
        tgiops("status text", "status", *target, expect=(0, 1))
        tgiops("status recorded", "status", "--json", expect=(0, 1))
        tgiops("cost", "cost", *target, "--json", expect=(0, 1))
        # No tgiops under /opt/tgiops on this host: enable is refused before any change.
        tgiops("monitor enable", "monitor", "enable", *target, "--json", expect=(2,))
        tgiops("monitor disable", "monitor", "disable", *target, "--json", expect=(0,))
        tgiops("monitor show", "monitor", "show", "--json", expect=(1,))
        tgiops("stacks", "stacks", "--json", expect=(0,))
        stack = "sweep" + secrets.token_hex(3)
        ami = ec2.register_image(Name=stack, RootDeviceName="/dev/sda1")["ImageId"]
        tgiops("up --dry-run", "up", "phi-3-mini", "--name", stack, "--secret-name", name,
               "--ami", ami, "--preinstalled", "--dry-run", "--json", expect=(0,))  # fmt: skip
        tgiops("down nothing", "down", stack, "--yes", "--json", expect=(0,))
        tgiops("alarms --dry-run", "alarms", "set", "--stack", stack, "--budget-usd-month",
               "10", "--billing-usd", "10", "--dry-run", "--json", expect=(0, 1))  # fmt: skip
        tgiops("alarms set", "alarms", "set", "--stack", stack, "--json", expect=(0,))
        tgiops("alarms list", "alarms", "list", "--stack", stack, expect=(0,))
        tgiops("alarms bad", "alarms", "set", "--stack", stack, "--idle-hours", "9", "--json",
               expect=(2,))  # fmt: skip
        tgiops("alarms delete", "alarms", "delete", "--stack", stack, "--json", expect=(0,))
        tgiops("logs", "logs", *target, "-n", "1000", expect=(0,))
        for flags in ([], ["--json"], ["--iam-policy"]):
            tgiops(f"userdata {flags}", "userdata", "phi-3-mini", "--secret-name", name,
                   "--preinstalled", *flags, expect=(0,))  # fmt: skip
        tgiops("reconcile", "reconcile", "--name", name.replace("/", "-"), "--ssh-config",
               host.ssh_config, "--json", expect=(0, 1))  # fmt: skip
        tgiops("bootstrap", "bootstrap", "--config", str(tmp_path / "absent.json"),
               "--imds-endpoint", "http://127.0.0.1:9", "--json", expect=(0, 1, 2))  # fmt: skip
        # no instance metadata here: refused or failed, never a leak
        tgiops("attach-cache-volume", "attach-cache-volume", "--stack", stack, "--gib", "10",
               "--throughput", "125", "--imds-endpoint", "http://127.0.0.1:9", "--wait-timeout",
               "1", "--json", expect=(1, 2))  # fmt: skip
        tgiops("watch-interruption", "watch-interruption", "--once", "--imds-endpoint",
               "http://127.0.0.1:9", "--data-dir", str(tmp_path / "none"), "--json",
               expect=(0, 1))  # fmt: skip

        # In-process failures: exception texts, reprs and whole tracebacks (with causes).
        def failing(action) -> None:
            try:
                action()
            except TgiopsError as exc:
                shown = f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))
                texts[f"exception {len(texts)} {type(exc).__name__}"] = shown
            else:
                raise AssertionError("expected a failure")

        aws_edge = Aws(AwsSettings())
        assert aws_edge.get_secret(name) == token
        failing(lambda: aws_edge.get_secret(name + "-absent"))
        failing(lambda: Aws(AwsSettings(profile="absent-profile")).get_secret(name))

        def cut_deploy() -> None:
            request = DeployRequest(
                model=resources.load_catalog()["phi-3-mini"],
                engine=TgiEngine.release(DEFAULT_TGI_VERSION),
                overrides=Overrides(max_total_tokens=2048),  # a change: it gets to "installing"
                token_secret=name,
            )
            target_ssh = SSHTarget(host.name, ssh_config_path=host.ssh_config)

            def on_progress(message: str) -> None:
                if message.startswith("installing"):
                    kill_sshd(host)  # the connection is cut mid-deploy

            with RemoteHost(target_ssh) as remote:
                deploy.deploy(
                    remote,
                    request,
                    get_secret=aws_edge.get_secret,
                    template_text=(resources.shipped_path("unit_templates")
                                   / "tgi.service.j2").read_text(),
                    on_progress=on_progress,
                )  # fmt: skip

        failing(cut_deploy)
        tgiops("undeploy", "undeploy", "--yes", "--json", *target, expect=(0,))

    # --- the search ------------------------------------------------------------------------
    for path in [*home.rglob("*"), *state.rglob("*")]:
        if path.is_file():
            texts[f"local file {path}"] = path.read_text(errors="replace")
    texts["unit files"] = host.run(
        "cat /etc/systemd/system/tgiops*.service* 2>/dev/null", check=False
    ).stdout
    texts["journal"] = host.run("journalctl -o verbose --no-pager", check=False).stdout
    texts["process lists"] = "\n".join(process_lists.snapshots)
    assert len(process_lists.snapshots) > 10, "the process lists were hardly sampled"
    assert texts["journal"] and "Starting Webserver" in texts["journal"]
    assert sum(where.startswith("exception ") for where in texts) == 3, list(texts)
    leaks = [where for where, text in texts.items() if token in text]
    assert not leaks, f"the token leaked into: {leaks}"

    # On the host: only root-only env files under /etc/tgiops may hold it.
    upper = host.testbed.paths.host_dir(host.name) / "upper"
    holders = [p for p in upper.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    for path in holders:
        where = "/" + str(path.relative_to(upper))
        assert where.startswith("/etc/tgiops/") and ".env" in where, where
        assert path.stat().st_mode & 0o777 == 0o600, where
