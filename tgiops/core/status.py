"""What `tgiops status` reads and decides, without touching a host (pure).

``status_script`` is the one script status runs per host; ``parse_status_report`` reads its
output; ``judge_unit`` gives each unit a verdict and its reason; ``ec2_facts`` joins what AWS
says. The records they fill and ``JSON_SCHEMA``, the documented ``--json`` object, are
tgiops/core/status_schema.py. tgiops.commands.status runs the script on many hosts at once.

The script finds the units carrying tgiops' marker, and for each prints its unit file,
``systemctl show``, ``docker inspect`` of the container (named like the unit), and TGI's
``/health``, ``/info`` and ``/metrics`` fetched on the host itself with curl against the unit's
bound address (127.0.0.1:PORT by default), so no tunnel is needed; plus the GPUs (nvidia-smi)
and the host's clock.

Verdicts (``judge_unit``), first match wins:

* ``unreachable``  SSH failed (or the EC2 instance is not running): nothing is known.
* ``not-deployed`` no unit file with the marker (or not the ``--unit`` asked for).
* ``failed``       systemd gave up / the unit is stopped / it is crash-looping (auto-restart,
                   or restarted again and again with the port still closed) / ``/health``
                   answers but not 200.
* ``loading``      the unit and its container run and the port is still closed: TGI opens it
                   only after download, load and warmup (docs/tgi.md §5).
* ``degraded``     ``/health`` is 200 but: ``/info`` disagrees with the unit's plan (model,
                   token limits), the unit restarted since it was started (``NRestarts`` > 0,
                   or more than at the previous ``--watch`` refresh), the container restarted,
                   or the unit is not enabled (it would not come back after a reboot).
* ``healthy``      ``/health`` 200, ``/info`` as planned, no restarts, enabled.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tgiops.core import hardware, probe
from tgiops.core.engines import engine_of_image
from tgiops.core.engines.vllm import CONTAINER_HF_HOME, VLLM_IMAGE
from tgiops.core.errors import ProbeError, TgiopsError, UnknownHardwareError
from tgiops.core.layout import MANAGED_MARKER, UNIT_DIR, UNIT_PREFIX
from tgiops.core.probe import SECTION_MARKER, split_sections
from tgiops.core.status_schema import (
    ContainerFacts,
    Ec2Facts,
    HostFacts,
    HttpFacts,
    SystemdFacts,
    TgiMetrics,
    UnitFacts,
    UnitPlan,
    UnitStatus,
    Verdict,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_PARALLEL = 32
SCRIPT_TIMEOUT_S = 45.0
# Restarts with the port still closed that make a unit "crash-looping" rather than "loading":
# one restart may be a relaunch that is loading again; two without ever serving are a loop.
CRASH_LOOP_RESTARTS = 2
HTTP_CONNECT_TIMEOUT_S = 2
HTTP_MAX_TIME_S = 5
JOURNAL_LINES = 30

SHOW_PROPERTIES: tuple[str, ...] = (
    *probe.UNIT_STATE_PROPERTIES,
    "ActiveEnterTimestamp",
    "StateChangeTimestamp",
)
# `docker inspect` as one JSON object (Go template; `json` quotes each value).
_CONTAINER_FORMAT = (
    '{"id":{{json .Id}},"image":{{json .Config.Image}},"status":{{json .State.Status}},'
    '"running":{{json .State.Running}},"started_at":{{json .State.StartedAt}},'
    '"exit_code":{{json .State.ExitCode}},"restart_count":{{json .RestartCount}}}'
)
# curl exit codes (curl(1), "EXIT CODES") for a port that is not serving yet.
_CURL_ERRORS = {
    6: "cannot resolve the bound address",
    7: "connection refused (TGI opens its port after download, load and warmup)",
    28: "no answer in time",
    52: "empty reply (docker-proxy accepts, nothing behind it yet)",
    56: "connection reset (nothing behind the port yet)",
    127: "curl is not installed on the host (tgiops status needs it)",
}


# --- the remote script -------------------------------------------------------------------------


def status_script(*, units: Sequence[str] = (), unit_dir: str = UNIT_DIR) -> str:
    """One bash script printing every fact in marked sections (``parse_status_report``).

    ``units`` limits the per-unit part to those names (the managed list is always complete).
    Nothing is changed on the host; secrets are not read (the env file is never opened).
    """
    q = shlex.quote
    for name in units:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", name):
            raise ProbeError(f"unit name {name!r} is not a tgiops unit name")
    props = " ".join(f"-p {p}" for p in SHOW_PROPERTIES)
    smi_fields = ",".join(probe.NVIDIA_SMI_QUERY_FIELDS)
    only = " ".join(units)
    http = f"--connect-timeout {HTTP_CONNECT_TIMEOUT_S} --max-time {HTTP_MAX_TIME_S}"
    # The whole script is one brace group read from /dev/null: bash -s parses it completely
    # before running anything, so no command can swallow the rest of the script from stdin.
    return f"""{{
set +e
export LC_ALL=C
s() {{ printf '\\n{SECTION_MARKER}%s\\n' "$1"; }}
s now; date -u +%s
s gpus; nvidia-smi --query-gpu={smi_fields} --format=csv,noheader,nounits 2>&1; rc=$?
s gpus-rc; echo $rc
files=$(grep -l '^{MANAGED_MARKER}' {q(unit_dir)}/{UNIT_PREFIX}*.service 2>/dev/null)
s managed; for f in $files; do u=${{f##*/}}; echo "${{u%.service}}"; done
only={q(only)}
for f in $files; do
  u=${{f##*/}}; u=${{u%.service}}
  if [ -n "$only" ]; then case " $only " in *" $u "*) ;; *) continue ;; esac; fi
  s "unit $u"; cat "$f"
  s "show $u"
  systemctl show --timestamp=unix {props} "$u.service" 2>/dev/null \\
    || systemctl show {props} "$u.service"
  s "container $u"
  docker inspect --type container --format '{_CONTAINER_FORMAT}' "$u" 2>&1; rc=$?
  s "container-rc $u"; echo $rc
  ep=$(sed -nE 's/^ExecStart=.* -p ([0-9.]+):([0-9]+):[0-9]+( .*)?$/\\1 \\2/p' "$f" | head -n 1)
  addr=${{ep% *}}; port=${{ep#* }}
  if [ "$addr" = 0.0.0.0 ]; then addr=127.0.0.1; fi
  code=
  if [ -n "$ep" ]; then
    s "endpoint $u"; echo "http://$addr:$port"
    code=$(curl -s -o /dev/null -w '%{{http_code}}' {http} "http://$addr:$port/health")
    rc=$?
    s "health $u"; echo "$code $rc"
    if [ -n "$code" ] && [ "$code" != 000 ]; then
      if grep -q {q(VLLM_IMAGE + ":")} "$f"; then
        s "models $u"; curl -s -w '\n{MODELS_CODE_MARK}%{{http_code}}' {http} "http://$addr:$port/v1/models"
      else
        s "info $u"; curl -s {http} "http://$addr:$port/info"
      fi
      s "metrics $u"; curl -s {http} "http://$addr:$port/metrics"
    fi
  fi
  if [ "$code" != 200 ]; then
    s "journal $u"
    journalctl -u "$u.service" -n {JOURNAL_LINES} -o cat --no-pager 2>&1
  fi
done
s end
}} </dev/null
"""


# --- pure parsers ------------------------------------------------------------------------------

# vLLM has no /info: what it serves is /v1/models (tgiops.core.engines.vllm.VllmEngine
# .info_mismatches). Its HTTP code follows this mark: with --api-key, /v1/* answers 401 to a
# caller without the key, and status never reads the key (the env file stays closed).
MODELS_CODE_MARK = "@@http_code "
_HEADER = re.compile(r"^# Managed by tgiops \S+: (?P<alias>.+?) \((?P<repo>[^()]+)\) on ")
# `docker run` options that take a value (as render.docker_run_args writes them, and more).
_DOCKER_VALUE_OPTIONS = frozenset(
    {
        "--name",
        "--gpus",
        "--shm-size",
        "-p",
        "--publish",
        "-v",
        "--volume",
        "-e",
        "--env",
        "--env-file",
        "--network",
        "--runtime",
        "--ipc",
        "-u",
        "--user",
        "-w",
        "--workdir",
        "--entrypoint",
        "--restart",
        "--mount",
        "--device",
        "-l",
        "--label",
        "-m",
        "--memory",
        "--cpus",
        "--ulimit",
        "--log-driver",
        "--log-opt",
    }
)
_PUBLISH = re.compile(r"^(?:(?P<addr>[0-9.]+):)?(?P<host>\d+):(?P<container>\d+)(?:/tcp)?$")


def _systemd_unescape(arg: str) -> str:
    return arg.replace("%%", "%").replace("$$", "$")


def parse_unit_plan(unit_text: str) -> UnitPlan:
    """The plan an installed unit runs, from its ``ExecStart=`` ``docker run`` line."""
    alias = model_from_header = None
    exec_line = None
    for line in unit_text.splitlines():
        match = _HEADER.match(line)
        if match and alias is None:
            alias, model_from_header = match["alias"], match["repo"]
        if line.startswith("ExecStart=") and exec_line is None:
            exec_line = line[len("ExecStart=") :]
    if exec_line is None:
        return UnitPlan(alias=alias, model_id=model_from_header)
    try:
        argv = [_systemd_unescape(a) for a in shlex.split(exec_line.lstrip("-@+!:"))]
    except ValueError:
        return UnitPlan(alias=alias, model_id=model_from_header)
    try:
        start = argv.index("run") + 1
    except ValueError:
        return UnitPlan(alias=alias, model_id=model_from_header)
    options: dict[str, list[str]] = {}
    image = None
    i = start
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            image = arg
            break
        if "=" in arg and arg.startswith("--"):
            key, _, value = arg.partition("=")
            options.setdefault(key, []).append(value)
        elif arg in _DOCKER_VALUE_OPTIONS and i + 1 < len(argv):
            options.setdefault(arg, []).append(argv[i + 1])
            i += 1
        i += 1
    launcher = _launcher_options(argv[i + 1 :] if image is not None else [])
    addr = port = None
    for spec in options.get("-p", []) + options.get("--publish", []):
        match = _PUBLISH.match(spec)
        if match:
            addr, port = match["addr"] or "0.0.0.0", int(match["host"])
            break
    data_dir = None
    for spec in options.get("-v", []) + options.get("--volume", []):
        source, _, target = spec.partition(":")
        if target.split(":")[0] in ("/data", CONTAINER_HF_HOME):
            data_dir = source
    names = options.get("--name") or []
    container = names[0] if names else None
    return UnitPlan(
        alias=alias,
        model_id=launcher.get("--model-id") or launcher.get("--model") or model_from_header,
        image=image,
        container=container,
        bind_address=addr,
        port=port,
        data_dir=data_dir,
        num_shard=_int_or_none(
            launcher.get("--num-shard") or launcher.get("--tensor-parallel-size")
        ),
        quantize=launcher.get("--quantize") or launcher.get("--quantization"),
        # vLLM: --max-model-len bounds a request's prompt + output; there is no input limit
        max_input_tokens=_int_or_none(
            launcher.get("--max-input-tokens") or launcher.get("--max-input-length")
        ),
        max_total_tokens=_int_or_none(
            launcher.get("--max-total-tokens") or launcher.get("--max-model-len")
        ),
    )


def _launcher_options(args: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            if "=" in arg:
                key, _, value = arg.partition("=")
                found[key] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                found[arg] = args[i + 1]
                i += 1
            else:
                found[arg] = ""
        i += 1
    return found


def _int_or_none(value: str | None) -> int | None:
    if value is None or not re.fullmatch(r"-?\d+", value.strip()):
        return None
    return int(value)


def parse_timestamp(value: str | None) -> int | None:
    """``@1715076000`` (``--timestamp=unix``) -> seconds; anything else (old systemd's
    ``Tue 2024-05-07 10:00:00 UTC``, empty = never) -> None."""
    if value and re.fullmatch(r"@\d+", value.strip()):
        return int(value.strip()[1:])
    return None


def parse_systemd(text: str) -> SystemdFacts | None:
    if not text.strip():
        return None
    props = probe.parse_systemctl_show(text)
    since = props.get("ActiveEnterTimestamp") or None
    return SystemdFacts(
        state=probe.unit_state_from_show(props),
        since_epoch_s=parse_timestamp(since),
        since_text=since,
        state_changed_epoch_s=parse_timestamp(props.get("StateChangeTimestamp")),
    )


def parse_container(text: str, exit_code: int) -> tuple[ContainerFacts | None, str | None]:
    """(facts, None), or (None, why not) for a missing container or an unusable docker."""
    text = text.strip()
    if exit_code == 0:
        try:
            data = json.loads(text.splitlines()[0])
            return (
                ContainerFacts(
                    id=str(data["id"])[:12],
                    image=str(data["image"]),
                    status=str(data["status"]),
                    running=bool(data["running"]),
                    started_at=data.get("started_at") or None,
                    exit_code=data.get("exit_code"),
                    restart_count=int(data.get("restart_count") or 0),
                ),
                None,
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return None, f"docker inspect answered something unreadable ({exc}): {text[:120]!r}"
    if exit_code == 127:
        return None, "docker is not installed on the host"
    if "no such" in text.lower():
        return None, "no container"
    return None, f"docker inspect failed (exit {exit_code}): {text[:200]}"


def parse_health(text: str) -> tuple[int | None, int | None, str]:
    """``CODE CURL_RC`` -> (HTTP status or None, curl exit code, words)."""
    parts = text.split()
    code_text = parts[0] if len(parts) == 2 else ""
    rc_text = parts[-1] if parts else ""
    rc = int(rc_text) if rc_text.isdigit() else None
    code = int(code_text) if code_text.isdigit() and code_text != "000" else None
    if code is not None:
        return code, rc, f"/health answered {code}"
    if rc is not None and rc in _CURL_ERRORS:
        return None, rc, _CURL_ERRORS[rc]
    return None, rc, f"no HTTP answer (curl exit {rc})"


def metrics_from(values: Mapping[str, float]) -> TgiMetrics:
    """Pick status' figures from ``tgiops.core.metrics.parse_metrics`` output."""

    def get(name: str) -> float | None:
        return values.get(name)

    if any(name.startswith("vllm:") for name in values):
        return _vllm_metrics(values)
    return TgiMetrics(
        request_count=get("tgi_request_count"),
        request_success=get("tgi_request_success"),
        request_failure=get("tgi_request_failure"),
        queue_size=get("tgi_queue_size"),
        batch_size=get("tgi_batch_current_size"),
        mean_time_per_token_s=get("tgi_request_mean_time_per_token_duration_mean"),
    )


def _vllm_metrics(values: Mapping[str, float]) -> TgiMetrics:
    """vLLM's /metrics in status' columns (names: vLLM's metrics docs, design/metrics.md):
    requests = finished requests (vllm:request_success_total, over its finished_reason
    labels), queue = waiting, batch = running; KV usage is vllm:kv_cache_usage_perc, or the
    older vllm:gpu_cache_usage_perc (deprecated by PR #18354) on releases that export only it.
    ms/token is the inter-token latency histogram's mean (vllm:inter_token_latency_seconds,
    called vllm:time_per_output_token_seconds before)."""
    usage = values.get("vllm:kv_cache_usage_perc")
    if usage is None:
        usage = values.get("vllm:gpu_cache_usage_perc")
    per_token = values.get("vllm:inter_token_latency_seconds_mean")
    if per_token is None:
        per_token = values.get("vllm:time_per_output_token_seconds_mean")
    return TgiMetrics(
        request_count=values.get("vllm:request_success"),
        request_success=values.get("vllm:request_success"),
        request_failure=None,
        queue_size=values.get("vllm:num_requests_waiting"),
        batch_size=values.get("vllm:num_requests_running"),
        mean_time_per_token_s=per_token,
        kv_cache_usage=usage,
        generation_tokens=values.get("vllm:generation_tokens"),
    )


def parse_models(text: str) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The ``models`` section (vLLM's /v1/models body, then its HTTP code) -> (models, why not,
    whether an API key guards it: then there is nothing to compare, and that is no fault)."""
    body, _, code_text = text.rpartition(MODELS_CODE_MARK)
    code = code_text.strip()
    if code in ("401", "403"):
        return None, None, True
    if code != "200":
        return None, f"/v1/models answered {code or 'nothing'}", False
    info, error = parse_info(body)
    return info, error and error.replace("/info", "/v1/models"), False


def parse_metrics_text(text: str) -> tuple[TgiMetrics | None, str | None]:
    """Prometheus text -> (TgiMetrics, None), or (None, why). Parsed by prometheus_client."""
    from tgiops.core.metrics import parse_metrics  # prometheus_client's parser, never by hand

    if not text.strip():
        return None, "/metrics answered nothing"
    try:
        return metrics_from(parse_metrics(text)), None
    except TgiopsError as exc:
        return None, str(exc)


def parse_info(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if text is None:
        return None, None
    try:
        info = json.loads(text)
    except ValueError:
        return None, f"/info is not JSON: {text.strip()[:120]!r}"
    if not isinstance(info, dict):
        return None, f"/info answered {type(info).__name__}, not an object"
    return info, None


def parse_status_report(text: str, *, redact: Callable[[str], str] = lambda s: s) -> HostFacts:
    """Read ``status_script`` output. ``redact`` is applied to journal text before use."""
    sections = split_sections(text)
    now = sections.get("now", "").strip()
    managed = tuple(line.strip() for line in sections.get("managed", "").splitlines() if line)
    gpus: tuple[hardware.Gpu, ...] = ()
    gpus_error = None
    gpus_rc = sections.get("gpus-rc", "").strip()
    if gpus_rc == "127":
        gpus_error = "nvidia-smi is not installed (no NVIDIA driver?)"
    elif gpus_rc != "0":
        gpus_error = f"nvidia-smi failed (exit {gpus_rc}): {sections.get('gpus', '')[:200]}"
    else:
        try:
            gpus = probe.parse_nvidia_smi_csv(sections.get("gpus", "")).gpus
        except ProbeError as exc:
            gpus_error = str(exc)
    units = []
    for name in managed:
        if f"unit {name}" not in sections:
            continue  # filtered out by `units=`
        units.append(_unit_facts(name, sections, redact))
    return HostFacts(
        now_epoch_s=int(now) if now.isdigit() else None,
        managed_units=managed,
        units=tuple(units),
        gpus=gpus,
        gpus_error=gpus_error,
    )


def _unit_facts(name: str, sections: Mapping[str, str], redact: Callable[[str], str]) -> UnitFacts:
    plan = parse_unit_plan(sections.get(f"unit {name}", ""))
    systemd = parse_systemd(sections.get(f"show {name}", ""))
    rc_text = sections.get(f"container-rc {name}", "").strip()
    container, container_error = parse_container(
        sections.get(f"container {name}", ""), int(rc_text) if rc_text.isdigit() else -1
    )
    endpoint = sections.get(f"endpoint {name}", "").strip() or None
    if endpoint is None:
        http = HttpFacts(
            endpoint=None,
            health_code=None,
            curl_exit_code=None,
            detail="the unit publishes no port (no `-p ADDR:PORT:80` in ExecStart)",
        )
    else:
        code, rc, detail = parse_health(sections.get(f"health {name}", ""))
        info, info_error = parse_info(sections.get(f"info {name}"))
        key_guarded = False
        if f"models {name}" in sections:
            info, info_error, key_guarded = parse_models(sections[f"models {name}"])
        metrics = metrics_error = None
        if f"metrics {name}" in sections:
            metrics, metrics_error = parse_metrics_text(sections[f"metrics {name}"])
        http = HttpFacts(
            endpoint=endpoint,
            health_code=code,
            curl_exit_code=rc,
            detail=detail,
            info=info,
            info_error=info_error,
            metrics=metrics,
            metrics_error=metrics_error,
            key_guarded=key_guarded,
        )
    journal = redact(sections.get(f"journal {name}", ""))
    return UnitFacts(
        name=name,
        plan=plan,
        systemd=systemd,
        container=container,
        container_error=container_error,
        http=http,
        diagnosis=engine_of_image(plan.image).diagnose_journal(journal) if journal else None,
    )


# --- verdicts ----------------------------------------------------------------------------------


def info_mismatches(info: Mapping[str, Any], plan: UnitPlan) -> list[str]:
    """Where ``/info`` disagrees with the unit (only the facts the unit states)."""
    if plan.model_id is None:
        return []
    return engine_of_image(plan.image).info_mismatches(
        info,
        expected_model_id=plan.model_id,
        expected_max_total_tokens=plan.max_total_tokens,
        expected_max_input_tokens=plan.max_input_tokens,
    )


def format_duration(seconds: float | None) -> str:
    """``3d4h``, ``2h5m``, ``4m10s``, ``12s`` (two units at most); ``?`` when unknown."""
    if seconds is None or seconds < 0:
        return "?"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def judge_unit(
    facts: UnitFacts, *, now_epoch_s: int | None = None, previous_restarts: int | None = None
) -> tuple[Verdict, str]:
    """(verdict, reason in words) for one installed unit."""
    http = facts.http
    sd = facts.systemd
    cause = f"; likely cause: {facts.diagnosis}" if facts.diagnosis else ""
    if sd is None or not sd.state.exists:
        return (
            "failed",
            "the unit file is installed but systemd has not loaded it: run "
            "`systemctl daemon-reload` on the host, or deploy again",
        )
    st = sd.state
    restarts = st.n_restarts or 0
    since = (
        now_epoch_s - sd.since_epoch_s
        if now_epoch_s is not None and sd.since_epoch_s is not None
        else None
    )
    climbing = previous_restarts is not None and restarts > previous_restarts
    if st.active_state == "failed":
        status = f", exit status {st.exec_main_status}" if st.exec_main_status else ""
        return (
            "failed",
            f"systemd gave up on the unit (Result={st.result}{status}) after {restarts} "
            f"restart(s){cause}",
        )
    if st.active_state in ("inactive", "deactivating"):
        what = "stopping" if st.active_state == "deactivating" else "stopped"
        return (
            "failed",
            f"the unit is {what} ({st.active_state}/{st.sub_state}): start it with "
            f"`systemctl start {facts.name}` or deploy again{cause}",
        )
    if st.sub_state == "auto-restart":
        status = f" (exit status {st.exec_main_status})" if st.exec_main_status else ""
        return (
            "failed",
            f"crash-looping: the engine exited{status} and systemd is restarting it "
            f"(restarted {restarts} time(s)){cause}",
        )
    code = http.health_code
    if code == 200:
        problems = []
        if http.info is not None:
            problems += info_mismatches(http.info, facts.plan)
        elif http.key_guarded:
            pass  # an API key guards /v1/models; status never reads it
        else:
            problems.append(f"/info unreadable ({http.info_error or 'no answer'})")
        if climbing:
            problems.append(f"restarts climbing: {restarts} (was {previous_restarts})")
        elif restarts:
            problems.append(f"restarted {restarts} time(s) since it was started")
        if facts.container is not None and facts.container.restart_count:
            problems.append(f"the container restarted {facts.container.restart_count} time(s)")
        if st.unit_file_state not in (None, "enabled"):
            problems.append(f"the unit is {st.unit_file_state}: it will not start after a reboot")
        if problems:
            return "degraded", "; ".join(problems)
        engine = facts.plan.engine
        up = f" for {format_duration(since)}" if since is not None else ""
        if engine is not None and engine[0] == "vllm":
            return (
                "healthy",
                f"serving {facts.plan.model_id} (vLLM {engine[1]}) on {http.endpoint}{up}",
            )
        model = http.info.get("model_id") if http.info else facts.plan.model_id
        version = http.info.get("version") if http.info else None
        return (
            "healthy",
            f"serving {model}" + (f" (TGI {version})" if version else "") + f" on "
            f"{http.endpoint}{up}",
        )
    if code is not None:
        engine = facts.plan.engine
        name = "vLLM" if engine and engine[0] == "vllm" else "TGI"
        kind = "cannot generate" if code == 503 else f"is not a healthy {name} endpoint"
        return "failed", f"/health answered {code}: the engine {kind}{cause}"
    if http.curl_exit_code == 127:
        return "failed", _CURL_ERRORS[127]
    if http.endpoint is None:
        return "failed", http.detail
    if restarts >= CRASH_LOOP_RESTARTS or (climbing and restarts >= 1):
        return (
            "failed",
            f"crash-looping: restarted {restarts} time(s) and the port never opened "
            f"({http.detail}){cause}",
        )
    if st.active_state in ("active", "activating", "reloading"):
        if st.sub_state in ("start-pre", "start") and facts.container is None:
            return (
                "loading",
                f"starting ({st.active_state}/{st.sub_state}): pulling the image or creating "
                f"the container" + (f", for {format_duration(since)}" if since else ""),
            )
        if facts.container is not None and not facts.container.running:
            return (
                "failed",
                f"the container is {facts.container.status} while the unit is "
                f"{st.active_state}/{st.sub_state}{cause}",
            )
        again = f" after {restarts} restart" if restarts else ""
        for_how_long = f" for {format_duration(since)}" if since is not None else ""
        return (
            "loading",
            f"port {facts.plan.port or '?'} closed while the unit and its container run"
            f"{again}: downloading, loading or warming up{for_how_long} ({http.detail})",
        )
    return "failed", f"the unit is {st.active_state}/{st.sub_state} ({http.detail}){cause}"


def judge_host(
    facts: HostFacts,
    *,
    wanted_units: Sequence[str] = (),
    previous: Mapping[str, int] | None = None,
) -> tuple[UnitStatus, ...]:
    """A verdict for every unit on the host, plus ``not-deployed`` for wanted ones missing."""
    previous = previous or {}
    statuses = [
        UnitStatus(u.name, verdict, reason, facts=u)
        for u in facts.units
        for verdict, reason in [
            judge_unit(u, now_epoch_s=facts.now_epoch_s, previous_restarts=previous.get(u.name))
        ]
    ]
    for name in wanted_units:
        if name not in facts.managed_units:
            listed = ", ".join(facts.managed_units) or "none"
            statuses.append(
                UnitStatus(
                    unit=name,
                    verdict="not-deployed",
                    reason=f"no tgiops unit {name!r} on the host (tgiops units there: {listed})",
                )
            )
    if not statuses:
        statuses.append(
            UnitStatus(
                unit=None,
                verdict="not-deployed",
                reason=f"no tgiops unit on the host (no unit file with the {MANAGED_MARKER!r} "
                f"marker in {UNIT_DIR})",
            )
        )
    return tuple(statuses)


def unreachable_units(reason: str, units: Sequence[str]) -> tuple[UnitStatus, ...]:
    if not units:
        return (UnitStatus(unit=None, verdict="unreachable", reason=reason),)
    return tuple(UnitStatus(unit=name, verdict="unreachable", reason=reason) for name in units)


def ec2_facts(
    instance: Any,  # tgiops.edges.aws.instances.Ec2Instance
    *,
    elastic_ips: Mapping[str, str] | None,
    spot_usd_per_hour: float | None,
    error: str | None = None,
) -> Ec2Facts:
    """EC2 facts with the on-demand price from tgiops.core.hardware's dated table.

    ``elastic_ips``: instance id -> Elastic IP associated with it (None: not looked up).
    """
    try:
        on_demand = hardware.find_instance_type(instance.instance_type).on_demand_usd_per_hour
    except UnknownHardwareError:
        on_demand = None
    elastic = None
    if elastic_ips is not None:
        eip = elastic_ips.get(instance.instance_id)
        elastic = eip is not None and eip == instance.public_ip
    return Ec2Facts(
        instance_id=instance.instance_id,
        name=instance.tags.get("Name") if getattr(instance, "tags", None) else None,
        instance_type=instance.instance_type,
        lifecycle=instance.lifecycle,
        state=instance.state,
        availability_zone=instance.availability_zone,
        public_ip=instance.public_ip,
        elastic_ip=elastic,
        on_demand_usd_per_hour=on_demand,
        spot_usd_per_hour=spot_usd_per_hour if instance.lifecycle == "spot" else None,
        error=error,
    )


def exposure_warnings(
    open_ingress: Sequence[tuple[str, int, int]], tgi_ports: Sequence[int]
) -> tuple[str, ...]:
    """Warnings for security-group rules that open SSH or a TGI port to 0.0.0.0/0 or ::/0.

    TGI has no authentication unless started with --api-key, and SSH open to the world is
    scanned within minutes of an instance's launch.
    """
    warnings = []
    for group, low, high in open_ingress:
        exposed = [("SSH", 22)] + [("TGI", p) for p in sorted(set(tgi_ports))]
        for what, port in exposed:
            if low <= port <= high:
                span = str(low) if low == high else f"{low}-{high}"
                warnings.append(
                    f"security group {group} opens port {span} ({what} {port}) to the whole "
                    "internet; restrict it to your address range"
                )
    return tuple(dict.fromkeys(warnings))
