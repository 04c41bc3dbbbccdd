"""One way to configure: argparse options built from a config dataclass's fields, defaults written once."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from ofa.ingest.options import Flag, add_options, from_args


@dataclass
class Toy:
    name: str
    steps: int = 3
    rate: float | None = None
    fast: bool = False
    log: bool = True
    tags: list[str] = field(default_factory=list)
    mode: str = "a"


FLAGS = {
    "steps": Flag("how many steps"),
    "rate": Flag("learning rate", default_text="1/steps"),
    "fast": Flag("go fast"),
    "log": Flag("no logs"),
    "tags": Flag("a tag; repeatable", action="append", flag="--tag"),
    "mode": Flag("the mode", choices=["a", "b"]),
}


def _parser(suppress: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, Toy, FLAGS, suppress=suppress)
    return p


def test_types_switches_and_defaults_come_from_the_fields():
    args = _parser(False).parse_args([])
    assert vars(args) == {"steps": 3, "rate": None, "fast": False, "log": True, "tags": [], "mode": "a"}
    args = _parser(False).parse_args(["--steps", "7", "--rate", "0.5", "--fast", "--no-log", "--tag", "x", "--tag", "y",
                                      "--mode", "b"])
    assert from_args(Toy, args, name="n") == Toy("n", 7, 0.5, True, False, ["x", "y"], "b")
    with pytest.raises(SystemExit):
        _parser(False).parse_args(["--steps", "many"])
    with pytest.raises(SystemExit):
        _parser(False).parse_args(["--mode", "c"])


def test_help_names_each_default_once(capsys):
    with pytest.raises(SystemExit):
        _parser(False).parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "how many steps (default: 3)" in out and "learning rate (default: 1/steps)" in out
    assert "the mode (default: a)" in out and "--tag TAG" in out and "--no-log" in out
    assert "go fast (default" not in out and "repeatable (default" not in out


def test_suppressed_options_are_absent_unless_given():
    """What a config file fills: only the flags given land in the namespace."""
    assert vars(_parser(True).parse_args([])) == {}
    assert vars(_parser(True).parse_args(["--fast", "--steps", "2"])) == {"fast": True, "steps": 2}


def test_the_commands_take_their_defaults_from_the_config_dataclasses():
    """Chip defaults live on ChipOptions (IngestConfig, the ingest help and a manifest rebuild read them);
    eval defaults on EvalOptions/BackboneSpec."""
    from ofa.ingest.config import ChipOptions, IngestConfig
    from ofa.ingest.job import config_from_manifest
    from ofa.pipeline.cli import build_parser
    from ofa.pipeline.evaluate.options import BackboneSpec, EvalOptions

    chips = ChipOptions()
    cfg = IngestConfig(catalog="c", collections=["x"], out="o")
    assert cfg.chip_options() == chips
    rebuilt = config_from_manifest({"catalog": "c", "search": {"collections": ["x"]}, "chips": {}}, "o")
    assert rebuilt.chip_options() == chips and rebuilt.shard_max_bytes == cfg.shard_max_bytes
    parser = build_parser()
    args = parser.parse_args(["eval", "geobench", "--root", "r"])
    assert from_args(EvalOptions, args) == EvalOptions()
    assert from_args(BackboneSpec, args, checkpoint="random") == BackboneSpec("random")
    sub = next(a for a in parser._actions if a.dest == "command").choices["ingest"]
    text = " ".join(sub.format_help().split())
    assert f"chip size in pixels of the finest band (default: {chips.chip_size})" in text
    assert f"drop chips with a larger fraction of cloud pixels (default: {chips.max_cloud})" in text
