"""The local deploy record (tgiops.edges.state) that `tgiops status` reads when given no target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tgiops.core.errors import TgiopsError
from tgiops.edges import state


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_STATE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/tgiops"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/tgiops"),
        ({"XDG_STATE_HOME": "", "HOME": "/home/u"}, "/home/u/.local/state/tgiops"),
        # The XDG spec: relative paths are invalid and must be ignored.
        ({"XDG_STATE_HOME": "rel/dir", "HOME": "/home/u"}, "/home/u/.local/state/tgiops"),
    ],
    ids=["xdg", "default", "empty", "relative"],
)
def test_state_dir(environ, expected):
    assert state.state_dir(environ) == Path(expected)
    assert state.state_file(environ) == Path(expected) / "deployments.json"


def record(destination: str = "gpu1", unit: str = "tgiops-tiny", **kw) -> state.KnownDeployment:
    return state.KnownDeployment(destination=destination, unit=unit, label=destination, **kw)


def test_record_replace_and_forget(tmp_path):
    path = tmp_path / "nested" / "deployments.json"
    assert state.load_deployments(path) == []
    state.record_deployment(record(port=8080), path)
    state.record_deployment(record("gpu2"), path)
    state.record_deployment(record(port=9090), path)  # same host and unit: replaced
    got = state.load_deployments(path)
    assert [(r.destination, r.port) for r in got] == [("gpu2", None), ("gpu1", 9090)]
    assert state.forget_deployment("gpu1", "tgiops-tiny", path) is True
    assert state.forget_deployment("gpu1", "tgiops-tiny", path) is False
    assert [r.destination for r in state.load_deployments(path)] == ["gpu2"]


def test_record_holds_no_secret_fields(tmp_path):
    path = tmp_path / "deployments.json"
    state.record_deployment(record(model_alias="tiny", instance_id="i-0abc"), path)
    data = json.loads(path.read_text())
    keys = set(data["deployments"][0])
    assert not {k for k in keys if "token" in k or "secret" in k or "key" in k}
    assert data["version"] == 1


def test_unknown_fields_from_a_newer_version_are_ignored(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps({"deployments": [{"destination": "h", "unit": "u", "new": 1}]}))
    assert state.load_deployments(path) == [state.KnownDeployment(destination="h", unit="u")]


@pytest.mark.parametrize("text", ["{", "[]", '{"deployments": [{"unit": "u"}]}'])
def test_a_broken_record_says_what_to_do(tmp_path, text):
    path = tmp_path / "deployments.json"
    path.write_text(text)
    with pytest.raises(TgiopsError, match="move it away"):
        state.load_deployments(path)


# --- the recorded hosts as targets (tgiops.commands.fleet) ----------------------------------


def test_recorded_targets_are_one_per_destination_with_every_recorded_unit(tmp_path):
    from tgiops.commands import fleet
    from tgiops.edges.ssh import SSHTarget

    config = tmp_path / "ssh_config"
    config.write_text("Host gpu1\n")
    records = [
        record("gpu1", "tgiops-a", ssh_config_path=str(config), instance_id="i-0abc"),
        record("gpu2", "tgiops-a", ssh_config_path=str(tmp_path / "gone")),
        record("gpu1", "tgiops-b"),
    ]
    instance = object()  # what EC2 said of i-0abc; carried, never looked into
    targets, known = fleet.recorded_targets(
        records, SSHTarget(destination="", user="ubuntu"), {"i-0abc": instance}
    )
    assert [t.ssh.destination for t in targets] == ["gpu1", "gpu2"]
    assert known == {"gpu1": ("tgiops-a", "tgiops-b"), "gpu2": ("tgiops-a",)}
    assert targets[0].ssh.ssh_config_path == str(config)  # the record's, as it still exists
    assert targets[1].ssh.ssh_config_path is None  # a vanished file is not used
    assert [t.ssh.user for t in targets] == ["ubuntu", "ubuntu"]  # the command line's options
    assert targets[0].instance is instance and targets[1].instance is None


def test_an_ssh_config_given_now_wins_over_the_recorded_one(tmp_path):
    from tgiops.commands import fleet
    from tgiops.edges.ssh import SSHTarget

    recorded, given = tmp_path / "recorded", tmp_path / "given"
    recorded.write_text("")
    targets, _ = fleet.recorded_targets(
        [record("gpu1", ssh_config_path=str(recorded))],
        SSHTarget(destination="", ssh_config_path=str(given)),
        {},
    )
    assert targets[0].ssh.ssh_config_path == str(given)
