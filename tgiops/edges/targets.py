"""Which hosts a command acts on: an SSH destination, or EC2 instances found through AWS.

EC2 targets map to an SSH destination by instance id first, so an ssh_config ``Host i-0abc``
entry wins (that is how the tests reach testbed hosts, and how users reach private
instances through a bastion); else the instance's public (or Elastic) IP.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tgiops.core.errors import InputError, TargetNotFoundError
from tgiops.core.record import MANAGED_TAG
from tgiops.edges.ssh import SSHTarget

SSH_CONFIG_ENV_VAR = "TGIOPS_SSH_CONFIG"


@dataclass(frozen=True)
class Target:
    label: str  # what the user will recognise: the destination or the instance id
    ssh: SSHTarget
    instance: Any = None  # tgiops.edges.aws.instances.Ec2Instance when found through AWS


@dataclass(frozen=True)
class TargetSpec:
    hosts: Sequence[str] = ()
    instance_ids: Sequence[str] = ()
    name_tag: str | None = None
    asg_name: str | None = None
    managed: bool = False  # every instance tagged tgiops:managed=true

    @property
    def uses_aws(self) -> bool:
        return bool(self.instance_ids or self.name_tag or self.asg_name or self.managed)

    @property
    def empty(self) -> bool:
        return not (self.hosts or self.uses_aws)


DEFAULT_SSH_CONFIG = "~/.ssh/config"


def ssh_config_path(explicit: str | None) -> str | None:
    """The ssh_config to use (--ssh-config, else $TGIOPS_SSH_CONFIG), checked readable and
    parseable before any connection: a broken file is bad input (exit 2) that names where its
    path came from. Without either, OpenSSH's default ~/.ssh/config is checked when present."""
    if explicit:
        path, origin = explicit, f"--ssh-config {explicit}"
    elif os.environ.get(SSH_CONFIG_ENV_VAR):
        path = os.environ[SSH_CONFIG_ENV_VAR]
        origin = f"${SSH_CONFIG_ENV_VAR} ({path})"
    else:
        default = os.path.expanduser(DEFAULT_SSH_CONFIG)
        if os.path.isfile(default):
            _check_ssh_config(default, f"{DEFAULT_SSH_CONFIG} (the default ssh_config)")
        return None
    if os.path.isdir(path):
        raise InputError(f"{origin}: is a directory; give an ssh_config file")
    if not os.path.isfile(path):
        raise InputError(f"{origin}: no such file")
    _check_ssh_config(path, origin)
    return path


def _check_ssh_config(path: str, origin: str) -> None:
    import paramiko

    try:
        paramiko.SSHConfig.from_path(path)
    except paramiko.ConfigParseError as exc:
        raise InputError(f"{origin}: not a valid ssh_config: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{origin}: cannot read it: {exc.strerror or exc}") from exc


def check_destination(destination: str) -> str:
    """An SSH destination as given to --host: refused (exit 2) when blank. Anything else is
    one argument that never meets a shell (an ssh_config ``Host`` pattern may match it)."""
    if not destination.strip():
        raise InputError(
            f"--host {destination!r}: give an SSH destination (a host name, an address, an "
            "ssh_config Host alias or user@host)"
        )
    return destination


def resolve_targets(
    spec: TargetSpec,
    ssh_template: SSHTarget,
    find_instances: Callable[..., list[Any]] | None,
) -> list[Target]:
    """Targets for ``spec``; ``ssh_template`` carries config path, user, key, host-key policy."""
    targets = [
        Target(h, replace(ssh_template, destination=check_destination(h))) for h in spec.hosts
    ]
    if spec.uses_aws:
        if find_instances is None:
            raise InputError("EC2 targets need AWS settings")
        tag_filters = {MANAGED_TAG: "true"} if spec.managed else None
        instances = find_instances(
            instance_ids=tuple(spec.instance_ids),
            name_tag=spec.name_tag,
            asg_name=spec.asg_name,
            tag_filters=tag_filters,
        )
        if not instances:
            raise TargetNotFoundError("no running instance matches the target")
        aliases = ssh_config_hosts(ssh_template.ssh_config_path)
        for instance in instances:
            destination = _destination_for(instance, aliases)
            targets.append(
                Target(
                    instance.instance_id, replace(ssh_template, destination=destination), instance
                )
            )
    return targets


def ssh_config_hosts(path: str | None) -> set[str]:
    """The Host names of the ssh config at ``path`` (default ~/.ssh/config, none when absent):
    an instance id among them is reached by that alias, not by its address."""
    if not path:
        path = os.path.expanduser("~/.ssh/config")
        if not os.path.isfile(path):
            return set()
    import paramiko

    return set(paramiko.SSHConfig.from_path(path).get_hostnames())


def _destination_for(instance: Any, ssh_config_hosts: set[str]) -> str:
    if instance.instance_id in ssh_config_hosts:
        return str(instance.instance_id)
    if instance.public_ip:
        return str(instance.public_ip)
    raise TargetNotFoundError(
        f"{instance.instance_id} has no public IP and no ssh_config entry: add "
        f"`Host {instance.instance_id}` (with HostName/ProxyJump) to your ssh_config"
    )
