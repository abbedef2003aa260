"""The names of the engines tgiops serves with, apart from the engines themselves: the CLI's
parser offers them without importing the planners (`tgiops --help` stays fast).
tgiops.core.engines registers one engine module per name."""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["tgi", "vllm"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "tgi"
