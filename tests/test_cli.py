"""The ``ofa`` command: every subcommand answers --help, and an unknown one fails clearly."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ofa.pipeline.cli import build_parser, main

EXPECTED = {"demo", "ingest", "manifest", "train", "eval", "model"}


def _subcommands() -> dict:
    return {name: p for name, p in build_parser()[1].items() if name and " " not in name}


def test_all_subcommands_registered():
    assert EXPECTED <= set(_subcommands())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ofa " + name in capsys.readouterr().out


def test_console_script_help_and_unknown_command():
    out = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in EXPECTED:
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ofa.pipeline.cli", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "frobnicate" in bad.stderr
