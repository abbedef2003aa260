"""Faults during `tgiops deploy`, injected at each step on the testbed; the end state is checked.

How the faults get in, with no test hook in tgiops itself:

- ``deploy.deploy()`` runs in this process. Its ``on_progress`` callback announces each step
  ("reading secret", "uploading the env file and the unit", "installing and restarting",
  health lines) and the deploy waits for the callback, so a fault injected there lands exactly
  between two steps.
- Points inside a step (after a temporary upload, before its rename) are reached through
  ``FaultyHost``, a RemoteHost subclass defined here that acts before or after the remote
  scripts and uploads tgiops sends.
- The faults are real: every sshd process of the host is SIGKILLed by PID (systemd restarts
  the listener after 100 ms, so this is a cut connection, not a dead host); the host's link is
  brought down from the root namespace (unreachable host); the host powers off with
  `systemctl poweroff` and is booted again from the same disk; the TGI emulator is told to
  crash or to flap through /etc/testbed/emulator.env (its documented options); AWS
  connections are reset by scripts/delay_proxy.py, a piece of network in front of moto.

The end state is read from the host's disk as this machine sees it (the host's overlay root),
so it can be checked while the host is unreachable or powered off. "Intact" means byte for
byte the previous unit and env file, or byte for byte the ones the converged re-run installs:
never a mix, never a partial file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tgiops.commands import deploy
from tgiops.core.engines import engine_for
from tgiops.core.engines.tgi import DEFAULT_TGI_VERSION, TgiEngine
from tgiops.core.engines.vllm import VllmOverrides
from tgiops.core.errors import SecretError, SSHConnectError, SSHError, TgiopsError
from tgiops.core.plan import Overrides
from tgiops.core.request import DeployRequest, DeployResult
from tgiops.edges import resources
from tgiops.edges import ssh as ssh_edge
from tgiops.edges.aws.base import THROTTLE_RETRY_ATTEMPTS, AwsSettings
from tgiops.edges.aws.client import Aws
from tgiops.edges.ssh import STAGE_DIR_GLOB, STAGE_DIR_PREFIX, RemoteHost, SSHTarget

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

from aws_faults import ThrottlingRelay  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402
from host_faults import kill_sshd, wait_for_sshd  # noqa: E402
from private_moto import point_boto3_at, private_moto  # noqa: E402
from testbedlib.processes import marker_env, pid_alive, spawn_daemon  # noqa: E402

MODEL = "phi-3-mini"
UNIT = "tgiops-phi-3-mini"
UNIT_PATH = f"/etc/systemd/system/{UNIT}.service"
ENV_PATH = f"/etc/tgiops/{UNIT}.env"
NEW_TOTAL = 2048  # the "new" deploy differs from the baseline (4096) in max_total_tokens only
EMULATOR_ENV = "/etc/testbed/emulator.env"
TEMPLATE = (resources.shipped_path("unit_templates") / "tgi.service.j2").read_text()


# --- driving deploy in-process ---------------------------------------------------------------


class FaultyHost(RemoteHost):
    """A RemoteHost that calls the test back around the remote scripts and uploads it sends."""

    def __init__(
        self,
        target: SSHTarget,
        *,
        before_script: Callable[[str], None] | None = None,
        after_script: Callable[[str], None] | None = None,
        after_upload: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(target)
        self.before_script = before_script
        self.after_script = after_script
        self.after_upload = after_upload

    def run_script(self, script: str, **kwargs):  # type: ignore[override]
        if self.before_script:
            self.before_script(script)
        result = super().run_script(script, **kwargs)
        if self.after_script:
            self.after_script(script)
        return result

    def _sftp_write(self, sftp, path: str, payload: bytes) -> None:
        super()._sftp_write(sftp, path, payload)
        if self.after_upload:
            self.after_upload(path)


@dataclass
class Outcome:
    result: DeployResult | None
    error: TgiopsError | None
    messages: list[str] = field(default_factory=list)


def run_deploy(
    host,
    *,
    total: int | None,
    secret_name: str | None = None,
    on_step: Callable[[str], None] | None = None,
    timeout_s: float = 60,
    engine: str = "tgi",
    **hooks,
) -> Outcome:
    """One deploy of MODEL through tgiops' library, as `tgiops deploy` runs it (``total``: the
    engine's context limit, TGI's max_total_tokens or vLLM's max_model_len)."""
    request = DeployRequest(
        model=resources.load_catalog()[MODEL],
        engine=TgiEngine.release(DEFAULT_TGI_VERSION) if engine == "tgi" else engine_for(engine),
        overrides=Overrides(max_total_tokens=total)
        if engine == "tgi"
        else VllmOverrides(max_model_len=total),
        token_secret=secret_name,
        timeout_s=timeout_s,
    )
    messages: list[str] = []

    def progress(message: str) -> None:
        messages.append(message)
        if on_step:
            on_step(message)

    target = SSHTarget(host.name, ssh_config_path=host.ssh_config, connect_timeout_s=5)
    get_secret = Aws(AwsSettings()).get_secret if secret_name else None
    try:
        with FaultyHost(target, **hooks) as remote:
            result = deploy.deploy(
                remote, request, get_secret=get_secret, template_text=TEMPLATE, on_progress=progress
            )
        return Outcome(result, None, messages)
    except TgiopsError as exc:
        return Outcome(None, exc, messages)


class once:  # a verb where it is used: `cut = once(...)`
    """Run ``action`` the first time this is called; ``fired`` says whether it ran."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.fired = threading.Event()

    def __call__(self) -> None:
        if not self.fired.is_set():
            self.fired.set()
            self.action()


# --- the host as the machine sees it -------------------------------------------------------


def on_disk(host, path: str) -> Path:
    return host.testbed.paths.host_dir(host.name) / "root" / path.lstrip("/")


def live_pair(host) -> tuple[bytes | None, bytes | None]:
    """The live unit and env file, read from the host's disk (works while it is unreachable)."""
    out = []
    for path in (UNIT_PATH, ENV_PATH):
        try:
            out.append(on_disk(host, path).read_bytes())
        except FileNotFoundError:
            out.append(None)
    return out[0], out[1]


def served_total(host) -> int:
    """max_total_tokens of what serves on the host now, waiting for it to come up."""
    deadline = time.monotonic() + 90
    while True:
        proc = host.run("curl -sf http://127.0.0.1:8080/info", check=False)
        if proc.returncode == 0:
            return int(json.loads(proc.stdout)["max_total_tokens"])
        assert time.monotonic() < deadline, f"nothing serves on {host.name}: {proc.stderr}"
        time.sleep(1)


def assert_intact(host, state, before, after) -> None:
    """The live pair is all previous or all new, and the env file stayed root-only."""
    assert state in (before, after), (
        "the live unit/env pair is neither the previous one nor the new one:\n"
        f"unit: {state[0]!r:.300}\nenv: {state[1]!r:.200}"
    )
    assert on_disk(host, ENV_PATH).stat().st_mode & 0o777 == 0o600


def leftovers(host) -> list[str]:
    names = []
    for folder in ("/etc/systemd/system", "/etc/tgiops"):
        names += [p.name for p in on_disk(host, folder).iterdir() if ".tgiops-" in p.name]
    return names


# --- faults ----------------------------------------------------------------------------------


def _record(host):
    return host.testbed._load_record(host.name)


def set_link(host, up: bool) -> None:
    """Bring the host's own end of its link (eth0 in its namespace) down or up again.

    The host's end, not ours: with our end down, the route to the host would vanish and
    packets for it would follow this machine's default route out of the test network.
    """
    ns = f"tgtb-{host.name}"
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up" if up else "down"], check=True)
    if up:  # the link going down took the host's default route with it
        gateway = _record(host).outer_address
        subprocess.run(["ip", "-n", ns, "route", "replace", "default", "via", gateway], check=True)
        # ARP for the host failed while its link was down, and the kernel answers "No route to
        # host" from that FAILED neighbour entry for a while: the test's next step must not
        # race that. Forget the entry and wait until sshd is reachable again.
        subprocess.run(["ip", "neigh", "flush", "to", host.address], check=True)
        wait_for_sshd(host, timeout_s=30)


def power_off(host) -> None:
    """`systemctl poweroff` on the host; returns once its systemd-nspawn has exited."""
    record = _record(host)
    host.run("systemctl poweroff --no-block", check=False)
    started = time.monotonic()
    # Shutdown stops the unit: `docker stop --time 90` may wait that long for the engine.
    while pid_alive(record.nspawn_pid):
        assert time.monotonic() < started + 240, f"{host.name} did not power off"
        time.sleep(0.1)
    print(f"{host.name} powered off in {time.monotonic() - started:.1f} s")


def boot_again(host) -> None:
    """Boot the powered-off host again from the same disk, as scripts/testbed up boots it."""
    tb = host.testbed
    record = _record(host)
    assert not pid_alive(record.nspawn_pid)
    host_dir = tb.paths.host_dir(host.name)
    record.nspawn_pid = spawn_daemon(
        tb._nspawn_command(host.name, host_dir / "root", tb._daemon(host.name)),
        host_dir / "nspawn.log",
        marker_env(tb.paths.state_dir, host.name),
    )
    tb._save_record(record)
    assert tb._wait_booted(record) in ("running", "degraded")


def set_emulator_option(host, name: str, value: str | None) -> None:
    """Set or clear a TGI_EMULATOR_* option; the docker shim reads it at every `docker run`."""
    path = on_disk(host, EMULATOR_ENV)
    lines = [line for line in path.read_text().splitlines() if not line.startswith(name + "=")]
    if value is not None:
        lines.append(f"{name}={value}")
    path.write_text("\n".join(lines) + "\n")


# --- fixtures --------------------------------------------------------------------------------


@dataclass
class Scenario:
    host: object
    before: tuple[bytes | None, bytes | None]
    baseline_total: int


@pytest.fixture
def served(gpu_host) -> Scenario:
    """A fresh host already serving MODEL from a healthy baseline deploy."""
    host = gpu_host("1xA10G", fresh=True)
    first = run_deploy(host, total=None)
    assert first.error is None and first.result.healthy, first.error
    return Scenario(host, live_pair(host), served_total(host))


def rerun_converges(scenario: Scenario) -> tuple[bytes | None, bytes | None]:
    again = run_deploy(scenario.host, total=NEW_TOTAL)
    assert again.error is None, f"the re-run failed: {again.error}"
    assert again.result.healthy
    assert served_total(scenario.host) == NEW_TOTAL
    return live_pair(scenario.host)


def is_upload(written: str) -> bool:
    """Whether ``written`` (a file SFTP just filled) is a deploy's upload: the bundle of the
    env file and the unit in a staging directory."""
    return written.startswith(STAGE_DIR_PREFIX)


def is_switch(script: str) -> bool:
    return "systemctl daemon-reload" in script and "systemctl restart" in script


@pytest.fixture
def own_moto(tmp_path):
    """A moto server of this test's own: it can enforce IAM policies (the shared one does not),
    and no other test resets it under a running deploy (the shared one is reset by each)."""
    with private_moto(tmp_path) as url:
        yield url


@dataclass(frozen=True)
class OwnAws:
    endpoint_url: str

    def client(self, service: str):
        import boto3

        return boto3.client(service)


@pytest.fixture
def own_aws(own_moto, tmp_path, monkeypatch) -> OwnAws:
    """``own_moto`` with the environment boto3 reads pointing at it (as conftest's ``aws``)."""
    point_boto3_at(own_moto, tmp_path, monkeypatch)
    return OwnAws(own_moto)


# --- the SSH connection is cut ---------------------------------------------------------------


def assert_unreachable_message(text: str) -> None:
    # Unanswered ARP gives "No route to host" after ~3 s, or the connect timeout comes first.
    assert "No route to host" in text or "timed out after" in text, text
    assert "security group" in text and "[Errno None]" not in text, text


def test_unreachable_while_reading_the_secret_changes_nothing(served, own_aws):
    host = served.host
    name = "tgiops-test/" + secrets.token_hex(6)
    own_aws.client("secretsmanager").create_secret(Name=name, SecretString="hf_" + "x" * 30)
    cut = once(lambda: set_link(host, up=False))
    try:
        outcome = run_deploy(
            host,
            total=NEW_TOTAL,
            secret_name=name,
            on_step=lambda m: cut() if m.startswith("reading secret") else None,
        )
    finally:
        set_link(host, up=True)
    assert isinstance(outcome.error, SSHConnectError) and outcome.error.exit_code == 1
    assert_unreachable_message(str(outcome.error))
    assert live_pair(host) == served.before
    assert served_total(host) == served.baseline_total
    again = run_deploy(host, total=NEW_TOTAL, secret_name=name)
    assert again.error is None and again.result.healthy, again.error


@pytest.mark.parametrize(
    "step,expect_new",
    [
        pytest.param("upload", False, id="upload"),
        pytest.param("daemon-reload", True, id="daemon-reload"),
        pytest.param("restart", True, id="restart"),
        pytest.param("health wait", True, id="health-wait"),
    ],
)
def test_cut_connection_leaves_a_whole_unit_and_rerun_converges(served, step, expect_new):
    host = served.host
    cut = once(lambda: kill_sshd(host))
    hooks: dict[str, Callable[[str], None]] = {}
    watchers: list[threading.Thread] = []
    on_step = None
    if step == "upload":
        # The env file and the unit are on the host, in a staging directory; nothing installed.
        hooks["after_upload"] = lambda p: cut() if is_upload(p) else None
    elif step == "daemon-reload":
        # While the switch script runs: right after the unit file was renamed into place.
        def watch(script: str) -> None:
            if not is_switch(script):
                return

            def cut_when_renamed() -> None:
                deadline = time.monotonic() + 30
                while live_pair(host)[0] == served.before[0] and time.monotonic() < deadline:
                    time.sleep(0.001)
                cut()

            watcher = threading.Thread(target=cut_when_renamed, daemon=True)
            watchers.append(watcher)
            watcher.start()

        hooks["before_script"] = watch
    elif step == "restart":
        hooks["after_script"] = lambda s: cut() if is_switch(s) else None
    else:
        on_step = lambda m: cut() if re.match(r"(loading|ready|unhealthy) after", m) else None  # noqa: E731

    outcome = run_deploy(host, total=NEW_TOTAL, on_step=on_step, **hooks)
    for watcher in watchers:
        watcher.join(timeout=60)

    assert cut.fired.is_set(), outcome.messages
    installing = any(m.startswith("installing and restarting") for m in outcome.messages)
    # "installing" is announced once both files are uploaded, before the install script.
    assert installing, outcome.messages
    assert isinstance(outcome.error, SSHError), outcome.result
    assert outcome.error.exit_code == 1
    assert "lost the SSH connection" in str(outcome.error) or "without an exit status" in str(
        outcome.error
    ), outcome.error
    state = live_pair(host)
    after = rerun_converges(served)
    assert_intact(host, state, served.before, after)
    assert state == (after if expect_new else served.before)
    # What a cut upload leaves behind never has a live name, and systemd ignores it.
    for name in leftovers(host):
        assert ".tgiops-tmp-" in name, name
    # A cut upload leaves its staging directory (it holds the token): private to its owner.
    modes = host.run(f"stat -c %a {STAGE_DIR_GLOB} 2>/dev/null || true").stdout.split()
    assert set(modes) <= {"700"}, modes
    units = host.run("systemctl list-unit-files --no-legend 'tgiops-*'").stdout.splitlines()
    assert [line.split()[0] for line in units] == [f"{UNIT}.service"]


@pytest.fixture
def short_link_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dead-link timeout and the lock lease, shortened for this process's deploys: what is
    tested is that both bounds exist and act, not their length (30 s and 90 s would spend two
    minutes of the suite waiting)."""
    monkeypatch.setattr(ssh_edge, "_DEAD_LINK_S", 8)
    monkeypatch.setattr(ssh_edge, "_LOCK_LEASE_S", 20)
    monkeypatch.setattr(ssh_edge, "_LOCK_HEARTBEAT_S", 4)


def test_unreachable_mid_upload_fails_instead_of_hanging_and_rerun_converges(
    served, short_link_bounds
):
    """The link goes down after the env file's content was written, before its rename.

    Without a dead-link timeout the SFTP call waits forever (TCP retransmits for ~15 min); and
    the host's lock holder never hears that tgiops is gone, so without a lease it would keep
    the host locked for hours. Both are bounded now: the deploy fails, the re-run waits out the
    lease and converges.
    """
    host = served.host
    cut = once(lambda: set_link(host, up=False))
    box: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: box.append(
            run_deploy(
                host,
                total=NEW_TOTAL,
                after_upload=lambda p: cut() if is_upload(p) else None,
            )
        ),
        daemon=True,
    )
    try:
        worker.start()
        worker.join(timeout=300)  # a liveness bound, not a timing claim: it hung before
        assert not worker.is_alive(), "deploy hangs on a cut link"
    finally:
        set_link(host, up=True)
    outcome = box[0]
    assert isinstance(outcome.error, SSHError) and outcome.error.exit_code == 1
    assert "lost the SSH connection" in str(outcome.error), outcome.error
    state = live_pair(host)
    assert state == served.before
    after = rerun_converges(served)
    assert_intact(host, state, served.before, after)


def test_cli_exits_1_with_a_clear_message_when_the_host_is_unreachable(served):
    host = served.host
    set_link(host, up=False)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tgiops.cli", "deploy", MODEL, "--no-token", "--host",
             host.name, "--ssh-config", host.ssh_config, "--connect-timeout", "3"],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    finally:
        set_link(host, up=True)
    assert proc.returncode == 1, proc.stderr
    assert_unreachable_message(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert live_pair(host) == served.before


# --- the host powers off mid-deploy ----------------------------------------------------------


@pytest.mark.parametrize(
    "when,serves_new",
    [
        pytest.param("installing and restarting", False, id="before-the-switch"),
        # Right after the restart: the engine has just started (the emulator once dropped the
        # SIGTERM of `docker stop` there, as PID 1 before its handler, and shutdown took 90 s+).
        pytest.param("loading after", True, id="during-the-health-wait"),
    ],
)
def test_power_off_mid_deploy_then_boot_serves_a_whole_unit(served, when, serves_new):
    host = served.host
    off = once(lambda: power_off(host))

    def on_step(message: str) -> None:
        if message.startswith(when):
            off()

    outcome = run_deploy(host, total=NEW_TOTAL, on_step=on_step)
    assert isinstance(outcome.error, SSHError) and outcome.error.exit_code == 1, outcome.result
    state = live_pair(host)

    boot_again(host)
    # At boot the enabled unit starts by itself: the previous one, or the new one if the
    # switch had happened. Never nothing, never a mix.
    expected_total = NEW_TOTAL if serves_new else served.baseline_total
    assert served_total(host) == expected_total
    assert host.run(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    after = rerun_converges(served)
    assert_intact(host, state, served.before, after)
    assert state == (after if serves_new else served.before)


# --- the engine crash-loops; the health endpoint flaps -------------------------------------


def test_crash_looping_engine_is_rolled_back_to_the_previous_endpoint(served):
    host = served.host
    # The emulator option is host-wide; the test lifts it when tgiops starts its rollback,
    # so the crash belongs to the new deploy only (as a bad flag or image would).
    set_emulator_option(host, "TGI_EMULATOR_CRASH_AFTER_SECONDS", "0")

    def on_step(message: str) -> None:
        if message.startswith("rolling back"):
            set_emulator_option(host, "TGI_EMULATOR_CRASH_AFTER_SECONDS", None)

    outcome = run_deploy(host, total=NEW_TOTAL, on_step=on_step)
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert not result.healthy and result.rolled_back
    assert "crashed" in result.failure and "healthy again" in result.restored
    assert "Shard 0 crashed" in result.journal_tail
    assert live_pair(host) == served.before
    assert served_total(host) == served.baseline_total


def test_flapping_health_is_never_taken_for_healthy(gpu_host):
    host = gpu_host("1xA10G", fresh=True)
    # /health answers 200, 503, 200, 503...: every single probe may look fine, never two in a
    # row. One success would have been enough for a naive check.
    set_emulator_option(host, "TGI_EMULATOR_HEALTH_FLAP", "1")
    flapping = run_deploy(host, total=None, timeout_s=15)
    assert flapping.error is None, flapping.error
    assert not flapping.result.healthy
    assert "intermittently" in flapping.result.failure
    assert any(m.startswith("ready after") for m in flapping.messages), flapping.messages
    assert "nothing was serving before" in flapping.result.restored

    # Three 200s before the first 503: two consecutive successes come, and that is healthy.
    set_emulator_option(host, "TGI_EMULATOR_HEALTH_FLAP", "3")
    steady = run_deploy(host, total=NEW_TOTAL, timeout_s=60)
    assert steady.error is None and steady.result.healthy, steady.error


def test_a_crash_looping_vllm_engine_is_rolled_back_to_the_previous_endpoint(gpu_host):
    """The same fault on a vLLM unit: its engine core dies under the API server (the vLLM
    emulator's crash option); the rollback restores the previous vLLM unit."""
    host = gpu_host("1xA10G", fresh=True)
    first = run_deploy(host, total=None, engine="vllm")
    assert first.error is None and first.result.healthy, first.error
    before = live_pair(host)
    set_emulator_option(host, "TGI_EMULATOR_CRASH_AFTER_SECONDS", "0")

    def on_step(message: str) -> None:
        if message.startswith("rolling back"):
            set_emulator_option(host, "TGI_EMULATOR_CRASH_AFTER_SECONDS", None)

    outcome = run_deploy(host, total=2048, on_step=on_step, engine="vllm")
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert not result.healthy and result.rolled_back, result.failure
    assert "healthy again" in (result.restored or ""), result.restored
    assert "Engine core proc" in result.journal_tail, result.journal_tail
    assert live_pair(host) == before


def test_flapping_vllm_health_is_never_taken_for_healthy(gpu_host):
    host = gpu_host("1xA10G", fresh=True)
    set_emulator_option(host, "TGI_EMULATOR_HEALTH_FLAP", "1")
    flapping = run_deploy(host, total=None, timeout_s=15, engine="vllm")
    assert flapping.error is None, flapping.error
    assert not flapping.result.healthy
    assert "intermittently" in (flapping.result.failure or ""), flapping.result.failure
    set_emulator_option(host, "TGI_EMULATOR_HEALTH_FLAP", None)
    steady = run_deploy(host, total=None, timeout_s=60, engine="vllm")
    assert steady.error is None and steady.result.healthy, steady.error


# --- Secrets Manager -------------------------------------------------------------------------


def test_aws_connection_resets_are_retried_then_the_deploy_succeeds(gpu_host, own_aws, monkeypatch):
    host = gpu_host("1xA10G", fresh=True)
    name = "tgiops-test/" + secrets.token_hex(6)
    own_aws.client("secretsmanager").create_secret(Name=name, SecretString="hf_" + "y" * 30)
    moto = urlparse(own_aws.endpoint_url)
    with DelayProxy() as proxy:
        flaky = proxy.add(moto.hostname, moto.port, fail_first=2)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{flaky}")
        outcome = run_deploy(host, total=None, secret_name=name)
        stats = proxy.stats(flaky)
    assert outcome.error is None and outcome.result.healthy, outcome.error
    assert stats.reset == 2 and stats.connections >= 3
    assert "hf_" + "y" * 30 in on_disk(host, ENV_PATH).read_text()


def test_secrets_manager_throttling_is_retried_with_backoff_then_deploys(
    gpu_host, own_aws, monkeypatch, caplog
):
    host = gpu_host("1xA10G", fresh=True)
    name = "tgiops-test/" + secrets.token_hex(6)
    own_aws.client("secretsmanager").create_secret(Name=name, SecretString="hf_" + "t" * 30)
    # botocore's standard mode makes 3 attempts per call, so 4 throttled answers need
    # tgiops' own backoff (tenacity) to get through.
    with ThrottlingRelay(own_aws.endpoint_url, "secretsmanager.GetSecretValue",
                         throttle_first=4) as relay:  # fmt: skip
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        with caplog.at_level("WARNING", logger="tgiops.edges.aws"):
            outcome = run_deploy(host, total=None, secret_name=name)
    assert outcome.error is None and outcome.result.healthy, outcome.error
    assert [status for _, status in relay.answers] == [400, 400, 400, 400, 200]
    gaps = [later - earlier for (earlier, _), (later, _) in pairwise(relay.answers)]
    assert max(gaps) >= 0.5, gaps  # tenacity's first wait, after botocore gave up
    assert f"reading secret '{name}' was throttled by AWS (ThrottlingException); retrying in " \
        "0.5 s (attempt 2 of 5)" in caplog.messages  # fmt: skip
    assert "hf_" + "t" * 30 in on_disk(host, ENV_PATH).read_text()


def test_throttling_that_does_not_stop_is_a_clear_error_and_changes_nothing(
    gpu_host, own_aws, monkeypatch
):
    host = gpu_host("1xA10G", fresh=True)
    before = live_pair(host)
    name = "tgiops-test/" + secrets.token_hex(6)
    own_aws.client("secretsmanager").create_secret(Name=name, SecretString="hf_" + "u" * 30)
    with ThrottlingRelay(own_aws.endpoint_url, "secretsmanager.GetSecretValue",
                         throttle_first=1000) as relay:  # fmt: skip
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        outcome = run_deploy(host, total=None, secret_name=name)
    assert isinstance(outcome.error, SecretError) and outcome.error.exit_code == 1
    assert str(outcome.error) == (
        f"reading secret '{name}' was throttled by AWS (ThrottlingException) after retries; "
        "try again shortly."
    )
    assert len(relay.answers) >= THROTTLE_RETRY_ATTEMPTS  # every tgiops attempt reached AWS
    assert not any(m.startswith("locking") for m in outcome.messages)  # the host was not touched
    assert live_pair(host) == before


def test_aws_unreachable_for_good_is_a_clear_error_and_changes_nothing(
    gpu_host, own_aws, monkeypatch
):
    host = gpu_host("1xA10G", fresh=True)
    before = live_pair(host)
    moto = urlparse(own_aws.endpoint_url)
    with DelayProxy() as proxy:
        dead = proxy.add(moto.hostname, moto.port, fail_first=1000)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
        outcome = run_deploy(host, total=None, secret_name="tgiops/hf-token")
        attempts = proxy.stats(dead).connections
    assert isinstance(outcome.error, SecretError) and outcome.error.exit_code == 1
    assert "reading secret 'tgiops/hf-token'" in str(outcome.error)
    assert attempts >= 2  # botocore's own retries happened before giving up
    assert not any(m.startswith("locking") for m in outcome.messages)  # the host was not touched
    assert live_pair(host) == before


def test_access_denied_names_the_missing_iam_action_and_changes_nothing(
    gpu_host, own_moto, tmp_path
):
    import boto3
    import requests

    host = gpu_host("1xA10G", fresh=True)
    before = live_pair(host)
    admin = dict(endpoint_url=own_moto, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    boto3.client("secretsmanager", **admin).create_secret(
        Name="tgiops/hf-token", SecretString="hf_" + "z" * 30
    )
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="deployer")
    policy = {  # may look the secret up, may not read it
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:DescribeSecret",
                       "Resource": "*"}],
    }  # fmt: skip
    iam.put_user_policy(UserName="deployer", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    # From now on moto checks every request against IAM (moto docs, "IAM-like Access Control").
    assert requests.post(own_moto + "/moto-api/reset-auth", data=b"0").ok

    env = {**os.environ, "AWS_ENDPOINT_URL": own_moto, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    env.pop("AWS_PROFILE", None)
    for argv in (
        ["deploy", MODEL, "--host", host.name, "--ssh-config", host.ssh_config],
        ["secret", "check"],
    ):
        proc = subprocess.run([sys.executable, "-m", "tgiops.cli", *argv], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=120)  # fmt: skip
        assert proc.returncode == 1, (argv, proc.stderr)
        assert "denied" in proc.stderr and "secretsmanager:GetSecretValue" in proc.stderr, (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr and "<?xml" not in proc.stderr
    assert live_pair(host) == before


# --- races -----------------------------------------------------------------------------------


def test_two_deploys_and_a_reconcile_race_on_one_host_and_end_healthy(gpu_host, own_aws, tmp_path):
    """Serialised by the host lock: each deploy verifies /info against its own plan while it
    holds the lock, so interleaved restarts would fail one of them; all three end healthy."""
    host = gpu_host("1xA10G", fresh=True)
    tag = f"race-{secrets.token_hex(3)}"
    instance_id = own_aws.client("ec2").run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": tag}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    host.alias(instance_id)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}

    def tgiops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tgiops.cli", *args], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=600)  # fmt: skip

    target = ["--ssh-config", host.ssh_config, "--json"]
    first = tgiops("deploy", MODEL, "--no-token", "--host", host.name, *target)
    assert first.returncode == 0, first.stderr  # the record reconcile restores from

    runs = {
        "deploy 2048": ("deploy", MODEL, "--no-token", "--max-total-tokens", "2048", "--host",
                        host.name, *target),
        "deploy 3000": ("deploy", MODEL, "--no-token", "--max-total-tokens", "3000", "--host",
                        host.name, *target),
        "reconcile": ("reconcile", "--name", tag, "--no-token", *target),  # the operator's choice
    }  # fmt: skip
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [
        threading.Thread(target=lambda k=k, a=a: results.__setitem__(k, tgiops(*a)))
        for k, a in runs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for what, proc in results.items():
        assert proc.returncode == 0, (what, proc.stderr[-3000:])
    assert json.loads(results["deploy 2048"].stdout)["healthy"]
    assert json.loads(results["deploy 3000"].stdout)["healthy"]
    reconciled = json.loads(results["reconcile"].stdout)
    assert reconciled["healthy"]
    [outcome] = reconciled["instances"]
    assert outcome["instance_id"] == instance_id and outcome["units"], outcome
    assert host.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert served_total(host) in (2048, 3000, served_total_of(first))


def served_total_of(proc: subprocess.CompletedProcess[str]) -> int:
    return int(json.loads(proc.stdout)["plan"]["max_total_tokens"])
