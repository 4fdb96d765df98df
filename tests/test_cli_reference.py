"""docs/cli.md is the command line's own reference: generated from the argument parsers, and current."""

from pathlib import Path

import pytest

from ptmoe import cli_reference
from ptmoe.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_cli_doc_is_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference.markdown(), (
        "regenerate: PYTHONPATH=src python -m ptmoe.cli_reference > docs/cli.md"
    )


def test_every_command_and_option_is_in_it():
    doc = (ROOT / "docs" / "cli.md").read_text()
    _, commands = build_parser(list(COMMANDS))
    assert set(cli_reference.DETAILS) == set(COMMANDS)
    for name, parser in commands.items():
        assert f"## ptmoe {name}\n" in doc
        for action in parser._actions:
            for flag in [] if action.dest == "help" else action.option_strings:
                assert f"`{flag}`" in doc, (name, flag)


def test_help_points_to_the_reference(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "docs/cli.md#ptmoe-train" in capsys.readouterr().out
