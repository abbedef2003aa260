#!/usr/bin/env python3
"""Time `tgiops plan MODEL` without hardware: the whole instance table per catalog model.

Issue 14 §4 asks for the ranking over every instance type of the table in under 1 s (a
benchmark, not a timed test). This plans each model of the built-in catalog on every instance
type (``tgiops.core.recommend.recommend``, no AWS call: spot prices are the CLI's edge) and
prints the wall time per model, best of --repeat runs; the exit code is 1 when one is >= 1 s.

Usage: scripts/bench_recommend.py [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tgiops.core import hardware  # noqa: E402
from tgiops.core.catalog_file import parse_catalog  # noqa: E402
from tgiops.core.engines.tgi import TgiEngine  # noqa: E402
from tgiops.core.recommend import Filters, recommend  # noqa: E402

LIMIT_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    catalog = parse_catalog((ROOT / "models.yaml").read_text(), origin="models.yaml")
    types = hardware.all_instance_types()
    engine = TgiEngine.release()
    rows: list[dict[str, Any]] = []
    for alias, model in catalog.items():
        if model.unsupported_by_tgi:
            continue  # refused before any planning (gpt-oss, Mistral Small 3.1)
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            rec = recommend(model, engine, types, Filters())
            best = min(best, time.perf_counter() - start)
        rows.append(
            {
                "model": alias,
                "instance_types": len(types),
                "fit": len(rec.candidates),
                "cheapest": rec.candidates[0].instance_type.name if rec.candidates else None,
                "seconds": round(best, 4),
            }
        )
    slowest = max(r["seconds"] for r in rows)
    if args.json:
        print(json.dumps({"limit_s": LIMIT_S, "slowest_s": slowest, "rows": rows}, indent=2))
    else:
        print(f"{'model':32} {'fit':>7} {'cheapest':16} {'seconds':>8}")
        for r in rows:
            fit = f"{r['fit']}/{r['instance_types']}"
            print(f"{r['model']:32} {fit:>7} {r['cheapest'] or '-':16} {r['seconds']:8.4f}")
        print(f"slowest {slowest:.4f} s (limit {LIMIT_S} s for the whole table)")
    return 0 if slowest < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
