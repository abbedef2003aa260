"""Verdicts of `tgiops status`, table-driven: one row per situation a user can meet."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tgiops.core import hardware, status
from tgiops.core.probe import UnitState
from tgiops.core.status_schema import (
    ContainerFacts,
    HostFacts,
    HostStatus,
    HttpFacts,
    StatusReport,
    SystemdFacts,
    UnitFacts,
    UnitPlan,
    UnitStatus,
)
from tgiops.edges.aws.instances import Ec2Instance

NOW = 1_715_076_300
PLAN = UnitPlan(
    alias="tiny",
    model_id="tgiops-test/tiny-llama",
    image="ghcr.io/huggingface/text-generation-inference:3.3.5",
    container="tgiops-tiny",
    bind_address="127.0.0.1",
    port=8080,
    data_dir="/var/lib/tgiops/data",
    num_shard=1,
    max_input_tokens=1024,
    max_total_tokens=2048,
)
INFO = {
    "model_id": "tgiops-test/tiny-llama",
    "max_input_tokens": 1024,
    "max_total_tokens": 2048,
    "version": "3.3.5",
}
RUNNING = UnitState(
    load_state="loaded",
    active_state="active",
    sub_state="running",
    main_pid=42,
    exec_main_status=0,
    n_restarts=0,
    result="success",
    unit_file_state="enabled",
)
CONTAINER = ContainerFacts(
    id="3f2a9c0d1e2b",
    image=PLAN.image or "",
    status="running",
    running=True,
    started_at="2024-05-07T10:00:02Z",
    exit_code=0,
    restart_count=0,
)
UP = HttpFacts(
    endpoint="http://127.0.0.1:8080",
    health_code=200,
    curl_exit_code=0,
    detail="/health answered 200",
    info=INFO,
)
REFUSED = HttpFacts(
    endpoint="http://127.0.0.1:8080",
    health_code=None,
    curl_exit_code=7,
    detail="connection refused",
)


def facts(
    *,
    state: UnitState | None = RUNNING,
    http: HttpFacts = UP,
    container: ContainerFacts | None = CONTAINER,
    diagnosis: str | None = None,
    since: int | None = NOW - 300,
) -> UnitFacts:
    systemd = (
        None
        if state is None
        else SystemdFacts(
            state=state, since_epoch_s=since, since_text=None, state_changed_epoch_s=None
        )
    )
    return UnitFacts(
        name="tgiops-tiny",
        plan=PLAN,
        systemd=systemd,
        container=container,
        container_error=None if container else "no container",
        http=http,
        diagnosis=diagnosis,
    )


OOM = "the weights do not fit the GPU memory"

CASES = [
    pytest.param(
        facts(), None, "healthy", "serving tgiops-test/tiny-llama (TGI 3.3.5)", id="healthy"
    ),
    pytest.param(
        facts(http=REFUSED, since=NOW - 42),
        None,
        "loading",
        "port 8080 closed while the unit and its container run",
        id="loading-port-closed",
    ),
    pytest.param(
        facts(
            http=replace(REFUSED, curl_exit_code=52, detail="empty reply"),
        ),
        None,
        "loading",
        "empty reply",
        id="loading-docker-proxy",
    ),
    pytest.param(
        facts(
            http=REFUSED,
            container=None,
            state=replace(RUNNING, active_state="activating", sub_state="start-pre"),
        ),
        None,
        "loading",
        "pulling the image",
        id="loading-start-pre",
    ),
    pytest.param(
        facts(http=REFUSED, state=replace(RUNNING, n_restarts=1)),
        None,
        "loading",
        "after 1 restart",
        id="loading-after-one-restart",
    ),
    pytest.param(
        facts(http=REFUSED, state=replace(RUNNING, n_restarts=3), diagnosis=OOM),
        None,
        "failed",
        "crash-looping: restarted 3 time(s) and the port never opened",
        id="crash-loop-counted",
    ),
    pytest.param(
        facts(http=REFUSED, state=replace(RUNNING, n_restarts=1)),
        0,
        "failed",
        "crash-looping",
        id="crash-loop-climbing-while-watched",
    ),
    pytest.param(
        facts(
            http=REFUSED,
            container=None,
            state=replace(
                RUNNING,
                active_state="activating",
                sub_state="auto-restart",
                exec_main_status=1,
                n_restarts=1,
            ),
            diagnosis=OOM,
        ),
        None,
        "failed",
        "crash-looping: the engine exited (exit status 1)",
        id="auto-restart",
    ),
    pytest.param(
        facts(
            http=REFUSED,
            container=None,
            state=replace(RUNNING, active_state="failed", sub_state="failed", result="exit-code"),
            diagnosis=OOM,
        ),
        None,
        "failed",
        "systemd gave up on the unit (Result=exit-code)",
        id="systemd-gave-up",
    ),
    pytest.param(
        facts(
            http=REFUSED,
            container=None,
            state=replace(RUNNING, active_state="inactive", sub_state="dead"),
        ),
        None,
        "failed",
        "the unit is stopped",
        id="stopped",
    ),
    pytest.param(
        facts(
            http=REFUSED,
            container=replace(CONTAINER, status="exited", running=False),
        ),
        None,
        "failed",
        "the container is exited",
        id="container-exited-unit-running",
    ),
    pytest.param(
        facts(http=replace(UP, health_code=503, detail="/health answered 503")),
        None,
        "failed",
        "/health answered 503: the engine cannot generate",
        id="health-503",
    ),
    pytest.param(
        facts(http=replace(UP, health_code=404)),
        None,
        "failed",
        "is not a healthy TGI endpoint",
        id="not-tgi",
    ),
    pytest.param(
        facts(http=replace(REFUSED, curl_exit_code=127)),
        None,
        "failed",
        "curl is not installed",
        id="no-curl",
    ),
    pytest.param(
        facts(state=replace(RUNNING, load_state="not-found")),
        None,
        "failed",
        "systemctl daemon-reload",
        id="not-loaded",
    ),
    pytest.param(facts(state=None), None, "failed", "not loaded", id="no-systemd-answer"),
    pytest.param(
        facts(http=replace(UP, info={**INFO, "model_id": "other/model"})),
        None,
        "degraded",
        "serves model 'other/model', the plan says 'tgiops-test/tiny-llama'",
        id="info-other-model",
    ),
    pytest.param(
        facts(http=replace(UP, info={**INFO, "max_total_tokens": 4096})),
        None,
        "degraded",
        "max_total_tokens is 4096, the plan says 2048",
        id="info-other-limit",
    ),
    pytest.param(
        facts(http=replace(UP, info=None, info_error="/info is not JSON")),
        None,
        "degraded",
        "/info unreadable (/info is not JSON)",
        id="info-unreadable",
    ),
    pytest.param(
        facts(state=replace(RUNNING, n_restarts=2)),
        None,
        "degraded",
        "restarted 2 time(s) since it was started",
        id="restarted",
    ),
    pytest.param(
        facts(state=replace(RUNNING, n_restarts=4)),
        3,
        "degraded",
        "restarts climbing: 4 (was 3)",
        id="restarts-climbing",
    ),
    pytest.param(
        facts(container=replace(CONTAINER, restart_count=2)),
        None,
        "degraded",
        "the container restarted 2 time(s)",
        id="container-restarts",
    ),
    pytest.param(
        facts(state=replace(RUNNING, unit_file_state="disabled")),
        None,
        "degraded",
        "will not start after a reboot",
        id="not-enabled",
    ),
]


@pytest.mark.parametrize(("unit", "previous", "verdict", "reason"), CASES)
def test_judge_unit(unit, previous, verdict, reason):
    got_verdict, got_reason = status.judge_unit(unit, now_epoch_s=NOW, previous_restarts=previous)
    assert (got_verdict, reason in got_reason) == (verdict, True), got_reason


def test_failed_reason_carries_the_diagnosis():
    unit = facts(http=REFUSED, state=replace(RUNNING, n_restarts=5), diagnosis=OOM)
    _, reason = status.judge_unit(unit, now_epoch_s=NOW)
    assert f"likely cause: {OOM}" in reason


def test_healthy_reason_says_for_how_long():
    _, reason = status.judge_unit(facts(since=NOW - 3725), now_epoch_s=NOW)
    assert reason.endswith("for 1h2m")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (-1, "?"), (0, "0s"), (59, "59s"), (61, "1m1s"), (3725, "1h2m"), (90061, "1d1h")],
)
def test_format_duration(seconds, text):
    assert status.format_duration(seconds) == text


# --- hosts -----------------------------------------------------------------------------------


def host_facts(*units: UnitFacts, managed: tuple[str, ...] | None = None):
    return HostFacts(
        now_epoch_s=NOW,
        managed_units=managed if managed is not None else tuple(u.name for u in units),
        units=units,
        gpus=(),
        gpus_error=None,
    )


def test_judge_host_nothing_deployed():
    (only,) = status.judge_host(host_facts())
    assert (only.unit, only.verdict) == (None, "not-deployed")
    assert "# Managed by tgiops" in only.reason


def test_judge_host_wanted_unit_missing():
    statuses = status.judge_host(host_facts(facts()), wanted_units=("tgiops-other",))
    assert [(s.unit, s.verdict) for s in statuses] == [
        ("tgiops-tiny", "healthy"),
        ("tgiops-other", "not-deployed"),
    ]
    assert "tgiops-tiny" in statuses[1].reason


def test_judge_host_uses_previous_restarts_per_unit():
    unit = facts(state=replace(RUNNING, n_restarts=2))
    (s,) = status.judge_host(host_facts(unit), previous={"tgiops-tiny": 1})
    assert s.verdict == "degraded"
    assert "restarts climbing: 2 (was 1)" in s.reason


@pytest.mark.parametrize("units", [(), ("a", "b")])
def test_unreachable_units(units):
    rows = status.unreachable_units("SSH timed out", units)
    assert [r.unit for r in rows] == (list(units) or [None])
    assert {r.verdict for r in rows} == {"unreachable"}


def report(*hosts: HostStatus) -> StatusReport:
    return StatusReport(hosts=hosts, elapsed_s=0.1, generated_at="2024-05-07T10:05:00+00:00")


def host_status(*units: UnitStatus, destination: str = "h1") -> HostStatus:
    return HostStatus(
        target=destination,
        destination=destination,
        reachable=True,
        error=None,
        round_trips=1,
        elapsed_s=0.1,
        ec2=None,
        gpus=(),
        gpus_error=None,
        units=units,
    )


@pytest.mark.parametrize(
    ("verdicts", "healthy"),
    [
        (("healthy",), True),
        (("healthy", "healthy"), True),
        (("healthy", "loading"), False),
        (("degraded",), False),
        ((), False),
    ],
    ids=["one", "two", "one-loading", "degraded", "no-units"],
)
def test_report_is_healthy_only_when_every_unit_is(verdicts, healthy):
    units = [UnitStatus(unit=f"u{i}", verdict=v, reason="r") for i, v in enumerate(verdicts)]
    assert report(host_status(*units)).healthy is healthy


def test_report_restarts_feed_the_next_refresh():
    unit = UnitStatus(
        unit="tgiops-tiny",
        verdict="healthy",
        reason="r",
        facts=facts(state=replace(RUNNING, n_restarts=3)),
    )
    assert report(host_status(unit)).restarts() == {("h1", "tgiops-tiny"): 3}


# --- EC2 -------------------------------------------------------------------------------------


def instance(**kw) -> Ec2Instance:
    base = dict(
        instance_id="i-0abc",
        instance_type="g5.xlarge",
        lifecycle="spot",
        state="running",
        availability_zone="us-east-1a",
        public_ip="3.1.2.3",
        private_ip="10.0.0.5",
        tags={"Name": "llm"},
    )
    base.update(kw)
    return Ec2Instance(**base)


@pytest.mark.parametrize(
    ("inst", "eips", "spot", "expected"),
    [
        pytest.param(
            instance(),
            {"i-0abc": "3.1.2.3"},
            0.4321,
            {"elastic_ip": True, "spot_usd_per_hour": 0.4321},
            id="spot-with-eip",
        ),
        pytest.param(
            instance(lifecycle="on-demand"),
            {},
            0.4321,
            {"elastic_ip": False, "spot_usd_per_hour": None},
            id="on-demand-no-eip",
        ),
        pytest.param(
            instance(), {"i-0abc": "9.9.9.9"}, None, {"elastic_ip": False}, id="eip-elsewhere"
        ),
        pytest.param(instance(), None, None, {"elastic_ip": None}, id="not-looked-up"),
        pytest.param(
            instance(instance_type="x9.huge"),
            {},
            None,
            {"on_demand_usd_per_hour": None},
            id="unknown-type",
        ),
    ],
)
def test_ec2_facts(inst, eips, spot, expected):
    got = status.ec2_facts(inst, elastic_ips=eips, spot_usd_per_hour=spot)
    for key, value in expected.items():
        assert getattr(got, key) == value, key
    assert got.price_date == hardware.PRICE_DATE
    assert got.name == "llm"


def test_ec2_facts_on_demand_price_comes_from_the_table():
    got = status.ec2_facts(instance(), elastic_ips={}, spot_usd_per_hour=None)
    table = hardware.find_instance_type("g5.xlarge").on_demand_usd_per_hour
    assert table is not None
    assert got.on_demand_usd_per_hour == table


@pytest.mark.parametrize(
    "rules,ports,expected",
    [
        pytest.param([("sg-1", 22, 22)], [8080], ["sg-1 opens port 22 (SSH 22)"], id="ssh"),
        pytest.param([("sg-1", 8000, 8100)], [8080], ["port 8000-8100 (TGI 8080)"], id="tgi"),
        pytest.param([("sg-1", 0, 65535)], [9090], ["(SSH 22)", "(TGI 9090)"], id="everything"),
        pytest.param([("sg-1", 443, 443)], [8080], [], id="https-only-is-fine"),
        pytest.param([], [8080], [], id="nothing-open"),
    ],
)
def test_exposure_warnings_name_the_group_and_port(rules, ports, expected):
    from tgiops.core.status import exposure_warnings

    warnings = exposure_warnings(rules, ports)
    assert len(warnings) == len(expected)
    for warning, needle in zip(warnings, expected, strict=True):
        assert needle in warning and "whole internet" in warning
