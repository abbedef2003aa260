"""Where tgiops keeps things on a host, what it calls them, and how it marks them as its own.

One home for each of these names: deploy, undeploy, status, the records, bootstrap and the CLI
all read them from here, so the rules of ownership (README "What tgiops owns") are one rule.
"""

from __future__ import annotations

import re

# Every unit tgiops writes is named tgiops-*: a name outside that pattern (docker, sshd) is
# never tgiops' to write, stop or delete. One pattern, used by deploy, undeploy, status, records.
UNIT_PREFIX = "tgiops-"
UNIT_NAME_RE = re.compile(r"tgiops-[a-zA-Z0-9][a-zA-Z0-9_.-]{0,55}")
# tgiops' own units on an instance (`tgiops userdata`): never an engine unit's name.
RESERVED_UNITS = frozenset({"tgiops-bootstrap", "tgiops-watch-interruption", "tgiops-monitor"})
# The metrics service (`tgiops monitor enable`, `tgiops userdata --monitor`): GPUs, the
# engine's /metrics and health to CloudWatch every interval (tgiops.commands.monitor).
MONITOR_UNIT = "tgiops-monitor"
# The first line of every unit file tgiops writes; a unit file without it is not tgiops'.
MANAGED_MARKER = "# Managed by tgiops"

UNIT_DIR = "/etc/systemd/system"
ENV_DIR = "/etc/tgiops"  # root-only env files (the token, by name) and bootstrap's config
BOOTSTRAP_CONFIG_PATH = f"{ENV_DIR}/bootstrap.json"
TGIOPS_BIN = "/opt/tgiops/bin/tgiops"  # where `tgiops userdata` installs tgiops on an instance

# The data volume: the model cache (``<data_dir>/cache``, the only part a container sees) and
# the deployment records (``<data_dir>/tgiops/deployments``, out of the container's reach).
DEFAULT_DATA_DIR = "/var/lib/tgiops/data"
CACHE_SUBDIR = "cache"
RECORD_SUBDIR = "tgiops/deployments"

# The Secrets Manager secret that holds the Hugging Face token unless --secret-name says.
DEFAULT_TOKEN_SECRET = "tgiops/hf-token"

# The host lock deploy and undeploy hold (RemoteHost.hold_lock): in a directory only root can
# enter. Not /run/lock: that is world-writable (1777) and flock(1) locks through a read-only
# descriptor, so any local user could hold /run/lock/tgiops.lock and block every deploy.
LOCK_DIR = "/run/tgiops"
LOCK_PATH = f"{LOCK_DIR}/lock"
