"""The README documents each JSON shape once; this keeps it true. The outputs compared are the
golden files (tests/data/golden/, pinned from the real CLI), so a field added to or dropped from
an output without the README following fails here, and so does a documented field that is gone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from golden import GOLDEN

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(start: str, end: str) -> set[str]:
    text = README[README.index(start) : README.index(end, README.index(start))]
    spans = re.findall(r"`([^`]*)`", text)
    words = {word for span in spans for word in re.findall(r"[a-z][a-z0-9_]*", span)}
    return words - PROSE


# Words inside the sections' code spans that are not keys: the command, its flag, the schema id.
PROSE = {"tgiops", "json", "status"}


def golden_json(name: str) -> Any:
    text = (GOLDEN / name).read_text()
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


def keys(data: Any, *nested: str) -> set[str]:
    found = set(data)
    for name in nested:
        value = data[name]
        for item in value if isinstance(value, list) else [value]:
            found |= set(item)
    return found


def test_plan_json_fields_are_the_documented_ones():
    documented = section("#### Plan JSON", "scripts/bench_planner.py")
    for name in ("plan/llama-3.1-70b-awq_g5.12xlarge.json", "plan/phi-3-mini_g6.xlarge.json"):
        plan = golden_json(name)
        assert plan["alternatives"] or "alternatives" in plan
        actual = keys(plan, "memory", "recovery") - set(plan["memory"].get("terms_gib", {}))
        assert actual - documented == set(), f"undocumented in README 'Plan JSON': {name}"
        # alternatives' fields: the two golden plans that fit have none
        alternative = {"description", "instance_type", "usd_per_hour", "flags", "plan"}
        assert documented - actual - alternative == set(), "documented but not in the output"


def test_status_json_fields_are_the_documented_ones():
    documented = section("Status JSON (", "Every key is always present.")
    report = golden_json("status/report.json")
    host = report["hosts"][0]
    unit = host["units"][0]
    actual = keys(report) | keys(host, "ec2") | keys(unit, "tgi") | set(unit["tgi"]["metrics"])
    assert actual - documented == set(), "undocumented in README 'Status JSON'"
    assert documented - actual - {"verdict", "n"} == set(), "documented but not in the output"


def test_deploy_json_fields_are_the_documented_ones():
    documented = section("Deploy JSON (`--json`)", "Anything that stops a deploy")
    result = golden_json("deploy/phi-3-mini_1xA10G.json")
    assert set(result) - documented == set(), "undocumented in README 'Deploy JSON'"


def test_alarms_json_is_documented() -> None:
    from tgiops.commands.alarms import AlarmRow, AlarmsListing, AlarmsResult, Item
    from tgiops.core.alarms import owner_for

    owner = owner_for(stack="llm", asg=None)
    result = AlarmsResult("set", owner, "us-east-1", items=[Item("alarm", "n", "created", "r")])
    row = AlarmRow("n", "r", "OK", "LessThanThreshold", 1.0, 60, 5, "w", ("arn",))
    listing = AlarmsListing(owner, "r", alarms=[row], budget={"name": "b", "usd_per_month": 1.0,
                                                               "time_unit": "MONTHLY",
                                                               "budget_type": "COST"})  # fmt: skip
    documented = section("### `tgiops alarms", "## Code map")
    actual = keys(result.as_dict(), "target", "topic", "items") | keys(
        listing.as_dict(), "alarms", "budget"
    )
    # "status" is dropped as prose by section() (the verb); the README names it as an item field
    assert actual - documented - PROSE == set(), "undocumented in README `tgiops alarms`"
