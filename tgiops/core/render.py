"""Render the systemd unit and its environment file from a plan (pure).

The template comes in as text (``unit_templates/tgi.service.j2``, read by the caller) and is
rendered with Jinja2's StrictUndefined, so a missing variable is an error, not an empty string.
Every value that lands on ``ExecStart=`` is validated or quoted with systemd's own rules, so a
model id or path can never smuggle in a second argument or a specifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tgiops.core.catalog import ModelSpec
from tgiops.core.errors import InputError
from tgiops.core.hardware import GpuInventory
from tgiops.core.layout import (
    CACHE_SUBDIR,
    DEFAULT_DATA_DIR,
    ENV_DIR,
    RESERVED_UNITS,
    UNIT_DIR,
    UNIT_NAME_RE,
    UNIT_PREFIX,
)
from tgiops.core.plan import Plan

_SAFE_ARG_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.\-]{8,512}")
# The container sees only the model cache, ``<data_dir>/cache``, as /data (HF_HOME=/data from
# TGI 2.3, HUGGINGFACE_HUB_CACHE=/data before: docs/tgi.md §6, Engine.cache_dir_in_container).
# The deployment records (``<data_dir>/tgiops/deployments``, tgiops.core.record) stay outside it:
# the engine's container must not be able to rewrite what bootstrap and reconcile restore.
CONTAINER_DATA = "/data"
# Where a data dir may live: below these (or one of the mount points /data, /mnt, /srv
# itself). Never /, /etc, /usr, /root, /home, /boot, /var/lib/docker ... and never tgiops' own
# installation (/opt/tgiops), which root runs at boot.
DATA_DIR_PREFIXES = ("/var/lib/", "/mnt/", "/data/", "/opt/", "/srv/")
DATA_DIR_MOUNT_POINTS = ("/data", "/mnt", "/srv")
_DATA_DIR_REFUSED = ("/var/lib/docker", "/var/lib/containerd", "/var/lib/dpkg", "/var/lib/apt",
                     "/var/lib/systemd", "/opt/tgiops")  # fmt: skip


@dataclass(frozen=True)
class UnitOptions:
    """Where and how the unit runs on the host (everything the plan does not decide)."""

    unit_name: str
    port: int = 8080
    bind_address: str = "127.0.0.1"
    data_dir: str = DEFAULT_DATA_DIR
    gpu_devices: tuple[int, ...] = ()  # () = all GPUs
    extra_env: Mapping[str, str] = field(default_factory=dict)  # e.g. HF_HUB_OFFLINE=1
    secret_env: tuple[str, ...] = ()  # names read from the env file (token, API key)
    stop_timeout_s: int = 90  # TGI's own graceful-termination default (docs/tgi.md §1)
    # The registry digest of the image the deployment ran (tgiops.core.record), so a new
    # instance runs that image and not whatever the tag points to by then; None: the tag.
    image_digest: str | None = None

    def __post_init__(self) -> None:
        check_unit_name(self.unit_name)
        if not 1 <= self.port <= 65535:
            raise InputError(f"--port {self.port} must be between 1 and 65535")
        check_data_dir(self.data_dir, "--data-dir")
        for name in [*self.extra_env, *self.secret_env]:
            if not _ENV_NAME_RE.fullmatch(name):
                raise InputError(f"environment variable name {name!r} is not valid")
        if self.image_digest is not None and not re.fullmatch(
            r"sha256:[0-9a-f]{64}", self.image_digest
        ):
            raise InputError(f"image digest {self.image_digest!r} is not sha256:<64 hex digits>")

    @property
    def container(self) -> str:
        return self.unit_name

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit_name}.service"

    @property
    def env_file(self) -> str:
        return f"{ENV_DIR}/{self.unit_name}.env"


def check_data_dir(path: str, what: str = "--data-dir") -> str:
    """``path`` when it is a usable data dir (see DATA_DIR_PREFIXES), else InputError."""
    if (
        not isinstance(path, str)
        or not re.fullmatch(r"/[A-Za-z0-9_./-]*", path)
        or (".." in path or "//" in path)
    ):
        raise InputError(
            f"{what} {path!r} must be an absolute path of letters, digits and _ . / - "
            "(e.g. /var/lib/tgiops/data)"
        )
    clean = path.rstrip("/") or "/"
    under = any(clean.startswith(p) and len(clean) > len(p) for p in DATA_DIR_PREFIXES)
    refused = any(clean == r or clean.startswith(r + "/") for r in _DATA_DIR_REFUSED)
    if refused or not (under or clean in DATA_DIR_MOUNT_POINTS):
        raise InputError(
            f"{what} {path!r} is not a place for a model cache: use a directory under "
            + ", ".join(p.rstrip("/") for p in DATA_DIR_PREFIXES)
            + " (e.g. /var/lib/tgiops/data), not a system directory"
        )
    return path


def cache_dir(data_dir: str) -> str:
    """The host directory the container gets as /data: the model cache, nothing else."""
    return f"{data_dir.rstrip('/')}/{CACHE_SUBDIR}"


def data_dir_of_mount(source: str) -> str:
    """The data dir of a unit's ``-v SOURCE:/data`` (``cache_dir``'s inverse); units written
    before the cache moved mounted the data dir itself."""
    head, _, tail = source.rstrip("/").rpartition("/")
    return (head or "/") if tail == CACHE_SUBDIR else source


def check_unit_name(name: str, *, flag: str = "--unit") -> str:
    """``name`` if tgiops may own a unit of that name (exit 2 otherwise)."""
    if UNIT_NAME_RE.fullmatch(name) and not name.endswith(".service"):
        if name in RESERVED_UNITS:
            raise InputError(f"{flag} {name!r} is tgiops' own boot unit; pick another name")
        return name
    example = UNIT_PREFIX + normalize_unit_name(name).removeprefix(UNIT_PREFIX)
    raise InputError(
        f"{flag} {name!r} is not a tgiops unit name: tgiops only writes units named "
        f"{UNIT_PREFIX}NAME (letters, digits, '_', '.', '-'; at most 63 in all), so it can never "
        f"replace a unit it does not own; e.g. {flag} {example}"
    )


def normalize_unit_name(text: str) -> str:
    """What the user typed as --unit, as a unit name: ``tgiops-x.service`` -> ``tgiops-x``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.removesuffix(".service"))
    return safe.strip("-.")[:63] or "model"


def unit_name_from(text: str, *, flag: str = "--unit") -> str:
    """A --unit value checked and normalized: a ``.service`` suffix is dropped (exit 2 when
    what is left is not a tgiops unit name)."""
    return check_unit_name(text.removesuffix(".service"), flag=flag)


def systemd_quote(arg: str) -> str:
    """Quote one argument for an Exec*= line (systemd.service(5), "Command lines").

    systemd expands ``%`` specifiers and ``$VAR`` in Exec lines, so both are doubled; anything
    beyond a conservative safe set goes in double quotes with ``\\`` and ``"`` escaped.
    """
    if any(ch in arg for ch in "\n\r\x00"):
        raise InputError(f"argument {arg!r} contains a line break or NUL")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and _SAFE_ARG_RE.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def image_ref(image: str, digest: str | None) -> str:
    """``repo@sha256:...`` when the digest is known (docker pulls exactly that image), else the
    tag as planned."""
    if digest is None:
        return image
    name, _, tag = image.rpartition(":")
    repo = name if name and "/" not in tag else image
    return f"{repo}@{digest}"


def docker_run_args(plan: Plan, options: UnitOptions) -> list[str]:
    """The `docker run` command line of the unit (no secret values: names only)."""
    return docker_run_command(
        options,
        shm_size="1g",
        container_port=plan.engine.container_port,
        volumes=[(cache_dir(options.data_dir), CONTAINER_DATA)],
        env={**plan.env, **options.extra_env},
        image=image_ref(plan.image, options.image_digest),
        engine_args=plan.launcher_args,
    )


def docker_run_command(
    options: UnitOptions,
    *,
    shm_size: str,
    container_port: int,
    volumes: list[tuple[str, str]],
    env: Mapping[str, str],
    image: str,
    engine_args: Sequence[str],
) -> list[str]:
    """Every engine unit's `docker run` line (TGI's above, vLLM's in
    tgiops.core.engines.vllm.docker_run_args): secrets by name only, docker copies each value
    from its own environment (the unit's EnvironmentFile)."""
    gpus = (
        "all"
        if not options.gpu_devices
        else ('"device=' + ",".join(str(i) for i in options.gpu_devices) + '"')
    )
    args = ["/usr/bin/docker", "run", "--rm", "--name", options.container, "--gpus", gpus]
    args += ["--shm-size", shm_size]
    args += ["-p", f"{options.bind_address}:{options.port}:{container_port}"]
    for host_path, container_path in volumes:
        args += ["-v", f"{host_path}:{container_path}"]
    for name in options.secret_env:
        args += ["-e", name]
    for name, value in sorted(env.items()):
        args += ["-e", f"{name}={value}"]
    return [*args, image, *engine_args]


@dataclass(frozen=True)
class UnitContext:
    """What an engine's unit differs in (TGI's: ``unit_context``; vLLM's:
    tgiops.core.engines.vllm.unit_context): its template's summary line, its `docker run` line
    and the variables of its template alone."""

    plan_summary: str
    docker_args: Sequence[str]
    template_vars: Mapping[str, str] = field(default_factory=dict)


class UnitPlan(Protocol):
    """What every engine's plan (Plan, vllm.VllmPlan) shows in its unit."""

    @property
    def model(self) -> ModelSpec: ...
    @property
    def inventory(self) -> GpuInventory: ...
    @property
    def image(self) -> str: ...


def unit_context(plan: Plan, options: UnitOptions) -> UnitContext:
    """TGI's part of unit_templates/tgi.service.j2."""
    return UnitContext(
        plan_summary=(
            f"num_shard={plan.num_shard} quantize={plan.quantize or 'none'} dtype={plan.dtype} "
            f"max_total_tokens={plan.max_total_tokens}"
        ),
        docker_args=docker_run_args(plan, options),
        template_vars={"token_env_var": plan.engine.token_env_var},
    )


def render_unit(
    plan: Plan, options: UnitOptions, template_text: str, *, tgiops_version: str
) -> str:
    """unit_templates/tgi.service.j2 rendered (``render_engine_unit`` with TGI's context)."""
    return render_engine_unit(
        plan, options, template_text, unit_context(plan, options), tgiops_version=tgiops_version
    )


def render_engine_unit(
    plan: UnitPlan,
    options: UnitOptions,
    template_text: str,
    context: UnitContext,
    *,
    tgiops_version: str,
) -> str:
    """An engine's unit template rendered with that engine's ``context`` (StrictUndefined: a
    missing variable is an error; every Exec argument systemd-quoted). The one path of every
    engine's unit (TGI's ``render_unit``, tgiops.core.engines.vllm.render_unit)."""
    import jinja2  # a pure library; imported here to keep `tgiops --help` fast

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    ref = image_ref(plan.image, options.image_digest)
    pull = f"docker image inspect {ref} >/dev/null 2>&1 || exec docker pull {ref}"
    return env.from_string(template_text).render(
        tgiops_version=tgiops_version,
        alias=comment_safe(plan.model.alias),
        repo_id=comment_safe(plan.model.repo_id),
        hardware=comment_safe(plan.inventory.describe()),
        plan_summary=context.plan_summary,
        env_file=options.env_file,
        container=options.container,
        pull_script=systemd_quote(pull),
        exec_start=" ".join(systemd_quote(a) for a in context.docker_args),
        stop_timeout_s=options.stop_timeout_s,
        **context.template_vars,
    )


def render_env_file(secrets: Mapping[str, str], *, masked: bool = False) -> str:
    """KEY=value lines for EnvironmentFile= (mode 0600). Values are checked, never echoed.

    ``masked`` renders ``KEY=***`` instead of the values, for --dry-run.
    """
    lines = ["# Written by tgiops; root-only. Secrets for the unit, passed to docker by name."]
    for name, value in secrets.items():
        if not _ENV_NAME_RE.fullmatch(name):
            raise InputError(f"environment variable name {name!r} is not valid")
        if masked:
            lines.append(f"{name}=***")
            continue
        if not _TOKEN_RE.fullmatch(value):
            # Never include the value: it is a secret.
            raise InputError(
                f"the secret for {name} has characters an EnvironmentFile cannot carry safely "
                "(allowed: letters, digits, '_', '-', '.'; 8 to 512 of them); store a plain "
                "Hugging Face token with `tgiops secret set`"
            )
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def comment_safe(text: str) -> str:
    """One line: every line break (str.splitlines' set) and control character -> a space."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", text)
