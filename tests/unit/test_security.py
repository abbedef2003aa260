"""Issue 12 (security), the parts without a host: what a record, a tag, a config.json or an
invoking event may decide. Each test is an attack the issue reproduced; they fail on the code
before the fix. The attacks that need a host are in tests/e2e/test_security_attacks.py."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from tgiops.commands import bootstrap
from tgiops.core import catalog, catalog_file, hf_config, record
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import InputError
from tgiops.core.hardware import inventory_for_instance_type
from tgiops.core.plan import plan
from tgiops.core.render import UnitOptions, check_data_dir, docker_run_args
from tgiops.core.request import DeployRequest
from tgiops.edges import resources

NOW = datetime(2026, 12, 4, 8, 0, 0, tzinfo=timezone.utc)

CATALOG = resources.load_catalog(environ={})
TEMPLATES = resources.shipped_path("unit_templates")


def a_record_dict() -> dict:
    req = DeployRequest(model=catalog.find_model(CATALOG, "phi-3-mini"), engine=TgiEngine.release())
    the_plan = plan(req.model, inventory_for_instance_type("g5.xlarge"), req.engine, req.overrides)
    rec = record.from_deploy(req, the_plan, tgiops_version="0.1.0", now=NOW)
    return json.loads(rec.to_json())


# -- 1: the container sees only the cache; the data dir is allow-listed --------------------


def test_the_container_gets_the_model_cache_not_the_records():
    req = DeployRequest(model=catalog.find_model(CATALOG, "phi-3-mini"), engine=TgiEngine.release())
    the_plan = plan(req.model, inventory_for_instance_type("g5.xlarge"), req.engine, req.overrides)
    args = docker_run_args(the_plan, UnitOptions("tgiops-phi-3-mini"))
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
    assert mounts == ["/var/lib/tgiops/data/cache:/data"]
    records = record.record_dir("/var/lib/tgiops/data")
    assert not records.startswith("/var/lib/tgiops/data/cache")


@pytest.mark.parametrize(
    "path", ["/", "/etc", "/usr/lib", "/root", "/var/lib", "/var/lib/docker/x", "/opt/tgiops",
             "/home/user", "/boot", "/tmp/x", "/data/../etc"],
)  # fmt: skip
def test_system_directories_are_refused_as_data_dir(path):
    with pytest.raises(InputError):
        check_data_dir(path, "--data-dir")


@pytest.mark.parametrize("path", ["/var/lib/tgiops/data", "/data", "/mnt/efs", "/opt/models"])
def test_usual_data_dirs_are_accepted(path):
    assert check_data_dir(path, "--data-dir") == path


# -- 1/3: one validating decoder ----------------------------------------------------------


def _change(path: str, value):
    data = a_record_dict()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("spec.overrides", {"max_total_tokens": "x"}, "override max_total_tokens"),
        ("spec.overrides", {"num_shard": 1.5}, "override num_shard"),
        ("spec.overrides", {"cuda_memory_fraction": 7}, "override cuda_memory_fraction"),
        ("spec.overrides", {"flash_attention": "yes"}, "override flash_attention"),
        ("spec.overrides", ["max_total_tokens"], "overrides"),
        ("spec.public", "yes", "public"),
        ("spec.port", True, "port"),
        ("spec.port", 70000, "port"),
        ("spec.port", "8080", "port"),
        ("spec.gpu_devices", "0", "gpu_devices"),
        ("spec.gpu_devices", [0, "1"], "gpu_devices"),
        ("spec.data_dir", "/", "not a place for a model cache"),
        ("spec.token_secret", ["a"], "token_secret"),
        ("spec.token_secret", "a b", "token_secret"),
        ("spec.model", "phi\n# new line", "model"),
        ("spec.repo_id", "org/x\n", "repo_id"),
        ("spec.tgi_version", 3, "tgi_version"),
        ("spec.extra", 1, "unknown field"),
        ("deployed.num_shard", "1", "num_shard"),
        ("deployed.offline", "no", "offline"),
        ("deployed.image", "img\nExecStartPre=/bin/sh", "image"),
        ("model_spec.repo_id", "org/x\n", "repo_id"),
        ("model_spec.num_layers", "32", "num_layers"),
        ("last_stop", {"reason": 1, "at": "now"}, "reason"),
    ],
)
def test_the_decoder_refuses_badly_typed_fields(path, value, needle):
    data = _change(path, value)
    if path.startswith("model_spec"):
        data["model_spec"] = {**a_record_dict()["model_spec"], path.split(".")[1]: value}
    with pytest.raises(InputError, match=re.escape(needle)):
        record.DeploymentRecord.from_dict(data, origin="x.json")


def test_a_good_record_still_round_trips():
    data = a_record_dict()
    again = record.DeploymentRecord.from_dict(copy.deepcopy(data), origin="x.json")
    assert json.loads(again.to_json()) == data


def test_a_badly_typed_tag_is_reported_not_raised():
    """Issue 3: `"max_total_tokens": "x"` in a tag crashed the whole reconcile pass."""
    spec = a_record_dict()["spec"]
    spec["overrides"] = {"max_total_tokens": "x"}
    tags = {"tgiops:record:u1": "1", "tgiops:record:u1:1": json.dumps(spec)}
    [entry] = record.tag_entries(tags, origin="i-1")
    assert isinstance(entry, record.Unreadable)
    assert entry.unit == "u1" and "max_total_tokens" in entry.reason


# -- 1: the operator's settings win over a record's -----------------------------------------


def test_a_record_cannot_choose_the_secret_the_data_dir_or_public():
    data = a_record_dict()
    data["spec"].update(token_secret="other/secret", data_dir="/mnt/x", public=True)
    planted = record.DeploymentRecord.from_dict(data, origin="x.json")
    settings = record.OperatorSettings(token_secret="team/hf-token")
    spec = planted.under(settings).spec
    assert (spec.token_secret, spec.api_key_secret, spec.data_dir, spec.public) == (
        "team/hf-token", None, "/var/lib/tgiops/data", False
    )  # fmt: skip


# -- 7: ids never carry a line break ----------------------------------------------------------


def test_a_config_json_name_with_a_newline_is_not_a_repository_id():
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 128,
              "intermediate_size": 128,
              "_name_or_path": "org/x\n"}  # fmt: skip
    with pytest.raises(InputError, match="repo"):
        hf_config.model_from_hf_config(config, origin="config.json")
    config["_name_or_path"] = "org/x"
    assert hf_config.model_from_hf_config(config, origin="config.json").repo_id == "org/x"


def test_a_catalog_alias_with_a_trailing_newline_is_refused():
    text = (resources.shipped_path("models.yaml")).read_text()
    with pytest.raises(InputError, match="alias"):
        catalog_file.parse_catalog(text.replace("  phi-3-mini:", '  "phi-3-mini\\n":', 1), "t.yaml")


def test_the_user_data_summary_is_one_comment_line():
    model = replace(catalog.find_model(CATALOG, "phi-3-mini"), alias="x")
    spec = record.DeploymentSpec(
        model="x", repo_id=model.repo_id, tgi_version="3.3.7", unit="tgiops-u"
    )
    # The spec refuses a line break itself; the renderer keeps the comment one line anyway.
    rec = record.DeploymentRecord(spec=spec)
    object.__setattr__(rec.spec, "model", "x\nrm -rf /")
    text = bootstrap.render_userdata(
        bootstrap.UserdataOptions(record=rec, pip_spec="/opt/wheels/tgiops.whl"),
        userdata_template=(TEMPLATES / "userdata.sh.j2").read_text(),
        bootstrap_unit_template=(TEMPLATES / "tgiops-bootstrap.service.j2").read_text(),
        watch_unit_template=(TEMPLATES / "tgiops-watch-interruption.service.j2").read_text(),
    )
    assert "\nrm -rf /" not in text


# -- 2: tgiops never comes from the public index by default -------------------------------


def _userdata(**changes) -> str:
    spec = record.DeploymentSpec(
        model="phi-3-mini", repo_id="microsoft/Phi-3-mini-4k-instruct", tgi_version="3.3.7",
        unit="tgiops-phi-3-mini",
    )  # fmt: skip
    return bootstrap.render_userdata(
        bootstrap.UserdataOptions(record=record.DeploymentRecord(spec=spec), **changes),
        userdata_template=(TEMPLATES / "userdata.sh.j2").read_text(),
        bootstrap_unit_template=(TEMPLATES / "tgiops-bootstrap.service.j2").read_text(),
        watch_unit_template=(TEMPLATES / "tgiops-watch-interruption.service.j2").read_text(),
    )


LOCK = (
    "tgiops==0.1.0 \\\n    --hash=sha256:"
    + "a" * 64
    + "\nboto3==1.35.0 --hash=sha256:"
    + "b" * 64
    + "\n"
)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        pytest.param({}, "how does tgiops get onto the instance", id="nothing"),
        pytest.param({"pip_spec": "tgiops==0.1.0"}, "is refused", id="public-default"),
        pytest.param({"pip_spec": "-i https://pypi.org/simple tgiops"}, "pypi.org", id="pypi"),
        pytest.param(
            {
                "pip_spec": "-i https://pypi.internal/simple --extra-index-url "
                "https://pypi.org/simple tgiops"
            },
            "public",
            id="extra-public-index",
        ),
        pytest.param({"pip_spec": "./tgiops.whl"}, "is refused", id="relative-wheel"),
        pytest.param({"pip_requirements": "tgiops==0.1.0\n"}, "has no --hash=", id="unhashed"),
        pytest.param({"pip_requirements": LOCK + "requests\n"}, "'requests'", id="one-unhashed"),
        pytest.param({"preinstalled": True, "pip_spec": "/w/t.whl"}, "only one of", id="two"),
    ],
)
def test_user_data_refuses_to_install_from_the_public_index(changes, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        _userdata(**changes)


def _bash_ok(text: str) -> bool:
    import subprocess

    return subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_the_operators_sources_are_installed_as_given():
    text = _userdata(pip_spec="--index-url https://pypi.internal/simple tgiops==0.1.0")
    assert _bash_ok(text)
    assert 'pip" install --quiet --index-url https://pypi.internal/simple tgiops==0.1.0\n' in text
    text = _userdata(pip_requirements=LOCK)
    assert _bash_ok(text)
    assert '--require-hashes -r "$TGIOPS_HOME/requirements.txt"' in text and LOCK in text
    text = _userdata(pip_spec="/opt/wheels/tgiops-0.1.0-py3-none-any.whl")
    assert "install --quiet /opt/wheels/tgiops-0.1.0-py3-none-any.whl\n" in text
    text = _userdata(preinstalled=True)
    assert "pip" not in text.split("# 1.", 1)[1].split("# 2.", 1)[0].replace("pipefail", "")


# -- 8: the image is pinned by digest when one is known ------------------------------------

DIGEST = "sha256:" + "c" * 64


def test_a_recorded_digest_pins_the_image_in_the_unit():
    from tgiops.core.render import render_unit

    data = a_record_dict()
    data["deployed"].update(image_id="sha256:" + "d" * 64, image_digest=DIGEST)
    rec = record.DeploymentRecord.from_dict(data, origin="x.json")
    request = rec.to_request(CATALOG, offline=True)
    assert request.image_digest == DIGEST
    the_plan = plan(
        request.model, inventory_for_instance_type("g5.xlarge"), request.engine, request.overrides
    )
    unit = render_unit(
        the_plan,
        request.unit_options(("HF_TOKEN",)),
        (TEMPLATES / "tgi.service.j2").read_text(),
        tgiops_version="0",
    )
    pinned = f"ghcr.io/huggingface/text-generation-inference@{DIGEST}"
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    pull = next(line for line in unit.splitlines() if "docker pull" in line)
    assert pinned in exec_start and pinned in pull
    assert ":3.3.7" not in exec_start


def test_no_digest_or_another_release_falls_back_to_the_tag():
    data = a_record_dict()
    rec = record.DeploymentRecord.from_dict(data, origin="x.json")
    assert rec.to_request(CATALOG, offline=False).image_digest is None  # none recorded
    data["deployed"].update(
        image_digest=DIGEST, image="ghcr.io/huggingface/text-generation-inference:3.3.5"
    )
    rec = record.DeploymentRecord.from_dict(data, origin="x.json")
    assert rec.to_request(CATALOG, offline=False).image_digest is None  # another release


def test_a_bad_digest_is_refused():
    with pytest.raises(InputError, match="digest"):
        UnitOptions("tgiops-u", image_digest="sha256:xyz")


@pytest.mark.parametrize(
    ("field", "value"), [("timeout_s", "x"), ("timeout_s", -1), ("region", "us-east-1\nx")]
)
def test_a_badly_typed_bootstrap_config_is_an_input_error(field, value):
    """Issue 12.3 in bootstrap: a float("x") used to end in a traceback."""
    text = json.dumps({"format": "tgiops.bootstrap/1", "deployments": [], field: value})
    with pytest.raises(InputError, match=field):
        bootstrap.BootstrapConfig.from_json(text, origin="/etc/tgiops/bootstrap.json")


def test_a_region_cannot_add_a_line_to_the_bootstrap_environment():
    with pytest.raises(InputError, match="region"):
        _userdata(preinstalled=True, region="us-east-1\nLD_PRELOAD=/tmp/x.so")


def test_the_model_facts_must_be_of_the_recorded_repository():
    data = a_record_dict()
    data["spec"]["model"] = "not-in-the-catalog"
    data["model_spec"] = {**data["model_spec"], "alias": "not-in-the-catalog", "repo_id": "evil/x"}
    rec = record.DeploymentRecord.from_dict(data, origin="x.json")
    with pytest.raises(InputError, match="carries the facts of evil/x"):
        rec.resolve_model(CATALOG)
