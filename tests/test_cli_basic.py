"""The ``stellarscope`` parser: top-level help, every subcommand's help, version, no command."""

from __future__ import annotations

import argparse

import pytest

from core.cli.main import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command word sequence the parser accepts (``ingest``, ``train vae`` …)."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(prefix + (name,))
                out += _command_paths(sub, prefix + (name,))
    return out


COMMANDS = _command_paths(build_parser())


def _help_exit(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().out


def test_top_level_help(capsys):
    code, out = _help_exit(["--help"], capsys)
    assert code == 0 and "usage: stellarscope" in out
    for name in ("ingest", "inspect"):
        assert name in out


def test_version(capsys):
    code, out = _help_exit(["--version"], capsys)
    assert code == 0 and out.startswith("stellarscope ")


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage: stellarscope" in capsys.readouterr().out


def test_my_commands_are_registered():
    assert ("ingest",) in COMMANDS and ("inspect",) in COMMANDS


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_subcommand_help_exits_0(words, capsys):
    code, out = _help_exit([*words, "--help"], capsys)
    assert code == 0
    assert f"usage: stellarscope {' '.join(words)}" in out
