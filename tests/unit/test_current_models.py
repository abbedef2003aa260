"""Models people deploy now (issue 14, item E): each is planned on a usual instance type.

Every architecture fact comes from the model's published config.json (models.yaml cites it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tgiops import hardware
from tgiops.catalog import parse_catalog, quantized_siblings
from tgiops.engine import Engine
from tgiops.plan import plan

ROOT = Path(__file__).resolve().parents[2]
CATALOG = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")


@pytest.mark.parametrize(
    ("alias", "instance_type", "num_shard", "quantize"),
    [
        ("llama-3.3-70b", "p4de.24xlarge", 8, None),
        ("llama-3.3-70b-awq", "g6e.12xlarge", 4, "awq"),
        ("llama-3.3-70b-awq", "g5.12xlarge", 4, "awq"),
    ],
)
def test_current_models_plan_on_usual_instance_types(alias, instance_type, num_shard, quantize):
    result = plan(CATALOG[alias], hardware.inventory_for_instance_type(instance_type), Engine.tgi())
    assert result.fits, result.problem
    assert (result.num_shard, result.quantize) == (num_shard, quantize)
    assert result.max_total_tokens >= 8192


def test_a_quantized_sibling_is_the_same_model_not_only_the_same_shapes():
    """Llama 3.3 70B has Llama 3.1 70B's shapes; its AWQ checkpoint is not 3.1's sibling."""
    of_31 = {s.alias for s in quantized_siblings(CATALOG, CATALOG["llama-3.1-70b"])}
    of_33 = {s.alias for s in quantized_siblings(CATALOG, CATALOG["llama-3.3-70b"])}
    assert "llama-3.3-70b-awq" not in of_31 and "llama-3.1-70b-awq" in of_31
    assert of_33 == {"llama-3.3-70b-awq"}
