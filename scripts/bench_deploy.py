#!/usr/bin/env python3
"""Benchmark the remote install steps of one deploy: tgiops against Ansible (not a test).

What is timed, for both tools, against the same testbed host, through the same delay proxy:
upload the env file (0600) and the unit, daemon-reload, enable, restart. The engine's load is
excluded: nothing waits for TGI to become healthy. Both start from no SSH connection, so each
timing includes connecting. Every run writes a different unit and env file (a run number in a
comment), so neither tool can skip an unchanged file.

- tgiops: the function ``tgiops.commands.deploy.deploy`` calls for this part (``_install``: one
  script creates both temporary files, SFTP fills them, one script checks them, keeps ``.previous``,
  renames them into place, daemon-reloads, enables, restarts), on a fresh ``RemoteHost``.
  "steps" = those calls in this process; "process" = a fresh interpreter that imports tgiops
  and makes them (what `tgiops deploy` would pay to get there).
- Ansible (ansible-core): a play with ``gather_facts: false``, two ``copy`` tasks (content,
  mode, owner) and one ``systemd`` task (daemon_reload, enabled, state=restarted); SSH
  pipelining on, ControlMaster on with a fresh ControlPath per run (one deploy = one run; no
  connection reused from the previous run), strict host-key checking.
  "steps" = first task start to last task end (a callback plugin timestamps them, connecting
  included); "process" = the `ansible-playbook` process.

Latency: scripts/delay_proxy.py in its own process adds DELAY ms to every chunk in each
direction (one-way +DELAY, round trip +2 x DELAY); netem is not available here.

Prints medians per delay, the ratio Ansible/tgiops, and tgiops' SSH command round trips (its
own counter; the SSH handshake and the SFTP session open come on top).

Usage: scripts/bench_deploy.py [--delays 0,25,50] [--repeat 5] [--host NAME --ssh-config F]
       [--keep]
Without --host it boots a testbed host (scripts/testbed) and ends it afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

if TYPE_CHECKING:
    from tgiops.core.render import UnitOptions

UNIT_NAME = "tgiops-bench"
MODEL = "phi-3-mini"

CALLBACK = """
import json, os, time
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.marks = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.marks.append(("start", task.get_name(), time.monotonic()))

    def v2_runner_on_ok(self, result):
        self.marks.append(("ok", result._task.get_name(), time.monotonic()))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.marks.append(("failed", result._task.get_name(), time.monotonic()))

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["BENCH_TIMES_FILE"], "w") as handle:
            json.dump(self.marks, handle)
"""

PLAYBOOK = """\
- hosts: gpu
  gather_facts: false
  tasks:
    - name: env file
      copy: {dest: "{{ env_path }}", content: "{{ env_text }}", mode: "0600", owner: root}
    - name: unit
      copy: {dest: "{{ unit_path }}", content: "{{ unit_text }}", mode: "0644", owner: root}
    - name: restart
      systemd: {name: "{{ unit_name }}.service", daemon_reload: true, enabled: true,
                state: restarted}
"""


@dataclass
class Target:
    name: str  # the testbed host
    address: str
    identity: str
    host_key: str  # "ssh-ed25519 AAAA..."


def render_files(run: int) -> tuple[str, str, UnitOptions]:
    """The unit and env file tgiops renders for MODEL on 1x A10G, marked with the run number."""
    from tgiops import __version__
    from tgiops.core import hardware
    from tgiops.core.engines.tgi import TgiEngine
    from tgiops.core.plan import Overrides, plan
    from tgiops.core.render import render_env_file, render_unit
    from tgiops.core.request import DeployRequest
    from tgiops.edges import resources

    model = resources.load_catalog()[MODEL]
    request = DeployRequest(model=model, engine=TgiEngine.release(), unit_name=UNIT_NAME)
    options = request.unit_options(())
    the_plan = plan(
        model,
        hardware.inventory_from_spec("A10G", 1),
        TgiEngine.release(),
        Overrides(),
        instance_types=hardware.all_instance_types(),
    )
    template = (resources.shipped_path("unit_templates") / "tgi.service.j2").read_text()
    unit = render_unit(the_plan, options, template, tgiops_version=__version__)
    env = render_env_file({})
    return f"{unit}# bench run {run}\n", f"{env}# bench run {run}\n", options


# --- tgiops ------------------------------------------------------------------------------------


def tgiops_install(ssh_config: str, run: int) -> tuple[float, int, list[float]]:
    """deploy's install path on a fresh connection: (seconds, SSH command round trips,
    [connect, stage both files, install script] seconds)."""
    from tgiops.commands.deploy import _install, _uploads
    from tgiops.edges.ssh import RemoteHost, SSHTarget

    unit_text, env_text, options = render_files(run)
    uploads = _uploads(options, env_text, unit_text)
    started = time.monotonic()
    marks = [started]
    with RemoteHost(SSHTarget("bench", ssh_config_path=ssh_config)) as host:
        host._transport()  # connect (deploy's lock call does this); timed on its own
        marks.append(time.monotonic())
        _install(host, options, uploads, on_progress=lambda _: marks.append(time.monotonic()))
        marks.append(time.monotonic())
        round_trips = host.round_trips
    parts = [b - a for a, b in itertools.pairwise(marks)]
    return time.monotonic() - started, round_trips, parts


def tgiops_process(ssh_config: str, run: int) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, __file__, "--_one-tgiops-install", ssh_config, str(run)], check=True
    )
    return time.monotonic() - started


# --- Ansible -----------------------------------------------------------------------------------


def ansible_install(workdir: Path, port: int, target: Target, run: int) -> tuple[float, float]:
    """One ansible-playbook run: (process seconds, first task start -> last task end)."""
    unit_text, env_text, options = render_files(run)
    control = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))  # short: a socket path
    variables = workdir / "vars.json"
    variables.write_text(
        json.dumps(
            {
                "unit_text": unit_text,
                "env_text": env_text,
                "unit_path": options.unit_path,
                "env_path": options.env_file,
                "unit_name": UNIT_NAME,
            }
        )
    )
    times = workdir / "times.json"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_CALLBACK_PLUGINS": str(workdir / "callbacks"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_times",
        "BENCH_TIMES_FILE": str(times),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
    }
    started = time.monotonic()
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(workdir / "inventory"), "-e", f"@{variables}",
         str(workdir / "play.yml")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - started
    shutil.rmtree(control, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    marks = json.loads(times.read_text())
    steps = marks[-1][2] - marks[0][2]
    return wall, steps


def write_ansible_files(workdir: Path, port: int, target: Target) -> None:
    (workdir / "callbacks").mkdir(exist_ok=True)
    (workdir / "callbacks" / "bench_times.py").write_text(CALLBACK)
    (workdir / "play.yml").write_text(PLAYBOOK)
    (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {target.host_key}\n")
    (workdir / "inventory").write_text(
        f"gpu ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
        f"ansible_ssh_private_key_file={target.identity} "
        "ansible_python_interpreter=/usr/bin/python3\n"
    )
    (workdir / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n"
        "interpreter_python = /usr/bin/python3\n\n[ssh_connection]\npipelining = True\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s "
        f"-o UserKnownHostsFile={workdir / 'known_hosts'} -o StrictHostKeyChecking=yes\n"
    )


def ansible_ssh_operations(workdir: Path, port: int, target: Target) -> int:
    """SSH executions and file transfers of one Ansible run (from -vvv; not timed)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="cp", dir="/tmp"),
    }
    unit_text, env_text, options = render_files(10_000)
    variables = workdir / "vars-v.json"
    names = {"unit_path": options.unit_path, "env_path": options.env_file, "unit_name": UNIT_NAME}
    variables.write_text(json.dumps({"unit_text": unit_text, "env_text": env_text, **names}))
    proc = subprocess.run(
        ["ansible-playbook", "-vvv", "-i", str(workdir / "inventory"), "-e", f"@{variables}",
         str(workdir / "play.yml")],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    shutil.rmtree(env["ANSIBLE_SSH_CONTROL_PATH_DIR"], ignore_errors=True)
    return sum(
        1 for line in proc.stdout.splitlines() if line.startswith(("<127.0.0.1> SSH: EXEC",))
    )


# --- setup -------------------------------------------------------------------------------------


def start_proxy(address: str, delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "delay_proxy.py"), "--delay-ms", str(delay_ms),
         "--upstream", f"{address}:22"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def tgiops_ssh_config(workdir: Path, port: int, target: Target) -> str:
    (workdir / "tgiops_known_hosts").write_text(f"[127.0.0.1]:{port} {target.host_key}\n")
    path = workdir / "ssh_config"
    path.write_text(
        f"Host bench\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {target.identity}\n"
        f"  UserKnownHostsFile {workdir / 'tgiops_known_hosts'}\n  StrictHostKeyChecking yes\n"
    )
    return str(path)


def boot_host(name: str) -> Target:
    from testbedlib.testbed import Testbed

    testbed = Testbed()
    info = testbed.up(name, "1xA10G")
    record = testbed._load_record(name)
    assert record is not None, f"testbed host {name} has no record"
    # What deploy's probe prepares before installing (not timed): the env file's directory.
    subprocess.run(testbed.ssh_argv(name, "install -d -m 0700 /etc/tgiops"), check=True)
    return Target(name, info.address, info.identity, record.host_key)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="0,25,50", help="one-way delays in ms")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--name", default=f"bench-{os.getpid() % 100000}")
    parser.add_argument("--keep", action="store_true", help="leave the testbed host up")
    parser.add_argument("--_one-tgiops-install", nargs=2, dest="one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        tgiops_install(args.one[0], int(args.one[1]))
        return 0
    delays = [float(d) for d in args.delays.split(",")]

    print(f"booting testbed host {args.name} ...", file=sys.stderr)
    target = boot_host(args.name)
    workdir = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    rows = []
    breakdown: list[tuple[float, list[float]]] = []
    try:
        for delay in delays:
            proxy, port = start_proxy(target.address, delay)
            try:
                config = tgiops_ssh_config(workdir, port, target)
                write_ansible_files(workdir, port, target)
                t_steps, t_proc, a_proc, a_steps = [], [], [], []
                trips: set[int] = set()
                t_parts: list[list[float]] = []
                run = int(delay * 1000)
                for i in range(args.repeat):
                    # Alternate which tool goes first, so drift on this machine hits both.
                    order = ("tgiops", "ansible") if i % 2 == 0 else ("ansible", "tgiops")
                    for tool in order:
                        run += 1
                        if tool == "tgiops":
                            seconds, round_trips, parts = tgiops_install(config, run)
                            t_steps.append(seconds)
                            t_parts.append(parts)
                            trips.add(round_trips)
                            run += 1
                            t_proc.append(tgiops_process(config, run))
                        else:
                            wall, steps = ansible_install(workdir, port, target, run)
                            a_proc.append(wall)
                            a_steps.append(steps)
                    print(f"  {delay:g} ms: run {i + 1}/{args.repeat} done", file=sys.stderr)
                operations = ansible_ssh_operations(workdir, port, target)
            finally:
                proxy.terminate()
                proxy.wait()
            rows.append((delay, median(t_steps), median(t_proc), median(a_steps),
                         median(a_proc), sorted(trips), operations))  # fmt: skip
            breakdown.append((delay, [median(column) for column in zip(*t_parts, strict=True)]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep:
            from testbedlib.testbed import Testbed

            Testbed().down(args.name)

    print(
        f"\nInstall steps of one deploy (upload env file + unit, daemon-reload, enable, restart;"
        f" engine load excluded), median of {args.repeat}, seconds; host {target.name}"
    )
    header = (
        f"{'one-way delay':>13} | {'tgiops steps':>12} {'tgiops process':>14} | "
        f"{'ansible steps':>13} {'ansible process':>15} | {'ratio steps':>11} "
        f"{'ratio process':>13} | {'tgiops RTs':>10} {'ansible SSH ops':>15}"
    )
    print(header)
    print("-" * len(header))
    for delay, ts, tp, ast, ap, trip_counts, ops in rows:
        print(
            f"{delay:>10g} ms | {ts:>12.3f} {tp:>14.3f} | {ast:>13.3f} {ap:>15.3f} | "
            f"{ast / ts:>11.1f} {ap / tp:>13.1f} | {','.join(map(str, trip_counts)):>10} {ops:>15}"
        )
    base = rows[0]
    if base[0] == 0 and len(rows) > 1:
        print("\nEffective network round trips per run (extra seconds over 0 ms / extra RTT):")
        for delay, ts, _, ast, *_ in rows[1:]:
            extra_rtt_s = 2 * delay / 1000
            print(
                f"{delay:>10g} ms | tgiops {(ts - base[1]) / extra_rtt_s:5.1f} | "
                f"ansible {(ast - base[3]) / extra_rtt_s:5.1f}"
            )
    print("\ntgiops steps, median seconds: connect | stage both files | install script")
    for delay, parts in breakdown:
        print(f"{delay:>10g} ms | " + " | ".join(f"{p:.3f}" for p in parts))
    print(
        "\nratio = Ansible / tgiops. tgiops RTs: SSH command round trips by tgiops' own counter"
        " (handshake and SFTP session open not counted); ansible SSH ops: `SSH: EXEC` lines of"
        " one -vvv run (each one or more round trips)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
