#!/usr/bin/env python3
"""Benchmark tgiops' start-up: `tgiops --help` and `tgiops plan ...` (not a test).

Each command runs --repeat times (default 10) as a fresh process; the table shows the median
and the fastest wall time, side by side with peers: `python -c pass` (the interpreter's own
floor) and `ansible --version` (a Python CLI of the same trade). tgiops runs the way its
console script does (``from tgiops.cli.main import main``), from this checkout.

Then, for the slower of the two tgiops commands, ``python -X importtime`` lists the imports
that cost most (cumulative), and whether boto3, botocore, paramiko, fabric, docker, requests,
jinja2 or rich were imported at all (the goal: none of the heavy edges on --help or plan).

Usage: scripts/bench_cli.py [--repeat 10] [--top 12]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONSOLE = "import sys; from tgiops.cli.main import main; sys.exit(main())"
HEAVY = ("boto3", "botocore", "paramiko", "fabric", "invoke", "docker", "requests", "jinja2",
         "rich", "tenacity", "prometheus_client", "yaml")  # fmt: skip


def commands() -> dict[str, list[str]]:
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "tgiops --help": [py, "-c", CONSOLE, "--help"],
        "tgiops plan llama-3.1-70b-awq --instance-type g5.12xlarge": [
            py, "-c", CONSOLE, "plan", "llama-3.1-70b-awq", "--instance-type", "g5.12xlarge"],
    }  # fmt: skip
    if shutil.which("ansible"):
        cases["ansible --version"] = ["ansible", "--version"]
    return cases


def time_once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)  # fmt: skip
    return time.perf_counter() - started


def import_profile(argv: list[str], top: int) -> tuple[list[tuple[int, str]], set[str]]:
    """(the ``top`` imports by cumulative microseconds, top-level packages imported)."""
    proc = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], cwd=REPO, capture_output=True, text=True
    )
    rows = []
    packages = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), name.rstrip()))
        packages.add(name.strip().split(".")[0])
    rows.sort(reverse=True)
    return rows[:top], packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)

    results: dict[str, list[float]] = {}
    cases = commands()
    for argv_ in cases.values():  # warm the page cache and .pyc files once
        time_once(argv_)
    for _ in range(args.repeat):
        for label, argv_ in cases.items():  # interleaved: drift hits every command alike
            results.setdefault(label, []).append(time_once(argv_))

    width = max(len(label) for label in results)
    python = f"{sys.executable}, {sys.version.split()[0]}"
    print(f"Start-up, {args.repeat} runs each, wall seconds ({python})")
    print(f"{'command':<{width}} | {'median':>7} | {'fastest':>7}")
    print("-" * (width + 21))
    for label, values in results.items():
        print(f"{label:<{width}} | {statistics.median(values):7.3f} | {min(values):7.3f}")

    slowest = max((k for k in results if k.startswith("tgiops")),
                  key=lambda k: statistics.median(results[k]))  # fmt: skip
    rows, packages = import_profile(cases[slowest], args.top)
    print(f"\nSlowest imports of `{slowest}` (python -X importtime, cumulative ms):")
    for cumulative_us, name in rows:
        print(f"  {cumulative_us / 1000:8.1f}  {name.strip()}")
    imported = [name for name in HEAVY if name in packages]
    print(f"\nheavy libraries imported: {', '.join(imported) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
