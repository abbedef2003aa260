"""The SSH edge against a real OpenSSH sshd on loopback (the "remote" host is this machine)."""

from __future__ import annotations

import contextlib
import glob
import http.server
import os
import stat
import subprocess
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tgiops.core.errors import (
    HostKeyError,
    InputError,
    RemoteCommandError,
    SSHConnectError,
    SSHError,
)
from tgiops.edges.ssh import (
    STAGE_DIR_GLOB,
    CommandResult,
    FileUpload,
    RemoteHost,
    ScriptGate,
    SSHTarget,
)

if TYPE_CHECKING:  # fixtures come from tests/edges/conftest.py
    from collections.abc import Callable

    from conftest import SshEnv


def tmp_leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".tgiops-tmp-" in name)


# -- commands ---------------------------------------------------------------------------------


def test_run_returns_streams_and_exit_code(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    result = host.run("echo out; echo err >&2; exit 3", check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok


def test_run_check_raises_with_the_last_20_lines(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    with pytest.raises(RemoteCommandError) as info:
        host.run("for i in $(seq 1 30); do echo line-$i; done; exit 2")
    err = info.value
    assert err.remote_exit_code == 2
    assert err.output_tail.splitlines() == [f"line-{i}" for i in range(11, 31)]
    assert "exited 2" in str(err) and "testhost" in str(err)


def test_run_list_quotes_every_argument(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    pwned = ssh_env.work / "pwned"
    hostile = [f"x; touch {pwned}", "$(id)", "`id`", "a b", "'q'\"", "--model-id=org/m"]
    result = host.run(["printf", "%s\\n", *hostile])
    assert result.stdout.splitlines() == hostile
    assert not pwned.exists()


def test_run_passes_stdin_without_argv(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    data = "".join(f"row {i}\n" for i in range(50_000))  # ~500 KB, fed in one go
    result = host.run(["sha256sum"], stdin=data)
    expected = subprocess.run(
        ["sha256sum"], input=data.encode(), capture_output=True, check=True
    ).stdout.decode()
    assert result.stdout == expected


def test_run_script_is_one_round_trip(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    marker = ssh_env.work / "marker"
    script = f"set -e\nname=world\necho hello $name\ntouch {marker}\necho done >&2\n"
    before = host.round_trips
    result = host.run_script(script)
    assert host.round_trips == before + 1
    assert (result.stdout, result.stderr) == ("hello world\n", "done\n")
    assert marker.exists()


def test_a_command_reading_stdin_cannot_swallow_the_rest_of_a_script(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    result = host.run_script("cat >/dev/null\necho still-running\n")
    assert result.stdout == "still-running\n"


def test_run_script_failure_does_not_echo_the_script(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    with pytest.raises(RemoteCommandError) as info:
        host.run_script("echo visible-output\nfalse # hidden-comment\n", check=True)
    text = str(info.value)
    assert "visible-output" in text and "hidden-comment" not in text


def test_connection_is_reused_across_commands(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    first = host.run("echo $SSH_CONNECTION").stdout
    second = host.run("echo $SSH_CONNECTION").stdout
    assert first == second  # same client port: one TCP connection


def test_reconnects_after_close(ssh_env: SshEnv) -> None:
    with ssh_env.host() as host:
        first = host.run("echo $SSH_CONNECTION").stdout
        host.close()
        second = host.run("echo $SSH_CONNECTION").stdout
    assert first != second and second.strip()


def test_run_timeout(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    with pytest.raises(SSHError, match=r"did not finish within 0\.5 s"):
        host.run("echo started; sleep 30", timeout_s=0.5)
    assert host.run("echo still-usable").stdout == "still-usable\n"


def test_round_trips_are_counted(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    assert host.round_trips == 0
    host.run("true")
    host.read_file(str(ssh_env.work / "absent"))
    assert host.round_trips == 2
    host.put_file_atomic(str(ssh_env.work / "f"), "x")
    assert host.round_trips == 5  # mktemp -d, one write, one install script
    files = [FileUpload(str(ssh_env.work / name), b"x") for name in ("a", "b", "c")]
    host.install_files(files)
    assert host.round_trips == 5 + 3  # as many for three files: they travel as one bundle


def test_stream_hands_over_lines_as_they_come_and_stops_on_request(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    seen: list[str] = []
    assert host.stream("printf 'a\\nb\\n'; printf c", seen.append) == 0
    assert seen == ["a", "b", "c"]

    stop = threading.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:  # the first line arrives while the command still runs
        lines.append(line)
        stop.set()

    assert host.stream("echo first; sleep 30; echo never", on_line, stop=stop) is None
    assert lines == ["first"]
    assert host.run("echo usable").stdout == "usable\n"


# -- files ------------------------------------------------------------------------------------


def test_put_file_atomic_content_mode_and_no_leftovers(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    path = ssh_env.work / "secret.env"
    path.write_text("OLD=1\n")
    os.chmod(path, 0o644)
    host.put_file_atomic(str(path), "HF_TOKEN=hf_planted\n", mode=0o600, owner="root:root")
    assert path.read_text() == "HF_TOKEN=hf_planted\n"
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert tmp_leftovers(ssh_env.work) == []
    host.put_file_atomic(str(path), b"\x00binary\xff", mode=0o644)
    assert path.read_bytes() == b"\x00binary\xff"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_put_file_atomic_temp_file_is_never_wider_than_0600(ssh_env: SshEnv) -> None:
    """Watch the directory during a large upload: every temporary file seen is already 0600."""
    host = ssh_env.host()
    path = ssh_env.work / "big.env"
    seen_modes: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(ssh_env.work):
                if ".tgiops-tmp-" in entry.name:
                    with contextlib.suppress(FileNotFoundError):
                        seen_modes.add(stat.S_IMODE(entry.stat().st_mode))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        host.put_file_atomic(str(path), os.urandom(32 * 1024 * 1024), mode=0o600)
    finally:
        done.set()
        watcher.join()
    assert seen_modes == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_put_file_atomic_keeps_the_old_file_when_the_upload_fails(ssh_env: SshEnv) -> None:
    """A 256 KiB tmpfs fills up half-way through a 1 MiB upload: a real write failure."""
    small = ssh_env.work / "small-fs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        path = small / "unit.service"
        path.write_text("[Service]\nExecStart=/old\n")
        host = ssh_env.host()
        with pytest.raises(SSHError, match="left unchanged") as info:
            host.put_file_atomic(str(path), b"x" * (1024 * 1024))
        assert not isinstance(info.value, RemoteCommandError)
        assert "1048576 bytes" in str(info.value)
        assert path.read_text() == "[Service]\nExecStart=/old\n"
        assert tmp_leftovers(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_staged_files_appear_together_between_before_and_after(ssh_env: SshEnv) -> None:
    """``before`` runs with no file replaced yet, ``after`` with all of them in place."""
    host = ssh_env.host()
    env, unit = ssh_env.work / "x.env", ssh_env.work / "x.service"
    env.write_text("OLD\n")
    log = ssh_env.work / "log"
    earlier = set(glob.glob(STAGE_DIR_GLOB))
    stages: list[str] = []

    def uploaded() -> None:
        assert env.read_text() == "OLD\n" and not unit.exists()  # uploaded: nothing visible yet
        assert tmp_leftovers(ssh_env.work) == []
        stages.extend(set(glob.glob(STAGE_DIR_GLOB)) - earlier)
        assert len(stages) == 1
        assert stat.S_IMODE(os.stat(stages[0]).st_mode) == 0o700  # the bundle's own directory

    host.install_files(
        [
            FileUpload(str(env), b"HF_TOKEN=hf_planted\n", mode=0o600, owner="root"),
            FileUpload(str(unit), b"[Unit]\n", mode=0o644),
        ],
        before=f"cat {env} {unit} > {log} 2>&1 || true\n",
        after=f"cat {env} {unit} >> {log}\n",
        on_uploaded=uploaded,
    )
    assert log.read_text().startswith(f"OLD\ncat: {unit}: No such file or directory\n")
    assert log.read_text().endswith("HF_TOKEN=hf_planted\n[Unit]\n")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert tmp_leftovers(ssh_env.work) == [] and not os.path.exists(stages[0])


def test_a_failing_before_script_changes_nothing_and_leaves_no_temporary_file(
    ssh_env: SshEnv,
) -> None:
    host = ssh_env.host()
    path = ssh_env.work / "kept.service"
    path.write_text("previous\n")
    earlier = set(glob.glob(STAGE_DIR_GLOB))
    with pytest.raises(RemoteCommandError):
        host.install_files([FileUpload(str(path), b"new\n")], before="false\n")
    assert path.read_text() == "previous\n"
    assert tmp_leftovers(ssh_env.work) == [] and set(glob.glob(STAGE_DIR_GLOB)) == earlier


def test_a_refusing_guard_is_input_error_and_changes_nothing(ssh_env: SshEnv) -> None:
    """The install guard (exit 4) runs before any temporary file: deploy's "not tgiops' unit"
    check under the lock. Its reason reaches the caller as InputError (exit 2)."""
    host = ssh_env.host()
    path = ssh_env.work / "foreign.service"
    path.write_text("[Unit]\n")
    earlier = set(glob.glob(STAGE_DIR_GLOB))
    guard = (
        f"if ! grep -q '^# Managed by tgiops' {path}; then echo {path} is not ours >&2; exit 4; "
        "fi\n"
    )
    with pytest.raises(InputError, match=r"foreign\.service is not ours; nothing was changed"):
        host.install_files([FileUpload(str(path), b"new\n")], guard=guard, after="touch ran\n")
    assert path.read_text() == "[Unit]\n"
    assert tmp_leftovers(ssh_env.work) == [] and set(glob.glob(STAGE_DIR_GLOB)) == earlier
    path.write_text("# Managed by tgiops 0\n")
    host.install_files([FileUpload(str(path), b"# Managed by tgiops 1\n")], guard=guard)
    assert path.read_text() == "# Managed by tgiops 1\n"


def bash_scripts() -> set[int]:
    """PIDs of the `bash -s` running here (sshd's children: the loopback host is this machine)."""
    pids = set()
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if Path(cmdline).read_bytes() == b"bash\0-s\0":
                pids.add(int(cmdline.split("/")[2]))
    return pids


@pytest.mark.parametrize("word", ["open", "close"])
def test_a_gated_script_runs_only_when_the_gate_opens(ssh_env: SshEnv, word: str) -> None:
    host = ssh_env.host()
    ran = ssh_env.work / "ran"
    gate = ScriptGate()
    box: list[object] = []
    runner = threading.Thread(
        target=lambda: box.append(host.run_script(f"touch {ran}\n", check=False, gate=gate))
    )
    earlier = bash_scripts()
    runner.start()
    deadline = time.monotonic() + 30  # a bound: the script reaches the host and waits there
    while not bash_scripts() - earlier:
        assert time.monotonic() < deadline, "the gated script never started"
        time.sleep(0.01)
    assert not ran.exists()
    getattr(gate, word)()
    runner.join(timeout=30)
    result = box[0]
    assert isinstance(result, CommandResult)
    assert (result.exit_code, ran.exists()) == ((0, True) if word == "open" else (3, False))


def test_a_file_upload_never_shows_its_content_in_a_repr(ssh_env: SshEnv) -> None:
    upload = FileUpload("/etc/tgiops/x.env", b"HF_TOKEN=hf_planted\n", mode=0o600)
    assert "hf_planted" not in repr(upload)


def test_put_file_atomic_refuses_relative_paths(ssh_env: SshEnv) -> None:
    with pytest.raises(SSHError, match="absolute"):
        ssh_env.host().put_file_atomic("relative/file", "x")


def test_read_file(ssh_env: SshEnv) -> None:
    host = ssh_env.host()
    path = ssh_env.work / "data.bin"
    path.write_bytes(b"abc\x00def")
    assert host.read_file(str(path)) == b"abc\x00def"
    assert host.read_file(str(ssh_env.work / "missing")) is None


# -- host keys --------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(ssh_env: SshEnv) -> None:
    ssh_env.known_hosts.write_text("")
    with pytest.raises(HostKeyError) as info:
        ssh_env.host().run("true")
    text = str(info.value)
    assert ssh_env.sshd.host_fingerprint in text
    assert "--accept-new-host-key" in text and "ssh-keyscan" in text
    assert ssh_env.known_hosts.read_text() == ""


def test_accept_new_host_key_records_it(ssh_env: SshEnv) -> None:
    ssh_env.known_hosts.unlink()
    ssh_env.host(accept_new_host_key=True).run("true")
    recorded = ssh_env.known_hosts.read_text()
    assert recorded == f"{ssh_env.known_hosts_name} {ssh_env.sshd.host_key_line}\n"
    assert stat.S_IMODE(ssh_env.known_hosts.stat().st_mode) == 0o600
    # A strict connection now trusts the recorded key.
    assert ssh_env.host().run("echo ok").stdout == "ok\n"


def test_changed_host_key_is_refused_even_with_accept_new(ssh_env: SshEnv, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    ssh_env.known_hosts.write_text(f"{ssh_env.known_hosts_name} {kind} {blob}\n")
    before = ssh_env.known_hosts.read_text()
    old_fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(other.with_suffix(".pub"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    with pytest.raises(HostKeyError, match="CHANGED") as info:
        ssh_env.host(accept_new_host_key=True).run("true")
    text = str(info.value)
    assert old_fingerprint in text and ssh_env.sshd.host_fingerprint in text
    assert "ssh-keygen -R" in text
    assert ssh_env.known_hosts.read_text() == before


def test_default_known_hosts_and_explicit_settings_without_ssh_config(ssh_env: SshEnv) -> None:
    # No ssh_config: destination, port, user and identity given explicitly; host keys come from
    # ~/.ssh/known_hosts of the (isolated) HOME.
    target = SSHTarget(
        destination="127.0.0.1",
        user=ssh_env.sshd.user,
        port=ssh_env.sshd.port,
        identity=str(ssh_env.sshd.client_key),
    )
    with RemoteHost(target) as host:
        assert host.run("echo $USER").stdout.strip() == ssh_env.sshd.user


# -- connection failures ----------------------------------------------------------------------


def test_closed_port_is_a_connect_error_naming_host_and_port(
    ssh_env: SshEnv, free_port: Callable[[], int]
) -> None:
    port = free_port()
    with pytest.raises(SSHConnectError) as info:
        ssh_env.host(port=port).run("true")
    assert f"127.0.0.1:{port}" in str(info.value)


def test_wrong_key_is_an_authentication_error(ssh_env: SshEnv, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(SSHConnectError, match="authentication") as info:
        ssh_env.host(identity=str(stranger)).run("true")
    assert f"127.0.0.1:{ssh_env.sshd.port}" in str(info.value)


def test_unresolvable_host_is_a_connect_error(ssh_env: SshEnv) -> None:
    with pytest.raises(SSHConnectError, match="cannot resolve"):
        ssh_env.host(destination="no-such-host.invalid").run("true")


# -- tunnels ----------------------------------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the remote loopback"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_forward_local_port_reaches_the_remote_loopback(ssh_env: SshEnv) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = ssh_env.host()
        with host.forward_local_port(server.server_address[1]) as local_port:
            assert local_port != server.server_address[1]
            for _ in range(3):  # several connections through one tunnel
                url = f"http://127.0.0.1:{local_port}/"
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.read() == b"hello from the remote loopback"
    finally:
        server.shutdown()
        server.server_close()


def test_forward_to_a_closed_remote_port_fails_the_client_connection(
    ssh_env: SshEnv, free_port: Callable[[], int]
) -> None:
    host = ssh_env.host()
    with host.forward_local_port(free_port()) as local_port:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{local_port}/", timeout=10)
        assert host.run("echo alive").stdout == "alive\n"  # the SSH connection survives


# -- the ProxyJump gateway (issue 12.5) -----------------------------------------------------


def _via_bastion(ssh_env: SshEnv, bastion_key_line: str | None) -> SSHTarget:
    """``behind`` reached through ProxyJump ``bastion``: the same real sshd under two names
    (the bastion as ``localhost``, the target as 127.0.0.1), so their known_hosts entries
    differ. ``bastion_key_line``: what known_hosts says of the bastion (None: nothing)."""
    sshd = ssh_env.sshd
    lines = [f"{ssh_env.known_hosts_name} {sshd.host_key_line}\n"]
    if bastion_key_line is not None:
        lines.append(f"[localhost]:{sshd.port} {bastion_key_line}\n")
    ssh_env.known_hosts.write_text("".join(lines))
    config = ssh_env.ssh_config.parent / "ssh_config_bastion"
    common = (
        f"    Port {sshd.port}\n    User {sshd.user}\n    IdentityFile {sshd.client_key}\n"
        f"    UserKnownHostsFile {ssh_env.known_hosts}\n"
    )
    config.write_text(
        f"Host bastion\n    HostName localhost\n{common}"
        f"Host behind\n    HostName 127.0.0.1\n    ProxyJump bastion\n{common}"
    )
    return SSHTarget(destination="behind", ssh_config_path=str(config))


def test_a_proxyjump_bastion_with_a_known_key_works(ssh_env: SshEnv) -> None:
    with RemoteHost(_via_bastion(ssh_env, ssh_env.sshd.host_key_line)) as host:
        assert host.run("echo ok").stdout == "ok\n"


def test_a_changed_bastion_key_is_refused(ssh_env: SshEnv, tmp_path: Path) -> None:
    """OpenSSH refuses a bastion whose key changed; tgiops used to connect through it (fabric
    builds the gateway with AutoAddPolicy and no known_hosts) and report healthy."""
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    target = _via_bastion(ssh_env, f"{kind} {blob}")
    before = ssh_env.known_hosts.read_text()
    with pytest.raises(HostKeyError, match="CHANGED") as info:
        RemoteHost(replace(target, accept_new_host_key=True)).run("true")
    assert f"[localhost]:{ssh_env.sshd.port}" in str(info.value)
    assert ssh_env.sshd.host_fingerprint in str(info.value)
    assert ssh_env.known_hosts.read_text() == before


def test_an_unknown_bastion_key_is_refused_unless_accept_new(ssh_env: SshEnv) -> None:
    target = _via_bastion(ssh_env, None)
    with pytest.raises(HostKeyError, match="localhost"):
        RemoteHost(target).run("true")
    with RemoteHost(replace(target, accept_new_host_key=True)) as host:
        assert host.run("echo ok").stdout == "ok\n"
    assert f"[localhost]:{ssh_env.sshd.port} {ssh_env.sshd.host_key_line}" in (
        ssh_env.known_hosts.read_text()
    )
