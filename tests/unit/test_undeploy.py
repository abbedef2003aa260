"""`tgiops undeploy`: which files and cache it touches, decided before anything changes."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_status_parsers import UNIT_TEXT

from tgiops.commands import undeploy
from tgiops.core.errors import InputError
from tgiops.edges.ssh import STAGE_DIR_GLOB

SECTION = "@@tgiops-section "


def inspect_report(**units: str) -> str:
    body = "".join(f"\n{SECTION}unit {name}\n{text}" for name, text in units.items())
    return body + f"\n{SECTION}end\n"


OTHER_MODEL = UNIT_TEXT.replace("tgiops-tiny", "tgiops-other").replace(
    "--model-id tgiops-test/tiny-llama", "--model-id org/other"
)
SAME_MODEL = UNIT_TEXT.replace("tgiops-tiny", "tgiops-twin").replace("8080:80", "8081:80")


def test_plan_names_only_this_units_files():
    plan = undeploy.plan_undeploy(
        "gpu1",
        inspect_report(**{"tgiops-tiny": UNIT_TEXT, "tgiops-other": OTHER_MODEL}),
        "tgiops-tiny",
    )
    assert plan.unit == "tgiops-tiny"
    assert plan.files == (
        "/etc/systemd/system/tgiops-tiny.service",
        "/etc/systemd/system/tgiops-tiny.service.previous",
        "/etc/tgiops/tgiops-tiny.env",
        "/etc/tgiops/tgiops-tiny.env.previous",
        "/var/lib/tgiops/data/tgiops/deployments/tgiops-tiny.json",  # bootstrap would restore it
    )
    assert plan.cache_paths == (
        "/var/lib/tgiops/data/hub/models--tgiops-test--tiny-llama",
        "/var/lib/tgiops/data/models--tgiops-test--tiny-llama",
    )
    assert plan.other_units == ("tgiops-other",)
    assert plan.cache_shared_with == ()


def test_a_cache_another_unit_serves_is_shared():
    plan = undeploy.plan_undeploy(
        "gpu1",
        inspect_report(**{"tgiops-tiny": UNIT_TEXT, "tgiops-twin": SAME_MODEL}),
        "tgiops-tiny",
    )
    assert plan.cache_shared_with == ("tgiops-twin",)
    script = undeploy.undeploy_script(plan, purge_cache=True)
    removals = [line for line in script.splitlines() if line.startswith("rm ")]
    assert plan.cache_paths and not any(p in line for line in removals for p in plan.cache_paths)
    # ... while the staging directories cut uploads left (they may hold a token) do go.
    assert f"rm -rf -- {STAGE_DIR_GLOB}" in script


def test_without_unit_the_only_one_is_chosen_and_several_are_refused():
    assert undeploy.plan_undeploy("h", inspect_report(**{"tgiops-tiny": UNIT_TEXT}), None).unit == (
        "tgiops-tiny"
    )
    with pytest.raises(InputError, match="several"):
        undeploy.plan_undeploy(
            "h", inspect_report(**{"tgiops-tiny": UNIT_TEXT, "tgiops-other": OTHER_MODEL}), None
        )
    with pytest.raises(InputError, match="has no tgiops unit"):
        undeploy.plan_undeploy("h", inspect_report(), None)


@pytest.mark.parametrize(
    ("data_dir", "repo", "expected"),
    [
        ("/data", "org/name", ("/data/hub/models--org--name", "/data/models--org--name")),
        ("/data/", "org/name", ("/data/hub/models--org--name", "/data/models--org--name")),
        ("/data", "../etc", ()),
        ("/data", "org/..", ()),
        ("/", "org/name", ()),
        ("relative", "org/name", ()),
        ("/a/../b", "org/name", ()),
        (None, "org/name", ()),
        ("/data", None, ()),
    ],
    ids=[
        "plain",
        "slash",
        "traversal",
        "dotdot-name",
        "root",
        "relative",
        "dotdot-dir",
        "no-dir",
        "no-repo",
    ],
)
def test_cache_paths_for(data_dir, repo, expected):
    assert undeploy.cache_paths_for(data_dir, repo) == expected


@pytest.mark.parametrize("purge", [False, True])
def test_undeploy_script(purge):
    plan = undeploy.plan_undeploy("h", inspect_report(**{"tgiops-tiny": UNIT_TEXT}), None)
    script = undeploy.undeploy_script(plan, purge_cache=purge)
    if shutil.which("bash"):
        checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
    assert "flock -w" in script and "/run/tgiops/lock" in script
    assert 'install -d -m 0700 -- "$(dirname -- "$p")"' in script  # root's alone (issue 12)
    assert "systemctl disable --now --quiet tgiops-tiny.service" in script
    assert "docker rm -f tgiops-tiny" in script
    assert ("rm -rf -- /var/lib/tgiops/data/hub/models--tgiops-test--tiny-llama" in script) is purge
    # Never the whole data directory, never another unit.
    assert "rm -rf -- /var/lib/tgiops/data\n" not in script
    assert "tgiops-other" not in script


def test_parse_undeploy_report():
    text = (
        f"{SECTION}check\nfile /etc/tgiops/u.env\ncontainer u\n"
        f"{SECTION}cache\n/data/hub/models--a--b\n{SECTION}end\n"
    )
    assert undeploy.parse_undeploy_report(text) == (
        ("file /etc/tgiops/u.env", "container u"),
        ("/data/hub/models--a--b",),
    )


def test_the_tags_of_one_unit_are_its_record_chunks_and_the_unit_pair():
    from tgiops.core.record import tags_of_unit

    tags = {
        "Name": "gpu",
        "tgiops:managed": "true",
        "tgiops:unit": "tgiops-tiny",
        "tgiops:model": "tiny",
        "tgiops:record:tgiops-tiny": "2",
        "tgiops:record:tgiops-tiny:0": "{",
        "tgiops:record:tgiops-tiny:1": "}",
        "tgiops:record:tgiops-tiny-2": "1",  # another unit whose name starts the same
        "tgiops:record:tgiops-tiny-2:0": "{}",
    }
    assert tags_of_unit(tags, "tgiops-tiny") == [
        "tgiops:model",
        "tgiops:record:tgiops-tiny",
        "tgiops:record:tgiops-tiny:0",
        "tgiops:record:tgiops-tiny:1",
        "tgiops:unit",
    ]
    assert tags_of_unit(tags, "tgiops-tiny-2") == [
        "tgiops:record:tgiops-tiny-2",
        "tgiops:record:tgiops-tiny-2:0",
    ]
