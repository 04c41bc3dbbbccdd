"""The ``ofa`` command: one parser, subcommands contributed by each package.

Each module in ``SUBCOMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` (``args -> exit code``) as a default. Modules import their
heavy dependencies inside ``func`` so ``ofa --help`` stays fast. Failures become one line and an
exit code per kind (``pipeline.errors``); ``--debug`` adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from ofa.ingest.version import package_version

from ofa.pipeline.errors import add_debug_flag, run_command

SUBCOMMAND_MODULES = (
    "ofa.pipeline.demo",        # ofa demo
    "ofa.ingest.cli",           # ofa ingest, ofa manifest verify|show
    "ofa.pipeline.train",       # ofa train
    "ofa.pipeline.evaluate.cli",  # ofa eval geobench
    "ofa.model.cli",            # ofa model info
    "ofa.pipeline.embed.cli",   # ofa embed
)


#: what a command module hands over: its options, and what runs them (``args -> exit code``)
AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], "int | None"]


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, description: str | None,
                add_arguments: AddArguments, run: Run) -> argparse.ArgumentParser:
    """Add ``ofa NAME``: its options from ``add_arguments``, run by ``run``."""
    p = subparsers.add_parser(name, help=help, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def launch_main(module: str, description: str | None, add_arguments: AddArguments, run: Run,
                argv: list[str] | None = None) -> int:
    """The entry point of ``accelerate launch -m MODULE``: the options of ``ofa NAME``, the same one-line errors."""
    p = argparse.ArgumentParser(prog=module, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    add_debug_flag(p, top=True)
    return run_command(run, p.parse_args(argv), prog=f"ofa {module.rsplit('.', 1)[-1]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa",
        description="One-for-All Earth observation foundation model: STAC ingest, shards, pretraining, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ofa {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    add_debug_flag(parser, top=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
