"""`tgiops deploy`: from a model alias to a verified TGI endpoint on one host.

Steps (each says what it does through ``on_progress``):

1. lock the host (two deploys never interleave; a waiter is told who holds it), probe it in one
   round trip (nothing changes: a refused deploy leaves no trace);
2. refuse (InputError, exit 2) a unit file tgiops did not write (``check_owned``), a port or
   GPUs other tgiops units hold (``choose_port``, ``choose_gpus``: without --port/--gpu-devices
   the free ones are picked; these checks on the probe report live in
   tgiops.commands.deploy_checks), then plan from the GPUs left and render the unit and env file;
3. compare with what is installed: same files and healthy -> "unchanged", nothing restarted;
4. upload both files into temporary files beside their final paths (one round trip creates
   them, SFTP fills them), then one script checks them, keeps the installed ones as
   ``.previous``, renames the new ones into place, daemon-reloads, enables and restarts (the
   scripts run on the host are in tgiops.commands.deploy_scripts);
5. wait until healthy through an SSH tunnel to the loopback port: refused/timeouts while the
   unit lives = loading; a failed or restarting unit = crashed, at once;
6. on failure roll back to the previous unit (and check it serves again), or remove the new
   unit, env file and container when there was none (the host is as before), and say why;
7. when healthy, write the deployment record on the data volume (tgiops.core.record), so a
   replacement instance or ``tgiops reconcile`` can rebuild the same deployment.

This module is the deploy to one host; tgiops.commands.deploy_fleet runs it on several hosts
at once and sums up their outcomes.

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
from dataclasses import dataclass, replace
from typing import Any

from tgiops import __version__
from tgiops.commands.deploy_checks import (
    check_host,
    check_owned,
    choose_gpus,
    choose_port,
    inventory_from,
    own_gpu_use,
    replaced_deploy,
    replaced_warning,
)
from tgiops.commands.deploy_scripts import (
    guard_script,
    keep_previous_script,
    newest_journal_line_command,
    remove_first_script,
    restart_script,
)
from tgiops.core import hardware, probe, progress, record
from tgiops.core.engines import vllm
from tgiops.core.errors import DoesNotFitError, HealthError, InputError
from tgiops.core.layout import ENV_DIR, LOCK_PATH, UNIT_DIR
from tgiops.core.plan import Plan
from tgiops.core.render import UnitOptions, render_engine_unit, render_env_file, unit_context
from tgiops.core.request import (
    DeployRequest,
    DeployResult,
    Redactor,
    Replaced,
    default_timeout_s,
    plan_request,
)
from tgiops.edges import record_store
from tgiops.edges.host import Host
from tgiops.edges.ssh import FileUpload

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 600

# Messages (str) and, while a unit starts, progress.Tick objects (their str() is a message).
Progress = Callable[[Any], None]


def deploy(
    host: Host,  # tgiops.edges.ssh.RemoteHost (or anything with its interface)
    request: DeployRequest,
    *,
    get_secret: Callable[[str], str] | None,
    template_text: str,
    on_progress: Progress = lambda message: None,
    secret_exists: Callable[[str], bool] | None = None,
) -> DeployResult:
    """Deploy ``request`` on ``host``. Raises InputError before changing anything."""
    from tgiops.edges import health  # requests + tenacity: only when deploying

    started = time.monotonic()
    started_at = time.time()
    redact = Redactor()
    secret_env = _secret_env_names(request)
    options = request.unit_options(secret_env)
    secrets = _read_secrets(
        request,
        get_secret=get_secret,
        secret_exists=secret_exists,
        redact=redact,
        on_progress=on_progress,
    )
    env_text = render_env_file(secrets)
    env_redacted = render_env_file(dict.fromkeys(secret_env, ""), masked=True)

    with _locked(host, enabled=not request.dry_run, on_progress=on_progress):
        on_progress(f"probing {host.name}")
        report = _probe(host, options)
        inventory = inventory_from(report, host.name)
        check_host(report, host.name)
        check_owned(report, options, host.name)
        port = choose_port(request.port, report, host.name)
        devices, inventory = choose_gpus(request.gpu_devices, inventory, report, host.name)
        options = replace(options, port=port, gpu_devices=devices)
        resolved = replace(request, port=port, gpu_devices=devices)
        on_progress(f"planning for {inventory.describe()}")
        the_plan = _fitting_plan(request, inventory, report, host.name)
        unit_text = _unit_text(request, the_plan, options, template_text)
        uploads = _uploads(options, env_text, unit_text)
        attempt = _Attempt(
            host=host,
            options=options,
            plan=the_plan,
            health=health,
            redact=redact,
            on_progress=on_progress,
            started=started,
            unit_text=unit_text,
            env_text_redacted=env_redacted,
            api_key=secrets.get(vllm.API_KEY_ENV) if request.engine.name == "vllm" else None,
        )
        if request.dry_run:
            return attempt.result(
                changed=_differs(report.unit, unit_text, None),
                healthy=False,
                dry_run=True,
                remote_commands=_dry_run_commands(options, uploads),
            )

        timeout_s = request.timeout_s or default_timeout_s(request.model)
        if not _differs(report.unit, unit_text, _sha256(env_text)) and _serves_as_installed(
            attempt, report.unit
        ):
            record_store.save_deploy_record(host, resolved, the_plan, tgiops_version=__version__)
            return attempt.result(changed=False, healthy=True)

        replaced = replaced_deploy(report, started_at)
        warnings: tuple[str, ...] = (
            (replaced_warning(options.unit_name, replaced),) if replaced else ()
        )
        warnings += _exposure_warnings(request)
        attempt = replace(attempt, replaced=replaced, warnings=warnings)
        on_progress("uploading the env file and the unit")
        _install(host, options, uploads, on_progress)
        baseline = _unit_state(host, options)
        try:
            _wait_healthy(attempt, timeout_s=timeout_s, baseline=baseline)
        except HealthError as exc:
            return _roll_back(
                attempt, failure=exc, previous=report.unit, keep_failed=request.keep_failed
            )
        record_store.save_deploy_record(host, resolved, the_plan, tgiops_version=__version__)
        return attempt.result(changed=True, healthy=True)


@dataclass(frozen=True)
class _Attempt:
    """One deploy under way on one host, from its plan on: what the health wait, the roll back
    and every result share, so that each later step takes it and names the rest."""

    host: Host
    options: UnitOptions  # with the chosen port and GPUs
    plan: Plan | vllm.VllmPlan
    health: Any  # the tgiops.edges.health module (imported when deploying)
    redact: Redactor  # knows this deploy's secret values
    on_progress: Progress
    started: float  # time.monotonic() when the deploy began
    unit_text: str  # the rendered unit
    env_text_redacted: str  # its env file, values masked
    api_key: str | None = None  # vLLM's API key: its health check's completion needs it
    replaced: Replaced | None = None  # the recorded deploy this one replaces (when it installs)
    warnings: tuple[str, ...] = ()

    def result(
        self,
        *,
        changed: bool,
        healthy: bool,
        dry_run: bool = False,
        remote_commands: tuple[str, ...] = (),
        rolled_back: bool = False,
        restored: str | None = None,
        failure: str | None = None,
        diagnosis: str | None = None,
        journal_tail: str = "",
    ) -> DeployResult:
        """The DeployResult of this attempt now: what every outcome of it has (from the
        host, options, plan and unit), this outcome's fields, timed and counted."""
        return DeployResult(
            host=self.host.name,
            unit=self.options.unit_name,
            plan=self.plan,
            endpoint=f"http://{self.options.bind_address}:{self.options.port}",
            unit_text=self.unit_text,
            env_text_redacted=self.env_text_redacted,
            port=self.options.port,
            gpu_devices=self.options.gpu_devices,
            replaced=self.replaced,
            warnings=self.warnings,
            changed=changed,
            healthy=healthy,
            dry_run=dry_run,
            remote_commands=remote_commands,
            rolled_back=rolled_back,
            restored=restored,
            failure=failure,
            diagnosis=diagnosis,
            journal_tail=journal_tail,
            elapsed_s=time.monotonic() - self.started,
            round_trips=self.host.round_trips,
        )


def _serves_as_installed(attempt: _Attempt, installed: probe.UnitReport | None) -> bool:
    """The installed unit is already this one: whether it is healthy (then nothing restarts)."""
    attempt.on_progress("the installed unit is already this one; checking its health")
    try:
        _wait_healthy(attempt, timeout_s=30.0, baseline=installed.state if installed else None)
    except HealthError as exc:
        attempt.on_progress(f"installed but not healthy ({exc}); restarting it")
        return False
    return True


def _read_secrets(
    request: DeployRequest,
    *,
    get_secret: Callable[[str], str] | None,
    secret_exists: Callable[[str], bool] | None,
    redact: Redactor,
    on_progress: Progress,
) -> dict[str, str]:
    """env name -> value of each secret the deploy needs (none with --dry-run), each value
    added to ``redact``.

    Secrets come first: a missing or unreadable secret must fail before the host is touched.
    --dry-run checks that each exists (never reading it), so it fails where the run would."""
    secrets: dict[str, str] = {}
    if _secret_env_names(request) and get_secret is None and not request.dry_run:
        raise InputError("this deploy needs AWS for its secrets; give --region/--profile")
    for (env_name, secret_name), flag in zip(
        _secret_sources(request), _secret_flags(request), strict=True
    ):
        if secret_exists is not None and not secret_exists(secret_name):
            ungated = ", or deploy an ungated model with --no-token"
            raise InputError(
                f"{flag} {secret_name}: no such secret in AWS Secrets Manager. Store it with "
                f"`tgiops secret set --name {secret_name}`"
                + (ungated if flag == "--secret-name" else "")
            )
        if request.dry_run:
            continue
        on_progress(f"reading secret {secret_name}")
        value = get_secret(secret_name)  # type: ignore[misc]
        redact.add(value)
        secrets[env_name] = value
    return secrets


def _fitting_plan(
    request: DeployRequest,
    inventory: hardware.GpuInventory,
    report: probe.HostReport,
    host_name: str,
) -> Plan | vllm.VllmPlan:
    """The plan for the GPUs left to this deploy; DoesNotFitError (nothing changed) when the
    model does not fit them."""
    the_plan = plan_request(request, inventory, instance_types=hardware.all_instance_types())
    if not the_plan.fits:
        raise DoesNotFitError(
            f"{request.model.alias} does not fit {host_name} ({inventory.describe()}): "
            f"{the_plan.problem}. Nothing was changed. Run `tgiops plan` for alternatives.",
            plan=the_plan,
        )
    if isinstance(the_plan, vllm.VllmPlan):
        # vLLM asks for utilization x TOTAL memory and refuses to start with less free
        # (vllm.free_memory_problem): say so before anything changes. A redeploy of the
        # same unit counts the memory its own running container holds as its own.
        own = own_gpu_use(report, inventory)
        problem = vllm.free_memory_problem(the_plan, own)
        if problem:
            raise DoesNotFitError(f"{host_name}: {problem}. Nothing was changed.", plan=the_plan)
    return the_plan


def _unit_text(
    request: DeployRequest,
    the_plan: Plan | vllm.VllmPlan,
    options: UnitOptions,
    template_text: str,
) -> str:
    """The systemd unit of ``the_plan``, from its engine's template and context."""
    context = (
        vllm.unit_context(the_plan, options)
        if isinstance(the_plan, vllm.VllmPlan)
        else unit_context(the_plan, options)
    )
    return render_engine_unit(
        the_plan,
        options,
        _engine_template(request.engine.unit_template, template_text),
        context,
        tgiops_version=__version__,
    )


def _dry_run_commands(options: UnitOptions, uploads: list[FileUpload]) -> tuple[str, ...]:
    """What a real run would do on the host, for --dry-run to show."""
    return (
        guard_script(options).strip().splitlines()[0] + " ... (refuse: not tgiops')",
        *(f"sftp put {u.path} (mode {u.mode:o}, into a mktemp file beside it)" for u in uploads),
        "check each upload's sha256, fsync",
        *keep_previous_script(options).strip().splitlines(),
        *(f"mv -f -- TEMPORARY_FILE {shlex.quote(u.path)}" for u in uploads),
        *restart_script(options).strip().splitlines(),
    )


def _secret_env_names(request: DeployRequest) -> tuple[str, ...]:
    return tuple(name for name, _ in _secret_sources(request))


def _secret_flags(request: DeployRequest) -> list[str]:
    """The CLI flag each of ``_secret_sources`` comes from (for messages)."""
    return [
        flag
        for flag, name in (
            ("--secret-name", request.token_secret),
            ("--api-key-secret", request.api_key_secret),
        )
        if name
    ]


def _engine_template(name: str, tgi_template_text: str) -> str:
    """The engine's unit template: TGI's is ``tgi_template_text`` (what callers pass, or their
    own for tests), another engine's is read from unit_templates/."""
    from tgiops.edges import resources

    if name == "tgi.service.j2":
        return tgi_template_text
    return (resources.shipped_path("unit_templates") / name).read_text()


def _exposure_warnings(request: DeployRequest) -> tuple[str, ...]:
    """vLLM's /v1/* is open to anyone who reaches the port unless --api-key is set."""
    if request.engine.name == "vllm" and request.public and not request.api_key_secret:
        return (
            "the endpoint listens on all addresses without an API key: anyone who reaches the "
            "port can use the model; deploy with --api-key-secret NAME (vLLM then requires "
            "'Authorization: Bearer KEY' on /v1/*)",
        )
    return ()


def _secret_sources(request: DeployRequest) -> list[tuple[str, str]]:
    sources = []
    if request.token_secret:
        sources.append((request.engine.token_env_var, request.token_secret))
    if request.api_key_secret and request.engine.name == "vllm":
        # VLLM_API_KEY: vllm/envs.py, read by the API server as --api-key's default.
        sources.append((vllm.API_KEY_ENV, request.api_key_secret))
    elif request.api_key_secret:
        assert not isinstance(request.engine, vllm.VllmEngine)
        if request.engine.version < (2, 3, 0):
            raise InputError(
                "--api-key-secret needs TGI >= 2.3 (its --api-key); "
                f"got {request.engine.version_text}"
            )
        sources.append(("API_KEY", request.api_key_secret))
    return sources


@contextmanager
def _locked(host: Host, *, enabled: bool, on_progress: Progress) -> Iterator[None]:
    if not enabled:
        yield
        return
    on_progress(f"locking {host.name}")
    with host.hold_lock(
        LOCK_PATH,
        timeout_s=LOCK_TIMEOUT_S,
        on_wait=lambda who: on_progress(f"waiting for the lock on {host.name} held by {who}"),
    ):
        yield


def _probe(host: Host, options: UnitOptions) -> probe.HostReport:
    script = probe.host_report_script(
        data_dir=options.data_dir,
        unit_name=options.unit_name,
        unit_dir=UNIT_DIR,
        env_dir=ENV_DIR,
        record_path=record.record_path(options.data_dir, options.unit_name),
    )
    result = host.run_script(script, check=False)
    return probe.parse_host_report(result.stdout, unit_name=options.unit_name)


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
    host: Host, options: UnitOptions, uploads: list[FileUpload], on_progress: Progress
) -> None:
    """Three round trips: two commands and one SFTP write (scripts/bench_deploy.py times it)."""
    host.install_files(
        uploads,
        guard=guard_script(options),
        before=keep_previous_script(options),
        after=restart_script(options),
        on_uploaded=lambda: on_progress(f"installing and restarting {options.unit_name}"),
    )


def _unit_state(host: Host, options: UnitOptions) -> probe.UnitState:
    result = host.run(probe.systemctl_show_command(options.unit_name), check=False)
    return probe.unit_state_from_show(probe.parse_systemctl_show(result.stdout))


def _wait_healthy(attempt: _Attempt, *, timeout_s: float, baseline: probe.UnitState | None) -> None:
    """Ready = /health 200, what the endpoint serves matches the plan (TGI: /info; vLLM:
    /v1/models lists the served name with the planned max_model_len), and one token comes
    back (TGI: /generate; vLLM: /v1/completions, with the API key when there is one).
    ``baseline``: the unit's state before its restart (restarts beyond it mean a crash)."""
    host, options, the_plan, health = attempt.host, attempt.options, attempt.plan, attempt.health
    on_progress, api_key = attempt.on_progress, attempt.api_key
    baseline_restarts = (baseline.n_restarts or 0) if baseline else 0
    last_line = [""]
    phases = progress.PhaseTracker()
    since = int(time.time()) - 1

    def is_alive() -> bool:
        # One round trip: the unit's state and its newest journal line (for progress).
        script = f"{probe.systemctl_show_command(options.unit_name)}\necho @@journal\n" + (
            newest_journal_line_command(options.unit_name, since)
        )
        out = host.run_script(script, check=False).stdout
        state_text, _, journal = out.partition("@@journal")
        state = probe.unit_state_from_show(probe.parse_systemctl_show(state_text))
        last_line[0] = journal.strip()
        phases.see(last_line[0])
        if state.active_state == "failed" or state.sub_state == "auto-restart":
            return False
        return (state.n_restarts or 0) <= baseline_restarts

    def report(p: Any, elapsed_s: float) -> None:
        on_progress(
            progress.Tick(
                unit=options.unit_name,
                elapsed_s=elapsed_s,
                state=p.state,
                line=last_line[0],
                phase=phases.phase,
            )
        )

    with host.forward_local_port(options.port) as local_port:
        base_url = f"http://127.0.0.1:{local_port}"
        health.wait_until_healthy(
            base_url,
            timeout_s=timeout_s,
            interval_s=1.0,
            consecutive_successes=2,
            is_alive=is_alive,
            on_progress=report,
        )
        served = the_plan.model.alias
        if isinstance(the_plan, vllm.VllmPlan):
            info = health.get_models(base_url, api_key=api_key)
            if served not in health.served_names(info):
                raise HealthError(
                    f"the endpoint serves {', '.join(health.served_names(info)) or 'nothing'}, "
                    f"not {served}"
                )
        else:
            info = health.get_info(base_url)
        mismatches = the_plan.engine.info_mismatches(
            info,
            expected_model_id=the_plan.model.repo_id,
            expected_max_total_tokens=the_plan.max_total_tokens,
            expected_max_input_tokens=the_plan.max_input_tokens,
        )
        if mismatches:
            raise HealthError("the endpoint serves something else: " + "; ".join(mismatches))
        if isinstance(the_plan, vllm.VllmPlan):
            health.smoke_completion(base_url, served, api_key=api_key)
        else:
            health.smoke_generate(base_url)


def _journal_tail(host: Host, options: UnitOptions, redact: Redactor, lines: int = 30) -> str:
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
    attempt: _Attempt,
    *,
    failure: HealthError,
    previous: probe.UnitReport | None,
    keep_failed: bool,
) -> DeployResult:
    """Undo a deploy whose unit did not become healthy: back to ``previous`` (the unit as the
    probe found it before this deploy), or remove the new unit when there was none; with
    ``keep_failed`` leave it for debugging. The result says what was restored and why."""
    host, options, redact = attempt.host, attempt.options, attempt.redact
    on_progress = attempt.on_progress
    journal = _journal_tail(host, options, redact)
    diagnosis = attempt.plan.engine.diagnose_journal(journal)
    failure_text = redact(str(failure))
    q = shlex.quote
    unit, env, name = options.unit_path, options.env_file, options.unit_name + ".service"
    had_previous = previous is not None and previous.unit_text is not None
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
        previous_active = previous is not None and previous.state.active_state == "active"
        try:
            _wait_previous(attempt)
            restored = "the previous unit, which is healthy again"
        except HealthError as exc:
            restored = (
                f"the previous unit, which is not healthy either ({redact(str(exc))})"
                if previous_active
                else "the previous unit (it was not running before this deploy either)"
            )
    else:
        on_progress(f"removing the failed {options.unit_name}: nothing was installed before")
        host.run_script(remove_first_script(options))
        restored = (
            "nothing was serving before; the new unit, its env file and container are removed"
        )
    return attempt.result(
        changed=True,
        healthy=False,
        rolled_back=not keep_failed,
        restored=restored,
        failure=failure_text,
        diagnosis=diagnosis,
        journal_tail=journal,
    )


def _wait_previous(attempt: _Attempt) -> None:
    """Wait until the restored previous unit serves again (HealthError when it does not)."""
    host, options, on_progress = attempt.host, attempt.options, attempt.on_progress
    baseline = _unit_state(host, options)

    def is_alive() -> bool:
        state = _unit_state(host, options)
        return state.active_state != "failed" and (state.n_restarts or 0) <= (
            baseline.n_restarts or 0
        )

    with host.forward_local_port(options.port) as local_port:
        attempt.health.wait_until_healthy(
            f"http://127.0.0.1:{local_port}",
            timeout_s=300,
            interval_s=1.0,
            consecutive_successes=2,
            is_alive=is_alive,
            on_progress=lambda p, s: on_progress(
                progress.Tick(options.unit_name, s, p.state, phase="restarting the previous unit")
            ),
        )
