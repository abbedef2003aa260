"""`tgiops deploy`: from a model alias to a verified TGI endpoint on one host.

Steps (each says what it does through ``on_progress``):

1. lock the host (two deploys never interleave), probe it in one round trip;
2. plan from the probed GPUs, render the unit and the env file;
3. compare with what is installed: same files and healthy -> "unchanged", nothing restarted;
4. upload both files into temporary files beside their final paths (one round trip creates
   them, SFTP fills them), then one script checks them, keeps the installed ones as
   ``.previous``, renames the new ones into place, daemon-reloads, enables and restarts;
5. wait until healthy through an SSH tunnel to the loopback port: refused/timeouts while the
   unit lives = loading; a failed or restarting unit = crashed, at once;
6. on failure roll back to the previous unit (and check it serves again), or stop and disable
   the new one when there was none, and say why in words;
7. when healthy, write the deployment record on the data volume (tgiops.record), so a
   replacement instance or ``tgiops reconcile`` can rebuild the same deployment.

The token travels AWS -> memory -> SFTP -> a 0600 file. It is never in argv, a log line,
an exception or the output; everything shown from the host passes through ``Redactor``.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tgiops import __version__, hardware, probe, record
from tgiops.catalog import ModelSpec
from tgiops.engine import Engine
from tgiops.errors import DeployError, HealthError, InputError, ProbeError
from tgiops.plan import Overrides, Plan, plan
from tgiops.render import ENV_DIR, UNIT_DIR, UnitOptions, render_env_file, render_unit
from tgiops.ssh import FileUpload

log = logging.getLogger(__name__)

LOCK_PATH = "/run/lock/tgiops.lock"
LOCK_TIMEOUT_S = 600
_MIN_DISK_BYTES = 1 << 30

Progress = Callable[[str], None]


class Redactor:
    """Replaces every secret value it was told about with ``***`` in text shown to people."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class DeployRequest:
    model: ModelSpec
    engine: Engine
    overrides: Overrides = field(default_factory=Overrides)
    unit_name: str | None = None  # default: tgiops-<alias>
    port: int = 8080
    public: bool = False
    data_dir: str = "/var/lib/tgiops/data"
    gpu_devices: tuple[int, ...] = ()
    token_secret: str | None = "tgiops/hf-token"  # None: no token (ungated models only)
    api_key_secret: str | None = None
    offline: bool = False  # HF_HUB_OFFLINE=1: start from the cache (spot relaunch)
    dry_run: bool = False
    keep_failed: bool = False
    timeout_s: float | None = None  # default: from the model size

    def unit_options(self, secret_env: tuple[str, ...]) -> UnitOptions:
        name = self.unit_name or default_unit_name(self.model.alias)
        return UnitOptions(
            unit_name=name,
            port=self.port,
            bind_address="0.0.0.0" if self.public else "127.0.0.1",
            data_dir=self.data_dir,
            gpu_devices=self.gpu_devices,
            extra_env={"HF_HUB_OFFLINE": "1"} if self.offline else {},
            secret_env=secret_env,
        )


@dataclass(frozen=True)
class DeployResult:
    host: str
    unit: str
    plan: Plan
    changed: bool
    healthy: bool
    endpoint: str  # on the host: where TGI listens
    elapsed_s: float
    dry_run: bool = False
    rolled_back: bool = False
    restored: str | None = None  # what serves now after a failure, in words
    failure: str | None = None  # why it failed, in words
    diagnosis: str | None = None
    journal_tail: str = ""
    unit_text: str = ""
    env_text_redacted: str = ""
    remote_commands: tuple[str, ...] = ()
    round_trips: int = 0


def default_unit_name(alias: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in alias.lower())
    return f"tgiops-{safe}"[:63]


def default_timeout_s(model: ModelSpec) -> float:
    """Download + load + warmup: ~10 min base, plus ~1 min per 10 GB of weights."""
    size_gb = (model.weight_bytes or model.parameters_b * 2e9) / 1e9
    return 600 + 6 * size_gb


def deploy(
    host: Any,  # tgiops.ssh.RemoteHost (or anything with its interface)
    request: DeployRequest,
    *,
    get_secret: Callable[[str], str] | None,
    template_text: str,
    on_progress: Progress = lambda message: None,
) -> DeployResult:
    """Deploy ``request`` on ``host``. Raises InputError before changing anything."""
    from tgiops import health  # requests + tenacity: only when deploying

    started = time.monotonic()
    redact = Redactor()
    secret_env = _secret_env_names(request)
    options = request.unit_options(secret_env)

    # Secrets first: a missing or unreadable secret must fail before the host is touched.
    secrets: dict[str, str] = {}
    if not request.dry_run:
        if secret_env and get_secret is None:
            raise InputError("this deploy needs AWS for its secrets; give --region/--profile")
        for env_name, secret_name in _secret_sources(request):
            on_progress(f"reading secret {secret_name}")
            value = get_secret(secret_name)  # type: ignore[misc]
            redact.add(value)
            secrets[env_name] = value
    env_text = render_env_file(secrets)
    env_redacted = render_env_file(dict.fromkeys(secret_env, ""), masked=True)

    with _locked(host, enabled=not request.dry_run, on_progress=on_progress):
        on_progress(f"probing {host.name}")
        report = _probe(host, options, prepare=not request.dry_run)
        # TGI sees only the --gpu-devices GPUs (docker --gpus "device=..."): plan for those.
        inventory = _inventory_from(report, host.name).select(request.gpu_devices)
        _check_host(report, host.name)
        on_progress(f"planning for {inventory.describe()}")
        the_plan = plan(
            request.model,
            inventory,
            request.engine,
            request.overrides,
            instance_types=hardware.all_instance_types(),
        )
        if not the_plan.fits:
            raise DeployError(
                f"{request.model.alias} does not fit {host.name} ({inventory.describe()}): "
                f"{the_plan.problem}. Nothing was changed. Run `tgiops plan` for alternatives."
            )
        unit_text = render_unit(the_plan, options, template_text, tgiops_version=__version__)
        endpoint = f"http://{options.bind_address}:{options.port}"
        uploads = _uploads(options, env_text, unit_text)
        base = dict(
            host=host.name,
            unit=options.unit_name,
            plan=the_plan,
            endpoint=endpoint,
            unit_text=unit_text,
            env_text_redacted=env_redacted,
        )
        if request.dry_run:
            commands = (
                *(
                    f"sftp put {u.path} (mode {u.mode:o}, into a mktemp file beside it)"
                    for u in uploads
                ),
                "check each upload's sha256, fsync",
                *_keep_previous_script(options).strip().splitlines(),
                *(f"mv -f -- TEMPORARY_FILE {shlex.quote(u.path)}" for u in uploads),
                *_restart_script(options).strip().splitlines(),
            )
            return DeployResult(
                **base,
                changed=_differs(report.unit, unit_text, None),
                healthy=False,
                dry_run=True,
                elapsed_s=time.monotonic() - started,
                remote_commands=commands,
                round_trips=host.round_trips,
            )

        timeout_s = request.timeout_s or default_timeout_s(request.model)
        if not _differs(report.unit, unit_text, _sha256(env_text)):
            on_progress("the installed unit is already this one; checking its health")
            try:
                _wait_healthy(
                    host,
                    options,
                    the_plan,
                    health,
                    30.0,
                    report.unit.state if report.unit else None,
                    on_progress,
                )
                record.remember_deploy(host, request, the_plan, tgiops_version=__version__)
                return DeployResult(
                    **base,
                    changed=False,
                    healthy=True,
                    elapsed_s=time.monotonic() - started,
                    round_trips=host.round_trips,
                )
            except HealthError as exc:
                on_progress(f"installed but not healthy ({exc}); restarting it")

        on_progress("uploading the env file and the unit")
        _install(host, options, uploads, on_progress)
        baseline = _unit_state(host, options)
        try:
            _wait_healthy(host, options, the_plan, health, timeout_s, baseline, on_progress)
        except HealthError as exc:
            return _roll_back(
                host,
                options,
                the_plan,
                health,
                exc,
                report,
                redact,
                base,
                started,
                request.keep_failed,
                on_progress,
            )
        record.remember_deploy(host, request, the_plan, tgiops_version=__version__)
        return DeployResult(
            **base,
            changed=True,
            healthy=True,
            elapsed_s=time.monotonic() - started,
            round_trips=host.round_trips,
        )


def _secret_env_names(request: DeployRequest) -> tuple[str, ...]:
    return tuple(name for name, _ in _secret_sources(request))


def _secret_sources(request: DeployRequest) -> list[tuple[str, str]]:
    sources = []
    if request.token_secret:
        sources.append((request.engine.token_env_var, request.token_secret))
    if request.api_key_secret:
        if request.engine.version < (2, 3, 0):
            raise InputError(
                "--api-key-secret needs TGI >= 2.3 (its --api-key); "
                f"got {request.engine.version_text}"
            )
        sources.append(("API_KEY", request.api_key_secret))
    return sources


@contextmanager
def _locked(host: Any, *, enabled: bool, on_progress: Progress) -> Iterator[None]:
    if not enabled:
        yield
        return
    on_progress(f"locking {host.name}")
    with host.hold_lock(LOCK_PATH, timeout_s=LOCK_TIMEOUT_S):
        yield


def _probe(host: Any, options: UnitOptions, *, prepare: bool) -> probe.HostReport:
    script = probe.host_report_script(
        data_dir=options.data_dir,
        unit_name=options.unit_name,
        unit_dir=UNIT_DIR,
        env_dir=ENV_DIR,
        prepare=prepare,
    )
    result = host.run_script(script, check=False)
    return probe.parse_host_report(result.stdout, unit_name=options.unit_name)


def _inventory_from(report: probe.HostReport, host_name: str) -> hardware.GpuInventory:
    if report.gpus_exit_code == 127:
        raise DeployError(
            f"{host_name} has no nvidia-smi: install the NVIDIA driver (or use a Deep Learning "
            "AMI) before deploying"
        )
    if report.gpus_exit_code != 0:
        raise DeployError(
            f"nvidia-smi failed on {host_name} (exit {report.gpus_exit_code}): "
            f"{report.gpus_text.strip()[:300]}. Check the NVIDIA driver (`nvidia-smi`)."
        )
    try:
        return probe.parse_nvidia_smi_csv(report.gpus_text)
    except ProbeError as exc:
        raise DeployError(f"{host_name}: {exc}") from exc


def _check_host(report: probe.HostReport, host_name: str) -> None:
    if report.docker_exit_code == 127:
        raise DeployError(
            f"{host_name} has no docker: install docker and the NVIDIA Container Toolkit first"
        )
    if report.docker_exit_code != 0:
        raise DeployError(
            f"docker is not running on {host_name}: {report.docker_runtimes_text.strip()[:200]}. "
            "Start it with `systemctl start docker`."
        )
    if '"nvidia"' not in report.docker_runtimes_text:
        raise DeployError(
            f"docker on {host_name} has no NVIDIA runtime (runtimes: "
            f"{report.docker_runtimes_text.strip()[:200]}); install the NVIDIA Container Toolkit "
            "and run `nvidia-ctk runtime configure --runtime=docker`"
        )
    if report.disk_available_bytes is not None and report.disk_available_bytes < _MIN_DISK_BYTES:
        raise DeployError(
            f"only {report.disk_available_bytes >> 20} MiB free for the model cache on {host_name}"
        )


def _differs(unit: probe.UnitReport | None, unit_text: str, env_sha: str | None) -> bool:
    if unit is None or unit.unit_text is None:
        return True
    if unit.unit_text.strip() != unit_text.strip():
        return True
    return env_sha is not None and unit.env_sha256 != env_sha


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _uploads(options: UnitOptions, env_text: str, unit_text: str) -> list[FileUpload]:
    return [
        FileUpload(options.env_file, env_text.encode(), mode=0o600, owner="root"),
        FileUpload(options.unit_path, unit_text.encode(), mode=0o644, owner="root"),
    ]


def _install(
    host: Any, options: UnitOptions, uploads: list[FileUpload], on_progress: Progress
) -> None:
    """Three round trips: two commands and one SFTP write (scripts/bench_deploy.py times it)."""
    host.install_files(
        uploads,
        before=_keep_previous_script(options),
        after=_restart_script(options),
        on_uploaded=lambda: on_progress(f"installing and restarting {options.unit_name}"),
    )


def _keep_previous_script(options: UnitOptions) -> str:
    """Keep the installed unit and env file as ``.previous`` (what a rollback restores)."""
    q = shlex.quote
    unit, env = options.unit_path, options.env_file
    return f"""if [ -f {q(unit)} ]; then cp -p {q(unit)} {q(unit + ".previous")}; fi
if [ -f {q(env)} ]; then cp -p {q(env)} {q(env + ".previous")}; fi
"""


def _restart_script(options: UnitOptions) -> str:
    name = shlex.quote(options.unit_name + ".service")
    return f"""systemctl daemon-reload
systemctl enable --quiet {name}
systemctl restart {name}
"""


def _unit_state(host: Any, options: UnitOptions) -> probe.UnitState:
    result = host.run(probe.systemctl_show_command(options.unit_name), check=False)
    return probe.unit_state_from_show(probe.parse_systemctl_show(result.stdout))


def _wait_healthy(
    host: Any,
    options: UnitOptions,
    the_plan: Plan,
    health: Any,
    timeout_s: float,
    baseline: probe.UnitState | None,
    on_progress: Progress,
) -> None:
    """Ready = /health 200, /info matches the plan, and a one-token /generate succeeds."""
    baseline_restarts = (baseline.n_restarts or 0) if baseline else 0
    last_line = [""]
    since = int(time.time()) - 1
    unit = options.unit_name + ".service"

    def is_alive() -> bool:
        # One round trip: the unit's state and its newest journal line (for progress).
        script = (
            f"{probe.systemctl_show_command(options.unit_name)}\n"
            f"echo @@journal\n"
            f"journalctl -u {shlex.quote(unit)} --since @{since} -n 1 -o cat --no-pager "
            "2>/dev/null\n"
        )
        out = host.run_script(script, check=False).stdout
        state_text, _, journal = out.partition("@@journal")
        state = probe.unit_state_from_show(probe.parse_systemctl_show(state_text))
        last_line[0] = journal.strip()
        if state.active_state == "failed" or state.sub_state == "auto-restart":
            return False
        return (state.n_restarts or 0) <= baseline_restarts

    def progress(p: Any, elapsed_s: float) -> None:
        tail = f": {last_line[0][:120]}" if last_line[0] else ""
        on_progress(f"{p.state} after {elapsed_s:.0f}s{tail}")

    with host.forward_local_port(options.port) as local_port:
        base_url = f"http://127.0.0.1:{local_port}"
        health.wait_until_healthy(
            base_url,
            timeout_s=timeout_s,
            interval_s=1.0,
            consecutive_successes=2,
            is_alive=is_alive,
            on_progress=progress,
        )
        info = health.get_info(base_url)
        mismatches = health.verify_info(
            info,
            expected_model_id=the_plan.model.repo_id,
            expected_max_total_tokens=the_plan.max_total_tokens,
            expected_max_input_tokens=the_plan.max_input_tokens,
        )
        if mismatches:
            raise HealthError("the endpoint serves something else: " + "; ".join(mismatches))
        health.smoke_generate(base_url)


def _journal_tail(host: Any, options: UnitOptions, redact: Redactor, lines: int = 30) -> str:
    result = host.run(
        [
            "journalctl",
            "-u",
            options.unit_name + ".service",
            "-n",
            str(lines),
            "-o",
            "cat",
            "--no-pager",
        ],
        check=False,
    )
    return redact(result.stdout.strip())


def _roll_back(
    host: Any,
    options: UnitOptions,
    the_plan: Plan,
    health: Any,
    failure: HealthError,
    report: probe.HostReport,
    redact: Redactor,
    base: dict[str, Any],
    started: float,
    keep_failed: bool,
    on_progress: Progress,
) -> DeployResult:
    journal = _journal_tail(host, options, redact)
    diagnosis = probe.diagnose_journal(journal)
    failure_text = redact(str(failure))
    q = shlex.quote
    unit, env, name = options.unit_path, options.env_file, options.unit_name + ".service"
    had_previous = report.unit is not None and report.unit.unit_text is not None
    if keep_failed:
        restored = "nothing: --keep-failed left the failed unit in place for debugging"
    elif had_previous:
        on_progress(f"rolling back {options.unit_name} to the previous unit")
        host.run_script(
            f"""set -e
mv -f {q(unit + ".previous")} {q(unit)}
if [ -f {q(env + ".previous")} ]; then mv -f {q(env + ".previous")} {q(env)}; fi
systemctl daemon-reload
systemctl restart {q(name)}
"""
        )
        previous_active = report.unit is not None and report.unit.state.active_state == "active"
        try:
            _wait_previous(host, options, health, on_progress)
            restored = "the previous unit, which is healthy again"
        except HealthError as exc:
            restored = (
                f"the previous unit, which is not healthy either ({redact(str(exc))})"
                if previous_active
                else "the previous unit (it was not running before this deploy either)"
            )
    else:
        on_progress(f"stopping and disabling the failed {options.unit_name}")
        host.run_script(f"systemctl disable --now --quiet {q(name)} || true\n")
        restored = "nothing was serving before; the new unit is stopped and disabled"
    return DeployResult(
        **base,
        changed=True,
        healthy=False,
        rolled_back=not keep_failed,
        restored=restored,
        failure=failure_text,
        diagnosis=diagnosis,
        journal_tail=journal,
        elapsed_s=time.monotonic() - started,
        round_trips=host.round_trips,
    )


def _wait_previous(host: Any, options: UnitOptions, health: Any, on_progress: Progress) -> None:
    baseline = _unit_state(host, options)

    def is_alive() -> bool:
        state = _unit_state(host, options)
        return state.active_state != "failed" and (state.n_restarts or 0) <= (
            baseline.n_restarts or 0
        )

    with host.forward_local_port(options.port) as local_port:
        health.wait_until_healthy(
            f"http://127.0.0.1:{local_port}",
            timeout_s=300,
            interval_s=1.0,
            consecutive_successes=2,
            is_alive=is_alive,
            on_progress=lambda p, s: on_progress(f"previous unit: {p.state} after {s:.0f}s"),
        )
