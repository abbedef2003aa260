"""Deploy's decisions about a host it shares: unit names it may own, ports and GPUs other units
hold, --dry-run's input checks, the replaced-deploy warning, the fleet fan-out, progress."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tgiops.cli import progress as cli_progress
from tgiops.commands import deploy_checks, deploy_fleet, deploy_scripts, undeploy
from tgiops.core import hardware, probe, progress, record
from tgiops.core.catalog import find_model
from tgiops.core.catalog_file import parse_catalog
from tgiops.core.engines.tgi import TgiEngine
from tgiops.core.errors import InputError, SSHError
from tgiops.core.layout import UNIT_NAME_RE
from tgiops.core.plan import Overrides, plan
from tgiops.core.render import UnitOptions, check_data_dir, render_unit, unit_name_from
from tgiops.core.request import DeployRequest, DeployResult, Replaced, default_unit_name

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
TEMPLATE = (ROOT / "unit_templates" / "tgi.service.j2").read_text()
PHI = find_model(CATALOG, "phi-3-mini")


# --- unit names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["docker", "sshd", "docker.service", "tgi-x", "tgiops-", ""])
def test_names_outside_the_tgiops_prefix_are_refused(name):
    with pytest.raises(InputError, match="not a tgiops unit name"):
        unit_name_from(name)


def test_a_service_suffix_is_dropped_once_and_reserved_names_are_refused():
    assert unit_name_from("tgiops-x.service") == "tgiops-x"
    with pytest.raises(InputError):
        unit_name_from("tgiops-x.service.service")
    with pytest.raises(InputError, match="boot unit"):
        unit_name_from("tgiops-bootstrap")


def test_request_normalizes_the_unit_and_defaults_fit_the_pattern():
    request = DeployRequest(
        model=PHI, engine=TgiEngine.release("3.3.5"), unit_name="tgiops-x.service"
    )
    assert request.unit_options(()).unit_name == "tgiops-x"
    for alias in CATALOG:
        assert UNIT_NAME_RE.fullmatch(default_unit_name(alias)), alias
    with pytest.raises(InputError, match="not a tgiops unit name"):
        DeployRequest(model=PHI, engine=TgiEngine.release("3.3.5"), unit_name="docker")


@pytest.mark.parametrize("timeout", [0, -5])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(InputError, match="--timeout"):
        DeployRequest(model=PHI, engine=TgiEngine.release("3.3.5"), timeout_s=timeout)


@pytest.mark.parametrize(
    "path", ["/", "/etc", "/usr/", "/var", "/etc/tgiops", "/usr/local/x", "//"]
)
def test_system_directories_are_no_data_dir(path):
    with pytest.raises(InputError, match="--data-dir"):
        check_data_dir(path)


@pytest.mark.parametrize("path", ["/var/lib/tgiops/data", "/opt/dlami/nvme", "/data", "/mnt/efs/x"])
def test_ordinary_data_dirs_pass(path):
    assert check_data_dir(path) == path


def test_undeploy_refuses_a_marked_unit_that_is_not_named_tgiops():
    report = (
        "\n@@tgiops-section unit myapp\n# Managed by tgiops 0.1: x (o/m) on 1x T4.\n"
        "\n@@tgiops-section end\n"
    )
    with pytest.raises(InputError, match="not a tgiops unit name"):
        undeploy.plan_undeploy("h", report, "myapp")
    with pytest.raises(InputError, match="has no tgiops unit"):
        undeploy.plan_undeploy("h", report, None)  # the only marked unit is not ours by name


def test_undeploy_checks_the_marker_under_the_lock_before_stopping():
    report = (
        "\n@@tgiops-section unit tgiops-a\n# Managed by tgiops 0.1: x (o/m) on 1x T4.\n"
        "\n@@tgiops-section end\n"
    )
    script = undeploy.undeploy_script(undeploy.plan_undeploy("h", report, None), purge_cache=False)
    assert script.index("grep -q") < script.index("systemctl disable --now")
    assert script.index("flock") < script.index("grep -q")


# --- the host: ports, GPUs, ownership -------------------------------------------------------


def a10g(count: int) -> hardware.GpuInventory:
    gpu = hardware.Gpu(index=0, name="NVIDIA A10G", memory_mib=23028, compute_capability=(8, 6))
    return hardware.GpuInventory(gpus=tuple(gpu.__class__(**{**gpu.__dict__, "index": i})
                                            for i in range(count)))  # fmt: skip


def rendered_exec_start(name: str, port: int, devices: tuple[int, ...]) -> str:
    the_plan = plan(PHI, a10g(max(1, len(devices))), TgiEngine.release("3.3.5"), Overrides())
    options = UnitOptions(name, port=port, gpu_devices=devices)
    text = render_unit(the_plan, options, TEMPLATE, tgiops_version="t")
    return next(line for line in text.splitlines() if line.startswith("ExecStart="))


def state(load: str = "not-found") -> probe.UnitState:
    return probe.UnitState(load, None, None, None, None, None, None, None)


def host_report(*others: probe.OtherUnit, listening=(22,), unit_text=None, load="not-found"):
    unit = probe.UnitReport("tgiops-new", unit_text, None, False, state(load))
    return probe.HostReport("", 0, "", 0, None, (), unit, others, frozenset(listening))


@pytest.mark.parametrize("devices", [(), (1,), (0, 2)])
def test_port_and_gpus_are_read_back_from_a_rendered_unit(devices):
    other = probe.parse_exec_start("tgiops-a", rendered_exec_start("tgiops-a", 8085, devices))
    assert other.port == 8085
    assert other.gpu_devices == (devices or None)


def test_a_free_port_is_chosen_and_a_taken_one_refused():
    other = probe.OtherUnit("tgiops-a", 8080, None)
    report = host_report(other, listening=(22, 8080, 8081))
    assert deploy_checks.choose_port(None, report, "h") == 8082
    with pytest.raises(InputError, match="tgiops unit tgiops-a"):
        deploy_checks.choose_port(8080, report, "h")
    with pytest.raises(InputError, match=r"--port 22: something .* listens"):
        deploy_checks.choose_port(22, report, "h")
    assert deploy_checks.choose_port(9000, report, "h") == 9000


def test_a_redeploy_keeps_its_own_port_even_though_it_listens():
    mine = "# Managed by tgiops\n" + rendered_exec_start("tgiops-new", 8090, ()) + "\n"
    report = host_report(listening=(22, 8090), unit_text=mine, load="loaded")
    assert deploy_checks.choose_port(None, report, "h") == 8090
    assert deploy_checks.choose_port(8090, report, "h") == 8090


def test_gpus_other_units_use_are_left_out_or_refused():
    inventory = a10g(4)
    report = host_report(probe.OtherUnit("tgiops-a", 8080, (0, 1)))
    devices, planned = deploy_checks.choose_gpus((), inventory, report, "h")
    assert devices == (2, 3) and [g.index for g in planned.gpus] == [2, 3]
    with pytest.raises(InputError, match="GPU 1 on h is used by tgiops unit tgiops-a"):
        deploy_checks.choose_gpus((1, 2), inventory, report, "h")
    with pytest.raises(InputError, match="has no GPU 5"):
        deploy_checks.choose_gpus((5,), inventory, report, "h")
    full = host_report(probe.OtherUnit("tgiops-a", 8080, None))
    with pytest.raises(InputError, match="every GPU of h is used by other tgiops units"):
        deploy_checks.choose_gpus((), inventory, full, "h")
    assert deploy_checks.choose_gpus((), inventory, host_report(), "h") == ((), inventory)
    devices, planned = deploy_checks.choose_gpus((3,), inventory, host_report(), "h")
    assert devices == (3,) and planned.count == 1


def test_units_tgiops_did_not_write_are_refused():
    options = UnitOptions("tgiops-new")
    deploy_checks.check_owned(host_report(), options, "h")  # nothing there
    deploy_checks.check_owned(
        host_report(unit_text="# Managed by tgiops 1\n", load="loaded"), options, "h"
    )
    with pytest.raises(InputError, match="not written by tgiops"):
        deploy_checks.check_owned(host_report(unit_text="[Unit]\n", load="loaded"), options, "h")
    with pytest.raises(InputError, match="systemd already has a unit"):
        deploy_checks.check_owned(host_report(load="loaded"), options, "h")  # e.g. in /lib/systemd


def test_the_probe_reads_other_units_listening_ports_and_the_record():
    exec_a = rendered_exec_start("tgiops-a", 8080, ())
    text = (
        "\n@@tgiops-section exec-starts\n"
        f"tgiops-a {exec_a}\ntgiops-bootstrap ExecStart=/opt/tgiops/bin/tgiops bootstrap\n"
        "\n@@tgiops-section listening\nLISTEN 0 4096 127.0.0.1:8080 0.0.0.0:*\n"
        "LISTEN 0 128 [::]:22 [::]:*\n"
        "\n@@tgiops-section record\n{}\n"
        "\n@@tgiops-section state\nLoadState=not-found\n"
        "\n@@tgiops-section end\n"
    )
    report = probe.parse_host_report(text, unit_name="tgiops-new")
    assert report.other_units == (
        probe.OtherUnit("tgiops-a", 8080, None),
        probe.OtherUnit("tgiops-bootstrap", None, ()),
    )
    assert report.listening_ports == frozenset({8080, 22})
    assert report.record_text == "{}"
    script = probe.host_report_script(
        data_dir="/d", unit_name="tgiops-new", unit_dir="/u", env_dir="/e", record_path="/r.json"
    )
    assert "install -d" not in script and "mkdir" not in script  # the probe changes nothing


def test_a_replaced_deploy_is_named_with_its_age():
    request = DeployRequest(model=PHI, engine=TgiEngine.release("3.3.5"), unit_name="tgiops-new")
    the_plan = plan(PHI, a10g(1), TgiEngine.release("3.3.5"), Overrides())
    from datetime import datetime, timezone

    then = datetime(2026, 12, 4, 8, 0, 0, tzinfo=timezone.utc)
    earlier = record.from_deploy(
        deploy_fleet.resolved_request(request, _result(the_plan)),
        the_plan,
        tgiops_version="t",
        now=then,
    )
    report = host_report(unit_text="# Managed by tgiops\n", load="loaded")
    report = probe.HostReport(**{**report.__dict__, "record_text": earlier.to_json()})
    replaced = deploy_checks.replaced_deploy(report, then.timestamp() + 42)
    assert replaced == Replaced(model="phi-3-mini", at=then.isoformat(), age_s=42.0)
    assert "made 42 s ago" in deploy_checks.replaced_warning("tgiops-new", replaced)
    fresh = probe.HostReport(**{**report.__dict__, "unit": None})
    assert deploy_checks.replaced_deploy(fresh, then.timestamp()) is None


def test_the_journal_query_asks_for_the_newest_line():
    command = deploy_scripts.newest_journal_line_command("tgiops-x", 1700000000)
    assert "--since @1700000000" in command and "--reverse -n 1" in command


# --- fleet -----------------------------------------------------------------------------------


def _result(the_plan, *, healthy=True, changed=True, host="h") -> DeployResult:
    return DeployResult(host=host, unit="tgiops-x", plan=the_plan, changed=changed,
                               healthy=healthy, endpoint="http://127.0.0.1:8080", elapsed_s=1.0,
                               port=8081, gpu_devices=(1,))  # fmt: skip


def test_a_fleet_runs_concurrently_within_the_bound_and_sums_up():
    the_plan = plan(PHI, a10g(1), TgiEngine.release("3.3.5"), Overrides())
    running, peak, lock = [0], [0], threading.Lock()

    def run_one(target: str) -> DeployResult:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        if target == "refused":
            raise InputError("no")
        if target == "down":
            raise SSHError("unreachable")
        return _result(the_plan, healthy=target != "bad", host=target)

    targets = ["a", "b", "c", "d", "refused", "down", "bad"]
    started = time.monotonic()
    outcomes = deploy_fleet.deploy_fleet(targets, run_one, max_parallel=4)
    assert time.monotonic() - started < 0.2 * len(targets) * 0.75  # not one after another
    assert peak[0] == 4
    assert [o.label for o in outcomes] == targets
    assert deploy_fleet.fleet_summary(outcomes) == {
        "hosts": 7, "healthy": 4, "failed": 1, "refused": 1, "errors": 1
    }  # fmt: skip
    assert deploy_fleet.fleet_exit_code(outcomes) == 1
    data = deploy_fleet.fleet_as_dict(outcomes, lambda r: {"host": r.host, "healthy": r.healthy})
    assert data["hosts"][4] == {"target": "refused", "error": "no", "exit_code": 2}
    assert "4 healthy, 1 failed" in deploy_fleet.fleet_summary_text(outcomes)
    only_refused = deploy_fleet.deploy_fleet(["refused"], run_one, max_parallel=2)
    assert deploy_fleet.fleet_exit_code(only_refused) == 2
    with pytest.raises(InputError, match="--parallel"):
        deploy_fleet.deploy_fleet(targets, run_one, max_parallel=0)


# --- progress --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,phase",
    [
        ("Starting check and download process for meta-llama/Llama-3.1-8B", "downloading"),
        ("Starting download process.", "downloading"),
        ("Download file: model-00001-of-00004.safetensors", "downloading"),
        ("Successfully downloaded weights for meta-llama/Llama-3.1-8B", "loading"),
        ("Files are already present on the host. Skipping download.", "loading"),
        ("Starting shard rank=0", "loading"),
        ("Warming up model", "warming up"),
        ("Connected", "serving soon"),
        ("Args { model_id: ... }", None),
    ],
)
def test_phases_come_from_tgi_log_lines(line, phase):
    assert progress.phase_of(line) == phase


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tick(elapsed: float, line: str, phase: str) -> progress.Tick:
    return progress.Tick("tgiops-x", elapsed, "loading", line, phase)


def test_without_a_tty_a_20_minute_download_prints_a_line_every_30_s_and_on_phase_changes():
    out: list[str] = []
    clock = FakeClock()
    show = cli_progress.Printer(out.append, tty=False, clock=clock)
    show("probing h")
    for second in range(1200):
        clock.now = float(second)
        show(tick(second, f"Download file: part {second}", "downloading"))
    clock.now = 1200.5
    show(tick(1200.5, "Starting shard rank=0", "loading"))
    assert out[0] == "  .. probing h\n"
    assert len(out) == 1 + 40 + 1  # 1200 s / 30 s, plus the phase change
    assert all(text.endswith("\n") for text in out)
    assert "downloading, 0s | Download file: part 0" in out[1]
    assert "downloading, 1m30s | Download file: part 90" in out[4]
    assert "loading, 20m00s" in out[-1]


def test_on_a_tty_one_line_is_rewritten_in_place():
    out: list[str] = []
    show = cli_progress.Printer(out.append, tty=True, clock=FakeClock())
    for second in range(5):
        show(tick(second, "x" * 300, "warming up"))
    show("done")
    assert all(text.startswith("\r\x1b[2K") and "\n" not in text for text in out[:5])
    assert len(out[0]) < 160  # a long journal line is cut
    assert out[5:] == ["\n", "  .. done\n"]


def test_the_phase_sticks_until_a_line_says_otherwise():
    tracker = progress.PhaseTracker()
    assert tracker.see("Download file: a") == "downloading"
    assert tracker.see("some other line") == "downloading"
    assert tracker.see("Warming up model") == "warming up"
    assert tick(3, "Warming up model", "warming up") == "loading after 3s: Warming up model"
