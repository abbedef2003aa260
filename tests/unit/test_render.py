"""The unit and env-file renderers; every variant passes `systemd-analyze verify` cleanly."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tgiops.core import hardware
from tgiops.core.catalog import find_model
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import InputError
from tgiops.core.plan import Overrides, plan
from tgiops.core.render import (
    UnitOptions,
    docker_run_args,
    render_env_file,
    render_unit,
    systemd_quote,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TEMPLATE = (ROOT / "unit_templates" / "tgi.service.j2").read_text()
PLANTED = "hf_PLANTEDtokenForTestsOnly0123456789abcd"


def make_plan(alias="llama-3.1-70b-awq", itype="g5.12xlarge", version="3.3.5", **overrides):
    return plan(
        find_model(CATALOG, alias),
        hardware.inventory_for_instance_type(itype),
        TgiEngine.release(version),
        Overrides(**overrides),
    )


VARIANTS = [
    pytest.param(
        make_plan(),
        UnitOptions("tgiops-llama-3.1-70b-awq", secret_env=("HF_TOKEN",)),
        id="awq-4-shards-loopback",
    ),
    pytest.param(
        make_plan("llama-3.1-8b", "g4dn.xlarge", "2.0.4"),
        UnitOptions("tgiops-tgi-8b", port=9090, secret_env=("HUGGING_FACE_HUB_TOKEN",)),
        id="turing-fallback-legacy-version",
    ),
    pytest.param(
        make_plan("llama-3.1-8b", "g5.12xlarge", num_shard=2),
        UnitOptions(
            "tgiops-tgi-8b-gpus-0-1",
            gpu_devices=(0, 1),
            bind_address="0.0.0.0",
            secret_env=("HF_TOKEN", "API_KEY"),
        ),
        id="gpu-subset-public-api-key",
    ),
    pytest.param(
        make_plan("phi-3-mini", "g5.xlarge"),
        UnitOptions("tgiops-phi", extra_env={"HF_HUB_OFFLINE": "1"}, data_dir="/opt/dlami/nvme"),
        id="offline-relaunch-other-data-dir",
    ),
]


@pytest.fixture(scope="module")
def unit_path_with_docker_stub(tmp_path_factory) -> str:
    """`Requires=docker.service` must resolve: a stub unit stands in for the docker package's."""
    stubs = tmp_path_factory.mktemp("stubs")
    (stubs / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    return f"{stubs}:"


@pytest.mark.parametrize("the_plan,options", VARIANTS)
def test_every_variant_passes_systemd_analyze_verify(
    the_plan, options, tmp_path, unit_path_with_docker_stub
):
    if not shutil.which("systemd-analyze") or not Path("/usr/bin/docker").exists():
        pytest.fail("systemd-analyze and /usr/bin/docker are needed: run scripts/setup")
    text = render_unit(the_plan, options, TEMPLATE, tgiops_version="test")
    unit = tmp_path / f"{options.unit_name}.service"
    unit.write_text(text)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": unit_path_with_docker_stub}
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # unknown keys only warn: an empty stderr is the bar


def test_exec_start_round_trips_to_the_planned_docker_command():
    the_plan = make_plan()
    options = UnitOptions("tgiops-x", secret_env=("HF_TOKEN",))
    text = render_unit(the_plan, options, TEMPLATE, tgiops_version="test")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    # For these values systemd's and the shell's quoting agree.
    assert shlex.split(exec_line.removeprefix("ExecStart=")) == docker_run_args(the_plan, options)
    for needle in (
        "--num-shard 4",
        "--quantize awq",
        "-p 127.0.0.1:8080:80",
        "-e HF_TOKEN ",
        "--name tgiops-x",
        "--gpus all",
        "--shm-size 1g",
    ):
        assert needle in exec_line
    assert "ExecStop=/usr/bin/docker stop --time 90 tgiops-x" in text
    assert "ExecStartPre=-/usr/bin/docker rm -f tgiops-x" in text
    assert "SuccessExitStatus=137 143" in text and "Restart=always" in text
    assert "EnvironmentFile=/etc/tgiops/tgiops-x.env" in text


def test_token_is_never_in_the_unit_only_in_the_env_file():
    the_plan = make_plan()
    options = UnitOptions("tgiops-x", secret_env=("HF_TOKEN",))
    assert PLANTED not in render_unit(the_plan, options, TEMPLATE, tgiops_version="t")
    env_text = render_env_file({"HF_TOKEN": PLANTED})
    assert f"HF_TOKEN={PLANTED}\n" in env_text


def test_a_bad_secret_is_refused_without_echoing_it():
    bad = "hf_abc$(touch /tmp/pwned)"
    with pytest.raises(InputError) as info:
        render_env_file({"HF_TOKEN": bad})
    assert bad not in str(info.value)


@pytest.mark.parametrize(
    "arg,quoted",
    [
        pytest.param("plain/value-1.0", "plain/value-1.0", id="safe"),
        pytest.param("x; touch /tmp/pwned", '"x; touch /tmp/pwned"', id="semicolon"),
        pytest.param("$(id)", '"$$(id)"', id="dollar-doubled"),
        pytest.param("100%", "100%%", id="percent-doubled"),
        pytest.param('say "hi"\\', '"say \\"hi\\"\\\\"', id="quotes-and-backslash"),
    ],
)
def test_systemd_quote(arg, quoted):
    assert systemd_quote(arg) == quoted


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        pytest.param({"unit_name": "x; rm -rf /"}, "unit name", id="unit-name-metachar"),
        pytest.param({"unit_name": "tgiops-ok", "port": 70000}, "--port", id="port-range"),
        pytest.param(
            {"unit_name": "tgiops-ok", "data_dir": "relative/dir"}, "--data-dir", id="relative"
        ),
        pytest.param(
            {"unit_name": "tgiops-ok", "data_dir": "/a/$(id)"}, "--data-dir", id="data-dir-metachar"
        ),
    ],
)
def test_bad_unit_options_are_input_errors(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        UnitOptions(**kwargs)


def test_missing_template_variable_is_an_error():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render_unit(
            make_plan(), UnitOptions("tgiops-x"), TEMPLATE + "{{ nope }}", tgiops_version="t"
        )
