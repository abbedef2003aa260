"""The deployment records on a host's data volume: read, write, and the image facts a record
pins. The record's format and checks are pure (tgiops.core.record); this module is the I/O."""

from __future__ import annotations

import json
import logging
import posixpath
import shlex
from dataclasses import replace
from datetime import datetime, timezone

from tgiops.core.engines.vllm import VllmPlan
from tgiops.core.errors import InputError, TgiopsError
from tgiops.core.plan import Plan
from tgiops.core.record import (
    DIGEST_RE,
    DeploymentRecord,
    Entry,
    LastStop,
    Unreadable,
    from_deploy,
    record_dir,
    record_path,
)
from tgiops.core.render import comment_safe
from tgiops.core.request import DeployRequest
from tgiops.edges.host import Host

log = logging.getLogger(__name__)


_BEGIN = "@@tgiops-record "


_END = "@@tgiops-record-end"


def read_entries(host: Host, data_dir: str) -> list[Entry]:
    """Every record on the host's data volume (one round trip), sorted by unit; a file the
    decoder refuses is an Unreadable (one bad file must not hide the others)."""
    directory = shlex.quote(record_dir(data_dir))
    script = (
        f'for f in {directory}/*.json; do [ -f "$f" ] || continue; '
        f'echo "{_BEGIN}$f"; cat -- "$f"; echo; echo "{_END}"; done\n'
    )
    out = host.run_script(script, check=False).stdout
    entries: list[Entry] = []
    for chunk in out.split(_BEGIN)[1:]:
        path, _, rest = chunk.partition("\n")
        text = rest.rsplit(_END, 1)[0]
        origin = f"{host.name}:{path}"
        try:
            entries.append(DeploymentRecord.from_json(text, origin=origin))
        except InputError as exc:
            log.warning("refusing a deployment record: %s", exc)
            unit = posixpath.basename(path).removesuffix(".json")
            entries.append(Unreadable(comment_safe(unit)[:63], origin, str(exc)))
    return sorted(entries, key=lambda e: e.unit)


def read_records(host: Host, data_dir: str) -> list[DeploymentRecord]:
    """The valid records of ``read_entries`` (refused ones are logged)."""
    return [e for e in read_entries(host, data_dir) if isinstance(e, DeploymentRecord)]


def read_record(host: Host, data_dir: str, unit: str) -> DeploymentRecord | None:
    path = record_path(data_dir, unit)
    raw = host.read_file(path)
    if raw is None:
        return None
    return DeploymentRecord.from_json(raw.decode("utf-8", "replace"), origin=f"{host.name}:{path}")


def save_on_host(host: Host, record: DeploymentRecord) -> bool:
    """Write ``record`` on the data volume unless the same deployment is recorded already.

    Keeps the recorded ``last_stop`` (the history of why the previous unit stopped). Returns
    True when it wrote.
    """
    path = record_path(record.spec.data_dir, record.unit)
    host.run(["mkdir", "-p", "--", posixpath.dirname(path)])
    try:
        existing = read_record(host, record.spec.data_dir, record.unit)
    except InputError as exc:
        log.warning("replacing an unreadable record: %s", exc)
        existing = None
    if record.same_deployment(existing) and (existing is None or _same_model(existing, record)):
        log.debug("%s: the record of %s is up to date", host.name, record.unit)
        return False
    if existing is not None and record.last_stop is None:
        record = replace(record, last_stop=existing.last_stop)
    host.put_file_atomic(path, record.to_json(), mode=0o644)
    log.info("%s: wrote the deployment record %s", host.name, path)
    return True


def _same_model(a: DeploymentRecord, b: DeploymentRecord) -> bool:
    return a.model_spec == b.model_spec or a.model_spec is None or b.model_spec is None


def inspect_image(host: Host, image: str) -> tuple[str | None, str | None]:
    """(image ID, registry digest) of ``image`` on the host: ``docker image inspect``'s
    ``.Id`` and the ``RepoDigests`` entry of its repository. An image that was built, loaded
    or imported locally has no RepoDigests (the testbed's): (ID, None). (None, None) when
    docker cannot say."""
    out = host.run(
        ["docker", "image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", "--", image],
        check=False,
    )
    try:
        image_id, _, digests_json = out.stdout.strip().partition(" ")
        digests = json.loads(digests_json or "null") or []
    except json.JSONDecodeError:
        return None, None
    if out.exit_code != 0 or not DIGEST_RE.fullmatch(image_id):
        return None, None
    name, _, tag = image.split("@")[0].rpartition(":")
    repo = name if "@" not in image and name and "/" not in tag else image.split("@")[0]
    found = [
        d.partition("@")[2] for d in digests if isinstance(d, str) and d.startswith(repo + "@")
    ]
    digest = next((d for d in found if DIGEST_RE.fullmatch(d)), None)
    return image_id, digest


def save_deploy_record(
    host: Host, request: DeployRequest, the_plan: Plan | VllmPlan, *, tgiops_version: str
) -> None:
    """After a healthy deploy: record it on the data volume, with the image's ID and registry
    digest (a restore pins the digest, or checks the ID: tgiops.commands.bootstrap.restore).
    Never fails the deploy."""
    try:
        now = datetime.now(timezone.utc)
        the_record = from_deploy(request, the_plan, tgiops_version=tgiops_version, now=now)
        image_id, digest = inspect_image(host, the_plan.image)
        if the_record.deployed is not None:
            if digest is None:
                log.info(
                    "%s: %s has no registry digest (built or loaded locally); a restore "
                    "checks its image ID instead",
                    host.name,
                    the_plan.image,
                )
            deployed = replace(the_record.deployed, image_id=image_id, image_digest=digest)
            the_record = replace(the_record, deployed=deployed)
        save_on_host(host, the_record)
    except TgiopsError as exc:
        log.warning("deployed, but could not write the deployment record on %s: %s", host.name, exc)


def note_stop(host: Host, data_dir: str, unit: str, stop: LastStop) -> bool:
    """Put ``stop`` into the unit's record (watch-interruption). False when there is none."""
    existing = read_record(host, data_dir, unit)
    if existing is None:
        return False
    path = record_path(data_dir, unit)
    host.put_file_atomic(path, replace(existing, last_stop=stop).to_json(), mode=0o644)
    return True
