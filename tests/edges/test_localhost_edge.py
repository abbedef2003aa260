"""Edges of the spot-relaunch verbs: LocalHost (this machine), the record on a data volume,
the record on EC2 / Auto Scaling tags and the Elastic IP (moto over HTTP), a reconcile pass
with no live instance."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from tgiops.commands.bootstrap import point_elastic_ip
from tgiops.commands.reconcile import ReconcileOptions, _GroupTags, _lambda_ssh_config, reconcile
from tgiops.core import record
from tgiops.core.errors import RemoteCommandError, TgiopsError
from tgiops.edges import record_store, resources
from tgiops.edges.aws.base import AwsSettings
from tgiops.edges.aws.client import Aws
from tgiops.edges.localhost import LocalHost, seconds_since_boot
from tgiops.edges.ssh import FileUpload, SSHTarget

if TYPE_CHECKING:
    from conftest import Moto

CATALOG = resources.load_catalog(environ={})


@pytest.fixture(autouse=True)
def _data_dirs_under_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests keep the "data volume" in pytest's tmp_path on this machine; tgiops allows
    data dirs only under DATA_DIR_PREFIXES (issue 12), so the test's own directory joins them."""
    from tgiops.core import render

    prefixes = (*getattr(render, "DATA_DIR_PREFIXES", ()), f"{tmp_path}/")
    monkeypatch.setattr(render, "DATA_DIR_PREFIXES", prefixes, raising=False)
    monkeypatch.setattr(render, "DATA_DIR_MOUNT_POINTS", (str(tmp_path),), raising=False)


def a_record(data_dir: str, **spec_changes) -> record.DeploymentRecord:
    spec = record.DeploymentSpec(
        model="phi-3-mini",
        repo_id="microsoft/Phi-3-mini-4k-instruct",
        tgi_version="3.3.7",
        unit="tgiops-phi-3-mini",
        data_dir=data_dir,
        **spec_changes,
    )
    deployed = record.Deployed("img:1", 1, None, "bfloat16", 3072, 4096, "1x A10G", False, "t0")
    return record.DeploymentRecord(spec=spec, deployed=deployed)


# -- LocalHost ---------------------------------------------------------------------------------


def test_local_host_runs_commands_like_a_remote_one():
    host = LocalHost("here")
    assert host.run(["printf", "%s", "a b"]).stdout == "a b"
    assert host.run("echo $((1 + 2))").stdout.strip() == "3"
    assert host.run_script("read x; echo got $x", check=False).exit_code == 0
    with pytest.raises(RemoteCommandError) as failed:
        host.run("echo oops >&2; exit 3")
    assert failed.value.remote_exit_code == 3 and "oops" in str(failed.value)
    assert host.round_trips == 4


def test_local_host_writes_atomically_with_the_mode_first(tmp_path):
    host = LocalHost()
    target = tmp_path / "secret.env"
    host.put_file_atomic(str(target), "HF_TOKEN=x\n", mode=0o600)
    assert target.read_text() == "HF_TOKEN=x\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["secret.env"]  # no temporary file left
    assert host.read_file(str(target)) == b"HF_TOKEN=x\n"
    assert host.read_file(str(tmp_path / "absent")) is None
    with pytest.raises(TgiopsError, match="cannot write"):
        host.put_file_atomic(str(tmp_path / "no-dir" / "f"), "x")


def test_local_host_lock_is_exclusive(tmp_path):
    host = LocalHost()
    lock = str(tmp_path / "lock")
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with host.hold_lock(lock, timeout_s=5):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert entered.wait(5)
    with (
        pytest.raises(TgiopsError, match="locked by another tgiops run"),
        LocalHost().hold_lock(lock, timeout_s=0.5),
    ):
        pass
    release.set()
    thread.join()
    with LocalHost().hold_lock(lock, timeout_s=1):
        pass
    with host.forward_local_port(8080) as port:
        assert port == 8080


def test_seconds_since_boot_reads_pid_1():
    age = seconds_since_boot(LocalHost())
    assert age is not None and age > 0


def test_local_host_installs_staged_files_between_before_and_after(tmp_path):
    host = LocalHost()
    env, unit, log = tmp_path / "x.env", tmp_path / "x.service", tmp_path / "log"
    env.write_text("OLD\n")
    files = [FileUpload(str(env), b"NEW\n", 0o600), FileUpload(str(unit), b"U\n")]
    seen: list[bool] = []
    with pytest.raises(RemoteCommandError):  # a failing `before`: nothing replaced, no leftovers
        host.install_files(
            files,
            before="false\n",
            on_uploaded=lambda: seen.append(env.read_text() == "OLD\n" and not unit.exists()),
        )
    assert seen == [True]  # "uploaded": nothing visible yet
    assert env.read_text() == "OLD\n" and sorted(os.listdir(tmp_path)) == ["x.env"]
    host.install_files(files, before=f"cat {env} > {log}\n", after=f"cat {env} {unit} >> {log}\n")
    assert log.read_text() == "OLD\nNEW\nU\n"
    assert sorted(os.listdir(tmp_path)) == ["log", "x.env", "x.service"]


# -- the record on a data volume --------------------------------------------------------------


def test_the_record_is_written_once_and_keeps_the_last_stop(tmp_path):
    host = LocalHost()
    rec = a_record(str(tmp_path))
    path = Path(record.record_path(str(tmp_path), rec.unit))
    assert record_store.save_on_host(host, rec) is True
    inode = path.stat().st_ino
    later = replace(rec, deployed=replace(rec.deployed, at="t1", tgiops_version="2"))
    assert record_store.save_on_host(host, later) is False  # the same deployment: nothing written
    assert path.stat().st_ino == inode
    stop = record.LastStop("spot interruption notice", "t2", "i-1", "terminate", "t3")
    assert record_store.note_stop(host, str(tmp_path), rec.unit, stop) is True
    changed = replace(rec, spec=replace(rec.spec, port=9000))
    assert record_store.save_on_host(host, changed) is True
    stored = json.loads(path.read_text())
    assert stored["spec"]["port"] == 9000
    assert stored["last_stop"]["action"] == "terminate"  # history kept across deploys
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_read_records_skips_an_unreadable_one(tmp_path, caplog):
    host = LocalHost()
    record_store.save_on_host(host, a_record(str(tmp_path)))
    Path(record.record_dir(str(tmp_path)), "broken.json").write_text("{not json")
    found = record_store.read_records(host, str(tmp_path))
    assert [r.unit for r in found] == ["tgiops-phi-3-mini"]
    assert "broken.json" in caplog.text
    assert record_store.read_records(host, str(tmp_path / "empty")) == []


# -- tags, the Elastic IP, a pass without instances (moto) -----------------------------------


def make_group(name: str, desired: int) -> None:
    boto3.client("ec2").create_launch_template(
        LaunchTemplateName=f"{name}-lt",
        LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "g5.xlarge"},
    )
    boto3.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{name}-lt", "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=desired,
        AvailabilityZones=["us-east-1a"],
    )


def test_the_record_round_trips_through_ec2_and_group_tags(moto: Moto, tmp_path):
    make_group("llm", desired=1)
    aws = Aws(AwsSettings())
    rec = a_record("/var/lib/tgiops/data")  # an alias long enough for several chunks:
    rec = replace(rec, spec=replace(rec.spec, model="my-" + "long-alias-" * 20))
    [instance] = aws.find_instances(asg_name="llm")
    aws.tag_instance(instance.instance_id, record.instance_tags(rec))
    [found] = aws.find_instances(tag_filters={"tgiops:managed": "true"})
    assert int(found.tags["tgiops:record:tgiops-phi-3-mini"]) >= 2
    [back] = record.records_from_tags(found.tags, origin=found.instance_id)
    assert back.spec == rec.spec  # the operator's fields are the defaults here
    group = _GroupTags(aws, "llm")
    assert group.ensure([rec]) is True
    assert group.ensure([rec]) is False  # already there: no write
    [from_group] = record.records_from_tags(group.read() or {}, origin="llm")
    assert from_group.spec == rec.spec
    assert _GroupTags(aws, "gone").ensure([rec]) is False  # no such group: nothing to tag


def test_the_elastic_ip_moves_once(moto: Moto):
    make_group("llm", desired=2)
    aws = Aws(AwsSettings())
    first, second = (i.instance_id for i in aws.find_instances(asg_name="llm"))
    allocation = boto3.client("ec2").allocate_address(Domain="vpc")["AllocationId"]
    moved = point_elastic_ip(aws, allocation, first)
    assert moved.changed and moved.before is None and moved.after == first
    assert point_elastic_ip(aws, allocation, first).changed is False
    over = point_elastic_ip(aws, allocation, second)
    assert over.changed and over.before == first and over.after == second


def test_a_pass_with_no_live_instance_changes_nothing_and_says_why(moto: Moto):
    make_group("empty", desired=0)
    allocation = boto3.client("ec2").allocate_address(Domain="vpc")["AllocationId"]
    result = reconcile(
        Aws(AwsSettings()),
        ReconcileOptions(asg_name="empty", elastic_ip=allocation),
        ssh_template=SSHTarget(destination=""),
        catalog=CATALOG,
        template_text="",
    )
    assert result.instances == () and result.healthy is False and result.changed is False
    assert "no InService instance" in result.notes[0]
    assert result.elastic_ip is not None and result.elastic_ip.changed is False


def test_a_lambda_gets_its_ssh_key_from_secrets_manager(moto: Moto, tmp_path):
    aws = Aws(AwsSettings())
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    aws.put_secret("tgiops/ssh-key", key)
    settings = {"TGIOPS_SSH_KEY_SECRET": "tgiops/ssh-key", "TGIOPS_TMP": str(tmp_path)}
    config = _lambda_ssh_config(aws, settings)
    assert config is not None
    key_file = tmp_path / "tgiops-ssh" / "id"
    assert key_file.read_text() == key + "\n"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    text = Path(config).read_text()
    assert f"IdentityFile {key_file}" in text and "UserKnownHostsFile" in text
    assert _lambda_ssh_config(aws, {}) is None


def test_cli_reconcile_says_in_words_that_nothing_is_live(moto: Moto, tmp_path):
    import subprocess
    import sys

    make_group("empty", desired=0)
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "tgiops.cli", "reconcile", "--asg", "empty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("Auto Scaling group empty: 0 live instance(s)")
    assert "no InService instance" in proc.stdout and "NOT healthy" in proc.stdout


def test_a_lambda_refuses_unknown_host_keys_and_ignores_the_event(
    moto: Moto, ssh_env, tmp_path, monkeypatch
):
    """Issue 12.4: the function accepted new host keys by default, and an invoking event could
    override every TGIOPS_* setting (here: turn accept-new back on, point at another group)."""
    from tgiops.commands.reconcile import lambda_handler

    make_group("llm", desired=1)
    make_group("other", desired=0)
    [instance] = Aws(AwsSettings()).find_instances(asg_name="llm")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host {instance.instance_id}\n    HostName 127.0.0.1\n    Port {ssh_env.sshd.port}\n"
        f"    User {ssh_env.sshd.user}\n    IdentityFile {ssh_env.sshd.client_key}\n"
        f"    UserKnownHostsFile {known_hosts}\n"
    )
    monkeypatch.setenv("TGIOPS_ASG", "llm")
    monkeypatch.setenv("TGIOPS_SSH_CONFIG", str(config))
    monkeypatch.delenv("TGIOPS_ACCEPT_NEW_HOST_KEY", raising=False)
    event = {"tgiops": {"accept_new_host_key": "1", "asg": "other"}}
    result = lambda_handler(event, None)
    assert result["selector"] == "Auto Scaling group llm"
    [outcome] = result["instances"]
    assert "is not in" in outcome["failure"] and ssh_env.sshd.host_fingerprint in outcome["failure"]
    assert known_hosts.read_text() == ""  # nothing recorded
