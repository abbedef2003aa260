#!/usr/bin/env python3
"""Benchmark `tgiops status` on 1, 5 and 20 hosts behind a 50 ms round trip (not a test).

Setup: REAL testbed hosts (default 4; scripts/testbed) each serve the emulator's tiny model,
deployed with `tgiops deploy`. Every benchmark "host" is an SSH destination that reaches one
of them through its own delay proxy (an asyncio TCP relay that holds each chunk DELAY_MS in
each direction: +2 x DELAY_MS per round trip; netem is not available here, docs/testbed.md),
so 20 destinations mean 20 SSH connections, each paying the added latency on every round
trip. The proxies' host keys are the real hosts' keys, written to a private known_hosts under
the proxies' names, so strict host-key checking stays on.

Prints, per case: wall time (median of --repeat runs, through the library call the CLI makes),
the same through relays without delay (what CPUs alone cost), the difference (what the added
latency costs), this process's CPU time, the whole machine's CPU time and the wall-time floor
it sets (machine CPU / cores), SSH command round trips per host (tgiops' own counter;
the SSH handshake comes on top), the verdicts seen; then the ratio 20 hosts / 1 host (goal:
under 1.5), and a sequential run (--parallel 1) for comparison.

Note: on one machine the remote side of every "host" shares this machine's CPUs (the status
script runs systemctl, docker, curl and nvidia-smi there), which real fleets do not.

Usage: scripts/bench_status.py [--cases 1,5,20] [--real-hosts 4] [--delay-ms 25] [--repeat 3]
       [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINY_CONFIG = REPO / "scripts" / "tgi_emulator" / "hub" / "tgiops-test--tiny-llama" / "config.json"


sys.path.insert(0, str(Path(__file__).resolve().parent))
from delay_proxy import DelayProxy  # noqa: E402  (the asyncio latency proxy, shared)


def testbed(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "testbed"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"scripts/testbed {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def boot_and_deploy(names: list[str]) -> list[dict]:
    hosts = []
    for name in names:
        info = json.loads(testbed("up", "--name", name, "--gpus", "1xA10G"))
        print(f"  {name} up at {info['address']}", file=sys.stderr)
        deployed = subprocess.run(
            [
                sys.executable,
                "-m",
                "tgiops.cli",
                "deploy",
                "--model-config",
                str(TINY_CONFIG),
                "--model-id",
                "tgiops-test/tiny-llama",
                "--host",
                name,
                "--ssh-config",
                info["ssh_config"],
                "--no-token",
                "--unit",
                "tgiops-bench",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        if deployed.returncode != 0:
            raise SystemExit(f"deploy on {name} failed:\n{deployed.stderr[-2000:]}")
        hosts.append(info)
    return hosts


def host_key(known_hosts: str, name: str, address: str) -> str:
    for line in Path(known_hosts).read_text().splitlines():
        names, _, key = line.partition(" ")
        if name in names.split(",") or address in names.split(","):
            return key
    raise SystemExit(f"no host key for {name} in {known_hosts}")


def write_proxy_config(hosts: list[dict], proxy: DelayProxy, count: int, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    known = workdir / "known_hosts"
    config = workdir / "ssh_config"
    known_lines, config_lines = [], []
    for i in range(count):
        real = hosts[i % len(hosts)]
        port = proxy.add(real["address"], 22)
        key = host_key(real["known_hosts"], real["name"], real["address"])
        known_lines.append(f"[127.0.0.1]:{port} {key}")
        config_lines += [
            f"Host bench-{i}",
            "    HostName 127.0.0.1",
            f"    Port {port}",
            f"    User {real['user']}",
            f"    IdentityFile {real['identity']}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known}",
            "    StrictHostKeyChecking yes",
            "",
        ]
    known.write_text("\n".join(known_lines) + "\n")
    config.write_text("\n".join(config_lines))
    return config


# --- measuring ---------------------------------------------------------------------------------


def machine_cpu_s() -> float:
    """CPU seconds this whole machine has spent busy (/proc/stat, every process and core):
    tgiops, the relays, and every testbed host's sshd, status script, dockerd and emulator."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def measure(config: Path, count: int, repeat: int, parallel: int) -> dict:
    from tgiops.commands.status import StatusRequest, gather_status
    from tgiops.edges.ssh import SSHTarget
    from tgiops.edges.targets import Target

    targets = [
        Target(f"bench-{i}", SSHTarget(destination=f"bench-{i}", ssh_config_path=str(config)))
        for i in range(count)
    ]
    request = StatusRequest(max_parallel=parallel)
    times, cpu, machine, trips, verdicts = [], [], [], set(), {}
    for _ in range(repeat):
        started, started_cpu = time.monotonic(), time.process_time()
        started_machine = machine_cpu_s()
        report = gather_status(targets, request)
        times.append(time.monotonic() - started)
        cpu.append(time.process_time() - started_cpu)
        machine.append(machine_cpu_s() - started_machine)
        trips |= {h.round_trips for h in report.hosts}
        verdicts = report.counts()
    return {
        "hosts": count,
        "wall_s": statistics.median(times),
        "runs_s": times,
        "client_cpu_s": statistics.median(cpu),
        "machine_cpu_s": statistics.median(machine),
        "round_trips_per_host": sorted(trips),
        "verdicts": {k: v for k, v in verdicts.items() if v},
    }


def measure_rtt(config: Path) -> float:
    """One command on an open connection through a proxy: the added round trip, measured."""
    from tgiops.edges.ssh import RemoteHost, SSHTarget

    with RemoteHost(SSHTarget(destination="bench-0", ssh_config_path=str(config))) as host:
        host.run("true")
        samples = []
        for _ in range(5):
            started = time.monotonic()
            host.run("true")
            samples.append(time.monotonic() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1,5,20")
    parser.add_argument("--real-hosts", type=int, default=4)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one way (RTT: twice)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the testbed hosts up")
    args = parser.parse_args()
    cases = [int(c) for c in args.cases.split(",")]
    names = [f"bench-{i + 1}" for i in range(args.real_hosts)]
    print(f"booting {len(names)} testbed hosts and deploying the tiny model ...", file=sys.stderr)
    hosts = boot_and_deploy(names)
    proxy = DelayProxy(args.delay_ms / 1000)
    direct = DelayProxy(0.0)  # same relays, no delay: what the CPUs alone cost
    try:
        with tempfile.TemporaryDirectory(prefix="tgiops-bench-") as tmp:
            config = write_proxy_config(hosts, proxy, max(cases), Path(tmp) / "delayed")
            config0 = write_proxy_config(hosts, direct, max(cases), Path(tmp) / "direct")
            rtt = measure_rtt(config)
            results = [measure(config, n, args.repeat, parallel=32) for n in cases]
            baseline = {n: measure(config0, n, args.repeat, parallel=32) for n in cases}
            sequential = measure(config, min(5, max(cases)), 1, parallel=1)
    finally:
        proxy.close()
        direct.close()
        if not args.keep:
            for name in names:
                testbed("down", "--name", name)
    print(
        f"tgiops status benchmark: {args.real_hosts} testbed hosts behind per-destination "
        f"delay proxies (+{2 * args.delay_ms:g} ms per round trip; a command on an open SSH "
        f"connection measured {rtt * 1000:.0f} ms), median of {args.repeat} runs"
    )
    cores = os.cpu_count() or 1
    print(
        f"{'hosts':>5}  {'wall s':>7}  {'no-delay s':>10}  {'latency cost s':>14}  "
        f"{'client CPU s':>12}  {'machine CPU s':>13}  {'CPU floor s':>11}  "
        f"{'round trips/host':>16}  verdicts"
    )
    for r in results:
        trips = ",".join(str(t) for t in r["round_trips_per_host"])
        plain = baseline[r["hosts"]]["wall_s"]
        print(
            f"{r['hosts']:>5}  {r['wall_s']:>7.2f}  {plain:>10.2f}  {r['wall_s'] - plain:>14.2f}  "
            f"{r['client_cpu_s']:>12.2f}  {r['machine_cpu_s']:>13.2f}  "
            f"{r['machine_cpu_s'] / cores:>11.2f}  {trips:>16}  {r['verdicts']}"
        )
    print(
        f"machine CPU: every process on this machine during the run (tgiops, relays, and each "
        f"testbed host's sshd, status script, dockerd, emulator); CPU floor = machine CPU / "
        f"{cores} cores, the least wall time these runs could take here"
    )
    by_count = {r["hosts"]: r for r in results}
    if 1 in by_count and 20 in by_count:
        one, twenty = by_count[1], by_count[20]
        print(f"ratio 20 hosts / 1 host: {twenty['wall_s'] / one['wall_s']:.2f} (goal < 1.5)")
        plain = {n: b["wall_s"] for n, b in baseline.items()}
        print(
            f"same ratio without the added delay: {plain[20] / plain[1]:.2f}; the CPU floor of "
            f"20 hosts alone is {twenty['machine_cpu_s'] / cores / one['wall_s']:.2f} x the "
            "1-host wall time (on a real fleet each host's share runs on that host)"
        )
    print(f"sequential (--parallel 1), {sequential['hosts']} hosts: {sequential['wall_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
