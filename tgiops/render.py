"""Render the systemd unit and its environment file from a plan (pure).

The template comes in as text (``unit_templates/tgi.service.j2``, read by the caller) and is
rendered with Jinja2's StrictUndefined, so a missing variable is an error, not an empty string.
Every value that lands on ``ExecStart=`` is validated or quoted with systemd's own rules, so a
model id or path can never smuggle in a second argument or a specifier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tgiops.errors import InputError
from tgiops.plan import Plan

# Every unit tgiops writes is named tgiops-*: a name outside that pattern (docker, sshd) is
# never tgiops' to write, stop or delete. One pattern, used by deploy, undeploy, status, records.
UNIT_PREFIX = "tgiops-"
UNIT_NAME_RE = re.compile(r"tgiops-[a-zA-Z0-9][a-zA-Z0-9_.-]{0,55}")
# tgiops' own units on an instance (`tgiops userdata`): never a TGI unit's name.
RESERVED_UNITS = frozenset({"tgiops-bootstrap", "tgiops-watch-interruption"})
# The first line of every unit file tgiops writes; a unit file without it is not tgiops'.
MANAGED_MARKER = "# Managed by tgiops"
_SAFE_ARG_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.\-]{8,512}")
DEFAULT_DATA_DIR = "/var/lib/tgiops/data"
ENV_DIR = "/etc/tgiops"
UNIT_DIR = "/etc/systemd/system"
CONTAINER_PORT = 80  # the image sets PORT=80 (tgi-facts §1, Dockerfile l.147-149)


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
    stop_timeout_s: int = 90  # TGI's own graceful-termination default (tgi-facts §1)

    def __post_init__(self) -> None:
        check_unit_name(self.unit_name)
        if not 1 <= self.port <= 65535:
            raise InputError(f"--port {self.port} must be between 1 and 65535")
        if not re.fullmatch(r"/[A-Za-z0-9_./-]*", self.data_dir) or ".." in self.data_dir:
            raise InputError(
                f"--data-dir {self.data_dir!r} must be an absolute path of letters, digits and "
                "_ . / - (e.g. /var/lib/tgiops/data)"
            )
        check_data_dir(self.data_dir)
        for name in [*self.extra_env, *self.secret_env]:
            if not _ENV_NAME_RE.fullmatch(name):
                raise InputError(f"environment variable name {name!r} is not valid")

    @property
    def container(self) -> str:
        return self.unit_name

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit_name}.service"

    @property
    def env_file(self) -> str:
        return f"{ENV_DIR}/{self.unit_name}.env"


# The model cache is mounted read-write into the container as /data (and a refused path is
# created by the install): never a system directory or one of its parents.
_SYSTEM_DIRS = frozenset(
    {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc",
     "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log",
     "/var/run", "/mnt", "/media"}
)  # fmt: skip
_SYSTEM_TREES = ("/bin/", "/boot/", "/dev/", "/etc/", "/lib/", "/lib64/", "/proc/", "/run/",
                 "/sbin/", "/sys/", "/usr/")  # fmt: skip


def check_data_dir(path: str) -> str:
    """``path`` unless it is a system directory or lies inside one (exit 2)."""
    norm = "/" + "/".join(part for part in path.split("/") if part and part != ".")
    if norm in _SYSTEM_DIRS or norm.startswith(_SYSTEM_TREES):
        raise InputError(
            f"--data-dir {path}: a system directory; the model cache (mounted into the "
            "container as /data) needs a directory of its own, e.g. /var/lib/tgiops/data or "
            "/opt/dlami/nvme/tgiops"
        )
    return path


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


def docker_run_args(plan: Plan, options: UnitOptions) -> list[str]:
    """The `docker run` command line of the unit (no secret values: names only)."""
    gpus = (
        "all"
        if not options.gpu_devices
        else ('"device=' + ",".join(str(i) for i in options.gpu_devices) + '"')
    )
    args = [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--name",
        options.container,
        "--gpus",
        gpus,
        "--shm-size",
        "1g",
        "-p",
        f"{options.bind_address}:{options.port}:{CONTAINER_PORT}",
        "-v",
        f"{options.data_dir}:/data",
    ]
    for name in options.secret_env:
        args += ["-e", name]  # by name: docker copies the value from its own environment
    for name, value in sorted({**plan.env, **options.extra_env}.items()):
        args += ["-e", f"{name}={value}"]
    args.append(plan.image)
    args += plan.launcher_args
    return args


def render_unit(
    plan: Plan, options: UnitOptions, template_text: str, *, tgiops_version: str
) -> str:
    import jinja2  # a pure library; imported here to keep `tgiops --help` fast

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    pull = f"docker image inspect {plan.image} >/dev/null 2>&1 || exec docker pull {plan.image}"
    summary = (
        f"num_shard={plan.num_shard} quantize={plan.quantize or 'none'} dtype={plan.dtype} "
        f"max_total_tokens={plan.max_total_tokens}"
    )
    return env.from_string(template_text).render(
        tgiops_version=tgiops_version,
        alias=_comment_safe(plan.model.alias),
        repo_id=_comment_safe(plan.model.repo_id),
        hardware=_comment_safe(plan.inventory.describe()),
        plan_summary=summary,
        token_env_var=plan.engine.token_env_var,
        env_file=options.env_file,
        container=options.container,
        pull_script=systemd_quote(pull),
        exec_start=" ".join(systemd_quote(a) for a in docker_run_args(plan, options)),
        stop_timeout_s=options.stop_timeout_s,
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


def _comment_safe(text: str) -> str:
    return re.sub(r"[\r\n]", " ", text)
