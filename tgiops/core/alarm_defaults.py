"""The defaults of `tgiops alarms set`, apart from the alarm specs themselves: the CLI's parser
shows them without importing tgiops.core.alarms and what it pulls in (`tgiops --help` stays
fast, as tgiops.core.engine_names does for the engines)."""

from __future__ import annotations

DEFAULT_UNHEALTHY_MINUTES = 5
DEFAULT_IDLE_PERCENT = 5.0  # also the idle threshold of `tgiops cost`'s idle hours
DEFAULT_IDLE_HOURS = 2.0
DEFAULT_QUEUE_MINUTES = 5
