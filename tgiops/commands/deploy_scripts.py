"""The shell scripts a deploy runs on its host, as text (tgiops.commands.deploy runs them).

Under the host lock: ``guard_script`` before anything is written (the unit file, if there, must
be tgiops'), ``keep_previous_script`` (what a rollback restores), ``restart_script`` after the
new files are in place, ``remove_first_script`` to undo a failed first deploy, and
``newest_journal_line_command`` for the progress line while the unit starts. Kept apart from the
deploy's steps so what runs on the host reads in one place; --dry-run shows them.
"""

from __future__ import annotations

import shlex

from tgiops.core.layout import ENV_DIR, MANAGED_MARKER
from tgiops.core.render import UnitOptions


def guard_script(options: UnitOptions) -> str:
    """Under the lock, before anything is written: the unit file, if there, must be tgiops'
    (the probe checked too; this closes the gap since); then make the directories."""
    q = shlex.quote
    unit = options.unit_path
    why = f"{unit} exists and was not written by tgiops; refusing to replace it"
    return f"""if [ -e {q(unit)} ] && ! grep -q {q("^" + MANAGED_MARKER)} {q(unit)}; then echo {q(why)} >&2; exit 4; fi
install -d -m 0700 {q(ENV_DIR)}
install -d -m 0755 {q(options.data_dir)}
"""  # noqa: E501


def keep_previous_script(options: UnitOptions) -> str:
    """Keep the installed unit and env file as ``.previous`` (what a rollback restores)."""
    q = shlex.quote
    unit, env = options.unit_path, options.env_file
    return f"""if [ -f {q(unit)} ]; then cp -p {q(unit)} {q(unit + ".previous")}; fi
if [ -f {q(env)} ]; then cp -p {q(env)} {q(env + ".previous")}; fi
"""


def restart_script(options: UnitOptions) -> str:
    name = shlex.quote(options.unit_name + ".service")
    return f"""systemctl daemon-reload
systemctl enable --quiet {name}
systemctl restart {name}
"""


def remove_first_script(options: UnitOptions) -> str:
    """Undo a first deploy that failed: the host is left as it was (the model cache, which a
    retry reuses, stays in the data directory)."""
    q = shlex.quote
    name = options.unit_name + ".service"
    unit, env = options.unit_path, options.env_file
    files = " ".join(q(f) for f in (unit, unit + ".previous", env, env + ".previous"))
    return f"""systemctl disable --now --quiet {q(name)} 2>/dev/null || true
docker rm -f {q(options.container)} >/dev/null 2>&1 || true
if [ ! -e {q(unit)} ] || grep -q {q("^" + MANAGED_MARKER)} {q(unit)}; then rm -f -- {files}; fi
rmdir --ignore-fail-on-non-empty -- {q(ENV_DIR)} 2>/dev/null || true
systemctl daemon-reload
systemctl reset-failed {q(name)} >/dev/null 2>&1 || true
"""


def newest_journal_line_command(unit_name: str, since: int) -> str:
    """The unit's newest journal line since ``since`` (epoch seconds).

    ``--reverse -n 1``: on systemd 252 ``--since @T -n 1`` prints the *first* line after T,
    so the progress line stood still while the engine logged on.
    """
    unit = shlex.quote(unit_name + ".service")
    return f"journalctl -u {unit} --since @{since} --reverse -n 1 -o cat --no-pager 2>/dev/null\n"
