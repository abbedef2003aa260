"""The deployment record (tgiops.core.record): what a replacement instance rebuilds from."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from tgiops.core import record
from tgiops.core.catalog import find_model
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import InputError
from tgiops.core.hardware import inventory_for_instance_type
from tgiops.core.plan import Overrides, plan
from tgiops.core.request import DeployRequest
from tgiops.edges import resources

NOW = datetime(2026, 12, 4, 8, 0, 0, tzinfo=timezone.utc)

CATALOG = resources.load_catalog(environ={})


def request(**changes) -> DeployRequest:
    base = DeployRequest(
        model=find_model(CATALOG, "llama-3.1-70b-awq"),
        engine=TgiEngine.release("3.3.5"),
        overrides=Overrides(max_total_tokens=8192, flash_attention=True),
        port=8081,
        public=True,
        data_dir="/srv/cache",
        gpu_devices=(0, 1, 2, 3),
        token_secret="team/hf-token",
        api_key_secret="team/tgi-key",
    )
    return replace(base, **changes)


def a_record(**changes) -> record.DeploymentRecord:
    req = request(**changes)
    the_plan = plan(
        req.model, inventory_for_instance_type("g5.12xlarge"), req.engine, req.overrides
    )
    return record.from_deploy(req, the_plan, tgiops_version="9.9.9", now=NOW)


def test_the_spec_rebuilds_the_same_request():
    rec = a_record()
    again = rec.to_request(CATALOG, offline=True, timeout_s=42.0)
    original = request()
    for name in ("port", "public", "data_dir", "gpu_devices", "token_secret", "api_key_secret"):
        assert getattr(again, name) == getattr(original, name), name
    assert again.model == original.model
    assert again.engine == original.engine
    assert again.overrides == original.overrides
    assert again.unit_name == "tgiops-llama-3.1-70b-awq"
    assert again.offline is True and again.timeout_s == 42.0


def test_only_overrides_that_differ_from_the_defaults_are_kept():
    spec = a_record().spec
    assert spec.overrides == {"flash_attention": True, "max_total_tokens": 8192}


def test_a_record_survives_json_and_says_what_was_deployed():
    rec = a_record()
    text = rec.to_json()
    data = json.loads(text)
    assert data["format"] == "tgiops.deployment/1"
    assert data["deployed"]["num_shard"] == 4 and data["deployed"]["tgiops_version"] == "9.9.9"
    assert "hf_" not in text  # names of secrets only
    again = record.DeploymentRecord.from_json(text, origin="test")
    assert again == rec and again.model_spec == rec.model_spec


def test_same_deployment_ignores_time_and_version_but_not_the_outcome():
    rec = a_record()
    later = replace(rec, deployed=replace(rec.deployed, at="2030-01-01", tgiops_version="2.0"))
    assert rec.same_deployment(later)
    offline = replace(rec, deployed=replace(rec.deployed, offline=True))
    assert not rec.same_deployment(offline)
    other_port = replace(rec, spec=replace(rec.spec, port=9000))
    assert not rec.same_deployment(other_port)
    assert not rec.same_deployment(None)


@pytest.mark.parametrize(
    "text,needle",
    [
        pytest.param("{", "not valid JSON", id="not-json"),
        pytest.param('{"format": "something/1"}', "not a tgiops deployment record", id="format"),
        pytest.param('{"format": "tgiops.deployment/2"}', "newer than this tgiops", id="newer"),
        pytest.param('{"format": "tgiops.deployment/1", "spec": {}}', "lacks model", id="empty"),
        pytest.param(
            '{"format": "tgiops.deployment/1", "spec": {"model": "m", "repo_id": "o/m", '
            '"tgi_version": "3.3.5", "unit": "tgiops-u", "overrides": {"turbo": true}}}',
            "unknown override(s) turbo",
            id="unknown-override",
        ),
        pytest.param(
            '{"format": "tgiops.deployment/1", "spec": {"model": "m", "repo_id": "o/m", '
            '"tgi_version": "3.3.5", "unit": "x; rm -rf /"}}',
            "is not tgiops'",
            id="unit-metacharacters",
        ),
        pytest.param(
            '{"format": "tgiops.deployment/1", "spec": {"model": "m", "repo_id": "o/m", '
            '"tgi_version": "3.3.5", "unit": "tgiops-u", "data_dir": "/d/$(id)"}}',
            "must be an absolute path",
            id="data-dir-metacharacters",
        ),
    ],
)
def test_bad_records_are_input_errors(text, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        record.DeploymentRecord.from_json(text, origin="/data/tgiops/deployments/x.json")


def long_spec_record() -> record.DeploymentRecord:
    rec = a_record()
    return replace(rec, spec=replace(rec.spec, model="my-" + "long-alias-" * 12))


def test_tags_carry_the_spec_in_chunks_ec2_accepts():
    rec = long_spec_record()
    tags = record.instance_tags(rec)
    assert all(len(v) <= 256 for v in tags.values())
    # Keys readable through instance metadata tags too: no "/" or spaces.
    assert all(re.fullmatch(r"[A-Za-z0-9+=.,_:@-]{1,128}", k) for k in tags)
    assert int(tags["tgiops:record:tgiops-llama-3.1-70b-awq"]) >= 2
    [back] = record.records_from_tags({**tags, "Name": "llm"}, origin="i-1")
    assert back.spec == rec.spec.under(record.OperatorSettings())


def test_tags_never_carry_what_only_the_operator_decides():
    """Anyone with ec2:CreateTags writes tags: secret names, data dir and public stay out of
    them, and are ignored when a tag carries them anyway (issue 12)."""
    rec = a_record()
    text = "".join(record.instance_tags(rec).values())
    for value in ("team/hf-token", "team/tgi-key", "/srv/cache", "public"):
        assert value not in text
    planted = json.loads(record.spec_json(rec.spec))
    planted.update(token_secret="other/secret", data_dir="/", public=True)
    tags = {"tgiops:record:u": "1", "tgiops:record:u:1": json.dumps(planted)}
    [back] = record.records_from_tags(tags, origin="i-1")
    assert (back.spec.token_secret, back.spec.data_dir, back.spec.public) == (
        "tgiops/hf-token",
        "/var/lib/tgiops/data",
        False,
    )


def test_a_record_with_a_missing_chunk_is_skipped():
    tags = record.instance_tags(long_spec_record())
    del tags["tgiops:record:tgiops-llama-3.1-70b-awq:2"]
    assert record.records_from_tags(tags, origin="i-1") == []


def test_a_custom_model_is_rebuilt_from_the_facts_in_the_record():
    rec = a_record()
    custom = replace(rec, spec=replace(rec.spec, model="my-private-llama"))
    assert custom.resolve_model(CATALOG).repo_id == rec.spec.repo_id
    bare = replace(custom, model_spec=None)
    with pytest.raises(InputError, match="--catalog FILE"):
        bare.resolve_model(CATALOG)
