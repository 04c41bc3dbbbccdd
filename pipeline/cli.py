"""The ``ofa`` command: one jsonargparse parser, a subcommand per entry of ``commands()``.

Each command is its option dataclasses (in light modules: ``--help`` never imports torch) and the function that
runs it, named as ``module:function`` and imported only when the command runs. Its options are the documented
fields of those dataclasses (``pipeline.options``): flags, ``--config FILE.yaml`` keys, ``--print_config`` and
``OFA_<COMMAND>__<OPTION>`` environment variables, typed by the same rules; the function gets them as an
``argparse.Namespace``. Precedence: defaults < environment < ``--config`` < flags. Failures become one line and an
exit code per kind (``pipeline.errors``); ``--debug`` anywhere on the line adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from dataclasses import dataclass
from typing import Any

from ofa.ingest.version import package_version

from ofa.pipeline.errors import EXIT_USAGE, run_command
from ofa.pipeline.options import add_field_options, normalise_argv, option_fields, repeated_flags
from ofa.pipeline.threads import use_cpu_threads

DESCRIPTION = """One-for-All Earth observation foundation model: STAC ingest, shards, pretraining, evaluation.

Every command reads its options from flags, from --config FILE.yaml (the same keys; --print_config prints
them) and from environment variables OFA_<COMMAND>__<OPTION> (e.g. OFA_TRAIN__STEPS=10); flags win over
the file, the file over the environment. --debug, anywhere on the line (or OFA_DEBUG=1), prints the
traceback of a failure as well as its one-line error."""


@dataclass(frozen=True)
class Command:
    """One ``ofa`` command: ``name`` ("train", "manifest verify"), its option dataclasses and what runs it."""

    name: str
    help: str
    options: tuple[type, ...]
    run: str  # "module:function", called with the parsed options
    description: str | None = None  # default: the first option dataclass's docstring
    epilog: str | None = None


#: commands that only group others: name -> help
GROUPS = {"manifest": "verify, show or describe (STAC) a dataset's manifest", "eval": "evaluate checkpoints on downstream benchmarks",
          "model": "inspect and export OFA-Net models"}


def commands() -> list[Command]:
    """Every ``ofa`` command, in the order ``ofa --help`` lists them."""
    from ofa.ingest.config import (INGEST_DESCRIPTION, INGEST_EXAMPLES, IngestConfig, ManifestOptions,
                                   ManifestShowOptions, ManifestStacOptions, RebuildOptions)
    from ofa.model.cli import ExportOptions, InfoOptions
    from ofa.pipeline.config import DemoConfig, TrainConfig
    from ofa.pipeline.embed.config import DESCRIPTION as EMBED_DESCRIPTION, EmbedConfig
    from ofa.pipeline.evaluate.options import BackboneSpec, EvalOptions, GeoBenchOptions

    return [
        Command("demo", "run the whole pipeline offline on an embedded catalog", (DemoConfig,),
                "ofa.pipeline.demo:run_command"),
        Command("ingest", "STAC search -> cloud-filtered chips -> WebDataset shards + manifest",
                (IngestConfig, RebuildOptions), "ofa.ingest.cli:ingest_command", INGEST_DESCRIPTION, INGEST_EXAMPLES),
        Command("manifest verify", "exit 0 only if every shard exists with its recorded sha256 and sample count",
                (ManifestOptions,), "ofa.ingest.cli:verify_command"),
        Command("manifest show", "print a summary of the manifest", (ManifestShowOptions,), "ofa.ingest.cli:show_command"),
        Command("manifest stac", "write the dataset's index.parquet (GeoParquet sample index) and stac/collection.json",
                (ManifestStacOptions,), "ofa.ingest.cli:stac_command"),
        Command("train", "pretrain the MAE on WebDataset shards (Accelerate)", (TrainConfig,),
                "ofa.pipeline.trainer:run_command"),
        Command("eval geobench", "GEO-Bench classification and segmentation tasks",
                (GeoBenchOptions, EvalOptions, BackboneSpec), "ofa.pipeline.evaluate.cli:run_geobench"),
        Command("model info", "parameter counts of a configuration, or what a checkpoint says about itself",
                (InfoOptions,), "ofa.model.cli:run_info"),
        Command("model export", "write a checkpoint as timm weights or a Hugging Face Hub folder", (ExportOptions,),
                "ofa.model.cli:run_export"),
        Command("embed", "embeddings of a dataset from a checkpoint, in Zarr or GeoParquet", (EmbedConfig,),
                "ofa.pipeline.embed.cli:run_command", EMBED_DESCRIPTION),
    ]


def _parser(prog: str, description: str | None, epilog: str | None = None, **kwargs: Any) -> Any:
    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """jsonargparse's help (types, defaults, environment variables) with descriptions as written."""

    return ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=Formatter,
                          exit_on_error=False, **kwargs)


def command_parser(cmd: Command) -> Any:
    """The parser of one command: ``--config`` and its options; environment variables ``OFA_TRAIN__STEPS``,
    ``OFA_EVAL__GEOBENCH__SEEDS``, ... (the names jsonargparse gives them under ``ofa``)."""
    description = cmd.description or inspect.cleandoc(cmd.options[0].__doc__ or "")
    p = _parser(f"ofa {cmd.name}", description, cmd.epilog, default_env=True,
                env_prefix=f"OFA_{cmd.name.upper().replace(' ', '__')}_")
    p.add_argument("--config", action="config", help="YAML file of options (keys = option names); flags override it")
    taken: set[str] = set()
    for cls in cmd.options:
        add_field_options(p, cls, taken)
    return p


def build_parser() -> tuple[Any, dict[str, Any]]:
    """The ``ofa`` parser and every parser under it by name ("", "manifest", "manifest verify", ...).

    jsonargparse takes subcommands level by level: first every ``ofa X``, then every ``ofa X Y``."""
    root = _parser("ofa", DESCRIPTION, env_prefix="OFA", default_env=True)
    root.add_argument("--version", action="version", version=f"ofa {package_version()}")
    parsers = {"": root}
    cmds = {c.name: c for c in commands()}
    top = root.add_subcommands(required=False, metavar="COMMAND")
    for name in dict.fromkeys(n.split()[0] for n in cmds):
        if name in GROUPS:
            parsers[name] = _parser(f"ofa {name}", GROUPS[name][0].upper() + GROUPS[name][1:] + ".")
            top.add_subcommand(name, parsers[name], help=GROUPS[name])
        else:
            parsers[name] = command_parser(cmds[name])
            top.add_subcommand(name, parsers[name], help=cmds[name].help)
        parsers[name].prog = f"ofa {name}"  # not jsonargparse's "ofa [options] NAME": no option goes before it
    for group in GROUPS:
        sub = parsers[group].add_subcommands(required=False, metavar="ACTION")
        for name, cmd in cmds.items():
            if name.split()[0] == group:
                parsers[name] = command_parser(cmd)
                sub.add_subcommand(name.split()[1], parsers[name], help=cmd.help)
                parsers[name].prog = f"ofa {name}"
    return root, parsers


def _command_of(argv: list[str]) -> Command | None:
    """The command ``argv`` starts with, if any."""
    words = [a for a in argv[:2] if not a.startswith("-")]
    by_name = {c.name: c for c in commands()}
    return by_name.get(" ".join(words)) or by_name.get(" ".join(words[:1]))


def _leaf(ns: Any) -> tuple[str, Any]:
    """``("manifest verify", its namespace)`` from a parse; ("manifest", None) when no action was named."""
    words: list[str] = []
    while ns is not None and ns.get("subcommand"):
        words.append(ns["subcommand"])
        ns = ns.get(ns["subcommand"])
    return " ".join(words), ns


def _values(cmd: Command, ns: Any) -> dict[str, Any]:
    """The option values of ``cmd`` in its parsed namespace, as plain Python values."""
    values = ns.as_dict()
    return {f.name: values.get(f.name) for cls in cmd.options for f in option_fields(cls)}


def _resolve(path: str) -> Any:
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def _runner(cmd: Command) -> Any:
    """What runs ``cmd``: for a command with a ``threads`` option, its CPU threads are set first, before the
    command's module can load torch (OpenMP reads its wait policy once, when torch loads it); the choice is
    passed on as ``args.cpu_threads`` for the command to report."""

    def run(args: argparse.Namespace) -> int | None:
        if "threads" in vars(args):
            args.cpu_threads = use_cpu_threads(args.threads)
        return _resolve(cmd.run)(args)

    return run


def parse(argv: list[str]) -> argparse.Namespace:
    """What ``ofa ARGV`` asks for: ``command`` (its name, or a group's when no action follows it) and the
    command's option values, typed, from flags, ``--config`` files and the environment. A bad option or
    config key raises ``argparse.ArgumentError``; ``--help`` and ``--print_config`` print and exit.

    A command's arguments go to its own parser (the one ``ofa --help`` lists), with the environment names the
    ``ofa`` tree gives it: one parser to build per run, and jsonargparse names an unknown key of a two-word
    command (``ofa eval geobench``) only this way."""
    cmd = _command_of(argv)
    if cmd is None:
        root, _ = build_parser()
        name, _ = _leaf(root.parse_args(argv))
        return argparse.Namespace(command=name)
    n = len(cmd.name.split())
    ns = command_parser(cmd).parse_args(normalise_argv(argv[n:], repeated_flags(cmd.options)))
    return argparse.Namespace(command=cmd.name, **_values(cmd, ns))


def main(argv: list[str] | None = None) -> int:
    """``ofa ARGS``: parse, then run the command; a bad option or config file is one line and exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = parse(argv)
    except argparse.ArgumentError as exc:
        cmd = _command_of(argv)
        print(f"ofa{' ' + cmd.name if cmd else ''}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    cmd = next((c for c in commands() if c.name == args.command), None)
    if cmd is None:
        build_parser()[1][args.command].print_help()
        return EXIT_USAGE
    args.debug = debug
    return run_command(_runner(cmd), args)


def launch_main(name: str, argv: list[str] | None = None) -> int:
    """The entry point of ``accelerate launch -m MODULE``: ``ofa NAME`` with the same options and one-line errors."""
    return main([*name.split(), *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
