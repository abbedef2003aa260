"""Help (issue 11, item 14): every verb explains itself, every option says what it does."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
from test_bad_input_properties import run

from tgiops.cli import args as cli_args
from tgiops.cli import main as cli


def parsers(
    parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the CLI, the top one and each verb's (and each `secret` action's)."""
    parser = parser or cli.build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


ALL = list(parsers())


def test_the_walk_sees_every_verb():
    verbs = {p[0] for p, _ in ALL if len(p) == 1}
    assert {"plan", "deploy", "status", "logs", "undeploy", "secret", "models", "monitor"} <= verbs
    assert {p for p, _ in ALL if p[:1] == ("monitor",)} >= {
        ("monitor", "enable"),
        ("monitor", "disable"),
        ("monitor", "show"),
    }
    assert {p for p, _ in ALL if p[:1] == ("secret",)} >= {
        ("secret", "set"),
        ("secret", "list"),
        ("secret", "delete"),
    }
    assert {p for p, _ in ALL if p[:1] == ("alarms",)} == {
        ("alarms",),
        ("alarms", "set"),
        ("alarms", "list"),
        ("alarms", "delete"),
    }


@pytest.mark.parametrize("path,parser", ALL, ids=[" ".join(p) or "tgiops" for p, _ in ALL])
def test_every_verb_has_a_description_and_every_option_help(path, parser):
    assert parser.description and len(parser.description) > 40, path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            # Hidden on purpose: only deprecated aliases of a documented option.
            assert isinstance(action, cli_args.DeprecatedAlias), (path, action.option_strings)
            continue
        assert action.help and action.help.strip(), (path, action.option_strings or action.dest)


def test_the_connect_timeout_help_gives_its_default():
    helps = [
        (path, a.help)
        for path, parser in ALL
        for a in parser._actions
        if "--connect-timeout" in a.option_strings
    ]
    assert len(helps) >= 5  # deploy, status, logs, undeploy, reconcile
    assert all("default 10" in (text or "") for _, text in helps), helps


def test_name_means_an_ec2_tag_and_the_secret_is_secret_name():
    for path, parser in ALL:
        for action in parser._actions:
            if "--name" in action.option_strings and action.help != argparse.SUPPRESS:
                assert "Name" in action.help, path  # the EC2 Name tag, nowhere else
    code, out, _err = run(["secret", "set", "--help"])
    assert code == 0 and "--secret-name" in out and "--name" not in out


def test_the_deprecated_secret_name_alias_still_works_and_says_so():
    code, _, err = run(["secret", "check", "--name", "bad name!"])
    assert code == 2
    assert "tgiops: warning: --name is deprecated here; use --secret-name" in err
    assert "--secret-name 'bad name!'" in err


def test_models_table_explains_its_dashes_and_shows_the_context_length():
    code, out, _ = run(["models"])
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[-1] == "context"
    phi = next(line for line in out.splitlines() if line.startswith("phi-3-mini "))
    assert phi.split()[-1] == "4096"
    assert "- = not verified" in out and "- = none" in out
