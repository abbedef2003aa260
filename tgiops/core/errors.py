"""The one exception tree of tgiops, and the one rule for exit codes.

Exit codes (README: "Exit codes"), the same for every verb:

- **0 done**: what was asked is true now (deployed and healthy; removed, or already absent;
  the plan fits; every unit healthy; the secret readable).
- **1 ran and failed**: tgiops acted, or looked, and the outcome is not what was asked: a
  deploy failed and was rolled back (the host is back in its previous working state), an
  undeploy left something behind, AWS or SSH failed midway, or a check answered "no" (``plan``:
  does not fit; ``status``: not every unit healthy; ``secret check``: not readable).
- **2 refused**: nothing was changed anywhere: bad input, a name tgiops does not own, a
  deploy or user data whose plan does not fit the hardware (``DoesNotFitError``).

Every failure a user can see is a ``TgiopsError``. Edges (ssh, aws, http) translate
foreign exceptions into these with ``raise ... from exc``; only ``cli.main`` catches
broadly (an exception that is not a ``TgiopsError`` is a bug: one line, exit 1). Each class
carries the exit code the CLI returns::

    TgiopsError                      exit 1  operation failed
    ├── InputError                   exit 2  bad input: nothing was changed anywhere
    │   ├── CatalogError                      models.yaml / --catalog / --model-config invalid
    │   ├── UnknownModelError                 alias not in the catalog (closest names attached)
    │   ├── UnknownHardwareError              instance type / GPU name not in the tables
    │   ├── PlanInputError                    an override the planner refuses (e.g. shards vs heads)
    │   └── DoesNotFitError                   the plan does not fit: refused before any change
    ├── SSHError                              the SSH edge
    │   ├── SSHConnectError                   cannot connect / authenticate
    │   ├── HostKeyError                      unknown or changed host key (strict checking)
    │   └── RemoteCommandError                a remote command failed (command + output tail)
    ├── AWSError                              the AWS edge
    │   ├── SecretError                       secret missing / unreadable
    │   └── TargetNotFoundError               no instance matches the target
    ├── ProbeError                            nvidia-smi / systemctl / df output not understood
    ├── HealthError                           the endpoint never became healthy / answered wrongly
    └── DeployError                           a deploy failed (and was rolled back)

Messages say what failed, the value seen, and the next step. They never contain a secret.
"""

from __future__ import annotations


class TgiopsError(Exception):
    """Base class: an operation failed. The CLI prints the message and exits 1."""

    exit_code = 1


class InputError(TgiopsError):
    """The user's input is wrong; nothing was changed on any host. Exit 2."""

    exit_code = 2


class CatalogError(InputError):
    """A model catalog (models.yaml, --catalog, --model-config) is invalid."""


class UnknownModelError(InputError):
    """The model alias is not in the catalog."""

    def __init__(self, alias: str, closest: list[str]) -> None:
        hint = f" Did you mean: {', '.join(closest)}?" if closest else ""
        super().__init__(
            f"unknown model {alias!r}.{hint} Run `tgiops models` for the catalog, or pass "
            "--model-config config.json for a model that is not in it."
        )
        self.alias = alias
        self.closest = closest


class UnknownHardwareError(InputError):
    """An instance type or GPU name is not in the built-in tables."""


class PlanInputError(InputError):
    """An override the planner cannot accept (it would never start)."""


class DoesNotFitError(InputError):
    """A deploy (or user data) whose plan does not fit the hardware: refused before anything
    changed (exit 2). ``plan`` is the tgiops.core.plan.Plan, for its problem and alternatives
    (``--json`` prints it with the error)."""

    def __init__(self, message: str, plan: object = None) -> None:
        super().__init__(message)
        self.plan = plan


class SSHError(TgiopsError):
    """Something went wrong on the SSH edge."""


class SSHConnectError(SSHError):
    """Could not connect or authenticate to a host."""


class HostKeyError(SSHError):
    """The host key is unknown (strict checking) or has changed."""


class RemoteCommandError(SSHError):
    """A remote command exited non-zero."""

    def __init__(self, host: str, command: str, exit_code: int, output_tail: str) -> None:
        super().__init__(
            f"on {host}: `{command}` exited {exit_code}"
            + (f"\n--- last output ---\n{output_tail}" if output_tail else "")
        )
        self.host = host
        self.command = command
        self.remote_exit_code = exit_code
        self.output_tail = output_tail


class AWSError(TgiopsError):
    """Something went wrong on the AWS edge."""


class SecretError(AWSError):
    """The Hugging Face token secret is missing or unreadable."""


class TargetNotFoundError(AWSError):
    """No instance matches the given target."""


class ProbeError(TgiopsError):
    """The host's answer could not be understood (nvidia-smi, systemctl, df output). Exit 1."""


class HealthError(TgiopsError):
    """The TGI endpoint did not become healthy, or answered unlike the plan."""


class DeployError(TgiopsError):
    """A deploy failed; the previous state was restored where there was one."""
