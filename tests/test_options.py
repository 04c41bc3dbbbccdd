"""One way to configure: a jsonargparse parser built from a config dataclass's documented fields, defaults
written once, flags / YAML / environment typed by the same rules."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from ofa.pipeline.cli import Command, command_parser
from ofa.pipeline.options import build, normalise_argv, option_fields


@dataclass
class Toy:
    """A toy command."""

    name: str
    """its name"""
    steps: int = 3
    """how many steps"""
    rate: float | None = None
    """learning rate (null: 1/steps)"""
    fast: bool = False
    """go fast"""
    log: bool = True
    """write logs"""
    tags: list[str] = field(default_factory=list, metadata={"flag": "--tag", "repeat": True})
    """a tag; repeatable"""
    mode: Literal["a", "b"] = "a"
    """the mode"""
    internal: int = 0  # no docstring: set by code, not an option


def _parse(argv: list[str]) -> dict:
    parser = command_parser(Command("toy", "a toy", (Toy,), "unused:unused"))
    values = parser.parse_args(normalise_argv(argv, ["--tag"])).as_dict()
    values.pop("config", None)
    return values


def test_types_switches_and_defaults_come_from_the_fields():
    assert _parse([]) == {"name": None, "steps": 3, "rate": None, "fast": False, "log": True, "tags": [], "mode": "a"}
    values = _parse(["--name", "n", "--steps", "7", "--rate", "0.5", "--fast", "--no-log", "--tag", "x", "--tag", "y",
                     "--mode", "b"])
    assert build(Toy, values) == Toy("n", 7, 0.5, True, False, ["x", "y"], "b")
    for bad in (["--steps", "many"], ["--mode", "c"], ["--internal", "1"], ["--rate", "fast"]):
        with pytest.raises(argparse.ArgumentError):
            _parse(bad)


def test_a_field_without_a_docstring_is_no_option_and_a_missing_required_one_is_named():
    assert [f.name for f in option_fields(Toy)] == ["name", "steps", "rate", "fast", "log", "tags", "mode"]
    with pytest.raises(ValueError, match="missing --name"):
        build(Toy, _parse([]))


def test_help_shows_each_docstring_and_default(capsys):
    parser = command_parser(Command("toy", "a toy", (Toy,), "unused:unused"))
    parser.print_help()
    out = " ".join(capsys.readouterr().out.split())
    assert "how many steps (type: int, default: 3)" in out and "learning rate (null: 1/steps)" in out
    assert "--fast, --no-fast" in out and "--tag TAG" in out and "--internal" not in out


def test_argv_puts_config_files_first_and_gathers_repeated_flags():
    assert normalise_argv(["--steps", "2", "--config", "a.yaml", "--tag", "x", "--tag=y", "--config=b.yaml"], ["--tag"]) == [
        "--config", "a.yaml", "--config", "b.yaml", "--steps", "2", '--tag=["x", "y"]']
    assert normalise_argv(["--tag", "[p, q]"], ["--tag"]) == ["--tag=[p, q]"]  # already a list


def test_the_commands_take_their_defaults_from_the_config_dataclasses(capsys):
    """Chip defaults live on ChipOptions (IngestConfig, the ingest help and a manifest rebuild read them);
    eval defaults on EvalOptions/BackboneSpec."""
    from ofa.ingest.config import ChipOptions, IngestConfig
    from ofa.ingest.job import config_from_manifest
    from ofa.pipeline.cli import build_parser, parse
    from ofa.pipeline.evaluate.options import BackboneSpec, EvalOptions

    chips = ChipOptions()
    cfg = IngestConfig(catalog="c", collections=["x"], out="o")
    assert cfg.chip_options() == chips
    rebuilt = config_from_manifest({"catalog": "c", "search": {"collections": ["x"]}, "chips": {}}, "o")
    assert rebuilt.chip_options() == chips and rebuilt.shard_max_bytes == cfg.shard_max_bytes
    args = vars(parse(["eval", "geobench", "--root", "r"]))
    assert build(EvalOptions, args) == EvalOptions()
    assert build(BackboneSpec, args, checkpoint="random") == BackboneSpec("random")
    build_parser()[1]["ingest"].print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert f"chip size in pixels of the finest band (type: int, default: {chips.chip_size})" in text
    assert f"drop chips with a larger fraction of cloud pixels (type: float, default: {chips.max_cloud})" in text
