"""The command line: parse, call one function, render its result (human or --json).

Only ``main`` catches broadly: every failure leaves through it as one ``tgiops: error:`` line
on stderr (and, with ``--json``, as one error object on stdout; ``error_as_dict``) with the
exit code of the rule in ``tgiops.errors``: 0 done, 1 ran and failed (or a check's answer is
"no"), 2 refused before changing anything. Heavy libraries are imported by the verbs that
need them, so `tgiops --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tgiops import __version__
from tgiops.cli.alarms import add_alarms_parsers
from tgiops.cli.args import ArgumentParser
from tgiops.cli.cost import add_cost_parsers
from tgiops.cli.deploy import add_deploy_parser
from tgiops.cli.monitor import add_monitor_parsers
from tgiops.cli.plan import add_models_parser, add_plan_parser
from tgiops.cli.secret import add_secret_parsers
from tgiops.cli.spot import add_spot_parsers
from tgiops.cli.stack import add_stack_parsers
from tgiops.cli.status import add_status_parsers
from tgiops.core.errors import InputError, TgiopsError

if TYPE_CHECKING:  # annotations only: the CLI imports the planner lazily (start-up time)
    pass

log = logging.getLogger("tgiops")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="tgiops",
        description="Serve LLMs with Hugging Face TGI on EC2 GPU instances, planned from the "
        "hardware.",
    )
    parser.add_argument("--version", action="version", version=f"tgiops {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail on stderr (-vv, -vvv); secrets are never shown",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    add_plan_parser(sub)
    add_deploy_parser(sub)
    add_status_parsers(sub)
    add_spot_parsers(sub)
    add_stack_parsers(sub)
    add_alarms_parsers(sub)
    add_cost_parsers(sub)
    add_monitor_parsers(sub)

    add_secret_parsers(sub)
    add_models_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    stdout = _WatchedStdout(sys.stdout)
    sys.stdout = stdout
    try:
        return _main(parser, argv, stdout)
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.wrapped


def _main(parser: argparse.ArgumentParser, argv: list[str], stdout: _WatchedStdout) -> int:
    args: argparse.Namespace | None = None
    try:
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            raise InputError("which command? See the list above")
        _check_common(args)
        code = int(args.func(args))
        sys.stdout.flush()  # a full disk or a closed pipe shows here, inside the one door
        return code
    except KeyboardInterrupt:
        return _fail(argv, args, "Interrupted", "interrupted", 130)
    except TgiopsError as exc:
        return _fail(argv, args, type(exc).__name__, str(exc), exc.exit_code, exc)
    except OSError as exc:
        if stdout.failure is None:
            return _internal_error(argv, args, exc)
        # The output could not be written (`> /dev/full`, a closed pipe): nothing more to say
        # on stdout; point it at /dev/null so the interpreter's final flush stays quiet too.
        _silence_stdout()
        if exc.errno != errno.EPIPE:
            print(f"tgiops: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the last resort: a bug, never a traceback for the user
        return _internal_error(argv, args, exc)


# botocore's own check of a region name (botocore.utils.validate_region_name).
_REGION_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


def _check_region(region: str) -> None:
    """A region no partition has is refused before anything runs: `plan --region mars-1` would
    otherwise rank instance types for it, and AWS verbs would fail later on a DNS error."""
    if not _REGION_RE.fullmatch(region):
        raise InputError(f"--region {region!r} is not an AWS region name (e.g. us-east-1)")
    import difflib

    from tgiops.edges.aws.base import botocore_version, known_regions

    regions = known_regions()
    if region in regions:
        return
    close = difflib.get_close_matches(region, sorted(regions), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(
        f"--region {region!r} is not an AWS region name{hint} (`aws ec2 describe-regions` lists "
        f"your account's regions; a region newer than botocore {botocore_version()} needs an "
        "upgrade: pip install -U boto3)"
    )


def _check_common(args: argparse.Namespace) -> None:
    """Options many verbs share, checked once before any verb runs (exit 2)."""
    import math

    region = getattr(args, "region", None)
    if region is not None:
        _check_region(region)
    timeout = getattr(args, "connect_timeout", None)
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise InputError(f"--connect-timeout {timeout:g}: give seconds, > 0 and <= 3600")
    for option in ("timeout", "interval"):
        value = getattr(args, option, None)
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{option} {value:g}: give seconds > 0")


def wants_json(argv: Sequence[str], args: argparse.Namespace | None) -> bool:
    """--json asked for: from the parsed arguments, else (argparse refused them) from argv."""
    if args is not None:
        return bool(getattr(args, "json", False))
    for word in argv:
        if word == "--":
            break
        if len(word) > 3 and "--json".startswith(word):  # argparse accepts --js, --jso
            return True
    return False


def _fail(
    argv: Sequence[str],
    args: argparse.Namespace | None,
    kind: str,
    message: str,
    code: int,
    exc: BaseException | None = None,
) -> int:
    print(f"tgiops: error: {message}", file=sys.stderr)
    if wants_json(argv, args):
        try:
            # One line: also a valid last line of the JSON-lines outputs (--watch, logs -f).
            from tgiops.cli.output import error_as_dict

            print(json.dumps(error_as_dict(kind, message, code, exc)), flush=True)
        except OSError:
            _silence_stdout()
    return code


def _internal_error(argv: Sequence[str], args: argparse.Namespace | None, exc: Exception) -> int:
    """A failure no edge translated: a bug. One line (redacted); the traceback only at -vvv."""
    from tgiops.commands.logs import LogRedactor

    log.debug("unexpected error", exc_info=exc)
    text = LogRedactor()(f"{type(exc).__name__}: {exc}")
    message = f"unexpected {text} (a bug in tgiops: please report it, with the output of -vvv)"
    return _fail(argv, args, "InternalError", message, 1)


class _WatchedStdout:
    """sys.stdout, remembering a failed write: `tgiops models > /dev/full` is told apart from
    an OSError of the verb itself (both surface as OSError)."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return int(self.wrapped.write(text))
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            self.failure = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _silence_stdout() -> None:
    sys.stdout = getattr(sys.stdout, "wrapped", sys.stdout)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests' StringIO)
        pass


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if verbosity < 3:  # -vvv shows the libraries' own debug lines too
        # paramiko logs a refused tunnel (TGI still loading) at ERROR: that is expected here.
        for noisy in ("paramiko", "botocore", "boto3", "urllib3", "docker", "invoke", "fabric"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


# --- plan -----------------------------------------------------------------------------------


# --- deploy ---------------------------------------------------------------------------------


# --- status, logs, undeploy (issue 5) -------------------------------------------------------


# --- spot relaunch: userdata, bootstrap, reconcile, watch-interruption (issue 6) ------------
