"""`tgiops userdata`, the boot-time units, the IAM policy and the spot verbs' input checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from tgiops.commands import bootstrap
from tgiops.commands.reconcile import ReconcileOptions
from tgiops.core import record
from tgiops.core.catalog import find_model
from tgiops.core.errors import InputError
from tgiops.edges import resources

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = resources.shipped_path("unit_templates")
CATALOG = resources.load_catalog(environ={})
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/llm/0123456789abcdef"


def a_record(**spec_changes) -> record.DeploymentRecord:
    model = find_model(CATALOG, "phi-3-mini")
    spec = record.DeploymentSpec(
        model=model.alias,
        repo_id=model.repo_id,
        tgi_version="3.3.7",
        unit="tgiops-phi-3-mini",
        token_secret="team/hf-token",
        **spec_changes,
    )
    return record.DeploymentRecord(spec=spec)


def render(options: bootstrap.UserdataOptions) -> str:
    return bootstrap.render_userdata(
        options,
        userdata_template=(TEMPLATES / "userdata.sh.j2").read_text(),
        bootstrap_unit_template=(TEMPLATES / "tgiops-bootstrap.service.j2").read_text(),
        watch_unit_template=(TEMPLATES / "tgiops-watch-interruption.service.j2").read_text(),
    )


def tgiops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tgiops.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="plain"),
        pytest.param({"efs_id": "fs-0123456789abcdef0"}, id="efs"),
        pytest.param({"data_device": "/dev/nvme1n1", "watch_interruption": False}, id="device"),
        pytest.param(
            {"elastic_ip": "eipalloc-0abc12345", "env": {"HTTPS_PROXY": "http://p:3128"}},
            id="eip-proxy",
        ),
    ],
)
def test_user_data_is_valid_bash_and_carries_the_record(changes):
    rec = a_record()
    options = bootstrap.UserdataOptions(
        record=rec, region="eu-west-1", preinstalled=True, **changes
    )
    text = render(options)
    assert text.startswith("#!/bin/bash\n")
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    config = bootstrap.config_from_userdata(text, origin="user data")
    assert config is not None and config.records == (rec,)
    assert config.region == "eu-west-1"
    assert config.elastic_ip == changes.get("elastic_ip")
    assert ("mountpoint -q" in text) == bool(changes.get("efs_id") or changes.get("data_device"))
    assert ("tgiops-watch-interruption.service" in text) == changes.get("watch_interruption", True)
    assert "secret:team/hf-token-??????" in text  # the policy in the header names the secret


@pytest.mark.parametrize(
    "changes,needle",
    [
        pytest.param({"env": {"HF_TOKEN": "x"}}, "must not carry secrets", id="secret-env"),
        pytest.param({"env": {"bad name": "x"}}, "not an environment variable", id="env-name"),
        pytest.param({"env": {"A": "x\ny"}}, "one line", id="env-newline"),
        pytest.param({"efs_id": "fs-1; reboot"}, "not an EFS file system id", id="efs"),
        pytest.param({"data_device": "/dev/$(id)"}, "not a /dev/", id="device"),
        pytest.param({"efs_id": "fs-0123abcd", "data_device": "/dev/xvdf"}, "not both", id="both"),
        pytest.param({"elastic_ip": "1.2.3.4"}, "allocation id", id="eip"),
        pytest.param({"pip_spec": "tgiops\n; curl x"}, "one line", id="pip-spec"),
    ],
)
def test_bad_user_data_options_are_input_errors(changes, needle):
    changes = {"preinstalled": "pip_spec" not in changes, **changes}
    with pytest.raises(InputError, match=needle):
        bootstrap.UserdataOptions(record=a_record(), **changes)


def test_iam_policy_is_minimal():
    policy = bootstrap.iam_policy(
        ["team/hf-token"], "eipalloc-0abc12345", region="us-east-2", asg_name="llm"
    )
    actions = [s["Action"] for s in policy["Statement"]]
    assert actions == [
        "secretsmanager:GetSecretValue",
        "ec2:AssociateAddress",
        "ec2:AssociateAddress",
        "ec2:DescribeAddresses",
    ]
    # Issue 12.9: the address only to instances of the group, not to every instance.
    at_instance = policy["Statement"][2]
    assert at_instance["Resource"] == "arn:aws:ec2:us-east-2:ACCOUNT_ID:instance/*"
    assert at_instance["Condition"] == {
        "StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": "llm"}
    }
    assert all(
        s.get("Condition") or "instance/" not in json.dumps(s["Resource"])
        for s in policy["Statement"]
    )
    assert policy["Statement"][0]["Resource"] == [
        "arn:aws:secretsmanager:us-east-2:ACCOUNT_ID:secret:team/hf-token-??????"
    ]
    assert (
        policy["Statement"][1]["Resource"]
        == "arn:aws:ec2:us-east-2:ACCOUNT_ID:elastic-ip/eipalloc-0abc12345"
    )
    assert bootstrap.iam_policy([], None)["Statement"] == []


@pytest.mark.parametrize(
    "template,name",
    [
        ("tgiops-bootstrap.service.j2", "tgiops-bootstrap.service"),
        ("tgiops-watch-interruption.service.j2", "tgiops-watch-interruption.service"),
    ],
)
def test_boot_units_pass_systemd_analyze_verify(template, name, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed: run scripts/setup")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        (TEMPLATES / template).read_text()
    )
    unit = tmp_path / name
    unit.write_text(
        text.render(
            tgiops_version="test",
            tgiops_bin="/bin/true",  # the real path exists on the instance only
            data_dir="/var/lib/tgiops/data",
            data_mount=True,
            on_rebalance="log",
        )
    )
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{stubs}:"}
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_config_that_is_not_ours_is_refused():
    with pytest.raises(InputError, match="regenerate it with `tgiops userdata`"):
        bootstrap.BootstrapConfig.from_json('{"format": "x"}', origin="/etc/tgiops/bootstrap.json")
    assert bootstrap.config_from_userdata("#!/bin/bash\necho hi\n", origin="u") is None


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        pytest.param({}, "exactly one of --asg", id="none"),
        pytest.param({"asg_name": "a", "name_tag": "b"}, "exactly one of --asg", id="both"),
        pytest.param({"asg_name": "a", "elastic_ip": "x"}, "allocation id", id="eip"),
        pytest.param({"asg_name": "a", "target_group_arn": "tg"}, "target group ARN", id="tg"),
    ],
)
def test_bad_reconcile_options_are_input_errors(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        ReconcileOptions(**kwargs)
    assert ReconcileOptions(asg_name="a", target_group_arn=TG_ARN).selector == (
        "Auto Scaling group a"
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        pytest.param(["reconcile"], "exactly one of --asg", id="reconcile-no-target"),
        pytest.param(["reconcile", "--asg", "g", "--watch", "0"], "--watch 0", id="watch"),
        pytest.param(["reconcile", "--asg", "g", "--eip", "1.2.3.4"], "allocation", id="eip"),
        pytest.param(["bootstrap", "--eip", "nope"], "allocation id", id="bootstrap-eip"),
        pytest.param(["userdata"], "which model?", id="userdata-no-model"),
        pytest.param(
            ["userdata", "phi-3-mini", "--efs", "x", "--preinstalled"], "EFS", id="userdata-efs"
        ),
        pytest.param(
            ["userdata", "llama-3.1-70b", "--instance-type", "g4dn.xlarge"],
            "does not fit g4dn.xlarge",
            id="userdata-does-not-fit",
        ),
        pytest.param(["userdata", "phi-3-mini", "--env", "NOEQUALS"], "KEY=VALUE", id="env"),
        # Issue 12.2: no public-index default; the error says how to do it instead.
        pytest.param(["userdata", "phi-3-mini"], "--preinstalled", id="userdata-no-source"),
        pytest.param(
            ["userdata", "phi-3-mini", "--pip-spec", "tgiops==0.1.0"], "is refused", id="pypi"
        ),
    ],
)
def test_cli_bad_input_exits_2_and_says_why(args, needle):
    proc = tgiops(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and proc.stdout == ""


def test_cli_userdata_json_and_iam_policy():
    proc = tgiops("userdata", "phi-3-mini", "--secret-name", "team/hf", "--preinstalled", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["user_data"].startswith("#!/bin/bash")
    [deployment] = data["bootstrap_config"]["deployments"]
    assert deployment["spec"]["token_secret"] == "team/hf"
    assert deployment["model_spec"] is None  # a catalog model travels by name
    policy = tgiops(
        "userdata", "phi-3-mini", "--eip", "eipalloc-0abc12345", "--preinstalled", "--iam-policy"
    )
    assert json.loads(policy.stdout)["Statement"][1]["Action"] == "ec2:AssociateAddress"


@pytest.mark.parametrize(
    ("change", "travels"),
    [
        pytest.param({}, False, id="catalog-model-by-name"),
        pytest.param({"alias": "my-finetune"}, True, id="model-the-catalog-lacks"),
        pytest.param({"repo_id": "me/phi-3-mini-tuned"}, True, id="same-alias-other-repo"),
    ],
)
def test_user_data_carries_a_models_facts_only_when_the_catalog_cannot_supply_them(change, travels):
    from dataclasses import replace

    from tgiops.core.engines.tgi import TgiEngine
    from tgiops.core.request import DeployRequest

    model = replace(find_model(CATALOG, "phi-3-mini"), **change)
    request = DeployRequest(model=model, engine=TgiEngine.release("3.3.7"))
    carried = bootstrap.userdata_record(request, CATALOG)
    assert carried.spec.repo_id == model.repo_id and carried.spec.model == model.alias
    if travels:
        assert carried.model_spec is not None
        assert carried.model_spec["repo_id"] == model.repo_id
        assert carried.model_spec["sources"] == {}  # 16 KB of user data: sources stay behind
    else:
        assert carried.model_spec is None
